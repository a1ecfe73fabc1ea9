"""local: one worker in this process (the default; what `bench run` always did).

Two `bench run` of the same selection in two terminals are two local workers of two runs:
they share the work through the database's claims instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.plugins.executor import Executor, LaunchContext
from bench.plugins.registry import register_executor


@register_executor("local")
class Local(Executor):
    """One worker in this process (the default)."""

    default = True          # a run without --executor

    @dataclass
    class Config:
        workers: int | None = None      # 1: more workers need another executor (gpus, slurm)

        def __post_init__(self):
            if self.workers not in (None, 1):
                raise ValueError("local runs one worker in this process; for more, use "
                                 "--executor gpus (processes on this machine) or slurm")

    def launch(self, ctx: LaunchContext) -> None:
        ctx.new_worker(ctx.plan.label).run(ctx.cells, ctx.plan.run_id, ctx.plan.started)
