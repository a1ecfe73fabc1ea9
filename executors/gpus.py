"""gpus: one worker process per visible GPU on this machine, each pinned to its GPU.

Each worker is `python -m bench.run.worker` with CUDA_VISIBLE_DEVICES set to one GPU, so it
sees that GPU as cuda:0 (one process drives one GPU: DESIGN.md, Scale). `workers` above
the number of GPUs shares them round-robin; on a machine without GPUs, `workers` CPU
processes (the default is one). CPU workers keep torch's default thread count, as a
local run does: the thread count changes float summation order, so a model trained by a
worker with other threads would not be bit-identical to the local run's.

Defaults (bench's choices): one worker per visible GPU (DESIGN.md "Scale": one process
drives one GPU), one CPU worker without GPUs, torch's own thread count.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

from bench.plugins.executor import Executor, LaunchContext, bench_root, python, write_private
from bench.plugins.registry import register_executor


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@register_executor("gpus")
class GPUs(Executor):
    """One worker process per visible GPU (CUDA_VISIBLE_DEVICES pinned); without GPUs, CPU processes."""

    @dataclass
    class Config:
        workers: int | None = None      # default: one per visible GPU (one without GPUs)
        threads: int | None = None      # CPU workers' torch threads (default: torch's own)

        def __post_init__(self):
            if self.workers is not None and self.workers < 1:
                raise ValueError("workers must be ≥ 1")

    def launch(self, ctx: LaunchContext) -> None:
        gpus = [] if ctx.plan.settings.device_request == "cpu" else visible_gpus()
        n = self.config.workers or max(1, len(gpus))
        plan_file = ctx.results_dir / "workers" / f"run-{ctx.plan.run_id}.json"
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        procs, files = [], []
        for i in range(n):
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(bench_root())] + [p for p in [env.get("PYTHONPATH")] if p])
            if gpus:
                gpu = gpus[i % len(gpus)]
                env["CUDA_VISIBLE_DEVICES"] = gpu
                plan, label = ctx.plan_for(i, device="cuda"), f"gpu {gpu}" + (f"/{i}" if n > len(gpus) else "")
            else:
                env["CUDA_VISIBLE_DEVICES"] = ""
                if self.config.threads:
                    env["OMP_NUM_THREADS"] = str(self.config.threads)
                plan, label = ctx.plan_for(i, device="cpu"), f"cpu {i}"
            path = plan_file.with_name(f"run-{ctx.plan.run_id}-{i}.json")
            files.append(path)
            write_private(path, plan.replace(label=label).to_json())   # the URL may hold a password
            procs.append(subprocess.Popen([python(), "-m", "bench.run.worker", str(path)], env=env))
        ctx.out(f"started {n} worker process(es) on " + (f"GPU(s) {', '.join(gpus)}" if gpus else "the CPU")
                + ": pids " + " ".join(str(p.pid) for p in procs))
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:     # stop the workers: they release their claims and sign off
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait()
            raise
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        bad = [(p.pid, c) for p, c in zip(procs, codes) if c not in (0, 1)]
        for pid, code in bad:
            ctx.out(f"warning: worker process {pid} exited with status {code}; its unfinished jobs "
                    f"are taken over by the others or by the next run")
