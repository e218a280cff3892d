"""The МИС library installs alone, in a clean virtual environment, and drags in nothing of the server side.

A МИС embeds ``emd-producer`` in its own application: it must not pull the pipeline's Kafka client, HTTP stacks,
database driver or XSLT engine into it. These tests build a fresh venv, install ``./producer`` alone from the
package index, and import every one of its modules there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the package index and a Python process of its own

ROOT = Path(__file__).resolve().parent.parent
#: the pipeline's server-side dependencies a МИС must never get with the library
SERVER_SIDE = ("aiokafka", "httpx", "aiohttp", "psycopg", "saxonche", "confluent_kafka", "opentelemetry")

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import producer
names = [m.name for m in pkgutil.walk_packages(producer.__path__, "producer.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding ``emd-producer`` and its own dependencies, nothing else of ours."""
    root = tmp_path_factory.mktemp("mis-venv")
    source = root / "producer"
    # a copy, so the build writes nothing (build/, *.egg-info) into the repository's tree
    shutil.copytree(
        ROOT / "producer", source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    return python


def test_the_mis_library_installs_alone_in_a_clean_venv_without_the_server_side(clean_venv: Path) -> None:
    """``pip install ./producer`` into a fresh venv installs none of the pipeline's server-side packages."""
    listed = subprocess.run(
        [str(clean_venv), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    installed = {p["name"].lower().replace("-", "_") for p in json.loads(listed.stdout)}
    assert "emd_producer" in installed
    assert [p for p in installed if p.startswith(SERVER_SIDE)] == []


def test_importing_every_module_of_the_mis_library_loads_no_server_side_module(clean_venv: Path) -> None:
    """Every module of ``producer`` imports in the clean venv, and ``sys.modules`` then holds none of the server
    side's packages, nor anything of ``services``, ``workers`` or ``lab``."""
    run = subprocess.run(
        [str(clean_venv), "-c", _IMPORT_ALL],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=clean_venv.parent,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert {"producer.client", "producer.events", "producer.kafka"} <= set(report["modules"])
    forbidden = (*SERVER_SIDE, "services", "workers", "lab")
    assert [m for m in report["loaded"] if m in forbidden] == []


def test_the_check_would_see_a_server_side_import(tmp_path: Path) -> None:
    """The same import report run here, where the pipeline is installed, does list ``aiokafka`` once it is
    imported: the check above can fail."""
    probe = _IMPORT_ALL.replace("import producer\n", "import producer, aiokafka\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "aiokafka" in json.loads(run.stdout)["loaded"]
