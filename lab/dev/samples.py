"""The sample СЭМД: the curated set the repository carries, and the Ministry's whole corpus when it is at hand.

``REPOSITORY_SAMPLES`` (``lab/data/samples``, its SOURCES.md says which examples and why each) is what the
tests always use, so they give the same result on every machine, and what ``emd run``, ``emd demo`` and
``make bench`` fall back to: a clone needs nothing beside it.

The Ministry corpus (``semd-samples/minzdrav-examples-autosemd``, 91 examples) is used by ``emd run`` and
``emd demo`` when a ``shared/`` folder lies beside the repository, or where ``EMD_SHARED_DIR`` points; it is
never required. ``EMD_SHARED_DIR`` set to a folder without the corpus (an empty one) hides it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPOSITORY_SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CORPUS = Path("semd-samples") / "minzdrav-examples-autosemd"


def shared_dir() -> Path:
    """``EMD_SHARED_DIR``, else the ``shared/`` folder beside the repository (which may not exist)."""
    override = os.environ.get("EMD_SHARED_DIR")
    return Path(override) if override else REPO.parent / "shared"


def ministry_corpus() -> Path | None:
    """The folder of the Ministry's whole example corpus, or None when this machine has none."""
    folder = shared_dir() / CORPUS
    return folder if any(folder.glob("*.xml")) else None


def default_samples() -> Path:
    """What ``emd run`` and ``emd demo`` publish: the whole corpus when present, else the repository's set."""
    return ministry_corpus() or REPOSITORY_SAMPLES


def test_document_for(oid: str) -> bytes | None:
    """A repository sample of organisation ``oid``, re-dated and with a fresh localUid, for ``emd clinic test``
    (entry point ``emd.test_documents``); None when no sample is of that organisation."""
    from lab.dev.local_pipeline import as_new_document, sample_documents
    from producer import cda
    from producer.xmlsafe import parse_xml

    documents, _ = sample_documents(default_samples(), None)
    for _, data in documents:
        if cda.extract(parse_xml(data)).organization_oid == oid:
            return as_new_document(data)
    return None
