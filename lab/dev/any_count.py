"""Count the annotations that say ``Any``: the figure docs/architecture.md's gate section records.

An annotation counts once when ``Any`` appears anywhere inside it (``Any``, ``dict[str, Any]``,
``typing.Any``): a parameter's, a return's, or an annotated assignment's. ``python -m lab.dev.any_count``
prints the total and the files with the most; ``--per-file`` prints every file.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOTS = ("producer", "services", "workers", "lab")


def _says_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "Any":
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "Any" in node.value:
            return True  # a string annotation ("dict[str, Any]")
    return False


def _annotations(tree: ast.AST) -> Iterator[ast.expr | None]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if arg is not None:
                    yield arg.annotation
            yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def count_file(path: Path) -> int:
    """The number of annotations in ``path`` that mention ``Any``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return sum(_says_any(a) for a in _annotations(tree))


def count_tree(root: Path, roots: tuple[str, ...] = ROOTS) -> dict[str, int]:
    """Every Python file under ``root``'s import roots with its count (files without one left out)."""
    counts: dict[str, int] = {}
    for name in roots:
        for path in sorted((root / name).rglob("*.py")):
            if n := count_file(path):
                counts[str(path.relative_to(root))] = n
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.dev.any_count", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("root", nargs="?", default=".", type=Path, help="the repository's folder (default .)")
    parser.add_argument("--per-file", action="store_true", help="print every file's count, not the top ten")
    args = parser.parse_args(argv)
    missing = [name for name in ROOTS if not (args.root / name).is_dir()]
    if missing:
        parser.error(f"{args.root} is not the repository's folder: no {', '.join(missing)}")
    counts = count_tree(args.root)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for path, n in ranked if args.per_file else ranked[:10]:
        print(f"{n:5d}  {path}")
    print(f"annotations saying Any: {sum(counts.values())} in {len(counts)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
