"""The support console in a real headless Chromium (Debian's chromium-headless-shell, driven by Playwright).

A real `emd console` process on a broker of its own with two dead letters: an anonymous visit gets the login
page; logged in, a dead letter is found by its MessageID, its ticket is shown, and a replay is previewed and
confirmed — the record is back on the sender's topic.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lab.broker import LocalBroker, free_port
from lab.dev.config import write_dev_config
from producer.topology import ensure_topics
from services.console.auth import add_user
from services.messaging import deadletter as dl
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
ORG = "1.2.643.5.1.13.13.12.2.77.9000"
MESSAGE_IDS = {
    "doc-browser-1": "0f0e5d1c-1111-4c2b-9a55-6d0c7e3f0a01",
    "doc-browser-2": "0f0e5d1c-2222-4c2b-9a55-6d0c7e3f0a02",
}
PASSWORD = "a long enough password"
#: where the README's screenshot comes from (`cp` it from the test's tmp dir after a run)
SCREENSHOT = "console.png"


def _publish(bootstrap: str) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for uid, mid in MESSAGE_IDS.items():
        failure = dl.Failure(
            stage="sender",
            reason="REMD_REJECTED",
            message="PERSON_NOT_FOUND: Сотрудник не найден в ФРМР",
            exception_fqcn="producer.errors.PermanentError",
            remd_code="PERSON_NOT_FOUND",
            remd_message="Сотрудник со СНИЛС [..] не найден в ФРМР",
            category="data",
            hint="Проверить данные сотрудника в ФРМР",
            message_ids=(mid,),
            local_uid=uid,
            kind="119",
            organization=ORG,
        )
        headers = dl.dead_letter_headers(
            original_headers={"emd-event-type": b"emd.document.signed"},
            topic="emd.document.signed",
            partition=0,
            offset=1,
            timestamp_ms=0,
            consumer_group="emd-sender",
            failure=failure,
        )
        value = json.dumps(
            {
                "type": "emd.document.signed",
                "data": {"localUid": uid, "systemId": "dental-mis-01", "organizationOid": ORG, "kind": "119"},
            }
        ).encode()
        p.send(
            "emd.document.signed.dlt",
            key=uid.encode(),
            value=value,
            headers=headers,
            timestamp_ms=int(time.time() * 1000) - 5000,
        )
    p.flush()
    p.close()


def test_console_in_chromium_finds_a_dead_letter_shows_its_ticket_and_replays_it(tmp_path):
    """The login page first; logged in, the dead letter is found by MessageID; its ticket shows the MessageID; a
    replay is previewed and confirmed."""
    from playwright.sync_api import sync_playwright

    orgs = write_dev_config(tmp_path / "cfg", oids=[ORG])
    users = tmp_path / "users.json"
    add_user(users, "support", PASSWORD)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    uid, mid = "doc-browser-1", MESSAGE_IDS["doc-browser-1"]
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=1)
        _publish(broker.bootstrap_servers)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMD_", "KAFKA_"))}
        env.update(
            broker.client_env(),
            EMD_DATA_DIR=str(tmp_path / "data"),
            EMD_ORGANIZATIONS=str(orgs),
            EMD_CONSOLE_USERS=str(users),
            EMD_LOG_FORMAT="json",
        )
        console = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "console", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        staff = httpx.Client(base_url=base, timeout=10, follow_redirects=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if staff.get("/api/dead-letters").status_code == 401:
                        staff.post("/login", data={"user": "support", "password": PASSWORD})
                    elif len(staff.get("/api/dead-letters").json()) == 2:
                        break
                except httpx.HTTPError:
                    pass
                assert console.poll() is None, console.stdout.read()
                time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium-headless-shell"))
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{base}/")
                assert page.title().startswith("Log in")  # anonymous: the login page, nothing else
                assert page.locator("#dead-letters").count() == 0
                page.fill("#user", "support")
                page.fill("#password", PASSWORD)
                page.click("#login")
                assert page.title().startswith("Dead letters")
                assert page.locator("#dead-letters tr").count() == 3  # header + two dead letters

                page.fill("input[name=messageId]", mid)
                page.click("#search")
                rows = page.locator("#dead-letters tr")
                assert rows.count() == 2 and uid in rows.nth(1).inner_text()
                page.click(f"text={uid}")
                ticket = page.locator("#ticket").input_value()
                assert (
                    f"MessageID запроса (из заголовка SOAP): {mid}" in ticket and "PERSON_NOT_FOUND" in ticket
                )
                page.screenshot(path=str(tmp_path / SCREENSHOT), full_page=False)
                page.click("#replay-preview")
                assert "1 to replay (dry run)" in page.locator("#preview").inner_text()
                page.click("#replay-confirm")
                assert "Replay done: 1 replayed" in page.locator(".notice").inner_text()
                browser.close()
            replayed = read_all(broker.bootstrap_servers, "emd.document.signed", expect=1)
            assert [r.key for r in replayed] == [uid.encode()]
            audit = staff.get("/audit").text
            assert "dlq.replay" in audit and "support" in audit
        finally:
            staff.close()
            console.send_signal(signal.SIGTERM)
            out = console.communicate(timeout=60)[0]
        assert console.returncode == 0, out
