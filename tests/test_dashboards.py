"""The Grafana dashboard and the alert rules name only metrics the code defines, with the variables Grafana needs."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml

from lab.dev import dashboards

ROOT = Path(__file__).resolve().parents[1]
#: every module that declares metrics on services.metrics.REGISTRY
METRIC_MODULES = (
    "services.metrics",
    "services.messaging.runtime",
    "services.remd.circuit",
    "services.pipeline.submission",
    "services.pipeline.callbacks",
    "services.pipeline.signing",
    "services.pipeline.acknowledgment",
    "services.pipeline.lease",
    "services.messaging.trust",
    "services.desk.unhandled",
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "summary": ("_sum", "_count", ""),
}


def defined_metric_names() -> set[str]:
    """Every sample name the code can expose (a counter ``x`` is ``x_total``, a histogram ``x_bucket``…)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    from services.metrics import REGISTRY

    collected = {f.name + suffix for f in REGISTRY.collect() for suffix in _SUFFIXES.get(f.type, ("",))}
    # collectors that read at scrape time (the lifecycle store's awaiting documents) export nothing until wired,
    # but declare their names through describe()
    described = {f.name for c in _collectors(REGISTRY) for f in c.describe()}
    return collected | described


def _collectors(registry) -> list:
    """The registry's custom collectors (those with a describe(): the library keeps them in a private map)."""
    return [c for c in registry._collector_to_names if type(c).__module__.startswith("services.")]


def named_metrics(expressions) -> set[str]:
    return {m for e in expressions for m in re.findall(r"\b(emd_[a-z0-9_]+)\b", e)}


def dashboard_expressions() -> list[str]:
    board = json.loads((ROOT / "deploy/grafana/emd-pipeline.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", ())]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/emd-rules.yaml").read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def test_every_metric_a_panel_or_rule_names_is_defined_in_the_code():
    """No panel or alert queries a metric that no module of the pipeline declares."""
    named = named_metrics(dashboard_expressions() + rule_expressions())
    assert len(named) > 10
    assert set() == named - defined_metric_names()


def test_the_name_check_catches_a_misspelt_metric():
    """A query on a metric nobody defines is reported (so the check above can fail)."""
    assert {"emd_record_total"} == named_metrics(["rate(emd_record_total[5m])"]) - defined_metric_names()


def test_the_dashboard_has_datasource_and_organisation_variables():
    """Every target reads the `datasource` variable; the expiry panels filter by the `organization` variable."""
    board = json.loads((ROOT / "deploy/grafana/emd-pipeline.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "datasource" == variables["datasource"]["type"] and variables["organization"]["includeAll"]
    targets = [t for p in board["panels"] for t in p.get("targets", ())]
    assert {"${datasource}"} == {t["datasource"]["uid"] for t in targets}
    assert any("$organization" in t["expr"] for t in targets)


def test_the_dashboard_has_the_rows_sres_watch():
    """Overview, РЭМД, Kafka, callbacks and certificates each have a row."""
    rows = [
        p["title"]
        for p in json.loads((ROOT / "deploy/grafana/emd-pipeline.json").read_text())["panels"]
        if p["type"] == "row"
    ]
    assert [title for title, _ in dashboards.ROWS] == rows
    assert {"Overview", "РЭМД", "Kafka", "Callbacks", "Pods", "Certificates and МЧД"} == set(rows)


def test_every_pipeline_query_is_scoped_by_the_namespace_and_pod_variables():
    """The dashboard has namespace and pod variables, and every selector of a pipeline metric uses both, so a test
    stand beside production, or one replica among many, can be looked at alone."""
    board = json.loads((ROOT / "deploy/grafana/emd-pipeline.json").read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"namespace", "pod"} <= variables
    selectors = [
        m.group(2) or ""
        for e in dashboard_expressions()
        for m in re.finditer(r"\b(emd_[a-z0-9_]+)(\{[^}]*\})?", e)
    ]
    assert selectors and all('namespace=~"$namespace"' in s and 'pod=~"$pod"' in s for s in selectors)


def test_the_pods_row_shows_restarts_throttling_and_memory_against_limits():
    """Restarts (kube-state-metrics), CPU throttling and memory over the limit (cAdvisor) have panels of their own."""
    exprs = " ".join(dashboard_expressions())
    for metric in (
        "kube_pod_container_status_restarts_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_memory_working_set_bytes",
        'kube_pod_container_resource_limits{namespace=~"$namespace", pod=~"$pod"',
    ):
        assert metric in exprs


def test_input_lag_and_the_retry_tiers_are_apart():
    """The input-lag panels exclude the retry tiers and a panel of their own shows what is parked there."""
    titles = {p.title: p for p in dashboards.panels()}
    assert all("topic!~" in q for q, _ in titles["Input lag in records"].queries)
    assert all("topic=~" in q for q, _ in titles["Parked on the retry tiers"].queries)
