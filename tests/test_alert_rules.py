"""The alert rules (deploy/prometheus): promtool's own checks and unit cases, and the properties an SRE relies on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from lab.dev import manifests
from tests.test_manifests import _of, rendered

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "emd-rules.yaml"
CASES = ROOT / "deploy" / "prometheus" / "emd-rules.test.yaml"
#: an aggregation and its grouping clause, if any: every one must keep `namespace`
AGGREGATION = re.compile(r"\b(sum|max|min|count|group|avg)\s*(?:by\s*\(([^)]*)\))?\s*\(")


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _cases() -> list[dict]:
    return yaml.safe_load(CASES.read_text())["tests"]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=RULES.parent, capture_output=True, text=True)


def test_promtool_checks_the_alert_rules():
    """`promtool check rules` accepts the rule file."""
    result = _promtool("check", "rules", RULES.name)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_promtool_unit_cases_pass_with_a_firing_and_a_silent_case_for_every_alert():
    """`promtool test rules` passes, and every alert has a case where it fires and one where it stays silent."""
    result = _promtool("test", "rules", CASES.name)
    assert 0 == result.returncode, result.stdout + result.stderr
    alerts = {r["alert"] for r in _alerts()}
    checks = [c for t in _cases() for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in checks if c["exp_alerts"]}
    silent = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert (alerts, alerts) == (firing, silent)


def test_the_situations_an_sre_review_asked_for_are_cases():
    """Cases exist for a dead stage, a quiet night with parked retries, a circuit down 30 minutes despite
    half-open probes, and a production outage beside a test stand that keeps acknowledging."""
    names = " | ".join(t["name"] for t in _cases())
    for situation in (
        "a dead signer fires",
        "a quiet night with records parked on the retry tiers stays silent",
        "a circuit down for 30 minutes fires despite its half-open probes",
        "a production outage fires while a test stand in the same Prometheus keeps acknowledging",
    ):
        assert situation in names


def test_every_aggregation_keeps_the_namespace_and_every_firing_case_carries_it():
    """No rule aggregates across namespaces (each `sum/max/min/count/group` has a `by` with namespace), and every
    alert a case expects carries a namespace label."""
    unscoped = [
        (r["alert"], m.group(0))
        for r in _alerts()
        for m in AGGREGATION.finditer(r["expr"])
        if "namespace" not in (m.group(2) or "")
    ]
    assert [] == unscoped
    expected = [a for t in _cases() for c in t["alert_rule_test"] for a in c["exp_alerts"]]
    assert expected and all(a["exp_labels"].get("namespace") for a in expected)


def test_the_scope_check_catches_an_aggregation_across_namespaces():
    """The check above does fail on a rule that sums over every namespace (so it means something)."""
    assert AGGREGATION.search("sum(increase(emd_acknowledged_total[1h])) == 0").group(2) is None


def test_every_alert_says_who_acts_how_bad_and_where_the_runbook_is():
    """Each alert has a severity, a team (sre or support; templated by category or role where both act), a summary,
    a description and an absolute runbook URL whose section exists in docs/operations.md."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for rule in _alerts():
        labels, notes = rule["labels"], rule["annotations"]
        assert labels["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert set(re.findall(r"sre|support", labels["team"])) <= {"sre", "support"} and re.fullmatch(
            r"sre|support|\{\{ if eq \$labels\.\w+ \"\w+\" \}\}(sre|support)\{\{ else \}\}(sre|support)\{\{ end \}\}",
            labels["team"],
        ), rule["alert"]
        assert notes["summary"] and notes["description"], rule["alert"]
        base, _, anchor = notes["runbook_url"].partition("#")
        assert (manifests.RUNBOOK_BASE, True) == (base, anchor in anchors), rule["alert"]


def test_the_overlay_points_runbook_links_at_its_own_copy_of_the_runbook():
    """Rendered, every runbook_url of the prod PrometheusRule starts with the overlay's runbook-base setting."""
    (rule,) = _of(rendered("prod"), "PrometheusRule")
    base = rule["metadata"]["annotations"]["emd-pipeline.io/runbook-base"]
    urls = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert base != manifests.RUNBOOK_BASE and base.startswith("https://")
    assert urls and all(u.startswith(base + "#") for u in urls)
