"""Citations point inside the repository: no code or document cites notes that a clone does not contain.

The evidence the code relies on is in ``docs/`` (``docs/protocol.md``, ``docs/broker.md``, ``docs/gost.md``), in
our own words, and the code cites it by repository path. A citation of the research notes (their file
names, their section numbers, the folder beside the clone they live in) is a broken link for everyone else.
The one folder beside the clone the code may name is the optional sample corpus of ``lab/dev/samples.py``
(``EMD_SHARED_DIR``), and it does so without a relative path.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: what a clone has and a reader reads: code, tests and documentation
SCANNED = ("services", "producer", "workers", "lab", "tests", "docs", "bench", "README.md", "DEVELOPERS.md")
#: text files written by the project (vendored schemas and samples are data, not citations)
SUFFIXES = {".py", ".md", ".html", ".toml", ".yaml", ".yml", ".json", ".txt", ".sh", ".sql", ".in"}
SKIPPED_DIRS = {"__pycache__", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

# The patterns are written so that this file does not match them itself.
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "a section of the brief": re.compile(r"\bbrief(?:'s)?\s+§", re.I),
    "a section number without a document": re.compile(r"(?<![0-9] )§\s?\d"),
    "a path to the folder beside the clone": re.compile(r"\.\./shared\b"),
    "the notes' folder": re.compile(r"\bshared[/]docs\b"),
    "a file name of the notes": re.compile(r"\b(?:remd-protocol(?:-addend[u]m)?|gost-crypto)\.md\b"),
    "the notes by their name": re.compile(r"\b(?:addend[u]m|protocol\s+brief|research\s+brief)\b", re.I),
    "the notes by their owner": re.compile(r"\bteam's\s+(?:notes|shared|research)\b", re.I),
}


def scanned_files(root: Path) -> list[Path]:
    """The project's own text files under ``root`` that a citation could hide in."""
    files: list[Path] = []
    for name in SCANNED:
        top = root / name
        if top.is_file():
            files.append(top)
            continue
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(root).parts
            if path.is_file() and path.suffix in SUFFIXES and not SKIPPED_DIRS & set(relative):
                if not any(part.endswith(".egg-info") for part in relative):
                    files.append(path)
    return files


def offenders(root: Path) -> list[str]:
    """``path:line: what it cites`` for every line under ``root`` that cites something a clone does not have."""
    found = []
    for path in scanned_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {what}: {line.strip()[:120]}")
    return found


def test_nothing_cites_notes_outside_the_repository():
    """No code, test or document of the repository cites the research notes a clone does not contain."""
    assert offenders(ROOT) == []


def test_a_planted_citation_of_the_notes_is_found(tmp_path):
    """Each way of citing the notes, planted in a copy of the layout, is reported with its file and line."""
    (tmp_path / "services" / "remd").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "docs").mkdir()
    section = "§"
    planted = {
        "services/remd/names.py": f'NS = "urn:x"  # [C] brief {section}2.2\n',
        "services/remd/soap.py": f'"""An acknowledgement ({section}8.4)."""\n',
        "tests/kafka_helpers.py": "# wrong end offsets (../" + "shared/" + "docs/broker.md)\n",
        "docs/emulator.md": "See `remd-" + "protocol.md` and the protocol " + "brief.\n",
        "README.md": "names from the " + "adden" + "dum of the notes\n",
        "DEVELOPERS.md": "what the team's " + "notes measured\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    found = offenders(tmp_path)
    for name in planted:
        assert any(line.startswith(f"{name}:1: ") for line in found), (name, found)


def test_the_legitimate_mentions_are_not_citations(tmp_path):
    """An RFC's section, the sample corpus beside the clone, and a shared volume are not mistaken for citations."""
    (tmp_path / "lab" / "dev").mkdir(parents=True)
    (tmp_path / "lab" / "dev" / "samples.py").write_text(
        '"""The corpus when a ``shared/`` folder lies beside the clone, or where ``EMD_SHARED_DIR`` points."""\n'
        "when = 1  # RFC 5652 §11.3: UTCTime until 2049\n"
        "# a shared volume, shared by the replicas\n",
        encoding="utf-8",
    )
    assert offenders(tmp_path) == []
