"""A stage used by the runtime's crash test: copies each input to an output topic, with a little work.

Run: ``python -m tests.crash_worker BOOTSTRAP INPUT OUTPUT DLT NAME DATA_DIR`` (the stage's name; its consumer
group is ``emd-NAME``), as ``emd worker`` runs a worker: an ``App`` with SIGTERM handled. The handler sleeps tens of
milliseconds per record (about 200 records/s in all), so the backlog outlasts the kills and every kill -9 lands
while records are in flight: fetched, some finished out of order, none committed past an unfinished one.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys

from services.config import Settings
from services.logs import configure
from services.messaging.app import App
from services.messaging.records import Output, Record
from services.messaging.runtime import Stage


def build(bootstrap: str, input_topic: str, output_topic: str, dlt: str, name: str, data_dir: str) -> App:
    settings = Settings.from_env(
        kafka_bootstrap_servers=bootstrap,
        worker_concurrency=8,
        kafka_enable_idempotence=False,
        data_dir=data_dir,
        shutdown_grace_seconds=5.0,
    )

    async def handle(record: Record) -> list[Output]:
        n = json.loads(record.value)["n"]
        await asyncio.sleep(random.uniform(0.01, 0.07))
        return [Output(output_topic, {"n": n, "pid": os.getpid(), "offset": record.offset}, key=record.key)]

    stage = Stage(
        name=name, input_topic=input_topic, handler=handle, dead_letter_topic=dlt, settings=settings
    )
    return App(name, settings, [stage], serve_metrics=False)


if __name__ == "__main__":
    configure(level="warning")
    asyncio.run(build(*sys.argv[1:7]).run())
