"""emd dlq: the dead-letter model and its filters, masking, exports, the ticket, and replay (plan, resumable runs)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from services.desk import deadletters as dls
from services.desk.deadletters import DeadLetter, Filters, newest_first
from services.desk.replay import plan
from services.desk.ticket import ticket_text
from services.messaging import deadletter as dl

ORG = "1.2.643.5.1.13.13.12.2.77.9000"
PATIENT_SNILS = "11223344595"


def _letter(
    uid="u1", *, at="2026-11-20T10:00:00Z", topic="emd.document.signed.dlt", offset=5, value=None, **headers
):
    base = {
        dl.ORIGINAL_TOPIC: "emd.document.signed",
        dl.REASON: "REMD_REJECTED",
        dl.LOCAL_UID: uid,
        dl.STAGE: "sender",
        dl.LAST_FAILURE: at,
        dl.MESSAGE_IDS: "a,b",
        dl.ATTEMPTS: "3",
        dl.REMD_CODE: "PERSON_NOT_FOUND",
        dl.CATEGORY: "data",
        dl.ORGANIZATION: ORG,
        dl.KIND: "119",
        dl.REMD_MESSAGE: "Сотрудник со СНИЛС 123-456-789 01 не найден в ФРМР",
        dl.RETRY_DUE: "1",
        "emd-trace-id": "t",
    }
    base.update(headers)
    event = (
        value
        if value is not None
        else json.dumps(
            {
                "data": {
                    "localUid": uid,
                    "systemId": "dental-mis-01",
                    "patient": {"snils": PATIENT_SNILS, "family": "Иванова"},
                }
            }
        ).encode()
    )
    return DeadLetter.of(topic, 0, offset, uid.encode(), event, [(k, v.encode()) for k, v in base.items()])


def test_filters_select_by_every_field_and_time_window():
    """Each filter (stage, reason, code, category, org, kind, window, MessageID in any spelling, localUid) must match."""
    d = _letter()
    assert Filters().matches(d)
    assert Filters(
        stage="sender",
        reason="REMD_REJECTED",
        code="PERSON_NOT_FOUND",
        category="data",
        organization=ORG,
        kind="119",
        local_uid="u1",
    ).matches(d)
    for wrong in (
        Filters(stage="signer"),
        Filters(reason="X"),
        Filters(code="X"),
        Filters(category="transient"),
        Filters(organization="1.2"),
        Filters(kind="1"),
        Filters(local_uid="u2"),
    ):
        assert not wrong.matches(d), wrong
    assert Filters(since=dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)).matches(d)
    assert not Filters(until=dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)).matches(d)
    assert Filters(message_id="urn:uuid:B").matches(d) and not Filters(message_id="c").matches(d)


def test_listing_is_newest_first():
    """Dead letters come newest failure first, whatever order the topics gave them in."""
    letters = [
        _letter("old", at="2026-11-19T10:00:00Z"),
        _letter("new", at="2026-11-21T10:00:00Z"),
        _letter("mid", at="2026-11-20T10:00:00Z"),
    ]
    assert [d.local_uid for d in newest_first(letters)] == ["new", "mid", "old"]
    assert [d.local_uid for d in newest_first(letters, limit=1)] == ["new"]


def test_summary_names_the_failing_message_id_and_masks_personal_data():
    """The list's JSON gives the last MessageID (the one СТП asks for), the region from the OID, and no СНИЛС."""
    s = _letter().summary()
    assert s["messageId"] == "b" and s["messageIds"] == ["a", "b"] and s["region"] == "77"
    assert "123-456-789" not in json.dumps(s, ensure_ascii=False) and PATIENT_SNILS not in json.dumps(s)


def test_csv_export_has_utc_and_moscow_time_and_nothing_about_the_patient():
    """An export row carries MessageID, the time in UTC and Moscow (+03:00), system, OID, region, kind and code."""
    rows = list(csv.DictReader(io.StringIO(dls.export_csv([_letter()]))))
    assert rows == [
        {
            "messageId": "b",
            "failedAtUtc": "2026-11-20T10:00:00Z",
            "failedAtMoscow": "2026-11-20T13:00:00+03:00",
            "system": "dental-mis-01",
            "organization": ORG,
            "region": "77",
            "kind": "119",
            "localUid": "u1",
            "stage": "sender",
            "reason": "REMD_REJECTED",
            "code": "PERSON_NOT_FOUND",
            "message": rows[0]["message"],
        }
    ]
    assert "***" in rows[0]["message"] and PATIENT_SNILS not in dls.export_jsonl([_letter()])


def test_masking_hides_personal_elements_of_a_soap_request_and_of_the_event():
    """mask_xml replaces СНИЛС and names inside the SOAP message; mask_event masks the event's patient."""
    xml = (
        b'<r:patient xmlns:r="urn:x"><r:snils>11223344595</r:snils><r:surname>\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd'
        b"\xd0\xbe\xd0\xb2\xd0\xb0</r:surname><r:birthDate>1980-01-02</r:birthDate><r:kind>119</r:kind></r:patient>"
    )
    masked = dls.mask_xml(xml)
    assert "11223344595" not in masked and "Иванова" not in masked and "1980-01-02" not in masked
    assert "<r:kind>119</r:kind>" in masked
    event = dls.mask_event(_letter().event)
    assert event["data"]["patient"] == {"snils": "***", "family": "***"}


def test_ticket_is_russian_text_with_every_field_sttp_asks_for():
    """The ticket names the system, organisation, region, steps with MessageIDs and times (Moscow and UTC), code."""
    text = ticket_text(
        _letter(), organization_name="ГБУЗ Тестовая больница № 1", client_entity_id="dev-mis-1"
    )
    for needed in (
        "Информационная система: dental-mis-01 (clientEntityId dev-mis-1)",
        f"Медицинская организация: ГБУЗ Тестовая больница № 1, OID ФРМО {ORG}",
        "Субъект Российской Федерации: код 77",
        "Что произошло:",
        "MessageID b",
        "MessageID запроса (из заголовка SOAP): b",
        "2026-11-20T13:00:00+03:00 МСК (2026-11-20T10:00:00Z)",
        "Код ошибки: PERSON_NOT_FOUND",
        "MessageID всех попыток: a, b",
    ):
        assert needed in text, needed
    assert PATIENT_SNILS not in text and "123-456-789" not in text


def test_replay_plan_strips_failure_headers_counts_and_keeps_message_ids():
    """A replayed record goes to its original topic without failure/retry headers, keeping MessageIDs, count+1."""
    topic, headers = plan(_letter(), limit=3)
    h = dict(headers)
    assert topic == "emd.document.signed"
    assert h[dl.REPLAY_COUNT] == b"1" and h[dl.MESSAGE_IDS] == b"a,b" and h["emd-trace-id"] == b"t"
    assert not any(k.startswith(("kafka_dlt-", "emd-dlt-")) for k in h)
    assert dl.ATTEMPTS not in h and dl.RETRY_DUE not in h


def test_replay_is_refused_beyond_the_limit_and_goes_to_the_stage_that_takes_the_type():
    """A record replayed `limit` times is refused; a status dead letter of a signed event goes to the sender."""
    assert "already replayed 3 times" in plan(_letter(**{dl.REPLAY_COUNT: "3"}), limit=3)
    e = _letter(**{dl.ORIGINAL_TOPIC: "emd.document.sent", "emd-event-type": "emd.document.signed"})
    assert plan(e, limit=3)[0] == "emd.document.signed"
    assert plan(_letter(**{dl.ORIGINAL_TOPIC: "emd.remd.callbacks"}), limit=3)[0] == "emd.remd.callbacks"


def test_a_created_dead_letter_is_replayed_to_the_topic_of_the_mis_that_wrote_it_and_no_other():
    """A signer dead letter goes back to its МИС's created topic (the topic is what names its writer); a created
    event whose original topic is not a МИС's is refused, so a replay cannot move a document into another grant."""
    created = {"emd-event-type": "emd.document.created"}
    mine = _letter(**created, **{dl.ORIGINAL_TOPIC: "emd.document.created.clinic-a"})
    assert plan(mine, limit=3)[0] == "emd.document.created.clinic-a"
    for other in ("emd.document.created", "emd.document.signed", "emd.document.created.dlt"):
        refused = plan(_letter(**created, **{dl.ORIGINAL_TOPIC: other}), limit=3)
        assert isinstance(refused, str) and "not a МИС's created topic" in refused, other


@pytest.mark.integration
def test_cli_help_and_bad_input():
    """Every `emd dlq` subcommand has --help; a bad time, number or format exits 2 naming the option."""
    for sub in ("list", "show", "export", "ticket", "replay"):
        ok = subprocess.run(
            [sys.executable, "-m", "services.cli", "dlq", sub, "--help"], capture_output=True, text=True
        )
        assert ok.returncode == 0 and "usage:" in ok.stdout, sub
    for bad in (
        ["list", "--since", "yesterday"],
        ["replay", "--max", "0"],
        ["replay", "--limit", "x"],
        ["export", "--format", "xml"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "services.cli", "dlq", *bad], capture_output=True, text=True
        )
        assert r.returncode == 2 and bad[1] in r.stderr, bad


def _dlq_env(broker, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMD_")}
    return {**env, **broker.client_env(), "EMD_DATA_DIR": str(tmp_path / "data")}


def _publish_dead_letters(bootstrap, uids_and_times):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for uid, ts in uids_and_times:
        headers = [
            (dl.ORIGINAL_TOPIC, b"emd.document.signed"),
            (dl.REASON, b"X"),
            (dl.LOCAL_UID, uid.encode()),
            (dl.STAGE, b"sender"),
        ]
        p.send("emd.document.signed.dlt", key=uid.encode(), value=b"{}", headers=headers, timestamp_ms=ts)
    p.flush()
    p.close()


@pytest.mark.slow
@pytest.mark.integration
def test_one_replay_run_leaves_dead_letters_newer_than_itself_for_the_next_run(tmp_path):
    """A dead letter written after the replay began is neither replayed nor committed past: the next run takes it."""
    from lab.broker import LocalBroker
    from producer.topology import ensure_topics
    from tests.kafka_helpers import read_all

    with LocalBroker(
        log_path=tmp_path / "broker.log"
    ) as broker:  # its own: the pipeline topic names are fixed
        ensure_topics(broker.bootstrap_servers, partitions=1)
        now = int(time.time() * 1000)
        later = now + 15_000
        _publish_dead_letters(broker.bootstrap_servers, [("old", now - 1000), ("new", later)])
        env = _dlq_env(broker, tmp_path)

        def replay() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "services.cli", "dlq", "replay", "--stage", "sender"],
                capture_output=True,
                text=True,
                env=env,
                timeout=180,
            )

        first = replay()
        assert first.returncode == 0 and "1 replayed" in first.stderr and "replayed old" in first.stdout, (
            first.stderr
        )
        while time.time() * 1000 <= later:  # the "new" dead letter is now in the past
            time.sleep(0.5)
        second = replay()
        assert second.returncode == 0 and "1 replayed" in second.stderr and "replayed new" in second.stdout
        replayed = read_all(broker.bootstrap_servers, "emd.document.signed", expect=2)
    assert sorted(r.key for r in replayed) == [b"new", b"old"]
    assert all(dict(r.headers)[dl.REPLAY_COUNT] == b"1" for r in replayed)


@pytest.mark.slow
@pytest.mark.integration
def test_an_interrupted_replay_resumed_replays_each_record_once(tmp_path):
    """SIGTERM mid-run stops the replay between records (exit 1, 'run again'); the next run replays the rest, each once."""
    from collections import Counter

    from lab.broker import LocalBroker
    from producer.topology import ensure_topics
    from tests.kafka_helpers import read_all

    uids = [f"doc-{i:03d}" for i in range(40)]
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=2)
        _publish_dead_letters(broker.bootstrap_servers, [(u, int(time.time() * 1000) - 1000) for u in uids])
        cmd = [sys.executable, "-m", "services.cli", "dlq", "replay", "--stage", "sender"]
        env = _dlq_env(broker, tmp_path)
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert first.stdout.readline().startswith("replayed ")  # the run is under way
        first.send_signal(signal.SIGSTOP)  # frozen mid-run, so the stop request surely comes before the end
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=180)
        assert first.returncode == 1 and "stopped early" in err, err
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        assert second.returncode == 0 and "stopped early" not in second.stderr, second.stderr
        replayed = read_all(broker.bootstrap_servers, "emd.document.signed", expect=len(uids))
    counts = Counter(r.key.decode() for r in replayed)
    assert counts == Counter(dict.fromkeys(uids, 1))
    first_run = 1 + out.count("replayed ")
    assert 0 < first_run < len(uids) and second.stdout.count("replayed ") == len(uids) - first_run


def test_dead_letters_kept_by_a_local_run_read_back_as_they_were(tmp_path):
    """keep writes the dead letters a local run read (only its owner may read the file); read_kept gives them back
    record for record, of the topics asked only, skipping a line that is not one."""
    from services.desk import reader

    letters = [_letter("u1"), _letter("u2", topic="emd.document.sent.dlt", offset=7)]
    path = tmp_path / "data" / reader.KEPT_FILE
    assert reader.keep(letters, path) == 2
    assert path.stat().st_mode & 0o077 == 0
    with path.open("a", encoding="utf-8") as f:
        f.write("not json\n")
    assert reader.read_kept(path) == letters
    assert reader.read_kept(path, ["emd.document.sent.dlt"]) == letters[1:]


@pytest.mark.integration
def test_dlq_without_a_cluster_reads_what_a_local_run_kept_and_says_so(tmp_path):
    """`emd dlq list` with no KAFKA_BOOTSTRAP_SERVERS lists the dead letters a local run kept in EMD_DATA_DIR and names
    the file; with nothing kept it still asks for the cluster (exit 2)."""
    from services.desk import reader

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EMD_"))}
    run = [sys.executable, "-m", "services.cli", "dlq", "list"]
    empty = subprocess.run(run, env={**env, "EMD_DATA_DIR": str(tmp_path)}, capture_output=True, text=True)
    assert empty.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in empty.stderr
    reader.keep([_letter("u1")], tmp_path / reader.KEPT_FILE)
    kept = subprocess.run(run, env={**env, "EMD_DATA_DIR": str(tmp_path)}, capture_output=True, text=True)
    assert kept.returncode == 0 and " u1 " in kept.stdout and "code=PERSON_NOT_FOUND" in kept.stdout
    assert str(tmp_path / reader.KEPT_FILE) in kept.stderr and "1 dead letter(s)" in kept.stderr
