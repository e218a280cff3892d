"""The whole-system run's log scan (tests/reliability/report.py) finds what it must, so a clean result means something."""

from __future__ import annotations

import json

from tests.reliability.harness import sensitive_values
from tests.reliability.report import DeadLetter, _silent_error, emulator_outcomes, leaks


def test_the_log_scan_finds_patient_data_and_key_material_in_any_spelling(tmp_path):
    """A СНИЛС (plain or formatted), a full name inside JSON with \\u escapes, a birth date, a PEM key and a
    password are each found; an ordinary log line is not."""
    values = sensitive_values()
    snils = sorted(v for v in values["СНИЛС"] if len(v) == 11)[0]
    formatted = f"{snils[:3]}-{snils[3:6]}-{snils[6:9]} {snils[9:]}"
    name = sorted(values["full name"])[0]
    birth = sorted(values["birth date"])[0]
    log = tmp_path / "worker.log"
    log.write_text(
        "\n".join(
            [
                json.dumps({"event": "signed", "local_uid": "doc-1", "stage": "signer"}),
                json.dumps({"event": "x", "patient": snils}),
                f"plain line with {formatted}",
                json.dumps({"event": "x", "who": name}, ensure_ascii=True),
                json.dumps({"event": "x", "born": birth}),
                "-----BEGIN PRIVATE KEY-----",
                "connecting with password=hunter2",
                json.dumps({"event": "ok", "password": "***"}),
                json.dumps({"event": "pfx", "password": "hunter2"}),
            ]
        )
        + "\n"
    )
    found = leaks([log], values)
    assert [line.split(":")[1] for line in found] == ["2", "3", "4", "5", "6", "7", "9"]


def test_the_log_scan_finds_other_name_spellings_secret_settings_and_the_runs_secrets(tmp_path):
    """A sample's name in capitals, given name first or initialled, a secret setting with its value (s3_secret_key,
    key_password, sasl_password, a token) and the run's own password and token files are each found; their
    masked forms are not."""
    secrets = tmp_path / "config"
    secrets.mkdir()
    (secrets / "lab1.pass").write_text("pfx-password-1\n")
    (secrets / "n3-1.token").write_text("9d2f0c1e-n3-token\n")
    values = sensitive_values(secrets)
    assert {"Иванов Иван", "ИВАНОВ ИВАН", "Иван Иванов", "Иванов И."} <= values["full name"] | values[
        "name spelling"
    ]
    log = tmp_path / "worker.log"
    lines = [
        json.dumps({"event": "x", "who": "ИВАНОВ ИВАН"}, ensure_ascii=True),
        "signed by Иванов И. at 10:00",
        json.dumps({"event": "x", "who": "Иван Иванов"}),
        "Settings(s3_secret_key='AKIAEXAMPLE', region='ru')",
        json.dumps({"event": "tls", "key_password": "p4ss"}),
        "sasl_password: s3cr3t",
        json.dumps({"event": "n3", "auth_token": "abc123"}),
        "opened with pfx-password-1 from the file",
        json.dumps({"event": "n3 call", "detail": "guid 9d2f0c1e-n3-token"}),
        json.dumps({"event": "masked", "who": "И. И.", "s3_secret_key": "***", "token": None}),
        "Settings(s3_secret_key=***, key_password=***)",
    ]
    log.write_text("\n".join(lines) + "\n")
    found = leaks([log], values)
    assert [int(line.split(":")[1]) for line in found] == list(range(1, 10))


def test_a_process_the_run_left_behind_is_found_and_killed(tmp_path):
    """A process still carrying the run's EMD_DATA_DIR after the run is reported and killed; others are not."""
    import os
    import subprocess

    from tests.reliability.harness import left_behind

    data = tmp_path / "data"
    stray = subprocess.Popen(["sleep", "300"], env={**os.environ, "EMD_DATA_DIR": str(data)})
    other = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, "EMD_DATA_DIR": str(tmp_path / "elsewhere")}
    )
    try:
        found = left_behind(data, grace=0)
        assert found == [f"pid {stray.pid}: sleep 300 "] and stray.wait(10) == -9 and other.poll() is None
    finally:
        for p in (stray, other):
            p.kill()
            p.wait()


def test_a_refusal_whose_callback_was_never_delivered_explains_no_acknowledgment_only_for_its_own_code(
    tmp_path,
):
    """A NO_ACKNOWLEDGMENT is explained by the emulator's log only when it answered that request with an error it
    never delivered, and, for a bad input expecting a РЭМД code, only when that was the code."""
    log = tmp_path / "emulator.log"
    done = {
        "event": "registration done",
        "message_id": "urn:uuid:1FE61B9F-DEF5-4075-A3F1-D2ADDFD92F84",
        "outcome": "error",
        "codes": ["CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT"],
        "callbacks": [False],
    }
    delivered = {**done, "message_id": "2fe61b9f-def5-4075-a3f1-d2addfd92f84", "callbacks": [False, True]}
    log.write_text(json.dumps(done) + "\n" + json.dumps(delivered) + "\n", encoding="utf-8")
    emulator = emulator_outcomes(log)
    lost = DeadLetter("acknowledger", "NO_ACKNOWLEDGMENT", None, ["1fe61b9f-def5-4075-a3f1-d2addfd92f84"])
    assert _silent_error(lost, emulator, "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT")
    assert _silent_error(lost, emulator)
    assert not _silent_error(lost, emulator, "PERSON_NOT_FOUND")
    assert not _silent_error(
        DeadLetter("acknowledger", "NO_ACKNOWLEDGMENT", None, ["2fe61b9f-def5-4075-a3f1-d2addfd92f84"]),
        emulator,
    )
