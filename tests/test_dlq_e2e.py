"""Support's journey through dead letters, end to end: real broker, emulator over HTTP, workers, `emd dlq` as a process.

Documents fail for a reason that is later fixed (РЭМД rejects them; the signer lacks an organisation), support
lists, shows and exports them, the cause is fixed, `emd dlq replay` puts them back and they end acknowledged,
registered once each even when replayed again. The МИС hears of each failure on emd.document.status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from services.documents import cda
from services.documents.xmlsafe import parse_xml
from services.messaging import deadletter as dl
from tests.pipeline_lab import Lab, pipeline_lab

REPO = Path(__file__).resolve().parents[1]


def dlq(lab: Lab | None, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m services.cli dlq ARGS` against the lab's broker (or no broker at all when lab is None)."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    if lab is not None:
        env.update(KAFKA_BOOTSTRAP_SERVERS=lab.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE="false")
    return subprocess.run([sys.executable, "-m", "services.cli", "dlq", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def uid_of(data: bytes) -> str:
    return cda.extract(parse_xml(data)).local_uid


def wait_acknowledged(lab: Lab, uids: list[str], timeout: float = 300.0) -> None:
    """Until every uid is on emd.document.acknowledged (the watcher counts dead letters as final, so not lab.wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lab.watcher.stage_of.get(u) == "acknowledged" for u in uids):
            return
        time.sleep(1.0)
    raise AssertionError(f"not acknowledged after replay: {[(u, lab.watcher.stage_of.get(u)) for u in uids]}\n"
                         + lab.tails())


def restart_workers(lab: Lab) -> None:
    """Every child that reads the organisations file does so when it starts (there is no reload)."""
    for name in ("signer", "sender", "status", "callbacks"):
        lab.pipeline.kill(name)
        lab.pipeline.restart(name)


def sent_count(lab: Lab, uid: str) -> int:
    return sum(1 for r in lab.topic("emd.document.sent", idle=1.0) if r.key == uid.encode())


def statuses(lab: Lab) -> dict[str, list[dict]]:
    """localUid → the data of its emd.document.status events, in order."""
    out: dict[str, list[dict]] = {}
    for r in lab.topic("emd.document.status"):
        out.setdefault(r.key.decode(), []).append(json.loads(r.value)["data"])
    return out


def test_rejected_documents_are_listed_exported_replayed_and_registered_once(tmp_path):
    """Documents РЭМД rejected are listed with MessageID, code and hint, exported, replayed after the fix and registered once each."""
    with pipeline_lab(tmp_path, count=5) as lab:
        rejected = [uid_of(d) for _, d in lab.documents[:2]]
        lab.pipeline.add_rules([{"fault": "reject", "local_uid": u, "code": "PERSON_NOT_FOUND"} for u in rejected])
        uids = lab.publish()
        snap = lab.wait(timeout=300)
        assert sorted(d.local_uid for d in snap.dead_letters) == sorted(rejected)
        assert snap.per_stage["acknowledged"] == 3

        # the МИС was told, with the РЭМД code and the MessageID РЭМД answered
        told = statuses(lab)
        for u in rejected:
            last = told[u][-1]
            assert last["status"] == "rejected" and last["remdCode"] == "PERSON_NOT_FOUND" and last["messageIds"]

        listed = dlq(lab, "list")
        assert listed.returncode == 0, listed.stderr
        lines = [x for x in listed.stdout.splitlines() if x.strip()]
        assert len(lines) == 2 and "2 dead letter(s)" in listed.stderr
        dead = {d.local_uid: d for d in snap.dead_letters}
        for u in rejected:
            line = next(x for x in lines if u in x)
            assert "PERSON_NOT_FOUND" in line and dead[u].message_ids[-1] in line and "hint=" in line

        shown = dlq(lab, "show", rejected[0])
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert record["headers"][dl.REMD_CODE] == "PERSON_NOT_FOUND" and record["headers"][dl.HINT]
        assert record["messageIds"] == dead[rejected[0]].message_ids

        out = tmp_path / "case.jsonl"
        exported = dlq(lab, "export", "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        assert sorted(r["key"] for r in rows) == sorted(rejected)
        assert all(r["messageIds"] == dead[r["key"]].message_ids for r in rows)

        lab.pipeline.add_rules([], replace=True)  # the cause is fixed (ФРМР corrected)
        dry = dlq(lab, "replay", "--dry-run")
        assert dry.returncode == 0 and dry.stdout.count("would replay") == 2, dry.stderr
        replayed = dlq(lab, "replay")
        assert replayed.returncode == 0 and "2 replayed, 0 refused" in replayed.stderr, replayed.stderr
        wait_acknowledged(lab, rejected)

        again = dlq(lab, "replay")  # the same filter resumes after what it replayed: nothing to do
        assert again.returncode == 0 and "0 replayed" in again.stderr, again.stderr
        sent_before = sent_count(lab, rejected[0])
        one = dlq(lab, "replay", "--local-uid", rejected[0])  # another filter replays it once more
        assert one.returncode == 0 and "1 replayed" in one.stderr, one.stderr
        # the sender answers a registered document from its lifecycle store: a sent event again, no request
        deadline = time.monotonic() + 180
        while sent_count(lab, rejected[0]) == sent_before and time.monotonic() < deadline:
            time.sleep(1.0)
        assert sent_count(lab, rejected[0]) > sent_before, lab.tails()

        registered = Counter(r["local_uid"] for r in lab.registry())
        assert {u: registered[u] for u in uids} == dict.fromkeys(uids, 1)
        told = statuses(lab)
        assert all(told[u][-1]["status"] in ("registered", "sent") for u in rejected)
        assert any(s["status"] == "registered" for s in told[rejected[0]])


def test_a_signer_dead_letter_tells_the_mis_and_is_replayed_after_the_configuration_fix(tmp_path):
    """An organisation missing from the signer's configuration: status failed to the МИС, replayed once fixed, acknowledged."""
    with pipeline_lab(tmp_path, count=3) as lab:
        orgs_file = lab.pipeline.config_dir / "organizations.json"
        original = orgs_file.read_text()
        missing_uid = uid_of(lab.documents[0][1])
        missing_oid = cda.extract(parse_xml(lab.documents[0][1])).organization_oid
        config = json.loads(original)
        config["organizations"] = [o for o in config["organizations"] if o["oid"] != missing_oid]
        orgs_file.write_text(json.dumps(config, ensure_ascii=False))
        restart_workers(lab)  # the workers read the organisations file when they start

        uids = lab.publish()
        snap = lab.wait(timeout=300)
        assert [(d.local_uid, d.stage, d.reason) for d in snap.dead_letters] == [
            (missing_uid, "signer", "ORGANIZATION_UNKNOWN")]
        failed = statuses(lab)[missing_uid]
        assert failed == [{"localUid": missing_uid, "status": "failed", "emdrId": None, "reason": "ORGANIZATION_UNKNOWN",
                           "remdCode": None, "message": failed[0]["message"], "messageIds": []}]
        assert missing_oid in failed[0]["message"]

        listed = dlq(lab, "list", "--stage", "signer")
        assert listed.returncode == 0 and missing_uid in listed.stdout and "ORGANIZATION_UNKNOWN" in listed.stdout
        assert "hint=" in listed.stdout

        orgs_file.write_text(original)  # the fix: the organisation is configured again
        restart_workers(lab)
        replayed = dlq(lab, "replay", "--stage", "signer", "--reason", "ORGANIZATION_UNKNOWN")
        assert replayed.returncode == 0 and "1 replayed" in replayed.stderr, replayed.stderr
        wait_acknowledged(lab, [missing_uid])

        registered = Counter(r["local_uid"] for r in lab.registry())
        assert {u: registered[u] for u in uids} == dict.fromkeys(uids, 1)
        assert statuses(lab)[missing_uid][-1]["status"] == "registered"


def test_every_dlq_subcommand_has_help_and_bad_input_fails_clearly():
    """Each `emd dlq` subcommand answers --help; an unknown stage, a bad number or a missing cluster exits non-zero with a message."""
    for sub in ("list", "show", "export", "replay"):
        r = dlq(None, sub, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, (sub, r.stderr)
    r = dlq(None, "list", "--stage", "nowhere")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = dlq(None, "replay", "--max", "many")
    assert r.returncode == 2 and "--max" in r.stderr
    r = dlq(None, "replay", "--limit", "0")
    assert r.returncode == 2 and "--limit" in r.stderr
    r = dlq(None, "list")
    assert r.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in r.stderr
