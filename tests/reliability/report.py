"""What the whole-system run proves, read from what the system itself left: topics, РЭМД's registry, every log.

* every valid document is acknowledged, or dead-lettered with a reason (and its MessageIDs when it was sent);
  a dead letter of a valid document is *explained* only by РЭМД's own refusal: the one the emulator's
  ``rejections`` scenario predicts per localUid (``faults.rejection_for``) — as ``REMD_REJECTED`` with that
  code, or ``NO_ACKNOWLEDGMENT`` when the refusal's callback was lost too — or, for ``NO_ACKNOWLEDGMENT``, an
  error the emulator's log says it answered one of the document's MessageIDs with and never delivered (a
  lost callback; the file pull failed while the callback service was down): the poll then finds nothing;
* ``lost``: neither acknowledged nor dead-lettered; ``duplicated``: registered (or acknowledged with) more than
  one emdrId for one localUid;
* each bad input was refused where it entered with its expected reason, or dead-lettered by the expected
  stage with it (one РЭМД refuses: with that code, or ``NO_ACKNOWLEDGMENT`` when the emulator's log shows it
  answered with that code and never delivered the callback);
* no line of any log contains a СНИЛС, a name (in any spelling: capitals, without a patronymic, initials) or a
  birth date of the samples, key material, a secret setting with its value (``s3_secret_key``,
  ``key_password``, ``sasl_password``, a token…) or one of the run's own secrets (key passwords, N3 tokens,
  the console's password); JSON lines are decoded first (Cyrillic travels as \\u escapes).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.emulator.faults import rejection_for
from producer import topology
from producer.ids import normalize_message_id
from services.messaging import deadletter as dl
from tests.kafka_helpers import read_all
from tests.reliability.bad_inputs import Outcome, describe

if TYPE_CHECKING:
    from tests.reliability.harness import Evidence

#: key material and secrets, whatever the process: a PEM or DER key, and any setting whose name says password,
#: secret or token (s3_secret_key, key_password, sasl_password, n3 tokens…) shown with a value
SECRET_PATTERNS = [
    re.compile(p)
    for p in (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"MII[A-Za-z0-9+/]{60,}",
        r"(?i)password\s*[=:]\s*(?!\*|None|null|''|\"\")\S+",
        r"(?i)\b[\w.-]*(?:secret|passwd|token|private_?key)[\w.-]*\s*[=:]\s*(?!\*|None|null|''|\"\"|,|\s|$)\S+",
    )
]
#: dead letters produced after a document was sent: they must name the MessageIDs
SENT_STAGES = ("sender", "acknowledger")


@dataclass
class DeadLetter:
    stage: str
    reason: str
    remd_code: str | None
    message_ids: list[str]


@dataclass
class Result:
    documents: int
    kills: int
    lost: int
    duplicated: int
    unexplained: int
    leaked: int
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # check, outcome, detail
    problems: list[str] = field(default_factory=list)

    @property
    def last_line(self) -> str:
        return (
            f"documents={self.documents} kills={self.kills} lost={self.lost} duplicated={self.duplicated} "
            f"unexplained={self.unexplained} leaked_log_lines={self.leaked}"
        )

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexplained or self.leaked)

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'check':<{width}}  {'result':<8}  detail", "-" * (width + 40)]
        lines += [f"{check:<{width}}  {result:<8}  {detail}" for check, result, detail in self.rows]
        return "\n".join(lines)


def dead_letters(bootstrap: str) -> dict[str, list[DeadLetter]]:
    out: dict[str, list[DeadLetter]] = defaultdict(list)
    for topic in topology.DEAD_LETTER_TOPICS:
        for r in read_all(bootstrap, topic.name, idle=2.0):
            h = {k: v for k, v in r.headers or ()}
            key = r.key.decode("utf-8", "replace") if r.key else ""
            out[key].append(
                DeadLetter(
                    stage=(h.get(dl.STAGE) or b"").decode(),
                    reason=(h.get(dl.REASON) or b"").decode(),
                    remd_code=(h.get(dl.REMD_CODE) or b"").decode() or None,
                    message_ids=dl.split_ids(h.get(dl.MESSAGE_IDS)),
                )
            )
    return out


def acknowledged(bootstrap: str) -> dict[str, set[str]]:
    """localUid → the emdrIds it was acknowledged with."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in read_all(bootstrap, topology.ACKNOWLEDGED.name, idle=2.0):
        data = json.loads(r.value)["data"]
        out[data["localUid"]].add(data["registration"]["emdrId"])
    return out


def registrations(registry_file: Path) -> dict[tuple[str, str], set[str]]:
    """(organisation, localUid) → every emdrId РЭМД's registry (kept across its restarts) recorded."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    if registry_file.exists():
        for line in registry_file.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            out[(row["organization"], row["local_uid"])].add(row["emdr_id"])
    return out


def emulator_outcomes(log_file: Path) -> dict[str, dict[str, Any]]:
    """MessageID → how the emulator says it ended that registration ("registration done" lines of its log)."""
    out: dict[str, dict[str, Any]] = {}
    if log_file.exists():
        for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(event, dict)
                and event.get("event") == "registration done"
                and event.get("message_id")
            ):
                out[normalize_message_id(event["message_id"])] = event
    return out


def _silent_error(letter: DeadLetter, emulator: dict[str, dict[str, Any]], code: str | None = None) -> bool:
    """РЭМД answered one of the document's requests with an error (``code``, when given) it never delivered."""
    for mid in letter.message_ids:
        done = emulator.get(normalize_message_id(mid))
        if (
            done
            and done.get("outcome") == "error"
            and not any(done.get("callbacks") or ())
            and (code is None or code in (done.get("codes") or ()))
        ):
            return True
    return False


def _text(line: str) -> str:
    """A log line as a person would read it: JSON values decoded and joined."""
    try:
        data = json.loads(line)
    except ValueError:
        return line
    parts: list[str] = []

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, str(k))
        elif isinstance(v, list):
            for x in v:
                walk(x, key)
        else:
            parts.append(f"{key}={v}" if key else str(v))

    walk(data)
    return " ".join(parts)


def leaks(files: list[Path], sensitive: dict[str, set[str]]) -> list[str]:
    """``file:line: what`` for every log line showing patient data, key material or a password."""
    found = []
    for path in files:
        if not path.exists():
            continue
        for n, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            text = _text(raw)
            hits = [what for what, values in sensitive.items() if any(v in text for v in values)]
            hits += ["key or password" for p in SECRET_PATTERNS if p.search(text)]
            if hits:
                found.append(f"{path.name}:{n}: {', '.join(sorted(set(hits)))}")
    return found


def _matches(outcome: Outcome, expect: Outcome) -> bool:
    """An outcome at the entry: refused there, for the expected reason."""
    return outcome.kind == expect.kind == "refused" and outcome.reason.startswith(expect.reason)


def _judge(case, at_entry: Outcome | None, *, dls, persisted: set[str], emulator) -> tuple[Outcome, bool]:
    """What became of one bad input, and whether that is what its case expects: refused at the entry (a
    callback must also not be persisted), or dead-lettered at the expected stage for the expected reason."""
    if at_entry is not None:
        if case.entry == "callback" and normalize_message_id(case.key) in persisted:
            return Outcome("accepted", "persisted to emd.remd.callbacks"), False
        return at_entry, _matches(at_entry, case.expect)
    last = (dls.get(case.key) or [None])[-1]
    if last is None:
        return Outcome("lost", "neither refused nor dead-lettered"), False
    outcome = Outcome("dead", last.reason + (f" ({last.remd_code})" if last.remd_code else ""), last.stage)
    ok = (
        case.expect.kind == "dead"
        and last.stage.startswith(case.expect.stage)
        and (
            case.expect.reason in (last.reason, last.remd_code)
            # РЭМД's refusal whose callback was lost (a fault, the callback service down): the poll
            # finds nothing and the document ends NO_ACKNOWLEDGMENT, as for a valid document
            or (last.reason == "NO_ACKNOWLEDGMENT" and _silent_error(last, emulator, case.expect.reason))
        )
    )
    return outcome, ok


def evaluate(ev: Evidence) -> Result:
    dls, acks, regs = dead_letters(ev.bootstrap), acknowledged(ev.bootstrap), registrations(ev.registry_file)
    emulator = emulator_outcomes(ev.registry_file.parent.parent / "logs" / "emulator.log")
    rows: list[tuple[str, str, str]] = []
    problems: list[str] = []

    # valid documents
    lost, unexplained, dead_ok, rejected_ok, silent, missing_ids = [], [], 0, 0, 0, []
    for uid in ev.good:
        if uid in acks:
            continue
        letters = dls.get(uid)
        if not letters:
            lost.append(uid)
            continue
        last = letters[-1]
        if last.stage.startswith(SENT_STAGES) and not last.message_ids:
            missing_ids.append(uid)
        predicted = rejection_for(uid)
        if predicted is not None and (last.remd_code == predicted.code or last.reason == "NO_ACKNOWLEDGMENT"):
            rejected_ok += 1
        elif last.reason == "NO_ACKNOWLEDGMENT" and _silent_error(last, emulator):
            silent += 1
        else:
            unexplained.append(uid)
            problems.append(
                f"valid document {uid}: dead-lettered at {last.stage}: {last.reason} {last.remd_code or ''}"
                f" (predicted: {predicted.code if predicted else 'registered'})"
            )
        dead_ok += 1
    acked = sum(1 for u in ev.good if u in acks)
    rows.append(
        (
            "valid documents acknowledged",
            "ok" if acked + rejected_ok + silent == len(ev.good) else "FAIL",
            f"{acked} of {len(ev.good)}; {rejected_ok} refused by РЭМД as predicted (rejections scenario), "
            f"{silent} NO_ACKNOWLEDGMENT after an error РЭМД never delivered",
        )
    )
    rows.append(
        (
            "valid documents missing",
            "ok" if not lost else "FAIL",
            f"{len(lost)} neither acknowledged nor dead-lettered" + (f", e.g. {lost[:3]}" if lost else ""),
        )
    )
    rows.append(
        (
            "dead letters after sending name MessageIDs",
            "ok" if not missing_ids else "FAIL",
            f"{len(missing_ids)} without" + (f", e.g. {missing_ids[:3]}" if missing_ids else ""),
        )
    )
    unexplained += missing_ids

    # duplicates
    doubled = sorted(
        {uid for uid, ids in acks.items() if len(ids) > 1}
        | {uid for (_, uid), ids in regs.items() if len(ids) > 1}
    )
    rows.append(
        (
            "РЭМД registry: each localUid once",
            "ok" if not doubled else "FAIL",
            f"{sum(len(v) for v in regs.values())} registrations of {len(regs)} localUids"
            + (f"; twice: {doubled[:5]}" if doubled else ""),
        )
    )

    # bad inputs
    persisted = {
        r.key.decode("utf-8", "replace")
        for r in read_all(ev.bootstrap, topology.CALLBACKS.name, idle=2.0)
        if r.key
    }
    wrong = []
    for case, at_entry in ev.cases:
        outcome, ok = _judge(case, at_entry, dls=dls, persisted=persisted, emulator=emulator)
        if not ok:
            wrong.append(case.name)
            problems.append(
                f"bad input {case.name} ({case.entry}): expected {describe(case.expect)}, "
                f"got {describe(outcome)}"
            )
    by_entry = defaultdict(int)
    for case, _ in ev.cases:
        by_entry[case.entry] += 1
    rows.append(
        (
            "bad inputs refused or dead-lettered as expected",
            "ok" if not wrong else "FAIL",
            f"{len(ev.cases) - len(wrong)} of {len(ev.cases)} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(by_entry.items()))
            + ")"
            + (f"; wrong: {wrong}" if wrong else ""),
        )
    )
    unexplained += wrong

    # logs
    leaked = leaks(ev.log_files, ev.sensitive)
    rows.append(
        (
            "no patient data, keys or passwords in any log",
            "ok" if not leaked else "FAIL",
            f"{len(ev.log_files)} logs scanned"
            + (f"; {len(leaked)} lines, e.g. {leaked[:3]}" if leaked else ""),
        )
    )
    problems += [f"log leak: {x}" for x in leaked[:50]]

    # the chaos itself
    by_component = defaultdict(int)
    for _, name in ev.kills:
        by_component[name] += 1
    rows.append(
        (
            "kill -9, each restarted",
            "ok" if len(ev.kills) >= ev.plan.kills else "FAIL",
            f"{len(ev.kills)}: " + ", ".join(f"{k} {v}" for k, v in sorted(by_component.items())),
        )
    )
    rows.append(
        (
            "PostgreSQL (lifecycle store) outages",
            "ok" if ev.pg_outages or not ev.plan.pg_outage_seconds else "FAIL",
            ", ".join(f"{b - a:.0f} s at {a:.0f} s" for a, b in ev.pg_outages) or "none planned",
        )
    )
    rows.append(
        (
            "broker restart",
            "n/a",
            "the local Tansu broker stores in memory (or S3) only: a restart loses every topic",
        )
    )
    rows.append(("finished within the timeout", "ok" if ev.finished else "FAIL", f"{ev.elapsed:.0f} s"))
    rows.append(
        (
            "no process left behind after the run",
            "ok" if not ev.left_behind else "FAIL",
            f"{len(ev.left_behind)}" + (f": {ev.left_behind[:3]}" if ev.left_behind else ""),
        )
    )
    problems += [f"left behind: {x}" for x in ev.left_behind]
    unexplained += ev.left_behind
    rows.append(
        (
            "no component exited on its own",
            "ok" if not ev.notes else "FAIL",
            f"{len(ev.notes)} exits" if ev.notes else "none",
        )
    )
    problems += [f"exit: {note}" for note in ev.notes]
    unexplained += [f"exit {i}" for i in range(len(ev.notes))]
    if not ev.finished:
        problems.append("not every document became final within the timeout")

    return Result(
        documents=len(ev.good),
        kills=len(ev.kills),
        lost=len(lost),
        duplicated=len(doubled),
        unexplained=len(unexplained),
        leaked=len(leaked),
        rows=rows,
        problems=problems,
    )
