"""The local pipeline harness (lab.dev.local_pipeline) that `emd run`, `emd demo` and the end-to-end tests start."""

from __future__ import annotations

import pytest

from lab.dev.local_pipeline import LocalPipeline
from tests.pipeline_lab import documents


@pytest.mark.integration
def test_a_child_that_does_not_start_leaves_no_child_running(tmp_path, monkeypatch):
    """When the emulator does not write its certificate in time, entering the pipeline fails and stops the emulator it
    had started: nothing is left running (a leaked emulator per failed start made a loaded machine slower still)."""

    def never_written(self, path, name, timeout=0.0):
        raise SystemExit(f"emd: the {name} did not start:\n(simulated: its certificate never appeared)")

    monkeypatch.setattr(LocalPipeline, "_wait_for_file", never_written)
    pipeline = LocalPipeline(
        workdir=tmp_path, bootstrap_servers="127.0.0.1:9", documents=documents(1), components=("emulator",)
    )
    with pytest.raises(SystemExit, match="the emulator did not start"), pipeline:
        pass
    emulator = pipeline.supervisor.children["emulator"]
    assert emulator.process is not None and emulator.process.poll() is not None
