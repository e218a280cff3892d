"""Fault injection and the named scenarios of the РЭМД/ИПС emulator.

A :class:`Rule` says *what* goes wrong (``fault``) and *when* (filters). Filters combine with AND:
``operation`` (``registerDocument``, ``searchRegistryItem``, ``getRegistryItem``; None = any),
``local_uid``, ``message_id`` (compared normalised), ``nth`` (fire only on the nth request that passed
the other filters, 1-based), ``probability`` (drawn from the injector's seeded RNG) and ``times`` (fire
at most that many times). ``fault`` may be a tuple of kinds: the RNG picks one each time it fires.

Fault kinds on the synchronous exchange (the МИС's own HTTP request)::

    latency          answer normally after ``delay`` seconds
    http_error       HTTP ``status`` (default 503) with a short text body
    timeout          hold the connection ``delay`` seconds (past the client's timeout), then close it
    reset            close the connection with a TCP RST, no answer
    rate_limit       synchronous registerDocumentResponse status=error, code RATE_LIMIT
    refuse           synchronous registerDocumentResponse status=error with ``code`` (default VALIDATION_ERROR):
                     a refusal of РЭМД's first checks the emulator cannot make itself (a kind РЭМД has retired
                     that the shipped НСИ 1520 still shows in force, say); nothing is registered
    soap_fault       SOAP Fault soap:Server / SystemFault, detail code ``code`` (default INTERNAL_ERROR)
    malformed        HTTP 200 with a body that is not XML

``process=True`` on http_error/timeout/reset/malformed makes the emulator go on with the request
although the answer is lost: the МИС cannot tell, exactly as with a real network failure after ИПС
accepted the message (a correct client then sees a callback for an earlier MessageID).

Fault kinds on the asynchronous side (decided when the registerDocument — or, for the first three, the
getRegistryItem — arrives)::

    callback_lost          the registerDocumentResult (getRegistryItemResult) is never sent
    callback_duplicate     it is sent twice (two MessageIDs, same relatesToMessage)
    callback_late          it is sent ``delay`` seconds later than it would be
    callback_out_of_order  after the success, a stale error callback (RUNTIME_ERROR) for the same request
    callback_early         the whole async flow (file pull, checks, callback) runs before the sync answer
    reject                 the document is rejected with ``code`` (default VALIDATION_ERROR) after the file pull
                           (on N3's ``n3:AddMedRecord``: at once, as a RequestFault quoting the code)
    warn                   N3's ``n3:AddMedRecord`` only: taken, answered with a RequestWarning fault (``code``
                           in its text)

Scenarios (:data:`SCENARIOS`) are named sets of rules plus a few behaviours (rejections, outage).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from producer.ids import normalize_message_id
from services.remd.soap import RemdError

__all__ = [
    "ASYNC_FAULTS",
    "Decision",
    "FaultInjector",
    "Outage",
    "REJECTION_CODES",
    "Rule",
    "SCENARIOS",
    "SYNC_FAULTS",
    "Scenario",
    "rejection_for",
    "scenario",
]

#: the operations that register a document (N3's AddMedRecord takes only ``reject`` and ``warn`` of the
#: asynchronous kinds, registerDocument every one but ``warn``)
_REGISTRATIONS = ("registerDocument", "n3:AddMedRecord")
_N3_ONLY = ("warn",)
#: the asynchronous kinds getRegistryItem's answer on the callback takes
_REGISTRY_ANSWER_FAULTS = ("callback_lost", "callback_duplicate", "callback_late")
SYNC_FAULTS = ("latency", "http_error", "timeout", "reset", "rate_limit", "refuse", "soap_fault", "malformed")
ASYNC_FAULTS = (
    "callback_lost",
    "callback_duplicate",
    "callback_late",
    "callback_out_of_order",
    "callback_early",
    "reject",
    "warn",
)

#: real permanent РЭМД codes for checks the emulator cannot run itself (ФРМР, ФРМО, ГИП, НСИ look-ups)
REJECTION_CODES: tuple[tuple[str, str], ...] = (
    ("PERSON_NOT_FOUND", "Сотрудник со СНИЛС [..] не найден в ФРМР"),
    ("PERSON_POST_IN_FRMR_MISMATCH", "Должность сотрудника [..] не совпадает с должностью в ФРМР"),
    ("VALUE_MISMATCH_METADATA_AND_FRMR", "Данные сотрудника [..] не совпадают с данными ФРМР"),
    ("PATIENT_MPI_MISMATCH", "Данные пациента отличаются от записи ГИП с локальным идентификатором [..]"),
    ("POSITION_TO_ROLE_MISMATCH", "Должность [..] несовместима с ролью [..]"),
    ("INVALID_ELEMENT_VALUE_NAME", "Наименование элемента [..] не соответствует справочнику OID [..]"),
)


def rejection_for(local_uid: str, *, rate: float = 0.1) -> RemdError | None:
    """The error the ``rejections`` scenario gives ``local_uid``, or None: a pure function of the id.

    sha256(localUid) decides: its first 8 bytes as a fraction of 2**64 below ``rate`` → rejected, and the
    next byte picks the code, so a МИС team can predict (and test) exactly which documents fail.
    """
    digest = hashlib.sha256(local_uid.encode("utf-8")).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 >= rate:
        return None
    code, message = REJECTION_CODES[digest[8] % len(REJECTION_CODES)]
    return RemdError(code=code, message=message)


@dataclass(slots=True)
class Rule:
    """One fault-injection rule (fields: module docstring). Build from JSON with :meth:`from_json`."""

    fault: str | tuple[str, ...]
    operation: str | None = None
    local_uid: str | None = None
    message_id: str | None = None
    nth: int | None = None
    probability: float | None = None
    times: int | None = None
    delay: float = 2.0
    status: int = 503
    code: str | None = None
    process: bool = False
    # bookkeeping
    seen: int = field(default=0, repr=False)
    fired: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        kinds = (self.fault,) if isinstance(self.fault, str) else tuple(self.fault)
        unknown = [k for k in kinds if k not in SYNC_FAULTS + ASYNC_FAULTS]
        if not kinds or unknown:
            raise ValueError(
                f"unknown fault kind(s) {unknown or kinds}; known: {', '.join(SYNC_FAULTS + ASYNC_FAULTS)}"
            )
        self.fault = kinds[0] if len(kinds) == 1 else kinds
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth counts from 1")

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.fault,) if isinstance(self.fault, str) else self.fault

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        """A rule from its JSON form (same field names; ``fault`` a string or a list); unknown keys refused."""
        names = {f.name for f in fields(cls)} - {"seen", "fired"}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if isinstance(data.get("fault"), list):
            data["fault"] = tuple(data["fault"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["fault"] = list(self.kinds) if len(self.kinds) > 1 else self.kinds[0]
        return out


@dataclass(slots=True)
class Decision:
    """What the injector decided for one request: at most one synchronous fault, any async ones."""

    sync: Rule | None = None
    sync_kind: str | None = None
    callbacks: dict[str, Rule] = field(default_factory=dict)  # async kind → the rule that asked for it

    @property
    def kinds(self) -> list[str]:
        return ([self.sync_kind] if self.sync_kind else []) + list(self.callbacks)


class FaultInjector:
    """Holds the rules and the seeded RNG; ``decide`` is called once per incoming request."""

    def __init__(self, rules: Iterable[Rule] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = list(rules)
        self._rng = random.Random(seed)
        self.seed = seed

    def add(self, rules: Iterable[Rule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def replace(self, rules: Iterable[Rule], *, seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._rng = random.Random(seed)
                self.seed = seed

    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def decide(self, *, operation: str, message_id: str | None, local_uid: str | None) -> Decision:
        decision = Decision()
        mid = normalize_message_id(message_id) if message_id else None
        with self._lock:
            for rule in self._rules:
                if rule.operation is not None and rule.operation != operation:
                    continue
                if rule.local_uid is not None and rule.local_uid != local_uid:
                    continue
                if rule.message_id is not None and normalize_message_id(rule.message_id) != mid:
                    continue
                rule.seen += 1
                if rule.nth is not None and rule.seen != rule.nth:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                kind = rule.kinds[0] if len(rule.kinds) == 1 else self._rng.choice(rule.kinds)
                if kind in ASYNC_FAULTS:
                    if not _takes(operation, kind) or kind in decision.callbacks:
                        continue
                    decision.callbacks[kind] = rule
                elif decision.sync is None:
                    decision.sync, decision.sync_kind = rule, kind
                else:
                    continue
                rule.fired += 1
        return decision


def _takes(operation: str, kind: str) -> bool:
    """Whether ``operation`` has an asynchronous side ``kind`` can act on."""
    if operation == "getRegistryItem":
        return kind in _REGISTRY_ANSWER_FAULTS
    if operation == "registerDocument":
        return kind not in _N3_ONLY
    return operation in _REGISTRATIONS and kind in ("reject", *_N3_ONLY)


class Outage:
    """The ``outage`` scenario's clock: down for ``seconds`` from start or from the first request."""

    def __init__(self, *, seconds: float, start: str = "first-request", mode: str = "503") -> None:
        if start not in ("start", "first-request"):
            raise ValueError("outage start must be 'start' or 'first-request'")
        if mode not in ("503", "refused"):
            raise ValueError("outage mode must be '503' or 'refused'")
        self.seconds, self.start, self.mode = seconds, start, mode
        self._began: float | None = time.monotonic() if start == "start" else None
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Start the clock now (server start for ``start``, first request for ``first-request``)."""
        with self._lock:
            if self._began is None:
                self._began = time.monotonic()

    def restart(self) -> None:
        with self._lock:
            self._began = time.monotonic() if self.start == "start" else None

    def down(self) -> bool:
        with self._lock:
            return self._began is not None and time.monotonic() - self._began < self.seconds

    def remaining(self) -> float:
        with self._lock:
            if self._began is None:
                return self.seconds
            return max(0.0, self.seconds - (time.monotonic() - self._began))


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named behaviour: its rules, and the rejection rate / outage it adds (if any)."""

    name: str
    description: str
    rules: Sequence[Rule] = ()
    rejection_rate: float = 0.0
    outage: bool = False
    variants: bool = False  #: messages to the МИС in every shape real ИПС traffic shows


def _flaky() -> list[Rule]:
    return [
        # a fifth of all МИС → РЭМД calls fail transiently; the kinds are drawn from the seeded RNG
        Rule(
            fault=("latency", "http_error", "reset", "rate_limit", "soap_fault", "malformed"),
            probability=0.17,
            delay=2.0,
        ),
        # a timeout holds the connection past a usual 30 s client timeout (stop() interrupts the hold)
        Rule(fault="timeout", probability=0.03, delay=35.0),
        # some answers are lost after ИПС took the message: the МИС must cope with a callback it did not expect
        Rule(
            fault=("http_error", "timeout", "reset"),
            operation="registerDocument",
            probability=0.05,
            process=True,
            delay=3.0,
        ),
        Rule(
            fault=("callback_duplicate", "callback_late", "callback_early"),
            operation="registerDocument",
            probability=0.2,
            delay=2.0,
        ),
    ]


def _chaos() -> list[Rule]:
    return [
        Rule(fault="callback_lost", operation="registerDocument", probability=0.1),
        Rule(fault="callback_duplicate", operation="registerDocument", probability=0.2),
        Rule(fault="callback_early", operation="registerDocument", probability=0.15),
        Rule(fault="callback_late", operation="registerDocument", probability=0.2, delay=3.0),
        Rule(fault="callback_out_of_order", operation="registerDocument", probability=0.15),
    ]


def scenario(name: str) -> Scenario:
    """A fresh Scenario (rules carry counters, so each emulator gets its own copies)."""
    factories = {
        "ok": lambda: Scenario(
            "ok", "everything works: every valid document is registered and called back once"
        ),
        "flaky": lambda: Scenario(
            "flaky",
            "about 20 % of calls fail transiently (latency, 5xx, timeouts, resets, RATE_LIMIT, "
            "SOAP faults, malformed XML; duplicated/late/early callbacks) — never a permanent error",
            rules=_flaky(),
        ),
        "rejections": lambda: Scenario(
            "rejections",
            "about one document in ten is rejected with a real permanent code, chosen by "
            "sha256(localUid) (see faults.rejection_for)",
            rejection_rate=0.1,
        ),
        "outage": lambda: Scenario(
            "outage",
            "down (HTTP 503 or connection refused) for --outage-seconds from start or from the first "
            "request, then back to ok",
            outage=True,
        ),
        "ips-variants": lambda: Scenario(
            "ips-variants",
            "every registration's file request and callback in another of the shapes real ИПС "
            "traffic shows (SOAP 1.1/1.2, unprefixed WS-Addressing, both anonymous URIs, MessageID "
            "spellings, kind forms, registrationDate(Time), warnings), and each registered document "
            "asked for again later by its emdrId (lab/emulator/variants.py)",
            variants=True,
        ),
        "callback-chaos": lambda: Scenario(
            "callback-chaos",
            "callbacks lost (10 %), duplicated (20 %), before the sync answer (15 %), late "
            "(20 %) and followed by a stale error callback (15 %)",
            rules=_chaos(),
        ),
    }
    if name not in factories:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(factories)}")
    return factories[name]()


#: scenario names in the order ``--list-scenarios`` prints them
SCENARIOS = ("ok", "flaky", "rejections", "outage", "callback-chaos", "ips-variants")
