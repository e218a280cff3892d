"""A clone needs nothing beside it: the repository carries its sample СЭМД and names no path of a machine."""

from __future__ import annotations

import re
from pathlib import Path

from lab.dev import samples
from services.documents import validation

REPO = Path(__file__).resolve().parents[1]
#: folders of the source tree (not the venv, caches or run data)
TREE = ("services", "producer", "workers", "tests", "bench", "docs", "deploy", ".ci")
#: home and work folders of the machines the project was built on; /srv, /opt… in examples are illustrative
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(work|home|root|Users)/\w")


def test_repository_samples_cover_every_packaged_schema_kind():
    """Every kind with a packaged XSD or Schematron has a Ministry example among the repository's samples."""
    from producer.cda import extract
    from producer.xmlsafe import parse_xml

    kinds = {extract(parse_xml(p.read_bytes())).kind_code for p in samples.REPOSITORY_SAMPLES.glob("*.xml")}
    assert set(validation.known_kinds()) <= kinds


def test_without_a_corpus_the_repository_samples_are_the_default(tmp_path, monkeypatch):
    """EMD_SHARED_DIR naming a folder without the Ministry corpus makes emd run/demo use the repository's samples."""
    monkeypatch.setenv("EMD_SHARED_DIR", str(tmp_path))
    assert samples.ministry_corpus() is None
    assert samples.default_samples() == samples.REPOSITORY_SAMPLES


def test_a_corpus_beside_the_repository_is_used_when_present(tmp_path, monkeypatch):
    """A shared folder holding the corpus becomes what emd run/demo publish."""
    corpus = tmp_path / samples.CORPUS
    corpus.mkdir(parents=True)
    (corpus / "Consult.xml").write_bytes((samples.REPOSITORY_SAMPLES / "Consult.xml").read_bytes())
    monkeypatch.setenv("EMD_SHARED_DIR", str(tmp_path))
    assert samples.default_samples() == corpus


def test_no_file_names_an_absolute_path_of_a_machine():
    """No source, test or document file refers to a home or work folder of the machine it was written on."""
    files = [
        p for top in TREE for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]
    files += [
        p for p in REPO.iterdir() if p.is_file() and p.name != ".git"
    ]  # a worktree's .git names its main
    offenders = []
    for path in files:
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".json", ".txt", ".cfg", ".sh", ""}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(REPO)}:{n}"
            for n, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATH.search(line)
        ]
    assert offenders == []


def test_a_sample_made_new_still_passes_its_schemas():
    """as_new_document (what emd run/demo publish) keeps a valid sample valid: ConsultRedaction4 with a fresh
    localUid and creation time passes its XSD and the Ministry Schematron, which allows no seconds (У1-15)."""
    from lab.dev.local_pipeline import as_new_document

    data = as_new_document(
        (samples.REPOSITORY_SAMPLES / "ConsultRedaction4.xml").read_bytes(), local_uid="fresh-1"
    )
    report = validation.validate_semd(data, "119")
    assert report.xsd_errors == () and report.schematron_failures == ()
