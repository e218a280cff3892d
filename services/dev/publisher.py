"""The МИС of ``emd bench``: a child process that publishes generated documents through the producer library.

It is its own process so that its CPU time (``services.dev.procstat``) is the producer library's alone, apart
from the bench's watcher. It reads one JSON command per line on stdin, ``{"count": N, "rate": R}``, publishes
N documents made from the samples (each a fresh localUid, created now) at R per second (0: as fast as the
library goes, each publish waiting for the broker's acknowledgement as a МИС does), and answers one JSON line
on stdout: ``{"uids": [...], "cpu_seconds": C, "seconds": S}``. ``C`` is the process's CPU time spent inside
``DocumentPublisher.publish`` (checks, claim-check, JSON, the Kafka client and its I/O thread), not in making
the documents, which is the bench's own work. End of input ends it.

    python -m services.dev.publisher BOOTSTRAP DATA_DIR SAMPLES [--inline-limit BYTES]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from services.dev.local_pipeline import as_new_document, sample_documents


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.dev.publisher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", help="Kafka bootstrap servers")
    p.add_argument("data_dir", type=Path, help="the pipeline's data directory (claim-check documents)")
    p.add_argument("samples", type=Path, help="folder of СЭМД to generate documents from")
    p.add_argument("--inline-limit", type=int, default=None, help="the producer's inline limit (default EMD_INLINE_DOCUMENT_LIMIT)")
    args = p.parse_args(argv)

    from producer.client import DocumentPublisher
    from services.config import Settings
    from services.documents.store import FilesystemStore
    from services.logs import configure

    configure(fmt="json", level="warning")
    templates = [data for _, data in sample_documents(args.samples, None, registrable_only=True)[0]]
    store = FilesystemStore(args.data_dir / "documents")
    limit = Settings.from_env().inline_document_limit if args.inline_limit is None else args.inline_limit
    made = 0
    with DocumentPublisher(args.bootstrap, store=store, system_id="emd-bench", inline_limit=limit) as publisher:
        for line in sys.stdin:
            if not line.strip():
                break
            command = json.loads(line)
            count, rate = int(command["count"]), float(command.get("rate") or 0)
            uids, cpu, started = [], 0.0, time.monotonic()
            for i in range(count):
                if rate > 0:
                    wait = started + i / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                document = as_new_document(templates[made % len(templates)])
                made += 1
                before = time.process_time()
                uids.append(publisher.publish(document).local_uid)
                cpu += time.process_time() - before
            print(json.dumps({"uids": uids, "cpu_seconds": cpu, "seconds": time.monotonic() - started}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
