"""docs/asyncapi.yaml: generated from the code, kept equal to it, valid for the AsyncAPI project's own tooling, and
its payload schemas valid JSON Schema 2020-12 (the AsyncAPI parser does not check that dialect: docs/integration.md).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml

from lab.dev import asyncapi
from producer import contract, events, topology

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLI = ROOT / "tools" / "asyncapi" / "node_modules" / ".bin" / "asyncapi"
SCHEMAS = ROOT / "producer" / "data" / "schemas"


def _doc() -> dict:
    return yaml.safe_load(asyncapi.YAML_PATH.read_text(encoding="utf-8"))


def _validate(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``asyncapi validate`` offline: CI=true turns the CLI's analytics (its only network use) off."""
    assert CLI.exists(), "tools/asyncapi is not installed: run `make node-deps` (make test does)"
    env = {
        **os.environ,
        "CI": "true",
        "SUPPRESS_NO_CONFIG_WARNING": "1",
        "HOME": str(tmp_path),  # the CLI writes its settings file there, not in the user's home
    }
    return subprocess.run(
        [str(CLI), "validate", str(path), "--fail-severity", "warn"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT / "tools" / "asyncapi",
        timeout=120,
    )


# --- generated, and kept so ----------------------------------------------------------------------------------
def test_the_committed_asyncapi_files_are_what_the_generator_writes_now():
    """docs/asyncapi.yaml and docs/asyncapi.html equal the generator's output (run `make docs` after a change)."""
    assert asyncapi.main(["--check"]) == 0


def test_the_generator_is_deterministic():
    """Two runs in one process give the same bytes, so regenerating never shows a spurious diff."""
    assert asyncapi.generated() == asyncapi.generated()


def test_a_topic_added_to_the_topology_without_regenerating_makes_the_check_fail(monkeypatch, capsys):
    """A seventh sender retry tier added to producer/topology.py makes ``--check`` exit 1 naming asyncapi.yaml,
    and the regenerated document has its channel."""
    extra = topology.Topic("emd.document.signed.retry.6", "sender → sender: the seventh retry tier")
    all_topics = topology.all_topics
    monkeypatch.setattr(topology, "all_topics", lambda mis_ids: (*all_topics(mis_ids), extra))
    monkeypatch.setattr(topology, "SENDER_RETRIES", (*topology.SENDER_RETRIES, extra))
    assert asyncapi.main(["--check"]) == 1
    assert "docs/asyncapi.yaml" in capsys.readouterr().err
    channel = asyncapi.document()["channels"][asyncapi.channel_id(extra.name)]
    assert channel["address"] == extra.name
    assert channel["messages"] == {"signedRetry": {"$ref": "#/components/messages/signedRetry"}}


def test_a_topic_the_generator_cannot_describe_stops_it_with_the_topic_named(monkeypatch):
    """A topic whose message the generator does not know stops it, naming the topic, rather than writing a
    channel without a message."""
    extra = topology.Topic("emd.document.archived", "status → archive")
    all_topics = topology.all_topics
    monkeypatch.setattr(topology, "all_topics", lambda mis_ids: (*all_topics(mis_ids), extra))
    with pytest.raises(SystemExit, match="emd.document.archived"):
        asyncapi.document()


def test_every_topic_of_the_topology_is_a_channel_with_its_key_and_partitions():
    """Each topic (a МИС's two as ``{misId}`` channels) is a channel of the document, with its Kafka binding."""
    doc = _doc()
    addresses = {c["address"]: c for c in doc["channels"].values()}
    for topic in topology.all_topics(["mis-id-placeholder"]):
        address = topic.name.replace("mis-id-placeholder", "{misId}")
        assert address in addresses, address
        assert (
            addresses[address]["bindings"]["kafka"]["topicConfiguration"]["retention.ms"]
            == topic.retention_ms
        )
    assert "emd.document.created.{misId}" in addresses and "emd.document.status.{misId}" in addresses


def test_the_created_message_names_the_headers_and_key_the_signer_enforces():
    """The ``created`` message requires exactly producer.contract's headers and keys by data.localUid."""
    created = _doc()["components"]["messages"]["created"]
    assert created["headers"]["required"] == list(contract.REQUIRED_HEADERS)
    assert created["headers"]["properties"][events.HEADER_EVENT_TYPE]["const"] == events.CREATED
    assert created["x-emd-key"]["location"] == "$message.payload#/data/localUid"


# --- the payload schemas, checked with Python's jsonschema (2020-12) ------------------------------------------
#: where the schemas' $ids put docs/asyncapi.yaml: its ``./schemas/…`` references resolve to those $ids
DOCUMENT_BASE = "https://emd-pipeline.invalid/asyncapi.yaml"


def _registry() -> referencing.Registry:
    """The packaged schemas, each under its $id."""
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        resource = referencing.Resource.from_contents(json.loads(path.read_text(encoding="utf-8")))
        assert resource.id() == f"https://emd-pipeline.invalid/schemas/{path.name}", path
        resources.append((resource.id(), resource))
    return referencing.Registry().with_resources(resources)


def _event(event_type: str) -> dict:
    """An event of ``event_type`` made of the schemas' own examples."""
    envelope = json.loads((SCHEMAS / "envelope.schema.json").read_text(encoding="utf-8"))["examples"][0]
    data_schema = SCHEMAS / f"{event_type.removeprefix('emd.')}.schema.json"
    data = json.loads(data_schema.read_text(encoding="utf-8"))["examples"][0]
    return {**envelope, "type": event_type, "data": data}


EVENT_MESSAGES = {t.removeprefix("emd.document."): t for t in events.EVENT_TYPES}


def test_every_schema_the_document_references_is_valid_json_schema_2020_12():
    """The payload files are checked against the 2020-12 meta-schema (the AsyncAPI CLI accepts that format
    without checking it)."""
    refs = {
        r for m in _doc()["components"]["messages"].values() for r in asyncapi._refs(m.get("payload", {}))
    }
    assert refs >= {"./schemas/envelope.schema.json", "./schemas/document.created.schema.json"}
    for ref in refs:
        jsonschema.Draft202012Validator.check_schema(json.loads((DOCS / ref).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", sorted(EVENT_MESSAGES))
def test_each_event_message_payload_accepts_its_example_and_refuses_it_without_its_key_field(name):
    """A message's payload schema, as the document writes it (envelope and data by reference), accepts the
    schemas' example of that event and refuses it with ``data.localUid`` removed or another ``type``."""
    payload = _doc()["components"]["messages"][name]["payload"]
    assert payload["schemaFormat"] == asyncapi.SCHEMA_FORMAT
    schema = {"$id": DOCUMENT_BASE, **payload["schema"]}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    event = _event(EVENT_MESSAGES[name])
    validator.validate(event)
    without_key = copy.deepcopy(event)
    del without_key["data"]["localUid"]
    assert not validator.is_valid(without_key)
    other = EVENT_MESSAGES["signed" if name != "signed" else "sent"]
    assert not validator.is_valid({**event, "type": other})


def test_every_header_schema_of_the_document_is_valid_json_schema():
    """Headers are plain JSON Schema objects (the AsyncAPI format): each is a valid schema."""
    for name, message in _doc()["components"]["messages"].items():
        jsonschema.Draft7Validator.check_schema(message.get("headers", {}))
        assert message["bindings"]["kafka"]["key"]["type"] == "string", name


# --- the AsyncAPI CLI (node) ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_asyncapi_cli_validates_the_document_offline(tmp_path):
    """``@asyncapi/cli validate docs/asyncapi.yaml`` passes with no warning (its references resolved from
    docs/schemas), with analytics off."""
    result = _validate(asyncapi.YAML_PATH, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout or "is valid" in result.stdout, result.stdout


@pytest.mark.integration
def test_the_asyncapi_cli_refuses_a_document_with_a_broken_reference(tmp_path):
    """The same document with one operation pointing at a channel that does not exist fails validation: the
    CLI test can fail."""
    doc = _doc()
    next(iter(doc["operations"].values()))["channel"] = {"$ref": "#/channels/noSuchChannel"}
    (tmp_path / "schemas").symlink_to(SCHEMAS)
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    result = _validate(broken, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "noSuchChannel" in result.stdout + result.stderr


def test_the_cli_is_pinned_by_a_lock_file():
    """tools/asyncapi pins @asyncapi/cli exactly, and its lock file says the same version (make installs it
    with npm ci)."""
    package = json.loads((ROOT / "tools" / "asyncapi" / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "tools" / "asyncapi" / "package-lock.json").read_text(encoding="utf-8"))
    pinned = package["dependencies"]["@asyncapi/cli"]
    assert pinned[0].isdigit()
    assert lock["packages"]["node_modules/@asyncapi/cli"]["version"] == pinned
    assert shutil.which("node") is not None or not CLI.exists()
