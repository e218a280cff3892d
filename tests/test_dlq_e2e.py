"""Support's journey through dead letters, end to end: real broker, emulator over HTTP, workers, `emd dlq` as a process.

Documents fail for a reason that is later fixed (РЭМД rejects them; the signer lacks an organisation), support
lists, shows and exports them, the cause is fixed, `emd dlq replay` puts them back and they end acknowledged,
registered once each even when replayed again. The МИС hears of each failure on emd.document.status.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from lab.dev.config import DEV_MIS_ID
from producer import cda
from producer.xmlsafe import parse_xml
from tests.pipeline_lab import STATUS_TOPIC, Lab, pipeline_lab
from tests.pipeline_lab import documents as lab_documents

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def dlq(
    lab: Lab | None, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m services.cli dlq ARGS` against the lab's broker (or no broker at all when lab is None)."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("EMD_")}
    env.update(extra)
    if lab is not None:
        env.setdefault(
            "EMD_DATA_DIR", str(lab.pipeline.data_dir)
        )  # the desk's audit log goes next to the lab's
        env.update(KAFKA_BOOTSTRAP_SERVERS=lab.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE="false")
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "dlq", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def uid_of(data: bytes) -> str:
    return cda.extract(parse_xml(data)).local_uid


def wait_acknowledged(lab: Lab, uids: list[str], timeout: float = 300.0) -> None:
    """Until every uid is on emd.document.acknowledged (not Lab.wait: it counts dead letters as final)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lab.watcher.stage_of.get(u) == "acknowledged" for u in uids):
            return
        time.sleep(1.0)
    raise AssertionError(
        f"not acknowledged after replay: {[(u, lab.watcher.stage_of.get(u)) for u in uids]}\n" + lab.tails()
    )


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
    for r in lab.topic(STATUS_TOPIC):
        out.setdefault(r.key.decode(), []).append(json.loads(r.value)["data"])
    return out


def rejected_and_accepted(count_rejected: int, count_ok: int) -> list[tuple[str, bytes]]:
    """Documents whose fresh localUid the emulator's ``rejections`` scenario rejects (and some it registers)."""
    from lab.dev.local_pipeline import as_new_document
    from lab.emulator.faults import rejection_for

    base = lab_documents(1)[0]
    out, n = [], 0
    while len(out) < count_rejected + count_ok:
        uid = f"acc{n:017d}"
        n += 1
        rejected = rejection_for(uid) is not None
        if (rejected and sum(1 for k, _ in out if k == "r") < count_rejected) or (
            not rejected and sum(1 for k, _ in out if k == "a") < count_ok
        ):
            out.append(("r" if rejected else "a", as_new_document(base[1], local_uid=uid)))
    return [(kind, data) for kind, data in out]


def desk_env(lab: Lab) -> dict[str, str]:
    """What `emd dlq show/ticket` needs besides the cluster: the pipeline's data dir and organisations file."""
    return {
        "EMD_DATA_DIR": str(lab.pipeline.data_dir),
        "EMD_ORGANIZATIONS": str(lab.pipeline.config_dir / "organizations.json"),
    }


def test_support_journey_after_the_rejections_scenario(tmp_path):
    """After the rejections scenario: list --json, CSV export, ticket and show (with the signed request) carry the
    MessageID the emulator logged; scenario ok + replay acknowledges each once; replaying again registers nothing."""
    from producer.ids import normalize_message_id

    chosen = rejected_and_accepted(2, 2)
    docs = [(f"doc{i}", data) for i, (_, data) in enumerate(chosen)]
    rejected = [uid_of(data) for kind, data in chosen if kind == "r"]
    with pipeline_lab(tmp_path, docs=docs, scenario="rejections") as lab:
        uids = lab.publish()
        snap = lab.wait(timeout=300)
        assert sorted(d.local_uid for d in snap.dead_letters) == sorted(rejected)
        logged = {
            r["local_uid"]: normalize_message_id(r["message_id"])
            for r in lab.requests()
            if r["local_uid"] in rejected
        }
        assert set(logged) == set(rejected)

        listed = dlq(lab, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(x) for x in listed.stdout.splitlines()]
        assert sorted(r["localUid"] for r in rows) == sorted(rejected)
        assert all(normalize_message_id(r["messageId"]) == logged[r["localUid"]] for r in rows)
        assert [r["failedAt"] for r in rows] == sorted((r["failedAt"] for r in rows), reverse=True)

        exported = dlq(lab, "export", "--format", "csv")
        assert exported.returncode == 0, exported.stderr
        csv_rows = list(csv.DictReader(io.StringIO(exported.stdout)))
        assert sorted(r["localUid"] for r in csv_rows) == sorted(rejected)
        assert all(
            normalize_message_id(r["messageId"]) == logged[r["localUid"]]
            and r["failedAtMoscow"].endswith("+03:00")
            and r["failedAtUtc"].endswith("Z")
            for r in csv_rows
        )

        u = rejected[0]
        patient_snils = next(cda.extract(parse_xml(d)).patient.snils for _, d in docs if uid_of(d) == u)
        assert patient_snils
        ticket = dlq(lab, "ticket", u, env=desk_env(lab))
        assert ticket.returncode == 0, ticket.stderr
        assert logged[u] in ticket.stdout.lower() and "Медицинская организация: ГБУЗ" in ticket.stdout
        shown = dlq(lab, "show", u, env=desk_env(lab))
        assert shown.returncode == 0, shown.stderr
        assert logged[u] in shown.stdout.lower() and "signed request:" in shown.stdout
        assert "registerDocument" in shown.stdout and "SignatureValue" in shown.stdout
        assert patient_snils not in shown.stdout  # masked by default
        unmasked = dlq(lab, "show", u, "--unmask", "--json", env=desk_env(lab))
        case = json.loads(unmasked.stdout)
        assert any(a["request"] and patient_snils in a["request"] for a in case["attempts"])

        httpx.post(f"{lab.pipeline.emulator_url}/_emulator/scenario", json={"name": "ok"}).raise_for_status()
        replayed = dlq(lab, "replay", env=desk_env(lab))
        assert replayed.returncode == 0 and "2 replayed, 0 refused" in replayed.stderr, replayed.stderr
        wait_acknowledged(lab, rejected)

        again = dlq(lab, "replay", env=desk_env(lab))  # the same filter resumes after what it replayed
        assert again.returncode == 0 and "0 replayed" in again.stderr, again.stderr
        sent_before = sent_count(lab, u)
        one = dlq(lab, "replay", "--local-uid", u, env=desk_env(lab))  # another filter replays it once more
        assert one.returncode == 0 and "1 replayed" in one.stderr, one.stderr
        deadline = time.monotonic() + 180
        while sent_count(lab, u) == sent_before and time.monotonic() < deadline:
            time.sleep(1.0)
        assert sent_count(lab, u) > sent_before, lab.tails()  # answered from the lifecycle store
        registered = Counter(r["local_uid"] for r in lab.registry())
        assert {x: registered[x] for x in uids} == dict.fromkeys(uids, 1)
        told = statuses(lab)
        assert all(told[x][-1]["status"] in ("registered", "sent") for x in rejected)

        # the same clinic, onboarded: promote is refused until a real test-stand round trip succeeded
        oid = cda.extract(parse_xml(docs[0][1])).organization_oid
        refused = clinic(lab, "promote", oid)
        assert refused.returncode == 1 and "emd clinic test" in refused.stderr, refused.stderr
        from lab.dev.local_pipeline import as_new_document

        test_doc = tmp_path / "test-document.xml"
        test_doc.write_bytes(as_new_document(docs[0][1]))
        tested = clinic(lab, "test", oid, "--document", str(test_doc), "--timeout", "240")
        assert tested.returncode == 0 and "test passed" in tested.stdout, tested.stdout + tested.stderr
        assert "MessageID" in tested.stdout
        promoted = clinic(lab, "promote", oid)
        assert promoted.returncode == 0 and "production" in promoted.stdout, promoted.stderr


def clinic(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """`emd clinic ARGS` with the lab's cluster, data dir and organisations file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMD_", "KAFKA_"))}
    env.update(desk_env(lab), KAFKA_BOOTSTRAP_SERVERS=lab.bootstrap_servers)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "clinic", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_a_signer_dead_letter_tells_the_mis_and_is_replayed_after_the_configuration_fix(tmp_path):
    """An organisation missing from the signer's configuration (and so from its МИС's grant): status failed to that
    МИС, replayed once fixed, acknowledged."""
    with pipeline_lab(tmp_path, count=3) as lab:
        orgs_file = lab.pipeline.config_dir / "organizations.json"
        original = orgs_file.read_text()
        missing_uid = uid_of(lab.documents[0][1])
        missing_oid = cda.extract(parse_xml(lab.documents[0][1])).organization_oid
        config = json.loads(original)
        config["organizations"] = [o for o in config["organizations"] if o["oid"] != missing_oid]
        for grant in config["mis"]:
            grant["organizations"].remove(missing_oid)
        orgs_file.write_text(json.dumps(config, ensure_ascii=False))
        restart_workers(lab)  # the workers read the organisations file when they start

        uids = lab.publish()
        snap = lab.wait(timeout=300)
        assert [(d.local_uid, d.stage, d.reason) for d in snap.dead_letters] == [
            (missing_uid, "signer", "ORGANIZATION_NOT_ALLOWED")
        ]
        failed = statuses(lab)[missing_uid]
        assert failed == [
            {
                "localUid": missing_uid,
                "organizationOid": missing_oid,
                "misId": DEV_MIS_ID,
                "status": "failed",
                "emdrId": None,
                "reason": "ORGANIZATION_NOT_ALLOWED",
                "remdCode": None,
                "message": failed[0]["message"],
                "messageIds": [],
            }
        ]
        assert missing_oid in failed[0]["message"]

        listed = dlq(lab, "list", "--stage", "signer")
        assert (
            listed.returncode == 0
            and missing_uid in listed.stdout
            and "ORGANIZATION_NOT_ALLOWED" in listed.stdout
        )
        assert "hint=" in listed.stdout

        orgs_file.write_text(original)  # the fix: the organisation is configured again
        restart_workers(lab)
        replayed = dlq(lab, "replay", "--stage", "signer", "--reason", "ORGANIZATION_NOT_ALLOWED")
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
