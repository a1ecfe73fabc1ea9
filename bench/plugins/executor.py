"""Executors: what starts a run's workers. One file each under `executors/`, registered by name.

An executor gets the run's cells and a `WorkerPlan` (the suite, the selection, the
database URL, the run id, the run's settings) and starts workers that each run
`bench.run.worker`'s loop; it returns when they have ended. The workers coordinate through
the database alone (`bench.db.claims`), so an executor only has to start processes
somewhere and wait:

    @register_executor("ray")
    class Ray(Executor):
        @dataclass
        class Config:
            workers: int = 1
            address: str = "auto"
        def launch(self, ctx):
            ray.init(address=self.config.address)
            refs = [ray.remote(num_gpus=1)(run_worker).remote(ctx.plan_for(i))
                    for i in range(self.config.workers)]
            ray.get(refs)

Options come from suite.yaml (`executors: {slurm: {partition: gpu}}`) and the command
line (`--workers N`, `--executor-opt KEY=VALUE`), the command line winning. A run without
`--executor` uses the one executor that declares `default = True` (one worker in this
process, built by `ctx.new_worker`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from bench.atomic import atomic_write_text
from bench.plugins.base import Plugin

if TYPE_CHECKING:     # types only: the contract sits below the run and the data
    from bench.run.plan import Cell


@dataclass(frozen=True)
class LaunchContext:
    """What `Executor.launch` gets: the cells, the plan a worker started elsewhere rebuilds
    them from, where to say what it did, and `new_worker(label)`: a worker of this run in
    this process (a `bench.run.worker.Worker`; its `run(ctx.cells, plan.run_id,
    plan.started)` is the worker loop)."""
    cells: list[Cell]
    plan: Any                         # bench.run.worker.WorkerPlan
    out: Callable[[str], None]
    new_worker: Callable[[str], Any]  # label → bench.run.worker.Worker

    @property
    def results_dir(self) -> Path:
        return self.plan.settings.results_dir

    def plan_for(self, i: int, *, device: str | None = None, label: str | None = None):
        """The plan of worker number i: labelled (default "<executor> i"), on `device` if given."""
        plan = self.plan.replace(label=label if label is not None else f"{self.plan.executor} {i}")
        return plan.on_device(device) if device is not None else plan


class Executor(Plugin):
    """Starts the workers of a run and waits for them."""

    default: ClassVar[bool] = False    # the executor of a run without --executor (exactly one)

    @dataclass
    class Config:
        workers: int | None = None

    @property
    def workers(self) -> int | None:
        return getattr(self.config, "workers", None)

    def launch(self, ctx: LaunchContext) -> str | None:
        """Start the workers and wait for them to end; return "detached" instead when the
        workers go on without this command (the run is then recorded as submitted)."""
        raise NotImplementedError


def bench_root() -> Path:
    """The directory that holds this `bench` package: put first on a worker's PYTHONPATH so
    workers run the same code as the command that started them."""
    import bench
    return Path(bench.__file__).resolve().parents[1]


def python() -> str:
    return sys.executable


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (a worker plan holds the database URL), atomically:
    a worker that starts early or a second run never reads half a plan."""
    atomic_write_text(path, text, perms=0o600)


def default_executor() -> Executor:
    """The registered executor that declares `default = True`, with its default Config."""
    from bench.errors import PluginError
    from bench.plugins.registry import EXECUTORS
    found = [cls for _, cls in EXECUTORS.items() if getattr(cls, "default", False)]
    if len(found) != 1:
        raise PluginError(f"{len(found)} executors declare default = True; exactly one must "
                          f"(the one that runs a worker in this process)")
    return found[0]()


def build_executor(name: str, options: dict | None = None, *, where: str = "executor options"):
    """The executor `name` with its typed Config built from `options` (errors are BenchErrors)."""
    from bench.plugins.config import ConfigError, build_config
    from bench.errors import BenchError
    from bench.plugins.registry import EXECUTORS
    cls = EXECUTORS.get(name)
    try:
        cfg = build_config(cls.Config, options or {}, "")
    except ConfigError as e:
        raise BenchError(f"{where} for executor {name!r}: {e}") from None
    return cls(cfg)
