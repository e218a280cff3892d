"""A stage's health: is its poll loop turning, are its periodic jobs succeeding, has it joined its group.

Liveness (``/healthz``, the heartbeat ``emd worker NAME --check`` reads) fails when the poll loop has not
turned for ``max_idle`` seconds or a periodic job has not succeeded for its ``max_age``: a restart may help.
Kafka or РЭМД being down is not a reason to restart, so neither is part of it. Readiness (``/readyz``) is
liveness and having joined the consumer group, so a rolling update waits for the new pod to take partitions.

``combine`` joins the checks of a process's services into one answer (``services.messaging.app``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

Check = tuple[bool, str]


class StageHealth:
    """What a stage's liveness and readiness are made of.

    :param max_idle: seconds without a poll before the stage counts as stalled (``EMD_HEALTH_MAX_IDLE_SECONDS``).
    :param jobs: each periodic job's name and the age of its last success after which it counts as failing.
    :param clock: epoch seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        max_idle: float,
        jobs: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_idle = max_idle
        self.jobs = dict(jobs or {})
        self.clock = clock
        self.last_poll = clock()
        self.joined = False
        # a job not started yet is not failing; its start counts as a success (its first run is one interval away)
        self._succeeded: dict[str, float] = {}

    def polled(self) -> None:
        """The poll loop turned."""
        self.last_poll = self.clock()

    def job_succeeded(self, name: str) -> None:
        self._succeeded[name] = self.clock()

    def liveness(self, *, in_flight: int) -> Check:
        now = self.clock()
        age = now - self.last_poll
        ok = age < self.max_idle
        lines = [f"{'ok' if ok else 'stalled'}: last poll {age:.1f}s ago, in flight {in_flight}"]
        for name, max_age in self.jobs.items():
            job_age = now - self._succeeded.get(name, now)
            fresh = job_age < max_age
            ok = ok and fresh
            lines.append(f"{name}: {'ok' if fresh else 'failing'}, last success {job_age:.1f}s ago")
        return ok, "\n".join(lines) + "\n"

    def readiness(self, *, in_flight: int) -> Check:
        if not self.joined:
            return False, "not ready: has not joined the consumer group yet\n"
        return self.liveness(in_flight=in_flight)


def combine(checks: Sequence[tuple[str, Check]]) -> Check:
    """One check of several services: ok when all are; each line named by its service when there are several."""
    if len(checks) == 1:
        return checks[0][1]
    ok = all(check[0] for _, check in checks)
    lines = [f"{name} {line}" for name, (_, text) in checks for line in text.splitlines()]
    return ok, "\n".join(lines) + "\n"
