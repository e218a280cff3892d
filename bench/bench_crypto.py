"""Crypto throughput on one core: CAdES sign/verify of a 50 KB document, raw 34.10, Streebog.

    .venv/bin/python bench/bench_crypto.py [--seconds 3] [--size 51200]

Single process, single thread: the figure is per core. Results go to ``docs/benchmarks.md`` ("Crypto").
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from lab.dev import pki as devpki
from services.crypto import cades, gost, native


def rate(fn, seconds: float) -> float:
    fn()  # warm-up (tables, caches)
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    ap.add_argument("--size", type=int, default=50 * 1024, help="document size in bytes (default 51200)")
    ap.add_argument("--paramset", default="A", help="openssl paramset name (default A = CryptoPro-A)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, honestly

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"Python {platform.python_version()}, pinned to one core; Streebog in "
        f"{'OpenSSL gostprov' if gost.FAST_STREEBOG else 'pure Python (gostcrypto)'}"
    )
    ca = devpki.DevCA.create(paramset=args.paramset)
    key, cert = ca.issue(subject=devpki.SubjectInfo("Bench", "Mark"))
    doc = (b"<ClinicalDocument>" + os.urandom(args.size // 2).hex().encode())[: args.size]
    sig = cades.sign_detached(doc, key=key, certificate=cert)
    s = args.seconds
    print(
        f"CAdES-BES sign,   {len(doc)} B document: {rate(lambda: cades.sign_detached(doc, key=key, certificate=cert), s):8.0f} /s"
    )
    print(
        f"CAdES-BES verify, {len(doc)} B document: {rate(lambda: cades.verify_detached(doc, sig), s):8.0f} /s"
    )
    digest = gost.streebog256(doc)
    raw = key.sign_digest(digest)
    pub = key.public_key()
    print(
        f"34.10-2012 256 sign   (OpenSSL engine):   {rate(lambda: native.sign_digest(key, digest), s):8.0f} /s"
    )
    print(
        f"34.10-2012 256 verify (OpenSSL engine):   {rate(lambda: native.verify_digest(pub, digest, raw), s):8.0f} /s"
    )
    print(
        f"34.10-2012 256 sign   (fast path):        {rate(lambda: key.sign_digest_in_python(digest), s):8.0f} /s"
    )
    print(
        f"34.10-2012 256 verify (fast path):        {rate(lambda: pub.verify_digest_in_python(digest, raw), s):8.0f} /s"
    )
    print(
        f"34.10-2012 256 sign   (gostcrypto):       {rate(lambda: gost.reference_sign(key, digest), s):8.1f} /s"
    )
    print(
        f"34.10-2012 256 verify (gostcrypto):       {rate(lambda: gost.reference_verify(pub, digest, raw), s):8.1f} /s"
    )
    k512 = gost.PrivateKey.generate(gost.CURVES["tc26-512-A"])
    d512 = gost.streebog512(doc)
    r512 = k512.sign_digest(d512)
    p512 = k512.public_key()
    print(
        f"34.10-2012 512 sign   (OpenSSL engine):   {rate(lambda: native.sign_digest(k512, d512), s):8.0f} /s"
    )
    print(
        f"34.10-2012 512 verify (OpenSSL engine):   {rate(lambda: native.verify_digest(p512, d512, r512), s):8.0f} /s"
    )
    print(
        f"34.10-2012 512 sign   (fast path):        {rate(lambda: k512.sign_digest_in_python(d512), s):8.0f} /s"
    )
    print(
        f"34.10-2012 512 verify (fast path):        {rate(lambda: p512.verify_digest_in_python(d512, r512), s):8.0f} /s"
    )
    mb = len(doc) / 1e6
    print(
        f"Streebog-256 (active path):               {rate(lambda: gost.streebog256(doc), s) * mb:8.1f} MB/s"
    )
    print(
        f"Streebog-256 (gostcrypto fallback):       {rate(lambda: gost.Streebog(256, doc[:4096], fallback=True).digest(), s) * 4096 / 1e6:8.2f} MB/s"
    )


if __name__ == "__main__":
    main()
