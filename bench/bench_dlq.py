"""`emd dlq list` on 50,000 dead letters: the whole command (read the three DLT topics, filter, newest first, JSON)
and the in-memory query alone (what the console does per page).

A broker of its own (Tansu, loopback) gets 50,000 dead letters written with the pipeline's own header builder
(``services.messaging.deadletter.dead_letter_headers``) over the three dead-letter topics. Figures: CPU seconds
of the `emd dlq list --json` process (user + system, so the machine's other load does not count) and its
wall time, CPU µs per dead letter, and the CPU of one filtered, sorted query over the loaded list.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COUNT = int(os.environ.get("BENCH_DLQ_COUNT", "50000"))
CODES = ("PERSON_NOT_FOUND", "PATIENT_MPI_MISMATCH", "POSITION_TO_ROLE_MISMATCH", "RETRIES_EXHAUSTED")


def produce(bootstrap: str, count: int) -> None:
    from kafka import KafkaProducer

    from producer import topology
    from services.messaging import deadletter as dl

    topics = [t.name for t in topology.DEAD_LETTER_TOPICS]
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    now = time.time()
    for i in range(count):
        uid = f"bench{i:015d}"
        failure = dl.Failure(
            stage=("signer", "sender", "status")[i % 3],
            reason="REMD_REJECTED",
            message="rejected",
            exception_fqcn="producer.errors.PermanentError",
            remd_code=CODES[i % len(CODES)],
            remd_message="Сотрудник со СНИЛС [..] не найден в ФРМР",
            category="data",
            hint="Проверить данные сотрудника в ФРМР",
            message_ids=(f"{i:08x}-0000-4000-8000-000000000000",),
            local_uid=uid,
            kind="119",
            organization=f"1.2.643.5.1.13.13.12.2.77.{9000 + i % 50}",
        )
        headers = dl.dead_letter_headers(
            original_headers={"emd-event-type": b"emd.document.signed"},
            topic="emd.document.signed",
            partition=0,
            offset=i,
            timestamp_ms=int(now * 1000),
            consumer_group="emd-sender",
            failure=failure,
        )
        value = json.dumps(
            {
                "type": "emd.document.signed",
                "data": {"localUid": uid, "systemId": "dental-mis-01", "kind": "119"},
            }
        ).encode()
        p.send(topics[i % 3], key=uid.encode(), value=value, headers=headers)
    p.flush()
    p.close()


def main() -> int:
    from lab.broker import LocalBroker
    from producer.topology import DEAD_LETTER_TOPICS, ensure_topics
    from services.desk import reader
    from services.desk.deadletters import Filters, newest_first

    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=Path(tmp) / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=3)
        t0 = time.perf_counter()
        produce(broker.bootstrap_servers, COUNT)
        print(f"wrote {COUNT} dead letters in {time.perf_counter() - t0:.1f} s")

        env = {**os.environ, **broker.client_env(), "EMD_DATA_DIR": tmp}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "dlq", "list", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        lines = out.stdout.count("\n")
        assert out.returncode == 0 and lines == COUNT, (out.returncode, lines, out.stderr[-500:])
        print(
            f"emd dlq list --json, {lines} dead letters: {cpu:.1f} s CPU ({cpu / lines * 1e6:.0f} µs per dead "
            f"letter), {wall:.1f} s wall (of which ~3 s is the quiet period that ends a read)"
        )

        letters = reader.read_all(
            {"bootstrap_servers": broker.bootstrap_servers}, [t.name for t in DEAD_LETTER_TOPICS]
        )
        c0 = time.process_time()
        found = newest_first(letters, Filters(code="PERSON_NOT_FOUND", stage="sender"), limit=500)
        query = time.process_time() - c0
        c0 = time.process_time()
        everything = newest_first(letters)
        sort_all = time.process_time() - c0
        print(
            f"in memory ({len(letters)} loaded): filtered query (code+stage, newest 500) {query * 1000:.0f} ms CPU "
            f"({len(found)} shown); all, newest first {sort_all * 1000:.0f} ms CPU ({len(everything)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
