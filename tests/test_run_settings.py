"""One frozen RunSettings from the runner to every worker (issue 18 §3): through the
WorkerPlan's JSON to a worker elsewhere, and through the executor's worker factory to a
worker in this process; the default executor is the registry's, not a special case."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.db import database as db
from bench.db.schema import utcnow
from bench.db.claims import workers
from bench.plugins.executor import Executor, build_executor
from bench.plugins.registry import register_executor
from bench.run.plan import expand
from bench.run.runner import Runner
from bench.run.settings import RunSettings
from bench.run.worker import WorkerPlan
from bench.suite.load import load_suite

@pytest.fixture
def one(suite_file):
    return load_suite(suite_file())


@register_executor("test_two_in_process")
class TwoInProcess(Executor):
    """Two workers in this process, one after the other, built by the run's worker factory."""

    def launch(self, ctx):
        for label in ("first", "second"):
            ctx.new_worker(label).run(ctx.cells, ctx.plan.run_id, ctx.plan.started)


def test_the_worker_plan_carries_the_run_settings(one, tmp_path):
    engine = db.open_db(tmp_path / "p.sqlite")
    settings = RunSettings(data_root=tmp_path / "data", device="cpu", device_request="auto",
                           results_dir=tmp_path / "res", offline=True, force=True,
                           progress=True, lease_seconds=12.5)
    runner = Runner(one, engine, settings, selection={"tags": ["t"]})
    cells = expand(one, tags=["t"])
    plan = runner.plan(cells, 7, utcnow())
    back = WorkerPlan.from_json(plan.to_json())
    assert back == plan and back.settings.offline and back.settings.force
    # what a worker elsewhere gets: absolute paths, the device as asked, no progress bars
    assert back.settings.data_root == (tmp_path / "data").resolve()
    assert back.settings.results_dir == (tmp_path / "res").resolve()
    assert (back.settings.device_request, back.settings.progress, back.settings.lease_seconds) == \
        ("auto", False, 12.5)
    assert back.settings.here().device in ("cpu", "cuda")        # resolved on its own machine
    gpu = back.on_device("cpu")
    assert (gpu.settings.device, gpu.settings.device_request) == ("cpu", "cpu") and gpu.tags == ["t"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.force = False  # type: ignore[misc]
    # the Python API: the settings' fields as keywords, or the settings, never both
    assert Runner(one, engine, data_root=tmp_path, device="cpu").settings == \
        RunSettings(data_root=tmp_path, device="cpu")
    with pytest.raises(TypeError, match="not both"):
        Runner(one, engine, settings, force=False)


def test_in_process_workers_come_from_the_executor_and_the_worker_factory(one, tmp_path, data_root):
    """A run without an executor uses the registry's default one (one unlabelled worker in
    this process); any executor can start workers in this process through `ctx.new_worker`."""
    engine = db.open_db(tmp_path / "w.sqlite")
    cells = expand(one, tags=["t"])
    notes: list[str] = []
    runner = Runner(one, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                    progress=False, out=notes.append)
    summary = runner.run(cells)
    assert summary.exit_status == 0 and summary.trained == ["m"]
    assert any(n.startswith("evaluating 1 cell(s) of m") for n in notes)   # no label prefix
    (w,) = workers(engine, run_id=summary.run_id)
    assert (w.record.executor, w.record.label, w.state) == (runner.executor.registry_name, "", "done")
    assert runner.executor.default and w.record.executor == "local"

    notes.clear()
    two = Runner(one, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                 progress=False, out=notes.append, force=True,
                 executor=build_executor("test_two_in_process"))
    summary = two.run(cells)
    assert summary.exit_status == 0 and summary.loaded == ["m"] and len(summary.done) == 1
    ws = workers(engine, run_id=summary.run_id)
    assert sorted((v.record.label, v.record.executor, v.state) for v in ws) == [
        ("first", "test_two_in_process", "done"), ("second", "test_two_in_process", "done")]
    assert any(n.startswith("[first] evaluating 1 cell(s) of m") for n in notes)
    assert not any(n.startswith("[second] evaluating") for n in notes)
    assert Path(two.plan(cells, summary.run_id, utcnow()).settings.results_dir).is_absolute()
