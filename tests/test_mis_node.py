"""A МИС that is not Python: tools/mis-node (Node, kafkajs) publishes a СЭМД as docs/integration.md says, reading
topics, headers, key and XPaths from docs/asyncapi.yaml, and reads its outcome from its status topic.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
from lab.dev.local_pipeline import sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from producer import cda, contract, events
from producer.client import build_created_data, read_document
from producer.xmlsafe import parse_xml
from tests.pipeline_lab import documents, pipeline_lab

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "mis-node"
PROGRAM = TOOL / "mis.mjs"
#: what the Python producer adds that a generic МИС need not send (defaults the signer applies) or sends otherwise
NOT_COMPARED = {"document", "recipient", "associations"}
SIGNER_DEFAULTS = {"roleCode", "roleCodeSystemVersion"}


def _node(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is not installed: `make system-deps` installs it"
    assert (TOOL / "node_modules" / "kafkajs").is_dir(), (
        "tools/mis-node is not installed: run `make node-deps`"
    )
    return subprocess.run(
        [node, str(PROGRAM), *args], capture_output=True, text=True, timeout=timeout, cwd=TOOL
    )


def _kind(data: bytes) -> str:
    """The kind of the template a document implements: what its МИС knows (the samples name it by templateId)."""
    meta = cda.extract(parse_xml(data))
    assert meta.kind is not None
    return meta.kind.code


def _dry_run(path: Path, data: bytes) -> dict:
    result = _node(
        "--mis-id",
        DEV_MIS_ID,
        "--system-id",
        DEV_SYSTEM_IDS[0],
        "--kind",
        _kind(data),
        "--dry-run",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- what it uses ------------------------------------------------------------------------------------------------
def test_the_node_mis_imports_nothing_of_the_repository_and_reads_the_contract_from_asyncapi():
    """mis.mjs imports only Node's modules and its pinned packages, and the only repository file it opens is
    docs/asyncapi.yaml; no topic, header name or XPath of the contract is written in its code."""
    source = PROGRAM.read_text(encoding="utf-8")
    imported = set(re.findall(r"^import .* from '([^']+)';$", source, re.M))
    package = json.loads((TOOL / "package.json").read_text(encoding="utf-8"))
    assert imported - {m for m in imported if m.startswith("node:")} == set(package["dependencies"])
    assert re.findall(r"join\(HERE, ([^)]*)\)", source) == ["'..', '..', 'docs', 'asyncapi.yaml'"]
    code = re.sub(r"(^|\s)//.*$", "", source, flags=re.M)  # its code, comments aside
    literals = " ".join(re.findall(r"'([^'\n]*)'", code))  # its code's strings (the usage text aside)
    for word in (
        "emd.document.",
        *contract.REQUIRED_HEADERS,
        "ClinicalDocument",
        "urn:hl7-org",
        "@root",
    ):
        assert word not in literals, word


def test_the_node_client_is_pinned_by_a_lock_file():
    """Every dependency is an exact version, and the lock file holds the same (make installs it with npm ci)."""
    package = json.loads((TOOL / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((TOOL / "package-lock.json").read_text(encoding="utf-8"))
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), name
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert package["dependencies"]["kafkajs"] == "2.2.4"


# --- what it builds -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_node_mis_reads_every_sample_as_the_python_producer_does(tmp_path):
    """For each registrable repository sample, the record mis.mjs would send passes the signer's door checks
    (key, headers, kind on its date, schemas), and its fields equal what the Python МИС library reads."""
    docs, _ = sample_documents(REPOSITORY_SAMPLES, None)
    assert len(docs) >= 10
    for name, data in docs:
        path = tmp_path / name
        path.write_bytes(data)
        record = _dry_run(path, data)
        assert record["topic"] == f"emd.document.created.{DEV_MIS_ID}"
        event = json.loads(record["value"])
        headers = [(k, v.encode()) for k, v in record["headers"].items()]
        contract.check_record(record["key"].encode(), headers, event)
        events.validate(event)
        node_data = event["data"]
        assert node_data["document"]["sha256"] == hashlib.sha256(data).hexdigest()
        python_data = build_created_data(read_document(data), system_id=DEV_SYSTEM_IDS[0], document=None)
        python_data["signers"] = [  # type: ignore[typeddict-item]  # a plain dict for the comparison
            {k: v for k, v in s.items() if k not in SIGNER_DEFAULTS} for s in python_data["signers"]
        ]
        for field in set(python_data) - NOT_COMPARED:
            assert node_data[field] == python_data[field], (name, field)  # type: ignore[literal-required]


@pytest.mark.integration
def test_the_node_mis_refuses_a_kind_the_document_contradicts(tmp_path):
    """A --kind other than the one the document names stops the program before anything is sent, saying why."""
    path = tmp_path / "doc.xml"
    path.write_bytes(
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><code code="1" codeSystem="1.2.643.5.1.13.13.11.1520"/>'
        b"</ClinicalDocument>"
    )
    result = _node("--mis-id", DEV_MIS_ID, "--system-id", "x", "--kind", "2", "--dry-run", str(path))
    assert result.returncode == 2
    assert "--kind 2, but the document says 1" in result.stderr


# --- against the pipeline -----------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_a_document_the_node_mis_publishes_is_registered_and_it_reads_registered(tmp_path):
    """Against a local broker, every component as its own process and the emulator: the Node МИС publishes one
    sample to its created topic, reads `registered` for it from its status topic (exit 0), and the emulator's
    registry holds those very bytes under its localUid."""
    [(name, data)] = documents(1)
    path = tmp_path / name
    path.write_bytes(data)
    uid = read_document(data).local_uid
    with pipeline_lab(tmp_path, docs=[(name, data)]) as lab:  # the doctors' keys for it; not published here
        result = _node(
            "--bootstrap", lab.bootstrap_servers, "--mis-id", DEV_MIS_ID, "--system-id", DEV_SYSTEM_IDS[0],
            "--kind", _kind(data), "--timeout", "240", str(path),
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr + lab.tails()
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines[0] == {"published": uid, "topic": f"emd.document.created.{DEV_MIS_ID}"}
        assert lines[-1]["status"] == "registered" and lines[-1]["localUid"] == uid
        registered = [r for r in lab.registry() if r["local_uid"] == uid]
        assert [r["digest"] for r in registered] == [hashlib.sha256(data).hexdigest()]
