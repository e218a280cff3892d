"""The Grafana dashboard of the pipeline, described once as rows of panels and rendered to JSON.

Why generated, and without a library: a panel here is a title, a unit and PromQL; the JSON Grafana wants is
thirty lines of ids, grid positions and field config per panel, which nobody reviews well by hand. The
libraries (grafanalib, grafana-foundation-sdk) would add a dependency for what is one loop. The rendered file,
``deploy/grafana/emd-pipeline.json``, is what ships (provisioning-ready: a ``datasource`` variable and an
``organization`` variable); ``tests/test_manifests.py`` keeps it equal to this description, the live test
(``tests/test_prometheus_live.py``) evaluates every query against a real Prometheus, and a test checks that
every metric a query names is defined in the code.

Every pipeline metric is scoped by the ``namespace`` and ``pod`` variables (``scoped``: production and a test
stand side by side in one Prometheus, one pod among the replicas). The "Pods" row reads what Kubernetes and the
kubelet export (kube-state-metrics' restarts and limits, cAdvisor's CPU throttling and memory: kube-prometheus-stack
scrapes both), and the Kafka row the brokers' view of each consumer group (Strimzi's Kafka Exporter).

``MUST_HAVE_DATA`` marks the panels that a demo run with rejections must fill (the others may stay empty:
no circuit opens, no callback is forged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

RATE = "$__rate_interval"
ORG = 'organization=~"$organization"'
#: the selector every pipeline metric gets, and that of the containers of the pipeline's pods
SCOPE = 'namespace=~"$namespace", pod=~"$pod"'
PODS = SCOPE + ', container=~"signer|sender|status|callbacks"'
#: the retry tiers' topics, as a PromQL string (a regex: `\\.` is a dot)
RETRY = r'".+\\.retry\\..+"'


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    #: a demo run (documents acknowledged, some rejected) must give this panel data
    must_have_data: bool = False
    description: str = ""


_METRIC = re.compile(r"\b(emd_[a-z0-9_]+)(?:\{([^}]*)\})?")


def scoped(expr: str) -> str:
    """``expr`` with every pipeline metric (``emd_…``) limited to the chosen namespace and pods."""

    def one(m: re.Match[str]) -> str:
        inner = m.group(2)
        return f"{m.group(1)}{{{SCOPE}{', ' + inner if inner else ''}}}"

    return _METRIC.sub(one, expr)


def _q(expr: str, legend: str = "") -> tuple[str, str]:
    return scoped(expr), legend


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Overview",
        (
            Panel(
                "Throughput per stage",
                (_q(f'sum by (stage) (rate(emd_records_total{{outcome="ok"}}[{RATE}]))', "{{stage}}"),),
                "ops",
                must_have_data=True,
                description="Records each stage finished successfully per second.",
            ),
            Panel(
                "Outcomes per stage",
                (_q(f"sum by (stage, outcome) (rate(emd_records_total[{RATE}]))", "{{stage}} {{outcome}}"),),
                "ops",
                must_have_data=True,
            ),
            Panel(
                "End-to-end latency (signed → registered)",
                tuple(
                    _q(
                        f"histogram_quantile({q}, sum by (le) (rate(emd_end_to_end_seconds_bucket[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
                "s",
                must_have_data=True,
            ),
            Panel(
                "Awaiting acknowledgment",
                (
                    _q("max(emd_awaiting_acknowledgment)", "documents waiting"),
                    _q("max(emd_awaiting_acknowledgment_oldest_seconds)", "oldest (s)"),
                ),
                must_have_data=True,
                description="The lifecycle store's accepted documents without РЭМД's decision; every status replica "
                "reports the same number, hence max.",
            ),
            Panel(
                "Acknowledged",
                (_q("sum by (via) (increase(emd_acknowledged_total[1h]))", "{{via}}"),),
                must_have_data=True,
            ),
            Panel(
                "Dead letters by category",
                (
                    _q(
                        "sum by (stage, category) (increase(emd_dead_letters_total[1h]))",
                        "{{stage}} {{category}}",
                    ),
                ),
                must_have_data=True,
                description="Each needs a person: docs/operations.md#emddeadlettersgrowing",
            ),
            Panel(
                "Unhandled dead letters and the oldest's age",
                (
                    _q("max by (stage, category) (emd_dead_letters_unhandled)", "{{stage}} {{category}}"),
                    _q(
                        "max by (stage, category) (emd_dead_letters_unhandled_oldest_seconds) / 86400",
                        "oldest, days: {{stage}} {{category}}",
                    ),
                ),
                description="Dead letters whose document has not moved on since (no replay, no resend); the topics delete "
                "them after 30 days. Counted by the status replica holding the scanner lease.",
            ),
            Panel(
                "Handling time p95 per stage",
                (
                    _q(
                        f"histogram_quantile(0.95, sum by (le, stage) (rate(emd_record_duration_seconds_bucket[{RATE}])))",
                        "{{stage}}",
                    ),
                ),
                "s",
                must_have_data=True,
            ),
        ),
    ),
    (
        "РЭМД",
        (
            Panel(
                "registerDocument by outcome and code",
                (
                    _q(
                        f"sum by (outcome, reason) (rate(emd_sender_requests_total[{RATE}]))",
                        "{{outcome}} {{reason}}",
                    ),
                ),
                "reqps",
                must_have_data=True,
            ),
            Panel(
                "registerDocument latency",
                tuple(
                    _q(
                        f"histogram_quantile({q}, sum by (le) (rate(emd_sender_request_duration_seconds_bucket[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
                "s",
                must_have_data=True,
            ),
            Panel(
                "Circuit state per endpoint",
                (_q("max by (endpoint) (emd_sender_circuit_state)", "{{endpoint}}"),),
                must_have_data=True,
                description="0 closed, 1 half-open, 2 open",
            ),
            Panel(
                "Rate limiting",
                (
                    _q(
                        f'sum(rate(emd_sender_requests_total{{reason="RATE_LIMIT"}}[{RATE}]))',
                        "RATE_LIMIT answers",
                    ),
                    _q(f"sum(rate(emd_sender_parked_total[{RATE}]))", "parked (circuit open)"),
                ),
                "reqps",
            ),
        ),
    ),
    (
        "Kafka",
        (
            Panel(
                "Input lag in records",
                (
                    _q(
                        f"sum by (stage, topic) (emd_consumer_lag_records{{topic!~{RETRY}}})",
                        "{{stage}} {{topic}}",
                    ),
                ),
                must_have_data=True,
                description="Records waiting on each stage's input. The retry tiers are apart (next panel): records "
                "wait there on purpose.",
            ),
            Panel(
                "Input lag in seconds (oldest unprocessed record)",
                (
                    _q(
                        f"max by (stage, topic) (emd_consumer_lag_seconds{{topic!~{RETRY}}})",
                        "{{stage}} {{topic}}",
                    ),
                ),
                "s",
                must_have_data=True,
            ),
            Panel(
                "Parked on the retry tiers",
                (_q(f"sum by (topic) (emd_consumer_lag_records{{topic=~{RETRY}}})", "{{topic}}"),),
                description="Records waiting for their due time after a transient failure (up to 6 hours): not lag.",
            ),
            Panel(
                "Consumer-group lag, as the brokers see it",
                (
                    _q(
                        f'sum by (consumergroup, topic) (kafka_consumergroup_lag{{namespace=~"$namespace", topic!~{RETRY[:-1]}|.+\\\\.dlt"}})',
                        "{{consumergroup}} {{topic}}",
                    ),
                ),
                description="Strimzi's Kafka Exporter: still there when a stage is dead and reports nothing itself.",
            ),
            Panel(
                "Commits",
                (_q(f"sum by (stage) (rate(emd_commits_total[{RATE}]))", "{{stage}}"),),
                "ops",
                must_have_data=True,
            ),
            Panel(
                "Rebalances",
                (_q("sum by (stage) (increase(emd_rebalances_total[1h]))", "{{stage}}"),),
                must_have_data=True,
            ),
            Panel(
                "Seconds since the last commit",
                (_q("time() - max by (stage) (emd_last_progress_timestamp_seconds)", "{{stage}}"),),
                "s",
                must_have_data=True,
            ),
        ),
    ),
    (
        "Callbacks",
        (
            Panel(
                "Callbacks received",
                (
                    _q(
                        f"sum by (operation, outcome) (rate(emd_callbacks_total[{RATE}]))",
                        "{{operation}} {{outcome}}",
                    ),
                ),
                "reqps",
                must_have_data=True,
            ),
            Panel(
                "Duplicated callbacks",
                (_q("sum(increase(emd_callbacks_duplicated_total[1h]))", "duplicated"),),
                must_have_data=True,
                description="Callbacks about a document already decided (ИПС delivered again).",
            ),
            Panel(
                "Forged callbacks",
                (_q("sum by (reason) (increase(emd_callbacks_forged_total[1h]))", "{{reason}}"),),
                must_have_data=True,
                description="Refused for their WS-Security: docs/operations.md#emdforgedcallbacks",
            ),
        ),
    ),
    (
        "Pods",
        (
            Panel(
                "Restarts in the last hour",
                (
                    _q(
                        f"sum by (pod) (increase(kube_pod_container_status_restarts_total{{{PODS}}}[1h]))",
                        "{{pod}}",
                    ),
                ),
                description="kube-state-metrics. A pod restarting: its previous log (kubectl logs --previous).",
            ),
            Panel(
                "CPU throttling",
                (
                    _q(
                        f"sum by (pod) (rate(container_cpu_cfs_throttled_periods_total{{{PODS}}}[{RATE}]))"
                        f" / sum by (pod) (rate(container_cpu_cfs_periods_total{{{PODS}}}[{RATE}]))",
                        "{{pod}}",
                    ),
                ),
                "percentunit",
                description="Share of CPU periods in which the container hit its limit (cAdvisor). Sustained: raise "
                "limits.cpu or let the autoscaler add pods.",
            ),
            Panel(
                "Memory against the limit",
                (
                    _q(
                        f"sum by (pod) (container_memory_working_set_bytes{{{PODS}}})"
                        f' / sum by (pod) (kube_pod_container_resource_limits{{{PODS}, resource="memory"}})',
                        "{{pod}}",
                    ),
                ),
                "percentunit",
                description="Working set over limits.memory: at 1 the kernel kills the container (OOMKilled).",
            ),
            Panel(
                "CPU against the request",
                (
                    _q(
                        f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{PODS}}}[{RATE}]))"
                        f' / sum by (pod) (kube_pod_container_resource_requests{{{PODS}, resource="cpu"}})',
                        "{{pod}}",
                    ),
                ),
                "percentunit",
            ),
            Panel(
                "Scanner lease",
                (_q('max by (pod) (emd_lease_held{lease="status-scanners"})', "{{pod}}"),),
                description="1 on the status replica that runs the deadline and poll scanners and counts unhandled dead "
                "letters.",
            ),
        ),
    ),
    (
        "Certificates and МЧД",
        (
            Panel(
                "Days to certificate expiry",
                (
                    _q(
                        f"(min by (organization, role) (emd_certificate_not_after_timestamp_seconds{{{ORG}}}) - time()) / 86400",
                        "{{organization}} {{role}}",
                    ),
                ),
                "d",
                "table",
                must_have_data=True,
            ),
            Panel(
                "Days to МЧД expiry",
                (
                    _q(
                        f"(min by (organization) (emd_mchd_not_after_timestamp_seconds{{{ORG}}}) - time()) / 86400",
                        "{{organization}}",
                    ),
                ),
                "d",
                "table",
                must_have_data=True,
            ),
        ),
    ),
)


def panels() -> list[Panel]:
    return [p for _, row in ROWS for p in row]


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets: list[dict[str, Any]] = [
        {
            "refId": chr(ord("A") + i),
            "expr": expr,
            "legendFormat": legend,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
        }
        for i, (expr, legend) in enumerate(panel.queries)
    ]
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": targets,
    }
    if panel.kind == "table":
        for t in targets:
            t.update(instant=True, format="table")
    return out


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (schema of Grafana 10/11), ready for file provisioning."""
    items: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        items.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        pid, y = pid + 1, y + 1
        for n, panel in enumerate(row):
            items.append(_panel_json(panel, pid, 12 * (n % 2), y + 8 * (n // 2)))
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "uid": "emd-pipeline",
        "title": "emd-pipeline",
        "tags": ["emd", "kafka", "remd"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(emd_build_info, namespace)", "refId": "namespaces"},
                    "definition": "label_values(emd_build_info, namespace)",
                    "includeAll": False,
                    "multi": False,
                    "current": {},
                    "refresh": 2,
                    "hide": 0,
                },
                {
                    "name": "pod",
                    "label": "Pod",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(emd_build_info{namespace=~"$namespace"}, pod)',
                        "refId": "pods",
                    },
                    "definition": 'label_values(emd_build_info{namespace=~"$namespace"}, pod)',
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "hide": 0,
                },
                {
                    "name": "organization",
                    "label": "Organisation",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": "label_values(emd_certificate_not_after_timestamp_seconds, organization)",
                        "refId": "organizations",
                    },
                    "definition": "label_values(emd_certificate_not_after_timestamp_seconds, organization)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "hide": 0,
                },
            ]
        },
        "panels": items,
    }
