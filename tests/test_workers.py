"""One way to wire a process: every ``workers/<name>/worker.py`` is a ``build(settings) -> App`` and nothing
else, and every stage's consumer group is named after the stage (``emd-<name>``), as the topology grants it."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from lab.dev.config import write_dev_config
from lab.dev.pki import DevCA, SubjectInfo, write_pem
from producer import topology
from services.commands.worker_cmd import WORKERS, load_build
from services.config import Settings
from services.messaging.app import App
from services.pipeline.organizations import read_mis_ids
from workers.callbacks.worker import build as build_callbacks

ROOT = Path(__file__).resolve().parent.parent
WORKER_FILES = sorted((ROOT / "workers").glob("*/worker.py"))


@pytest.mark.parametrize("path", WORKER_FILES, ids=lambda p: p.parent.name)
def test_a_worker_module_holds_only_its_build(path):
    """A worker module defines one function, ``build(settings) -> App``: no class, no other function, no
    statement but imports and constants (the domain logic lives in ``services/``)."""
    tree = ast.parse(path.read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    other = [
        type(n).__name__
        for n in tree.body
        if not isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Assign | ast.AnnAssign)
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # the docstring
    ]
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build")
    assert (functions, other) == (["build"], [])
    assert [a.arg for a in build.args.args] == ["settings"] and ast.unparse(build.returns) == "App"


def test_every_worker_emd_worker_runs_is_a_module_here():
    """``emd worker NAME`` knows exactly the workers that have a module (the callback service has its own command)."""
    assert set(WORKERS) | {"callbacks"} == {p.parent.name for p in WORKER_FILES}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """A development configuration every worker can be built from (one signing process: nothing is spawned)."""
    root = tmp_path_factory.mktemp("workers")
    organizations = write_dev_config(root / "cfg", organizations=1)
    ca = DevCA.create("ИПС CA")
    _, cert = ca.issue(subject=SubjectInfo(family="", common_name="ИПС", org="ЕГИСЗ"))
    write_pem(None, cert, cert_path=root / "ips.pem")
    return Settings.from_env(
        {},
        organizations_file=organizations,
        data_dir=root / "data",
        ips_certificates=str(root / "ips.pem"),
        signer_processes=1,
    )


def _built(settings: Settings) -> dict[str, App]:
    apps = {name: load_build(name)(settings) for name in WORKERS}
    apps["callbacks"] = build_callbacks(settings)
    return apps


def test_each_stage_consumes_in_the_group_of_its_name_which_the_topology_grants(settings):
    """Each stage a worker builds consumes in ``emd-<stage name>``, and the worker's Kafka user (``topology.access``
    for the МИС of its organisations file) may join exactly its stages' groups, no other."""
    apps = _built(settings)
    access = topology.access(read_mis_ids(settings.organizations_file))
    try:
        for name, app in apps.items():
            groups = {stage.group_id for stage in app.stages}
            assert all(stage.group_id == f"emd-{stage.name}" for stage in app.stages), name
            assert set(access[name].groups) == groups, name
            assert {t for stage in app.stages for t in stage.topics} <= {t.name for t in access[name].reads}
        assert [s.name for s in apps["status"].stages] == ["acknowledger", "acknowledger-sent"]
        assert apps["status"].stages[0].input_topic == topology.CALLBACKS.name
    finally:
        for app in apps.values():
            asyncio.run(app.close())
