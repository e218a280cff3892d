"""docs/operations.md's log contract: the fields it lists are those a JSON line has, and its shipper examples make
labels only of fields with few values (never a localUid or a MessageID)."""

from __future__ import annotations

import io
import json
import re
import tomllib
from pathlib import Path

import yaml

from services.logs import configure, get_logger

DOC = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
SECTION = DOC[DOC.index("## Logs: the fields") :]
#: fields with a value per document, call or trace: a label of them is a stream per document
PER_DOCUMENT = {
    "local_uid",
    "message_id",
    "relates_to",
    "emdr_id",
    "organization",
    "trace_id",
    "span_id",
    "event",
}


def _block(language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", SECTION, re.S)
    return block


def _documented_always() -> set[str]:
    rows = re.findall(r"^\| `([a-z_]+)` \| yes \|", SECTION, re.M)
    return set(rows)


def test_a_json_log_line_has_every_field_the_contract_says_it_always_has():
    """configure(fmt="json") writes lines with timestamp, level, event and component, as the table says."""
    stream = io.StringIO()
    configure(fmt="json", level="info", stream=stream)
    get_logger("services.pipeline.signing").info("document signed", local_uid="abc", kind="119")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert _documented_always() == {"timestamp", "level", "event", "component"}
    assert _documented_always() <= set(line)
    assert (line["level"], line["event"], line["local_uid"]) == ("info", "document signed", "abc")


def test_the_promtail_example_labels_no_per_document_field():
    """The Promtail stages make labels of level and stage only, never of a localUid, MessageID or trace id."""
    stages = yaml.safe_load(_block("yaml"))["pipeline_stages"]
    labels = next(s["labels"] for s in stages if "labels" in s)
    assert set(labels) == {"level", "stage"}
    assert not set(labels) & PER_DOCUMENT


def test_the_vector_example_labels_no_per_document_field():
    """The Vector Loki sink's labels are app and level, and it parses the JSON lines it labels by."""
    config = tomllib.loads(_block("toml"))
    labels = config["sinks"]["loki"]["labels"]
    assert set(labels) == {"app", "level"}
    assert not {v.strip("{} ") for v in labels.values()} & PER_DOCUMENT
    assert "parse_json(.message)" in config["transforms"]["emd_json"]["source"]
