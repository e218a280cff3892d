"""The МИС of ``emd bench``: a child process that publishes generated documents through the producer library.

It is its own process so that its CPU time (``lab.dev.procstat``) is the producer library's alone, apart
from the bench's watcher. It reads one JSON command per line on stdin, ``{"count": N, "rate": R}``, publishes
N documents made from the samples (each a fresh localUid, created now) at R per second (0: as fast as the
library goes), and answers one JSON line on stdout: ``{"uids": [...], "cpu_seconds": C, "seconds": S}``.
Each publish waits for the broker's acknowledgement, as a МИС does, so ``--threads`` publish at once (one
``DocumentPublisher``, which is thread-safe), as a МИС with several users does. ``C`` is the process's CPU
time less the time spent making the documents (the bench's own work, not the library's): the checks,
claim-check, JSON, the Kafka client and its I/O thread. End of input ends it.

    python -m lab.dev.publisher BOOTSTRAP DATA_DIR SAMPLES [--inline-limit BYTES] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.dev.local_pipeline import as_new_document, sample_documents


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lab.dev.publisher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bootstrap", help="Kafka bootstrap servers")
    p.add_argument("data_dir", type=Path, help="the pipeline's data directory (claim-check documents)")
    p.add_argument("samples", type=Path, help="folder of СЭМД to generate documents from")
    p.add_argument(
        "--inline-limit",
        type=int,
        default=None,
        help="the producer's inline limit (default EMD_INLINE_DOCUMENT_LIMIT)",
    )
    p.add_argument("--threads", type=int, default=8, help="publishes in flight at once (default 8)")
    args = p.parse_args(argv)

    from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
    from producer.client import DocumentPublisher
    from services.config import Settings
    from services.documents.store import FilesystemStore
    from services.logs import configure

    configure(fmt="json", level="warning")
    templates = [data for _, data in sample_documents(args.samples, None)[0]]
    store = FilesystemStore(args.data_dir / "documents")
    limit = Settings.from_env().inline_document_limit if args.inline_limit is None else args.inline_limit
    made = 0
    ahead = threading.Semaphore(2 * max(1, args.threads))
    with (
        DocumentPublisher(
            args.bootstrap, mis_id=DEV_MIS_ID, store=store, system_id=DEV_SYSTEM_IDS[0], inline_limit=limit
        ) as publisher,
        ThreadPoolExecutor(max(1, args.threads)) as pool,
    ):
        for line in sys.stdin:
            if not line.strip():
                break
            command = json.loads(line)
            count, rate = int(command["count"]), float(command.get("rate") or 0)
            started, cpu0, making = time.monotonic(), time.process_time(), 0.0
            futures = []
            for i in range(count):
                if rate > 0:
                    wait = started + i / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                before = time.thread_time()
                document = as_new_document(templates[made % len(templates)])
                making += time.thread_time() - before
                made += 1
                ahead.acquire()  # never more than a few documents made ahead of the publishes
                futures.append(pool.submit(publisher.publish, document))
                futures[-1].add_done_callback(lambda _: ahead.release())
            uids = [f.result().local_uid for f in futures]
            cpu = time.process_time() - cpu0 - making
            print(
                json.dumps({"uids": uids, "cpu_seconds": cpu, "seconds": time.monotonic() - started}),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
