"""The Any count the gate section of docs/architecture.md records (lab/dev/any_count.py)."""

from __future__ import annotations

import subprocess
import sys

from lab.dev.any_count import count_file, count_tree


def test_each_annotation_mentioning_any_counts_once(tmp_path):
    """Parameters, returns and annotated variables count once each when Any is anywhere inside them."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import Any\n"
        "import typing\n"
        "def f(a: Any, b: dict[str, Any], *args: Any, c: int = 0, **kw: typing.Any) -> list[Any]: ...\n"
        "x: 'dict[str, Any]' = {}\n"
        "y: int = 0\n"
        "def g(d: object) -> None: ...\n",
        encoding="utf-8",
    )
    assert count_file(module) == 6


def test_the_tree_count_covers_the_four_import_roots_and_leaves_out_clean_files(tmp_path):
    """Files of producer, services, workers and lab are counted; a file without Any is not listed."""
    for root in ("producer", "services", "workers", "lab"):
        (tmp_path / root).mkdir()
        (tmp_path / root / "clean.py").write_text("x: int = 0\n", encoding="utf-8")
    (tmp_path / "services" / "loose.py").write_text("from typing import Any\nv: Any = 1\n", encoding="utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("from typing import Any\nv: Any = 1\n", encoding="utf-8")
    assert count_tree(tmp_path) == {"services/loose.py": 1}


def test_the_command_has_help_and_refuses_a_folder_that_is_not_the_repository(tmp_path):
    """--help explains it; a folder without the import roots is an error naming what is missing, exit 2."""
    run = [sys.executable, "-m", "lab.dev.any_count"]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--per-file" in helped.stdout
    refused = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "no producer, services, workers, lab" in refused.stderr
