"""Custom resources checked against the real CRDs of the operators (``tests/fixtures/crds``, SOURCES.md there).

A CRD's ``openAPIV3Schema`` is a *structural* schema: an object lists its fields, and the API server refuses a
field it does not know when ``kubectl apply`` validates strictly (the default since Kubernetes 1.27), unless
the object says ``x-kubernetes-preserve-unknown-fields``. JSON Schema allows unknown fields unless told
otherwise, so :func:`json_schema` adds ``additionalProperties: false`` where Kubernetes would refuse them, and
reads ``nullable`` and ``x-kubernetes-int-or-string`` as Kubernetes does. CEL rules
(``x-kubernetes-validations``) are not evaluated: the API server is the only place they run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "fixtures" / "crds"
#: every release a kind is validated against: the manifests support each (docs/operations.md)
RELEASES: dict[str, tuple[str, ...]] = {
    "kafka.strimzi.io": ("strimzi-1.0.1", "strimzi-1.2.0"),
    "keda.sh": ("keda-v2.20.2",),
    "monitoring.coreos.com": ("prometheus-operator-v0.93.0",),
    "gateway.networking.k8s.io": ("gateway-api-v1.6.1-standard",),
    "gateway.envoyproxy.io": ("envoy-gateway-v1.9.0",),
    "trust.cert-manager.io": ("trust-manager-v0.24.0",),
}


@dataclass(frozen=True)
class Served:
    release: str
    group: str
    kind: str
    version: str
    schema: dict[str, Any]


def json_schema(node: Any) -> Any:
    """A structural schema as a JSON Schema with Kubernetes' meaning (see the module docstring)."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not preserve
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def served() -> tuple[Served, ...]:
    """Every (release, group, kind, version) the stored CRDs serve, with its JSON Schema."""
    found = []
    for releases in RELEASES.values():
        for release in releases:
            for path in sorted((CRDS / release).glob("*.yaml")):
                crd = yaml.safe_load(path.read_text(encoding="utf-8"))
                spec = crd["spec"]
                for v in spec["versions"]:
                    if v.get("served"):
                        schema = json_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                        found.append(Served(release, spec["group"], spec["names"]["kind"], v["name"], schema))
    return tuple(found)


def is_custom(document: dict[str, Any]) -> bool:
    """A resource of one of the groups whose CRDs are stored here."""
    return document["apiVersion"].split("/")[0] in RELEASES


def errors(document: dict[str, Any]) -> Iterator[str]:
    """Why ``document`` would be refused by each stored release of its CRD (nothing when every one accepts it)."""
    group, _, version = document["apiVersion"].rpartition("/")
    kind, name = document["kind"], document.get("metadata", {}).get("name", "?")
    for release in RELEASES[group]:
        matches = [s for s in served() if (s.release, s.group, s.kind) == (release, group, kind)]
        if not matches:
            yield f"{kind}/{name}: {release} has no CRD for {kind}"
            continue
        schema = next((s.schema for s in matches if s.version == version), None)
        if schema is None:
            yield f"{kind}/{name}: {release} does not serve {group}/{version} (it serves {[s.version for s in matches]})"
            continue
        if not name or name == "?":
            yield f"{kind}: no metadata.name"
        for error in jsonschema.Draft7Validator(schema).iter_errors(document):
            where = ".".join(str(p) for p in error.absolute_path)
            yield f"{kind}/{name} ({release}): {error.message} at {where or '(root)'}"
