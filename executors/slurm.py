"""slurm: a Slurm job array of workers, submitted through submitit.

Robustness labs run weeks of GPU training on Slurm clusters, where the scheduler, not
bench, decides where and when each worker runs. submitit (facebookincubator/submitit)
writes the sbatch script, pickles the worker call, submits it as a job array and reads
back its result; it is a small, maintained, pure-Python package in wide research use, so
bench keeps no sbatch templates of its own. Each array task is one worker that claims
model jobs from the shared database until none is left (`bench.run.worker`): a task that hits
its time limit or dies with its node leaves a lease that expires, and another task (or
the next run) takes the job over from its last epoch checkpoint.

Needs the `slurm` extra (`pip install 'bench[slurm]'`), a database every node reaches
(`--db postgresql://…`, or a SQLite file on a shared filesystem for a few workers) and
`--results-dir` on a shared filesystem. `cluster: local` runs the same array through
submitit's local backend, on this machine, without Slurm.

Defaults (bench's choices; no paper sets them): one task; a day per task (a common
partition limit — a task that reaches it leaves its job, which another task resumes from
the last epoch); one GPU per task (one process drives one GPU, DESIGN.md "Scale"); the
cluster's default partition, CPUs and memory.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchError
from bench.plugins.executor import Executor, LaunchContext, bench_root
from bench.plugins.registry import register_executor


def slurm_worker(plan) -> dict:
    """One array task: the worker loop, labelled with its Slurm job id."""
    import submitit
    from bench.run.worker import _interrupt_on_sigterm, run_worker
    try:
        job = submitit.JobEnvironment()
        label = f"slurm {job.job_id}"
    except RuntimeError:            # submitit's local backend
        label = plan.label
    _interrupt_on_sigterm()
    return run_worker(plan.replace(label=label))


@register_executor("slurm")
class Slurm(Executor):
    """A Slurm job array of workers through submitit (partition, time, GPUs from suite.yaml or flags)."""

    @dataclass
    class Config:
        workers: int | None = None        # array size: tasks that claim model jobs (default 1)
        partition: str | None = None      # sbatch --partition (default: the cluster's)
        time_min: int = 24 * 60           # each task's time limit, minutes (sbatch --time)
        gpus_per_task: int = 1            # sbatch --gpus-per-task; 0 for CPU tasks
        cpus_per_task: int | None = None
        mem_gb: float | None = None
        sbatch: dict[str, Any] = field(default_factory=dict)   # more options: {qos: high, account: lab}
        setup: list[str] = field(default_factory=list)         # shell lines first: module load, …
        folder: str | None = None         # submitit's scripts and logs (default <results-dir>/slurm/run-N)
        cluster: Literal["slurm", "local"] = "slurm"           # local: submitit's local backend
        wait: bool = True                 # wait for the array to end (and print the summary)
        poll_seconds: float = 5.0

        def __post_init__(self):
            if self.workers is not None and self.workers < 1:
                raise ValueError("workers must be ≥ 1")
            if self.gpus_per_task < 0 or self.time_min < 1:
                raise ValueError("gpus_per_task must be ≥ 0 and time_min ≥ 1")

    def launch(self, ctx: LaunchContext) -> str | None:
        try:
            import submitit
        except ImportError:
            raise BenchError("--executor slurm needs submitit: pip install 'bench[slurm]'") from None
        cfg, n = self.config, self.config.workers or 1
        folder = Path(cfg.folder) if cfg.folder else ctx.results_dir / "slurm" / f"run-{ctx.plan.run_id}"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cfg.cluster)
        params: dict[str, Any] = {"timeout_min": cfg.time_min, "name": f"bench-run{ctx.plan.run_id}"}
        if cfg.cluster == "slurm":
            params["slurm_array_parallelism"] = n
            # the same bench as this command, whatever the job's working directory
            params["slurm_setup"] = [f"export PYTHONPATH={shlex.quote(str(bench_root()))}${{PYTHONPATH:+:$PYTHONPATH}}",
                                     *cfg.setup]
            if cfg.partition:
                params["slurm_partition"] = cfg.partition
            if cfg.gpus_per_task:
                params["slurm_gpus_per_task"] = cfg.gpus_per_task
            if cfg.cpus_per_task:
                params["cpus_per_task"] = cfg.cpus_per_task
            if cfg.mem_gb:
                params["mem_gb"] = cfg.mem_gb
            if cfg.sbatch:
                params["slurm_additional_parameters"] = dict(cfg.sbatch)
        executor.update_parameters(**params)
        device = (ctx.plan.settings.device_request if cfg.cluster == "local"
                  else "cuda" if cfg.gpus_per_task else "cpu")
        plans = [ctx.plan_for(i, device=device, label=f"slurm {i}") for i in range(n)]
        try:
            jobs = executor.map_array(slurm_worker, plans)
        except Exception as e:   # sbatch refused (unknown partition, bad option): one sentence
            raise BenchError(f"Slurm refused the job array: {str(e).strip().splitlines()[-1][:300]}") from None
        array = jobs[0].job_id.split("_")[0]
        ctx.out(f"submitted {'Slurm job array' if cfg.cluster == 'slurm' else 'local array'} {array} "
                f"({n} worker(s)); logs in {folder}")
        if not cfg.wait:
            ctx.out(f"not waiting: follow it with `python -m bench workers` and `squeue -j {array}`")
            return "detached"
        try:
            self._wait(jobs, cfg)
        except KeyboardInterrupt:
            ctx.out(f"stopped waiting; the workers keep running (`scancel {array}` stops them)")
            raise
        for j in jobs:
            if j.state not in ("COMPLETED", "DONE", "FINISHED") and not _has_result(j):
                ctx.out(f"warning: worker {j.job_id} ended as {j.state}; its log: {j.paths.stderr}")

    def _wait(self, jobs, cfg) -> None:
        """Until every task has left the queue (its result written or not: a task that died
        leaves its jobs to the others); where squeue cannot say, until each has a result."""
        pending = list(jobs)
        while pending:
            time.sleep(cfg.poll_seconds)
            queued = _squeue([j.job_id for j in pending]) if cfg.cluster == "slurm" else None
            if queued is not None:
                pending = [j for j in pending if j.job_id in queued]
            else:
                pending = [j for j in pending if not (_has_result(j) or j.done())]


def _has_result(job) -> bool:
    try:
        return job.paths.result_pickle.exists()
    except Exception:
        return False


def _squeue(job_ids: list[str]) -> set[str] | None:
    """The array tasks still queued or running (None if squeue cannot say)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None if "Invalid job id" not in out.stderr else set()
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}
