"""A real Prometheus scrapes a small pipeline run with rejections; every panel query and alert expression is evaluated."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from lab.dev import dashboards
from lab.dev.local_pipeline import as_new_document
from lab.emulator import rejection_for
from tests.pipeline_lab import documents, pipeline_lab
from tests.prometheus_server import PrometheusServer, PrometheusUnavailable

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "emd-rules.yaml"
SCREENSHOT = ROOT / "docs" / "images" / "prometheus-throughput.png"
#: `make screenshot` sets it: the run's screenshot replaces the one in docs/ (otherwise it goes to a temporary
#: folder, so a plain `make test` never leaves a changed binary in the work tree)
UPDATE_SCREENSHOT = os.environ.get("EMD_UPDATE_SCREENSHOT") == "1"
DOCUMENTS = 20
REJECTED = 3
THROUGHPUT = dashboards.ROWS[0][1][0].queries[0][0]
#: the tests that read the one scraped run: together in one parallel worker, so the run happens once
LIVE = (pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("prometheus-live"))


def live(test):
    """Mark ``test`` as one that reads the scraped run (:data:`LIVE`)."""
    for mark in LIVE:
        test = mark(test)
    return test


def as_prometheus_query(expr: str) -> str:
    """A Grafana query as Prometheus evaluates it: the rate window fixed, every namespace, pod and organisation
    selected (`=~".*"` also matches the local run's series, which have no namespace or pod label)."""
    for variable in ("$namespace", "$pod", "$organization"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "1m")


def test_as_prometheus_query_leaves_no_grafana_variable():
    """Every dashboard query is left without a Grafana variable once substituted."""
    board = json.loads((ROOT / "deploy/grafana/emd-pipeline.json").read_text())
    exprs = [as_prometheus_query(t["expr"]) for p in board["panels"] for t in p.get("targets", ())]
    assert exprs and not [e for e in exprs if "$" in e]


def run_documents() -> list[tuple[str, bytes]]:
    """DOCUMENTS documents of which exactly REJECTED have a localUid the `rejections` scenario refuses."""
    uids = (f"live-{n}" for n in range(10_000))
    rejected = [u for u in uids if rejection_for(u) is not None][:REJECTED]
    accepted = [u for u in (f"live-ok-{n}" for n in range(10_000)) if rejection_for(u) is None]
    return [
        (name, as_new_document(data, local_uid=uid))
        for (name, data), uid in zip(documents(DOCUMENTS), rejected + accepted, strict=False)
    ]


@pytest.fixture(scope="module")
def scraped_run(tmp_path_factory):
    """A pipeline run of DOCUMENTS documents, REJECTED of them rejected by РЭМД, scraped by Prometheus throughout."""
    tmp = tmp_path_factory.mktemp("prometheus-live")
    with pipeline_lab(tmp, docs=run_documents(), scenario="rejections") as lab:
        targets = {
            name: url.removeprefix("http://").removesuffix("/metrics")
            for name, url in lab.pipeline.metrics_urls().items()
        }
        server = PrometheusServer(tmp / "prometheus", targets=targets, rule_files=(RULES,))
        try:
            server.start()
        except PrometheusUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            server.wait_for_targets()
            uids = lab.publish()
            snapshot = lab.wait(uids, timeout=300)
            # two scrapes after the last document, so every counter shows its final value
            last = server.value('max(timestamp(up{job="status"}))')
            deadline = time.monotonic() + 60
            while server.value('max(timestamp(up{job="status"}))') < last + 2:
                assert time.monotonic() < deadline, "Prometheus stopped scraping the status worker"
                time.sleep(0.5)
            yield server, snapshot
        finally:
            server.stop()


@live
def test_every_process_is_scraped(scraped_run):
    """Prometheus scrapes the signer, the sender, the status worker and the callback service."""
    server, _ = scraped_run
    up = {r["metric"]["job"]: r["value"][1] for r in server.query("up")["data"]["result"]}
    assert {"signer": "1", "sender": "1", "status": "1", "callbacks": "1"} == up


@live
def test_every_panel_query_evaluates_and_the_panels_that_must_have_data_have_it(scraped_run):
    """No dashboard query errors, and each panel a run with rejections fills has at least one series."""
    server, _ = scraped_run
    errors, empty = [], []
    for panel in dashboards.panels():
        for expr, _ in panel.queries:
            answer = server.query(as_prometheus_query(expr))
            if answer["status"] != "success":
                errors.append(f"{panel.title}: {answer.get('error')}")
            elif panel.must_have_data and not answer["data"]["result"]:
                empty.append(panel.title)
    assert ([], []) == (errors, empty)


@live
def test_every_alert_expression_evaluates_and_prometheus_runs_every_rule(scraped_run):
    """Each alert expression is valid on the live data, and Prometheus reports every loaded rule healthy."""
    server, _ = scraped_run
    rules = server.rules()
    assert {r["name"] for r in rules} >= {
        "EmdDeadLettersGrowing",
        "EmdWorkerNotProgressing",
        "EmdForgedCallbacks",
    }
    assert [] == [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert [] == [r["name"] for r in rules if server.query(r["query"])["status"] != "success"]


@live
def test_the_counts_match_what_happened_to_the_documents(scraped_run):
    """Signed, accepted and dead-lettered counts on Prometheus equal the run's outcome (rejections included)."""
    server, snapshot = scraped_run
    assert (DOCUMENTS, DOCUMENTS, REJECTED) == (snapshot.total, snapshot.final, snapshot.dead_lettered)
    signed = server.value('sum(emd_records_total{stage="signer",outcome="ok"})')
    accepted = server.value('sum(emd_sender_requests_total{outcome="accepted"})')
    dead = server.value("sum(emd_dead_letters_total)")
    acknowledged = server.value("sum(emd_acknowledged_total)")
    assert (DOCUMENTS, DOCUMENTS, REJECTED, DOCUMENTS - REJECTED) == (signed, accepted, dead, acknowledged)
    assert DOCUMENTS - REJECTED == server.value("sum(emd_end_to_end_seconds_count)")
    assert 0 == server.value("max(emd_awaiting_acknowledgment)")
    assert 0 == server.value("sum(emd_consumer_lag_records)")


@live
def test_a_screenshot_of_the_throughput_graph_is_in_the_runbook(scraped_run, tmp_path):
    """Headless Chromium photographs Prometheus's throughput graph (the image docs/operations.md shows)."""
    server, _ = scraped_run
    target = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / SCREENSHOT.name
    path = server.screenshot(as_prometheus_query(THROUGHPUT), target, range_input="2m")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert re.search(
        r"!\[[^\]]*\]\(images/prometheus-throughput\.png\)", (ROOT / "docs/operations.md").read_text()
    )
