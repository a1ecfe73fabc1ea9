"""Many workers, one registry (issue 11), with real components: worker processes on this
machine, a PostgreSQL server and a one-node Slurm cluster started by fixtures.

- 4 workers into PostgreSQL give exactly the results of one local run, cell for cell
  (the same per-sample outcomes), and train each model once; `bench ls` shows the
  running cells with their worker while they run.
- A worker killed with SIGKILL mid-training: another takes the job over once the lease
  expired, resumes from the epoch checkpoint, and nothing is lost or recorded twice.
- Two `bench run` started at the same instant on a new SQLite file both succeed and
  together train each model once.
- A Slurm job array (submitit) of workers shares a suite the same way.

Every worker process runs with one torch thread, as does each reference run: the CPU
thread count changes float summation order, hence bits of the trained weights.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.schema import ModelRecord, ResultRecord, RunRecord
from bench.db.claims import workers
from bench.cli.main import main
from bench.suite.load import load_suite
from tests.conftest import REPO

FOUR = textwrap.dedent("""\
    version: 1
    seed: 0
    datasets:
      tiny: {plugin: mnist, train_subset: 256}
    attacks:
      clean: {plugin: clean}
      pgd3: {plugin: pgd, config: {norm: linf, steps: 3, step_size: 0.05}}
    models:
      m_a: {dataset: tiny, arch: small_cnn, defense: sgd, train: {epochs: 1, batch_size: 64, lr: 0.05}}
      m_b: {base: m_a, train: {lr: 0.03}}
      m_c: {base: m_a, train: {lr: 0.02}}
      m_d: {base: m_a, train: {lr: 0.04}}
    matrix:
      - name: main
        tags: [w]
        models: [m_a, m_b, m_c, m_d]
        attacks: [clean, pgd3]
        eps: [0.1]
        eval: {n: 64, batch_size: 64}
    tables:
      tab:
        title: Tiny
        rows: [m_a, m_b]
        columns: [{attack: clean, label: Clean}, {attack: pgd3, eps: 0.1, label: PGD}]
    """)

ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


def bench(*args) -> list[str]:
    return [sys.executable, "-m", "bench", *map(str, args)]


def run_ok(cmd, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def results(url) -> dict[str, ResultRecord]:
    engine = db.open_db(url)
    with Session(engine) as s:
        out = {r.cell_id: r for r in s.scalars(select(ResultRecord))}
        s.expunge_all()
    engine.dispose()
    return out


def worker_views(url, run_id=None):
    engine = db.open_db(url)
    try:
        return workers(engine, run_id=run_id)
    finally:
        engine.dispose()


def trained_counts(views) -> collections.Counter:
    return collections.Counter(m for v in views for m in (v.record.summary or {}).get("trained", []))


@pytest.fixture
def four(tmp_path, data_root):
    p = tmp_path / "suite.yaml"
    p.write_text(FOUR)
    return p


def test_four_workers_into_postgresql_match_one_local_run(four, tmp_path, data_root, pg_url, capsys):
    common = ["--data-root", data_root, "--device", "cpu", "--no-progress"]
    ref_db = tmp_path / "ref.sqlite"
    t_ref = time.time()
    run_ok(bench("run", four, "--db", ref_db, "--results-dir", tmp_path / "ref", *common))
    t_ref = time.time() - t_ref

    t0 = time.time()
    proc = subprocess.Popen(bench("run", four, "--db", pg_url, "--results-dir", tmp_path / "shared",
                                  "--executor", "gpus", "--workers", 4, "--lease", 10, *common),
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listing = ""
    try:
        while proc.poll() is None and time.time() - t0 < 600:   # `bench ls` while the workers run
            time.sleep(1.0)
            try:
                main(["ls", str(four), "--db", pg_url])
            except Exception:       # the run has not created the schema yet
                continue
            out = capsys.readouterr().out
            if " running " in out:
                listing = out
                break
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    t_four = time.time() - t0
    assert proc.returncode == 0, err[-3000:]
    with capsys.disabled():      # for the record (pytest -s): wall times and the listing
        print(f"\n1 local worker: {t_ref:.1f} s; 4 workers into PostgreSQL: {t_four:.1f} s")
        print("bench ls during the 4-worker run:\n" + listing)
    assert "started 4 worker process(es) on the CPU" in err
    assert "4 worker(s):" in out                        # the summary says who did what

    ref, got = results(ref_db), results(pg_url)
    assert len(ref) == 8 and set(got) == set(ref)
    for cid, r in ref.items():
        g = got[cid]
        assert g.status == r.status == "done" and g.cell_key == r.cell_key and g.n == r.n == 64
        assert g.outcomes == r.outcomes, f"{cid}: per-sample outcomes differ from the local run"

    views = worker_views(pg_url)
    assert len(views) == 4 and {v.state for v in views} == {"done"}
    assert {v.record.executor for v in views} == {"gpus"}
    assert trained_counts(views) == {"m_a": 1, "m_b": 1, "m_c": 1, "m_d": 1}   # each model once
    ids = {v.record.id for v in views}
    assert {r.worker for r in got.values()} <= ids
    engine = db.open_db(pg_url)
    with Session(engine) as s:
        models = list(s.scalars(select(ModelRecord)))
    engine.dispose()
    assert len(models) == 4 and {m.worker for m in models} <= ids

    # the listing taken during the run: a running cell names its worker and since when
    assert listing, "bench ls never saw a running cell"
    running = [line for line in listing.splitlines() if " running " in line]
    assert all(any(i in line for i in ids) and " since " in line for line in running)

    # report and check read PostgreSQL like SQLite
    assert main(["report", "--db", pg_url, "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").exists()
    assert main(["workers", "--db", pg_url]) == 0
    shown = capsys.readouterr().out
    assert shown.count(" done ") >= 4 and "gpus" in shown


KILL = textwrap.dedent("""\
    version: 1
    seed: 0
    datasets:
      tiny: {plugin: mnist, train_subset: 1024}
    attacks:
      clean: {plugin: clean}
      pgd3: {plugin: pgd, config: {norm: linf, steps: 3, step_size: 0.05}}
    models:
      m_fast: {dataset: tiny, arch: small_cnn, defense: sgd, train: {epochs: 1, batch_size: 64, lr: 0.05}}
      m_slow: {base: m_fast, train: {epochs: 6, batch_size: 32, lr: 0.05}}
    matrix:
      - name: main
        models: [m_fast, m_slow]
        attacks: [clean, pgd3]
        eps: [0.1]
        eval: {n: 64, batch_size: 64}
    """)


def test_a_killed_worker_is_taken_over_after_its_lease_expires(tmp_path, data_root, pg_url, capsys):
    """Two workers: one trains m_fast, the other m_slow. SIGKILL the one training m_slow after
    its first epoch: the other, done with m_fast, takes m_slow over once the lease expired,
    resumes from the epoch checkpoint, and every cell ends recorded once."""
    from bench.db.claims import leases
    p = tmp_path / "kill.yaml"
    p.write_text(KILL)
    slow_key = load_suite(p).models["m_slow"].key
    shared = tmp_path / "shared"
    resume = shared / "checkpoints" / f"{slow_key}.resume.pt"
    run = subprocess.Popen(bench("run", p, "--db", pg_url, "--results-dir", shared, "--data-root", data_root,
                                 "--device", "cpu", "--no-progress", "--lease", 3,
                                 "--executor", "gpus", "--workers", 2),
                           cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine, lease, deadline = None, None, time.time() + 600
        while time.time() < deadline and run.poll() is None:
            time.sleep(0.05)
            if not resume.exists():
                continue
            engine = engine or db.open_db(pg_url)
            lease = leases(engine).get(slow_key)
            if lease is not None and lease.stage == "training":
                break                            # m_slow has finished an epoch: kill its worker
        assert lease is not None and run.poll() is None, "m_slow was never caught training"
        main(["ls", str(p), "--db", pg_url])     # during the run: m_slow's cells are running
        listing = capsys.readouterr().out
        os.kill(lease.pid, signal.SIGKILL)
        victim = lease.owner
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    slow_lines = [line for line in listing.splitlines() if "/m_slow/" in line]
    assert len(slow_lines) == 2 and all("running  " in line and victim in line and "(training)" in line
                                        for line in slow_lines)
    assert f"taking over m_slow from {victim} (its lease expired)" in err
    assert "resuming m_slow at epoch" in err
    assert "exited with status -9" in err       # the executor says which worker died

    got = results(pg_url)
    assert len(got) == 4 and all(r.status == "done" for r in got.values())
    views = {v.record.id: v for v in worker_views(pg_url)}
    assert views[victim].state == "dead"          # stopped beating without signing off
    (survivor,) = set(views) - {victim}
    s = views[survivor].record.summary
    assert s["takeovers"] == {"m_slow": victim} and 2 <= s["resumed"]["m_slow"] <= 6
    assert trained_counts(views.values()) == {"m_fast": 1, "m_slow": 1}
    assert {r.worker for cid, r in got.items() if "m_slow" in cid} == {survivor}
    assert "m_slow (resumed at epoch" in out and f"(taken over from {victim})" in out

    # the resumed model is the model an uninterrupted run trains: same per-sample outcomes
    ref = tmp_path / "ref.sqlite"
    run_ok(bench("run", p, "--db", ref, "--results-dir", tmp_path / "ref", "--data-root", data_root,
                 "--device", "cpu", "--no-progress", "--filter", "tiny/m_slow/*"))
    fresh = results(ref)
    for cid in ("tiny/m_slow/clean", "tiny/m_slow/pgd3/eps=0.1"):
        assert got[cid].outcomes == fresh[cid].outcomes

    assert main(["workers", "--db", pg_url]) == 0
    shown = capsys.readouterr().out
    assert any(victim in line and " dead " in line for line in shown.splitlines())


STARTER = ("import pathlib, sys, time\n"
           "from bench.cli.main import main\n"
           "from bench.plugins.registry import load_plugins\n"
           "load_plugins()\n"
           "barrier = pathlib.Path(sys.argv[1])\n"
           "(barrier / sys.argv[2]).touch()\n"
           "while len(list(barrier.iterdir())) < 2:\n"
           "    time.sleep(0.002)\n"
           "sys.exit(main(sys.argv[3:]))\n")


def test_two_runs_started_at_once_on_a_new_sqlite_file_share_the_work(four, tmp_path, data_root):
    """Two terminals, one command: both succeed, each model is trained once between them."""
    dbp, barrier = tmp_path / "new.sqlite", tmp_path / "barrier"
    barrier.mkdir()
    args = ["run", four, "--db", dbp, "--results-dir", tmp_path / "res", "--data-root", data_root,
            "--device", "cpu", "--no-progress"]
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(barrier), str(i), *map(str, args)],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    got = results(dbp)
    assert len(got) == 8 and all(r.status == "done" for r in got.values())
    views = worker_views(dbp)
    assert len(views) == 2 and len({v.record.run_id for v in views}) == 2
    assert trained_counts(views) == {"m_a": 1, "m_b": 1, "m_c": 1, "m_d": 1}
    engine = db.open_db(dbp)
    with Session(engine) as s:
        runs = list(s.scalars(select(RunRecord)))
    assert [r.status for r in runs] == ["done", "done"]
    assert sum(r.summary["done"] for r in runs) == 8      # every cell evaluated by exactly one run
    assert {r.run_id for r in got.values()} <= {r.id for r in runs}


def test_a_slurm_job_array_of_workers_shares_the_suite(four, tmp_path, data_root, slurm_cluster,
                                                       monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dbp = tmp_path / "slurm.sqlite"            # on this machine's disk, shared with the node
    rc = main(["run", str(four), "--db", str(dbp), "--results-dir", str(tmp_path / "res"),
               "--data-root", str(data_root), "--no-progress", "--filter", "tiny/m_a/*",
               "--filter", "tiny/m_b/*", "--executor", "slurm", "--workers", "2",
               "--executor-opt", "gpus_per_task=0", "--executor-opt", "time_min=15",
               "--executor-opt", "poll_seconds=1", "--executor-opt", "sbatch={comment: bench-test}"])
    cap = capsys.readouterr()
    logs = sorted((tmp_path / "res" / "slurm").rglob("*.err"))
    assert rc == 0, cap.err[-2000:] + "\n".join(f.read_text()[-1500:] for f in logs) + slurm_cluster.log_tail()
    assert "submitted Slurm job array" in cap.err and "2 worker(s):" in cap.out
    got = results(dbp)
    assert len(got) == 4 and all(r.status == "done" for r in got.values())
    views = worker_views(dbp)
    assert len(views) == 2 and {v.record.executor for v in views} == {"slurm"}
    array = {v.record.label.split()[1].split("_")[0] for v in views}
    assert len(array) == 1 and {v.record.label.rsplit("_", 1)[1] for v in views} == {"0", "1"}
    assert trained_counts(views) == {"m_a": 1, "m_b": 1}
    assert main(["workers", "--db", str(dbp)]) == 0
    assert capsys.readouterr().out.count("slurm") >= 2


# ---------------------------------------------------------------------- options, in one sentence

def test_executor_options_from_suite_yaml_and_flags(tmp_path, capsys):
    import argparse

    from bench.cli.scale import executor_from_args
    from bench.errors import SuiteError
    p = tmp_path / "s.yaml"
    p.write_text(FOUR + "executors:\n  slurm: {partition: gpu, time_min: 720, sbatch: {qos: high}}\n")
    suite = load_suite(p)
    args = argparse.Namespace(executor="slurm", workers=9, lease=60.0,
                              executor_opt=["time_min=60", "setup=[module load cuda]"])
    ex = executor_from_args(args, suite)
    cfg = ex.config
    assert (cfg.partition, cfg.time_min, cfg.workers, cfg.sbatch, cfg.setup) == \
        ("gpu", 60, 9, {"qos": "high"}, ["module load cuda"])
    p.write_text(FOUR + "executors:\n  slurm: {partion: gpu}\n")
    with pytest.raises(SuiteError, match=r"s\.yaml:\d+: executors\.slurm\.partion: unknown key \(did you mean 'partition'"):
        load_suite(p)
    p.write_text(FOUR + "executors:\n  slurmm: {}\n")
    with pytest.raises(SuiteError, match="unknown executor 'slurmm' \\(did you mean 'slurm'"):
        load_suite(p)
    p.write_text(FOUR)
    assert main(["run", str(p), "--db", str(tmp_path / "x.sqlite"), "--workers", "2"]) == 2
    assert "--workers and --executor-opt need --executor NAME" in capsys.readouterr().err
    assert main(["run", str(p), "--db", str(tmp_path / "x.sqlite"), "--executor", "local",
                 "--workers", "2"]) == 2
    assert "local runs one worker in this process" in capsys.readouterr().err
    assert main(["run", str(p), "--db", str(tmp_path / "x.sqlite"), "--executor", "gpu"]) == 2
    assert "unknown executor 'gpu' (did you mean 'gpus'" in capsys.readouterr().err
    assert main(["run", str(p), "--db", str(tmp_path / "x.sqlite"), "--executor", "gpus",
                 "--executor-opt", "workers"]) == 2
    assert "write KEY=VALUE" in capsys.readouterr().err


def test_a_run_whose_workers_all_ended_early_is_incomplete(four, tmp_path, data_root):
    """An executor whose workers never got to the cells: the run says so and exits 1; one that
    leaves its workers running (Slurm with wait: false) is recorded as submitted."""
    from dataclasses import dataclass

    from bench.plugins.executor import Executor
    from bench.plugins.registry import register_executor
    from bench.run.runner import Runner

    @register_executor("test_vanishing")
    class Vanishing(Executor):
        """Starts workers that die at once."""
        @dataclass
        class Config:
            workers: int | None = None
            detach: bool = False

        def launch(self, ctx):
            return "detached" if self.config.detach else None

    from bench.plugins.executor import build_executor
    from bench.run.plan import expand
    suite = load_suite(four)
    cells = expand(suite)
    engine = db.open_db(tmp_path / "v.sqlite")
    notes = []
    for detach, status, exit_status in ((False, "incomplete", 1), (True, "submitted", 0)):
        runner = Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "r",
                        progress=False, out=notes.append,
                        executor=build_executor("test_vanishing", {"detach": detach}))
        summary = runner.run(cells)
        assert summary.unfinished == 8 and summary.exit_status == exit_status
        with Session(engine) as s:
            assert s.get(RunRecord, summary.run_id).status == status
    assert any("8 cell(s) are still pending" in n for n in notes)
