"""``emd sign`` and ``emd verify``: detached CAdES-BES signatures of a document from the command line.

Exit codes: 0 done / valid, 1 the signature is invalid (the reason code and a sentence are printed),
2 usage errors (bad arguments, unreadable files, wrong password).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from producer.errors import EmdError
from services.commands.arguments import iso_datetime
from services.crypto import cades, keys
from services.crypto.certificates import Certificate, load_certificate

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sign",
        help="sign a document: detached CAdES-BES (GOST R 34.10-2012)",
        description="Sign DOC with a GOST key; writes a detached CMS (base64 unless --der).",
    )
    p.add_argument("document", metavar="DOC", help="the document to sign (e.g. a СЭМД XML)")
    p.add_argument("--key", required=True, help="private key: PKCS#8 PEM/DER or PFX/PKCS#12")
    p.add_argument("--cert", help="signer certificate, PEM or DER (optional when the PFX holds it)")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("--password-file", metavar="F", help="file holding the PFX password")
    pw.add_argument("--password-env", metavar="VAR", help="environment variable holding the PFX password")
    p.add_argument("--out", required=True, metavar="SIG", help="where to write the signature")
    p.add_argument("--der", action="store_true", help="write DER instead of base64")
    p.set_defaults(func=run_sign)

    v = sub.add_parser(
        "verify",
        help="verify a detached CAdES-BES signature of a document",
        description="Verify SIG (base64 or DER) over DOC. Exit 0 valid, 1 invalid, 2 usage error.",
    )
    v.add_argument("document", metavar="DOC")
    v.add_argument("signature", metavar="SIG")
    v.add_argument(
        "--at",
        type=iso_datetime,
        metavar="DATE",
        help="also require the certificate to be valid at this time (ISO 8601; UTC if no offset)",
    )
    v.add_argument(
        "--document-time",
        type=iso_datetime,
        metavar="DATE",
        help="also require the certificate to be valid at the document's creation time",
    )
    v.set_defaults(func=run_verify)


def _usage(message: str) -> int:
    print(f"emd: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_sign(args: argparse.Namespace) -> int:
    try:
        document = Path(args.document).read_bytes()
        key_bytes = Path(args.key).read_bytes()
        password = keys.read_password(file=args.password_file, env=args.password_env)
        pfx_certs: list = []
        if keys.is_pfx(key_bytes):
            key, pfx_certs = keys.load_pfx(key_bytes, password=password)
        else:
            key = keys.load_pkcs8(key_bytes)
        if args.cert:
            cert = load_certificate(args.cert)
        else:
            matching = [
                c for c in (Certificate(x.dump()) for x in pfx_certs) if c.public_key == key.public_key()
            ]
            if not matching:
                return _usage("--cert is required (the key file holds no matching certificate)")
            cert = matching[0]
        if cert.public_key != key.public_key():
            return _usage("the key does not belong to the certificate")
        cms_der = cades.sign_detached(document, key=key, certificate=cert)
    except OSError as exc:
        return _usage(f"{exc.filename or ''}: {exc.strerror or exc}")
    except EmdError as exc:
        return _usage(f"{exc.reason}: {exc.message}")
    Path(args.out).write_bytes(cms_der if args.der else (cades.to_base64(cms_der) + "\n").encode())
    print(f"signed {args.document} → {args.out} (certificate serial {cert.serial_number:x})")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    try:
        document = Path(args.document).read_bytes()
        raw = Path(args.signature).read_bytes()
    except OSError as exc:
        return _usage(f"{exc.filename or ''}: {exc.strerror or exc}")
    try:
        result = cades.verify_detached(
            document, cades.from_wire(raw), at=args.at, document_time=args.document_time
        )
    except EmdError as exc:  # a cades.SignatureError, or e.g. an unreadable embedded certificate
        print(f"INVALID {exc.reason}: {exc.message}")
        return EXIT_INVALID
    cert = result.certificate
    print(
        f"VALID: signed {result.signing_time:%Y-%m-%d %H:%M:%S%z} with certificate serial "
        f"{cert.serial_number:x} ({cert.common_name or '?'}), valid {cert.not_before:%Y-%m-%d} – "
        f"{cert.not_after:%Y-%m-%d}"
    )
    return EXIT_OK
