"""The runtime loses nothing when its worker is killed with SIGKILL over and over during a backlog, on either
Kafka client (``EMD_KAFKA_CLIENT``: aiokafka as deployed, and librdkafka)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaProducer

from producer.topology import Topic, ensure_topics
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 6000
KILLS = 6


def _start(broker, names, tmp_path, client):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", broker.bootstrap_servers, *names, str(tmp_path)],
        cwd=os.path.dirname(os.path.dirname(__file__)),
        env={**os.environ, "EMD_KAFKA_CLIENT": client},
    )


@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_every_input_has_an_output_after_repeated_kill_9(broker, tmp_path, client):
    """Six SIGKILLs at random moments while 6,000 records flow leave no input without its output."""
    run = uuid.uuid4().hex[:8]
    names = [f"crash.{run}.in", f"crash.{run}.out", f"crash.{run}.dlt", f"crash-{run}"]
    ensure_topics(
        broker.bootstrap_servers, partitions=6, topics=tuple(Topic(n, "crash test") for n in names[:3])
    )
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=True)
    for n in range(RECORDS):
        producer.send(names[0], key=f"doc-{n}".encode(), value=json.dumps({"n": n}).encode())
    producer.flush()
    producer.close()

    rng = random.Random(run)
    kills = 0
    worker = _start(broker, names, tmp_path, client)
    try:
        while kills < KILLS:
            # Long enough to join the group (~3 s here) and get through part of the backlog.
            time.sleep(rng.uniform(3.5, 7.0))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            if kills == KILLS:
                # The kills must have landed mid-backlog, or this test proves nothing.
                done_at_last_kill = len(read_all(broker.bootstrap_servers, names[1], idle=1))
            worker = _start(broker, names, tmp_path, client)
        outputs = read_all(broker.bootstrap_servers, names[1], expect=RECORDS, timeout=240, idle=3)
    finally:
        worker.terminate()
        worker.wait(30)

    seen = {json.loads(r.value)["n"] for r in outputs}
    missing = sorted(set(range(RECORDS)) - seen)
    assert kills == KILLS
    assert done_at_last_kill < RECORDS
    assert missing == [], f"{len(missing)} inputs without output, e.g. {missing[:10]}"
    assert read_all(broker.bootstrap_servers, names[2], idle=1) == []
