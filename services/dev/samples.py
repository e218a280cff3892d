"""Where the Ministry example СЭМД live: ``shared/semd-samples`` beside the repository.

They are the documents real clinics send (see its SOURCES.md files): the tests, ``make run`` and
``emd demo`` use them. ``EMD_SHARED_DIR`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    override = os.environ.get("EMD_SHARED_DIR")
    if override:
        return Path(override)
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared"


SHARED = shared_dir()
MINISTRY_SAMPLES = SHARED / "semd-samples" / "minzdrav-examples-autosemd"
PROTOCOL_BRIEF = SHARED / "docs" / "remd-protocol.md"
