"""Executors: what starts a run's workers. One file each under `executors/`, registered by name.

An executor gets the run's cells and a `WorkerPlan` (the suite, the selection, the
database URL, the run id) and starts workers that each run `bench.run.worker`'s loop; it
returns when they have ended. The workers coordinate through the database alone
(`bench.db.claims`), so an executor only has to start processes somewhere and wait:

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
line (`--workers N`, `--executor-opt KEY=VALUE`), the command line winning.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.plugins.base import Plugin
from bench.run.plan import Cell


@dataclass
class LaunchContext:
    """What `Executor.launch` gets: the runner (for an in-process worker), the cells, and the
    plan a worker started elsewhere rebuilds them from."""
    runner: Any                       # bench.run.runner.Runner
    cells: list[Cell]
    plan: Any                         # bench.run.worker.WorkerPlan
    out: Callable[[str], None]

    @property
    def results_dir(self) -> Path:
        return Path(self.plan.results_dir)

    def plan_for(self, i: int, **kw):
        """The plan of worker number i (label and executor set)."""
        return self.plan.replace(**{"label": f"{self.plan.executor} {i}", **kw})


class Executor(Plugin):
    """Starts the workers of a run and waits for them."""

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
    """Write a file only its owner can read (a worker plan holds the database URL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


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
