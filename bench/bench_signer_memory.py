"""The signer's memory on one large СЭМД: peak resident set of `emd worker signer` signing a ~10 MB document.

A broker of its own (Tansu, loopback), the development configuration of the document's clinic, the document
(ConsultRedaction4 with a ~7.7 MB PDF inside, ~10.3 MB of XML) published through the МИС library by claim-check
reference, then `emd worker signer` started as a process of its own and left to sign it. Its process tree is
sampled every 20 ms (``lab.dev.procstat``: ``VmRSS`` of each process, ``VmHWM`` at the end), before the
document (the idle signer, its schemas loaded lazily) and while it signs. Figures, per signing mode
(``EMD_SIGNER_PROCESSES``: 1 signs in a thread of the signer, 2 in a pool of processes), in MB: the largest
process's peak, the tree's largest sum, and the idle figures, so the cost of the document itself shows.

    .venv/bin/python bench/bench_signer_memory.py [--processes 1 2] [--size-mb 10]

Measured, not asserted: the figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HL7 = "urn:hl7-org:v3"


def big_document(size_mb: float) -> bytes:
    """ConsultRedaction4 under a fresh localUid, dated now, with a base64 "PDF" of about ``size_mb`` MB inside."""
    from lxml import etree

    from lab.dev.local_pipeline import as_new_document
    from lab.dev.samples import REPOSITORY_SAMPLES
    from producer.xmlsafe import parse_xml

    root = parse_xml(as_new_document((REPOSITORY_SAMPLES / "ConsultRedaction4.xml").read_bytes()))
    section = next(s for s in root.iter(f"{{{HL7}}}section") if s.find(f"{{{HL7}}}component") is None)
    entry = etree.SubElement(section, f"{{{HL7}}}entry")
    media = etree.SubElement(entry, f"{{{HL7}}}observationMedia", classCode="OBS", moodCode="EVN")
    value = etree.SubElement(media, f"{{{HL7}}}value", mediaType="application/pdf", representation="B64")
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * int(size_mb * 1_000_000 * 3 / 4 / 256)
    value.text = base64.b64encode(pdf).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(largest VmRSS of one process, sum of VmRSS) of ``pid`` and its descendants, in MB."""
    from lab.dev import procstat

    each = [procstat._memory(p)[0] for p in (pid, *procstat.descendants(pid))]
    return max(each, default=0.0), sum(each)


def peak_hwm_mb(pid: int) -> float:
    """The largest VmHWM (peak resident set) of one process of the tree, in MB."""
    from lab.dev import procstat

    return max(procstat._memory(p)[1] for p in (pid, *procstat.descendants(pid)))


def measure(processes: int, size_mb: float, workdir: Path) -> dict[str, float | int]:
    from lab.broker import LocalBroker
    from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS, write_dev_config
    from producer import cda, events, topology
    from producer.client import DocumentPublisher
    from producer.xmlsafe import parse_xml
    from services.documents.store import FilesystemStore
    from tests.kafka_helpers import read_all

    document = big_document(size_mb)
    meta = cda.extract(parse_xml(document))
    config = write_dev_config(
        workdir / "config",
        oids=[meta.organization_oid],
        doctors=sorted({s.snils for s in meta.signers if s.snils}),
    )
    raw = json.loads(config.read_text(encoding="utf-8"))
    raw["max_document_bytes"] = 64 * 1024 * 1024
    config.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    data_dir = workdir / "data"
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        topology.ensure_topics(broker.bootstrap_servers, partitions=1, mis_ids=(DEV_MIS_ID,))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("EMD_", "KAFKA_"))},
            **broker.client_env(),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "EMD_ORGANIZATIONS": str(config),
            "EMD_DATA_DIR": str(data_dir),
            "EMD_SIGNER_PROCESSES": str(processes),
            "EMD_MAX_DOCUMENT_BYTES": str(64 * 1024 * 1024),
            "EMD_LOG_LEVEL": "warning",
            "EMD_METRICS_PORT": "0",
        }
        signer = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "signer"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        try:
            time.sleep(8)  # started, joined its group, pool processes up
            idle_max, idle_sum = tree_rss_mb(signer.pid)
            store = FilesystemStore(data_dir / "documents")
            with DocumentPublisher(
                broker.bootstrap_servers,
                mis_id=DEV_MIS_ID,
                system_id=DEV_SYSTEM_IDS[0],
                store=store,
                max_bytes=64 * 1024 * 1024,
            ) as publisher:
                published = publisher.publish(document)
            peak_max, peak_sum = idle_max, idle_sum
            started, signed = time.monotonic(), None
            while signed is None and time.monotonic() - started < 600:
                one, total = tree_rss_mb(signer.pid)
                peak_max, peak_sum = max(peak_max, one), max(peak_sum, total)
                if signer.poll() is not None:
                    raise SystemExit(f"the signer exited: {signer.stderr.read().decode()[-2000:]}")
                for r in read_all(broker.bootstrap_servers, topology.SIGNED.name, idle=0.02):
                    if events.decode(r.value)["data"]["localUid"] == published.local_uid:
                        signed = time.monotonic() - started
                time.sleep(0.02)
            hwm = peak_hwm_mb(signer.pid)
        finally:
            signer.terminate()
            signer.wait(60)
    if signed is None:
        raise SystemExit("the document was not signed within 600 s")
    return {
        "processes": processes,
        "document_mb": round(len(document) / 1_000_000, 1),
        "idle_largest_mb": round(idle_max),
        "idle_tree_mb": round(idle_sum),
        "peak_largest_mb": round(max(peak_max, hwm)),
        "peak_tree_mb": round(peak_sum),
        "seconds": round(signed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="signing modes (default 1 2)"
    )
    parser.add_argument("--size-mb", type=float, default=10.0, help="the document's size in MB (default 10)")
    args = parser.parse_args(argv)
    for processes in args.processes:
        with tempfile.TemporaryDirectory(prefix="emd-signer-memory-") as tmp:
            print(json.dumps(measure(processes, args.size_mb, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
