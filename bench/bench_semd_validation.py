"""Benchmark: СЭМД validation per kind (compile once, then documents per second), on the Ministry examples.

    .venv/bin/python bench/bench_semd_validation.py [--repeat N]

Prints, per kind: schema load + Schematron compile time, then the mean time of XSD and of
Schematron per document over N runs (the signer validates every document, so the second number
is what matters).
"""

from __future__ import annotations

import argparse
import time

from lxml import etree

from lab.dev.samples import REPOSITORY_SAMPLES
from services import logs

SAMPLES = REPOSITORY_SAMPLES
CASES = [
    ("119", "ConsultRedaction4"),
    ("58", "DeathCertificate"),
    ("76", "BirthCertificate"),
    ("191", "MedExamination"),
    ("101", "WorkAtHeightCertificate"),
    ("147", "EpicrisisV5"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    logs.configure(level="warning")
    # imported after configure(): a module-level structlog logger binds the configuration it sees
    from services.documents import validation as sv

    print(f"{'kind':>5} {'example':26} {'KB':>5} {'compile s':>10} {'XSD ms':>8} {'Schematron ms':>14}")
    for kind, name in CASES:
        data = (SAMPLES / f"{name}.xml").read_bytes()
        root = etree.fromstring(data)
        t0 = time.perf_counter()
        sv.preload([kind])
        compile_s = time.perf_counter() - t0
        xsd = sch = 0.0
        for _ in range(args.repeat):
            t = time.perf_counter()
            sv.validate_semd(root, kind, schematron=False)
            xsd += time.perf_counter() - t
            t = time.perf_counter()
            sv.validate_semd(root, kind)
            sch += time.perf_counter() - t
        per_xsd = xsd / args.repeat * 1000
        per_sch = sch / args.repeat * 1000 - (per_xsd if sv.has_xsd(kind) else 0)
        print(
            f"{kind:>5} {name:26} {len(data) // 1024:>5} {compile_s:>10.2f} {per_xsd:>8.1f} {per_sch:>14.1f}"
        )


if __name__ == "__main__":
    main()
