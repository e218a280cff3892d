"""OpenSSL with the GOST engine as the independent implementation our GOST code is tested against.

``OPENSSL_CONF`` points at a config written to a temporary directory that loads the ``gost`` engine
(keys, signatures) and the ``gostprov`` provider (digests), as
``docs/gost.md#openssls-gost-engine-and-provider`` describes.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

_CONF = """\
openssl_conf = openssl_def
[openssl_def]
engines = engine_section
[engine_section]
gost = gost_section
[gost_section]
engine_id = gost
default_algorithms = ALL
"""

#: openssl ``paramset:`` values of the three parameter sets every test covers
PARAMSETS = ("A", "TCA", "TCB")


@functools.cache
def _env() -> dict[str, str]:
    conf = Path(tempfile.mkdtemp(prefix="emd-openssl-")) / "openssl-gost.cnf"
    conf.write_text(_CONF)
    return {**os.environ, "OPENSSL_CONF": str(conf)}


def run(
    *args: str | os.PathLike, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``openssl ARGS`` with the GOST engine loaded; raise with stderr when it fails and ``check``."""
    proc = subprocess.run(
        ["openssl", *map(str, args)], input=input, capture_output=True, env=_env(), timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"openssl {' '.join(map(str, args))} failed: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def genkey(path: Path, paramset: str) -> Path:
    run("genpkey", "-algorithm", "gost2012_256", "-pkeyopt", f"paramset:{paramset}", "-out", path)
    return path


def self_signed(key: Path, path: Path, subject: str = "/CN=Test Signer/O=Test", days: int = 30) -> Path:
    run(
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-md_gost12_256",
        "-subj",
        subject,
        "-utf8",
        "-days",
        str(days),
        "-out",
        path,
    )
    return path


def cms_sign(document: Path, cert: Path, key: Path, out: Path) -> bytes:
    run(
        "cms",
        "-sign",
        "-binary",
        "-cades",
        "-nosmimecap",
        "-md",
        "md_gost12_256",
        "-outform",
        "DER",
        "-in",
        document,
        "-signer",
        cert,
        "-inkey",
        key,
        "-out",
        out,
    )
    return out.read_bytes()


def cms_verify(signature: Path, document: Path, *, cafile: Path | None = None) -> bool:
    trust = ["-CAfile", cafile] if cafile else ["-noverify"]
    proc = run(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        signature,
        "-content",
        document,
        *trust,
        "-out",
        os.devnull,
        check=False,
    )
    return proc.returncode == 0


def dgst(data_path: Path, digest: str = "md_gost12_256") -> bytes:
    out = run("dgst", f"-{digest}", "-binary", data_path).stdout
    return out


def keypair(tmp: Path, paramset: str, subject: str = "/CN=Test Signer/O=Test") -> tuple[Path, Path]:
    """A fresh openssl key and self-signed certificate on ``paramset``: (key.pem, cert.pem)."""
    key = genkey(tmp / f"key-{paramset}.pem", paramset)
    return key, self_signed(key, tmp / f"cert-{paramset}.pem", subject)
