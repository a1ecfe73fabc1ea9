"""End to end: a tiny suite into a temporary database; rerun, failures, kill -9, corruption."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.outcomes import unpack_details, unpack_outcomes
from bench.db.schema import ModelRecord, ResultRecord, RunRecord, TableRecord
from bench.plugins.attack import Attack
from bench.cli.main import main
from bench.plugins.defense import Defense
from bench.run.plan import expand
from bench.plugins.registry import register_attack, register_defense
from bench.run.runner import Runner
from bench.suite.load import load_suite
from tests.conftest import REPO


@register_attack("test_broken")
class BrokenAttack(Attack):
    """Always raises: a plugin bug the runner must survive."""

    def perturb(self, model, x, y, eps):
        raise RuntimeError("plugin bug")


@register_defense("test_nan")
class NaNDefense(Defense):
    """A training objective that is NaN: the model must fail, the run go on."""

    def loss(self, model, x, y, ctx):
        return F.cross_entropy(model(x), y) * float("nan")


INTERRUPT = {"at_epoch": None}


@register_defense("test_interruptible")
class InterruptibleDefense(Defense):
    """Plain CE training that raises KeyboardInterrupt at a chosen epoch (a killed run)."""

    @dataclass
    class Config:
        tag: int = 0

    def loss(self, model, x, y, ctx):
        if INTERRUPT["at_epoch"] is not None and ctx.epoch == INTERRUPT["at_epoch"]:
            raise KeyboardInterrupt
        return F.cross_entropy(model(x), y)


TINY = textwrap.dedent("""\
    version: 1
    seed: 0
    datasets:
      tiny: {plugin: mnist, train_subset: 1024}
    attacks:
      clean: {plugin: clean}
      pgd5: {plugin: pgd, config: {norm: linf, steps: 5, step_size: 0.05}}
      broken: {plugin: test_broken}
    models:
      m_sgd:
        dataset: tiny
        arch: small_cnn
        defense: sgd
        train: {epochs: 2, batch_size: 32, lr: 0.05}
      m_nan:
        base: m_sgd
        defense: test_nan
    matrix:
      - name: main
        tags: [t]
        models: [m_sgd]
        attacks: [clean, pgd5]
        eps: [0.1, 0.3]
        eval: {n: 96, batch_size: 64}
      - name: bad
        tags: [bad]
        models: [m_sgd, m_nan]
        attacks: [broken, clean]
        eps: [0.1]
        eval: {n: 96, batch_size: 64}
    tables:
      tab:
        title: Tiny
        rows: [m_sgd]
        columns:
          - {attack: clean, label: Clean}
          - {attack: pgd5, eps: 0.3, label: PGD}
    """)


@pytest.fixture
def tiny(tmp_path, data_root):
    p = tmp_path / "suite.yaml"
    p.write_text(TINY)
    return p


def runner_for(suite, tmp_path, data_root, **kw):
    engine = db.open_db(tmp_path / "r.sqlite")
    return Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                  progress=False, out=lambda s: None, **kw), engine


def rows(engine):
    with Session(engine) as s:
        return {r.cell_id: r for r in s.scalars(select(ResultRecord))}


def test_run_records_then_rerun_evaluates_nothing(tiny, tmp_path, data_root):
    suite = load_suite(tiny)
    cells = expand(suite, tags=["t"])
    runner, engine = runner_for(suite, tmp_path, data_root)
    summary = runner.run(cells)
    assert summary.exit_status == 0 and len(summary.done) == 3 and summary.trained == ["m_sgd"]
    got = rows(engine)
    clean = got["tiny/m_sgd/clean"]
    assert clean.status == "done" and clean.n == 96 and clean.eps_literal == "0"
    per_sample = unpack_outcomes(clean.outcomes, clean.n)
    assert per_sample.sum() == clean.n_correct and clean.robust_acc == pytest.approx(per_sample.mean())
    # a trained model: clean accuracy well above chance, PGD lowers it, ε=0.3 at most ε=0.1
    p1, p3 = got["tiny/m_sgd/pgd5/eps=0.1"], got["tiny/m_sgd/pgd5/eps=0.3"]
    assert clean.robust_acc > 0.6
    assert p3.robust_acc <= p1.robust_acc <= clean.robust_acc and p3.robust_acc < clean.robust_acc
    # robust means correct on the clean input too
    assert not (unpack_outcomes(p1.outcomes, 96) & ~per_sample).any()
    # provenance on every row
    assert clean.config["eval"] == {"split": "test", "n": 96} and clean.precision == "fp32"
    assert clean.versions["torch"] == torch.__version__ and clean.smoke is False
    with Session(engine) as s:
        m = s.scalars(select(ModelRecord)).one()
        assert len(m.curves["loss"]) == 2 and len(m.checkpoint_sha256) == 64
        t = s.get(TableRecord, "tab")
        assert [c["label"] for c in t.layout["columns"]] == ["Clean", "PGD"]
    # rerun: nothing trained, nothing evaluated, rows untouched
    created = {k: r.created for k, r in got.items()}
    summary2 = runner_for(suite, tmp_path, data_root)[0].run(cells)
    assert summary2.skipped == 3 and not summary2.done and not summary2.trained
    assert {k: r.created for k, r in rows(engine).items()} == created
    # --force reruns, from the checkpoint cache, with the same outcome (seeded)
    summary3 = runner_for(suite, tmp_path, data_root, force=True)[0].run(cells)
    assert len(summary3.done) == 3 and summary3.loaded == ["m_sgd"]
    again = rows(engine)
    assert again["tiny/m_sgd/pgd5/eps=0.3"].outcomes == p3.outcomes


def test_failures_are_recorded_and_the_run_goes_on(tiny, tmp_path, data_root):
    suite = load_suite(tiny)
    cells = expand(suite, tags=["bad"])
    runner, engine = runner_for(suite, tmp_path, data_root)
    summary = runner.run(cells)
    assert summary.exit_status == 1
    got = rows(engine)
    assert got["tiny/m_sgd/clean"].status == "done"
    assert got["tiny/m_sgd/broken/eps=0.1"].status == "failed"
    assert "plugin bug" in got["tiny/m_sgd/broken/eps=0.1"].error
    nan = got["tiny/m_nan/clean"]
    assert nan.status == "failed" and "non-finite training loss" in nan.error
    with Session(engine) as s:
        assert s.scalars(select(RunRecord)).one().status == "failed"


def test_corrupt_checkpoint_is_detected_and_retrained(tiny, tmp_path, data_root):
    suite = load_suite(tiny)
    cells = expand(suite, filters=["tiny/m_sgd/clean"])
    runner, engine = runner_for(suite, tmp_path, data_root)
    runner.run(cells)
    ckpt = next((tmp_path / "res" / "checkpoints").glob("*.pt"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    notes = []
    r2 = Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                progress=False, out=notes.append, force=True)
    summary = r2.run(cells)
    assert summary.trained == ["m_sgd"] and not summary.loaded
    assert any("does not match its recorded sha256" in n for n in notes)


def test_interrupted_training_resumes_where_it_stopped(tmp_path, data_root):
    text = TINY.replace("defense: test_nan", "defense: test_interruptible") \
               .replace("models: [m_sgd, m_nan]", "models: [m_nan]")
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    suite = load_suite(p)
    cells = expand(suite, filters=["tiny/m_nan/clean"])
    INTERRUPT["at_epoch"] = 1
    try:
        runner, engine = runner_for(suite, tmp_path, data_root)
        with pytest.raises(KeyboardInterrupt):
            runner.run(cells)
    finally:
        INTERRUPT["at_epoch"] = None
    resume = list((tmp_path / "res" / "checkpoints").glob("*.resume.pt"))
    assert len(resume) == 1
    notes = []
    r2 = Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                progress=False, out=notes.append)
    r2.run(cells)
    assert any("resuming m_nan at epoch 2/2" in n for n in notes)
    assert not list((tmp_path / "res" / "checkpoints").glob("*.resume.pt"))
    resumed = rows(engine)["tiny/m_nan/clean"].outcomes
    # the same model trained without interruption gives the same weights, so the same outcomes
    fresh, engine2 = runner_for(suite, tmp_path / "fresh", data_root)
    fresh.run(cells)
    assert rows(engine2)["tiny/m_nan/clean"].outcomes == resumed
    with Session(engine) as s:
        statuses = [r.status for r in s.scalars(select(RunRecord).order_by(RunRecord.id))]
    assert statuses == ["interrupted", "done"]


SLOW = textwrap.dedent("""\
    version: 1
    datasets:
      tiny: {plugin: mnist, train_subset: 256}
    attacks:
      slow: {plugin: pgd, config: {steps: 150, step_size: 0.01}}
    models:
      m:
        dataset: tiny
        arch: small_cnn
        defense: sgd
        train: {epochs: 1, batch_size: 64, lr: 0.05}
    matrix:
      - name: main
        models: [m]
        attacks: [slow]
        eps: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
        eval: {n: 128, batch_size: 128}
    """)


def test_kill_9_loses_nothing_and_the_next_run_resumes(tmp_path, data_root):
    p = tmp_path / "suite.yaml"
    p.write_text(SLOW)
    dbp = tmp_path / "k.sqlite"
    cmd = [sys.executable, "-m", "bench", "run", str(p), "--db", str(dbp), "--data-root",
           str(data_root), "--results-dir", str(tmp_path / "res"), "--device", "cpu",
           "--lease", "3"]        # the killed run's claim expires 3 s after its last heartbeat
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = db.open_db(dbp)
    deadline = time.time() + 240
    done_before = {}
    try:
        while time.time() < deadline and proc.poll() is None:
            done_before = {k: r.outcomes for k, r in rows(engine).items() if r.status == "done"}
            if done_before:
                break
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done_before, "the run recorded nothing before it was killed"
    assert len(done_before) < 6, "the run finished before the kill; make the cells slower"
    # the next run skips what was recorded and finishes the rest
    rc = main(cmd[3:] + ["--no-progress"])
    assert rc == 0
    after = rows(engine)
    assert all(after[k].outcomes == v for k, v in done_before.items())
    assert len(after) == 6 and all(r.status == "done" for r in after.values())
    with Session(engine) as s:
        runs = list(s.scalars(select(RunRecord).order_by(RunRecord.id)))
    assert runs[0].status == "running" and runs[0].ended is None   # the killed one, as it was left
    assert runs[-1].status == "done" and runs[-1].summary["skipped"] == len(done_before)


def test_cli_ls_and_dry_run(tiny, tmp_path, data_root, capsys):
    dbp = str(tmp_path / "c.sqlite")
    assert main(["ls", str(tiny), "--tag", "t", "--db", dbp]) == 0
    out = capsys.readouterr().out
    assert "tiny/m_sgd/pgd5/eps=0.3" in out and "pending" in out
    assert not (tmp_path / "c.sqlite").exists()             # ls creates no database
    assert main(["run", str(tiny), "--tag", "t", "--db", dbp, "--dry-run",
                 "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "would train 1 model(s)" in out and "would evaluate 3 cell(s)" in out
    # the device, the data, the work in passes and a time for it
    assert out.startswith("device: cpu — cpu (")
    assert f"data root: {data_root}\n  mnist: present (test, train)" in out
    assert "2 epochs × 1,024 examples × (1 + 0 inner steps) = 2,048 forward/backward passes ≈" in out
    assert "tiny/m_sgd/clean  n=96 × 1 passes = 96" in out
    assert "tiny/m_sgd/pgd5/eps=0.3  n=96 × 6 passes = 576" in out       # 1 + 5 PGD steps
    assert re.search(r"estimate on cpu: training 2\.05 k passes ≈ \d+ s, evaluation 1\.25 k passes", out)
    assert "small_cnn on mnist: 0.31 M parameters" in out and "(calibrated:" in out
    assert main(["run", str(tiny), "--tag", "t", "--db", dbp, "--data-root", str(data_root),
                 "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    # a piped log: each epoch with its time and throughput, each cell as it finishes
    assert len(re.findall(r"m_sgd epoch [12]/2: loss [\d.]+, [\d.]+s, [\d,]+ examples/s", err)) == 2
    assert len(re.findall(r"^  tiny/m_sgd/\S+: [\d.]+% of 96 \([\d.]+s\)$", err, re.M)) == 3
    # the run rendered the leaderboard beside the database and said where
    assert f"leaderboard: {tmp_path / 'site' / 'index.html'}" in out
    assert "grid-smoke" not in (tmp_path / "site" / "index.html").read_text()   # no smoke here
    assert main(["ls", str(tiny), "--tag", "t", "--db", dbp]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 3 and len(re.findall(r" done\s+\d+\.\d\d%", out)) == 3
    # an estimate from the run just recorded, on the same device
    assert main(["run", str(tiny), "--tag", "t", "--db", dbp, "--dry-run", "--force"]) == 0
    out = capsys.readouterr().out
    assert "would train 0 model(s)" in out and "1 earlier training run(s) in the database" in out
    assert main(["ls", str(tiny), "--tag", "bad", "--db", dbp, "--filter", "*broken*"]) == 0
    assert main(["run", str(tiny), "--tag", "t", "--db", dbp, "--no-report", "--site",
                 str(tmp_path / "s2"), "--results-dir", str(tmp_path / "res")]) == 0
    assert not (tmp_path / "s2").exists()                    # --no-report: no site


def test_dry_run_warns_of_a_gpu_sized_model_on_a_cpu(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent("""\
        version: 1
        attacks:
          clean: {plugin: clean}
          pgd: {plugin: pgd, config: {norm: linf, steps: 10, restarts: 2}}
        models:
          r20:
            dataset: cifar10
            arch: resnet20
            defense: pgd_at
            defense_config: {preset: cifar_linf}
            train: {epochs: 3}
          small:
            dataset: mnist
            arch: small_cnn
            defense: sgd
            train: {epochs: 1}
        matrix:
          - {name: m, models: [r20, small], attacks: [clean, pgd], eps: ["8/255"], eval: {n: 10}}
        """))
    assert main(["run", str(p), "--dry-run", "--device", "cpu", "--db", str(tmp_path / "x.sqlite"),
                 "--data-root", str(tmp_path / "nodata")]) == 0
    out, err = capsys.readouterr()
    # the inner steps come from the defense's config (its preset: 10 PGD steps)
    assert "3 epochs × 50,000 examples × (1 + 10 inner steps) = 1,650,000" in out
    assert "n=10 × 21 passes = 210" in out                   # 1 + 10 steps × 2 restarts
    assert "cifar10: missing test, train: would be fetched" in out
    assert "warning: resnet20 on cifar10 is GPU-sized" in err and "small_cnn" not in err
    assert not (tmp_path / "x.sqlite").exists()             # a dry run writes nothing


def test_missing_dataset_offline_is_one_sentence(tiny, tmp_path, capsys):
    rc = main(["run", str(tiny), "--tag", "t", "--db", str(tmp_path / "x.sqlite"), "--offline",
               "--data-root", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "res"),
               "--no-progress"])
    err = capsys.readouterr().err
    # the model fails (recorded), the run exits 1, and the reason is one clear sentence
    assert rc == 1
    assert "--offline forbids fetching it" in err and "Traceback" not in err


from bench.plugins.model import ModelPlugin  # noqa: E402
from bench.plugins.registry import register_model  # noqa: E402


class _Noisy(torch.nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.fc = torch.nn.Linear(c * 28 * 28, k)

    def forward(self, x):
        return self.fc(x.flatten(1)) + torch.randn(x.shape[0], self.fc.out_features)


@register_model("test_noisy")
class NoisyModel(ModelPlugin):
    """A model whose outputs are random: the runner must flag its results."""

    def build(self, info):
        return _Noisy(info.shape[0], info.num_classes)


def test_sanity_flags_are_stored_on_results(tiny, tmp_path, data_root):
    text = TINY.replace("defense: test_nan", "defense: sgd\n    arch: test_noisy") \
               .replace("models: [m_sgd, m_nan]", "models: [m_nan]")
    p = tmp_path / "s2.yaml"
    p.write_text(text)
    suite = load_suite(p)
    runner, engine = runner_for(suite, tmp_path, data_root)
    runner.run(expand(suite, filters=["tiny/m_nan/clean"]))
    assert "randomized_outputs" in rows(engine)["tiny/m_nan/clean"].flags


def test_fine_tuning_from_a_suite_model_trains_the_start_first(tiny, tmp_path, data_root):
    text = TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n",
                        "  m_nan:\n    base: m_sgd\n    train: {epochs: 1, lr: 0.0, init_from: 'model:m_sgd'}\n")
    assert "init_from" in text
    p = tmp_path / "ft.yaml"
    p.write_text(text)
    suite = load_suite(p)
    assert suite.models["m_nan"].init_model is suite.models["m_sgd"]
    runner, engine = runner_for(suite, tmp_path, data_root)
    runner.run(expand(suite, filters=["tiny/m_nan/clean"]))
    # lr 0 fine-tuning keeps the start's weights (BatchNorm-free model): the same outcomes
    runner.run(expand(suite, filters=["tiny/m_sgd/clean"]))
    got = rows(engine)
    assert got["tiny/m_nan/clean"].outcomes == got["tiny/m_sgd/clean"].outcomes
    with Session(engine) as s:
        assert {m.name for m in s.scalars(select(ModelRecord))} == {"m_sgd", "m_nan"}
    bad = TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n",
                       "  m_nan:\n    base: m_sgd\n    train: {init_from: 'model:m_sdg'}\n")
    p.write_text(bad)
    from bench.errors import SuiteError
    with pytest.raises(SuiteError, match="did you mean 'm_sgd'"):
        load_suite(p)


def test_early_stopping_keeps_the_best_validation_epoch(tiny, tmp_path, data_root):
    text = TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n",
                        "  m_nan:\n    base: m_sgd\n    defense: pgd_at\n"
                        "    defense_config: {eps: 0.1, step_size: 0.05, steps: 2}\n"
                        "    train: {epochs: 3, val_size: 128,\n"
                        "            early_stopping: {attack: pgd5, eps: 0.1, every: 1, n: 64}}\n")
    p = tmp_path / "es.yaml"
    p.write_text(text)
    suite = load_suite(p)
    assert suite.models["m_nan"].train.early_stopping.attack == "pgd5"
    runner, engine = runner_for(suite, tmp_path, data_root)
    runner.run(expand(suite, filters=["tiny/m_nan/clean"]))
    with Session(engine) as s:
        curves = s.get(ModelRecord, suite.models["m_nan"].key).curves
    val = curves["val_robust_acc"]
    assert len(val) == 3 and curves["val_robust_acc_epoch"] == [1, 2, 3]
    assert curves["best_epoch"] == 1 + max(range(3), key=lambda i: (val[i], -i))
    # the validation split is carved out of the 1,024 training images
    assert len(curves["val_clean_acc"]) == 3


def test_early_stopping_eps_list_and_grid(tmp_path):
    from bench.plugins.config import ConfigError, build_config
    from bench.errors import SuiteError
    from bench.suite.recipe import EarlyStopping
    one = build_config(EarlyStopping, {"attack": "a", "eps": "8/255"})
    assert one.eps_values() == [8 / 255]
    assert build_config(EarlyStopping, {"attack": "a", "eps": [0.1, "1/5"]}).eps_values() == [0.1, 0.2]
    grid = build_config(EarlyStopping, {"attack": "a", "eps": 0.4, "grid": 4}).eps_values()
    assert grid == pytest.approx([0.05, 0.15, 0.25, 0.35])
    for bad, why in (({"eps": [0.1, 0.2], "grid": 4}, "one eps"), ({"eps": []}, "empty"),
                     ({"eps": 0.1, "grid": -1}, "grid"), ({"eps": 0.1, "every": 0}, "every")):
        with pytest.raises(ConfigError, match=why):
            build_config(EarlyStopping, {"attack": "a", **bad})
    p = tmp_path / "bad.yaml"
    p.write_text(TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n",
                              "  m_nan:\n    base: m_sgd\n    train: {val_size: 64,\n"
                              "      early_stopping: {attack: pgd5, eps: [0.1, 3/x]}}\n"))
    with pytest.raises(SuiteError, match=r"bad.yaml:\d+: .*early_stopping.eps: malformed epsilon '3/x'"):
        load_suite(p)


ES_GRID = ("  m_nan:\n    base: m_sgd\n    defense: sgd\n"
           "    train: {epochs: 1, val_size: 128,\n"
           "            early_stopping: {attack: margin, eps: 0.21, grid: GRID, n: 48}}\n")


def test_early_stopping_on_an_eps_grid_scores_the_mean_robust_accuracy(tiny, tmp_path, data_root):
    from bench.checkpoints.cache import load_checkpoint
    from bench.run.train import load_train_data
    text = TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n", ES_GRID).replace(
        "  broken: {plugin: test_broken}\n",
        "  broken: {plugin: test_broken}\n"
        "  margin: {plugin: anpgd, config: {pgd_eps: 0.1, step_size: 0.025, steps: 5,\n"
        "                                   d_max: 0.2, random_start: false}}\n")
    p = tmp_path / "grid.yaml"
    p.write_text(text.replace("GRID", "6"))
    suite = load_suite(p)
    spec = suite.models["m_nan"]
    p.write_text(text.replace("GRID", "8"))
    assert load_suite(p).models["m_nan"].key != spec.key      # the grid is part of the model key
    runner, engine = runner_for(suite, tmp_path, data_root)
    runner.run(expand(suite, filters=["tiny/m_nan/clean"]))
    with Session(engine) as s:
        rec = s.get(ModelRecord, spec.key)
        curves, path, sha = rec.curves, rec.checkpoint_path, rec.checkpoint_sha256
    model = spec.build()
    load_checkpoint(model, Path(path), sha)
    _, val = load_train_data(spec, data_root, "cpu", offline=True)
    x, y, _ = next(val.head(48).batches(48))
    attack = suite.attacks["margin"].build()
    per_eps = [float(attack.run(model.eval(), x, y, 0.21 * (k - 0.5) / 6).float().mean())
               for k in range(1, 7)]
    assert curves["val_robust_acc"] == [pytest.approx(sum(per_eps) / 6, abs=1e-6)]
    assert per_eps[0] > per_eps[-1]          # the grid spans more than one robust accuracy


def test_external_checkpoint_is_loaded_and_recorded(tiny, tmp_path, data_root):
    from bench.checkpoints.cache import sha256_file
    from bench.plugins.model import build_model
    from bench.plugins.registry import DATASETS
    model = build_model("small_cnn", {}, DATASETS.get("mnist").info)
    ckpt = tmp_path / "released.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, ckpt)
    text = TINY.replace("  m_nan:\n    base: m_sgd\n    defense: test_nan\n",
                        f"  m_nan:\n    base: m_sgd\n    checkpoint: {ckpt}\n")
    p = tmp_path / "ext.yaml"
    p.write_text(text)
    suite = load_suite(p)
    runner, engine = runner_for(suite, tmp_path, data_root)
    summary = runner.run(expand(suite, filters=["tiny/m_nan/clean"]))
    assert summary.loaded == ["m_nan"] and not summary.trained
    with Session(engine) as s:
        rec = s.get(ModelRecord, suite.models["m_nan"].key)
        assert rec.checkpoint_sha256 == sha256_file(ckpt)
    # the zero-initialised last layer predicts class 0 for every input
    from bench.data.read import load_split
    _, y = load_split("mnist", "test", data_root, offline=True)
    r = rows(engine)["tiny/m_nan/clean"]
    assert np.array_equal(unpack_outcomes(r.outcomes, r.n), y[:96] == 0)


SWEEP = textwrap.dedent("""\
    version: 1
    datasets:
      tiny: {plugin: mnist, train_subset: 1024}
    attacks:
      df: {plugin: deepfool, config: {norm: linf}}
      cert: {plugin: certify, config: {sigma: 0.25, n0: 20, n: 200, batch: 100}}
    models:
      m:
        dataset: tiny
        arch: small_cnn
        defense: sgd
        train: {epochs: 2, batch_size: 32, lr: 0.05}
    matrix:
      - name: df
        models: [m]
        attacks: [df]
        eps: [0.05, 0.1, 0.2]
        eval: {n: 48, batch_size: 48}
      - name: cert
        models: [m]
        attacks: [cert]
        eps: [0, 0.25, 0.5]
        eval: {n: 24, batch_size: 24}
    """)


def test_minimisation_and_certification_sweeps_through_the_runner(tmp_path, data_root):
    p = tmp_path / "sweep.yaml"
    p.write_text(SWEEP)
    suite = load_suite(p)
    runner, engine = runner_for(suite, tmp_path, data_root)
    assert runner.run(expand(suite)).exit_status == 0
    got = rows(engine)
    df = [got[f"tiny/m/df/eps={e}"].robust_acc for e in ("0.05", "0.1", "0.2")]
    assert df[0] >= df[1] >= df[2]
    radius = [unpack_details(got[f"tiny/m/cert/eps={r}"].details)["radius"] for r in ("0", "0.25", "0.5")]
    assert len(radius[0]) == 24 and all(np.array_equal(radius[0], r) for r in radius)  # one certification
    for r, lit in ((0.0, "0"), (0.25, "0.25"), (0.5, "0.5")):
        rec = got[f"tiny/m/cert/eps={lit}"]
        ok = unpack_outcomes(rec.outcomes, rec.n)
        assert not (ok & ~(radius[0] >= r)).any()    # certified at r needs a radius ≥ r


def test_auto_evaluation_batch_size(tmp_path, data_root):
    text = SWEEP.replace("eval: {n: 48, batch_size: 48}", "eval: {n: 48, batch_size: auto}")
    p = tmp_path / "auto.yaml"
    p.write_text(text)
    suite = load_suite(p)
    assert suite.matrix[0].eval.batch_size == "auto"
    runner, engine = runner_for(suite, tmp_path, data_root)
    assert runner.run(expand(suite, filters=["*/df/*"])).exit_status == 0
    bad = SWEEP.replace("eval: {n: 48, batch_size: 48}", "eval: {n: 48, batch_size: big}")
    p.write_text(bad)
    from bench.errors import SuiteError
    with pytest.raises(SuiteError, match="batch_size"):
        load_suite(p)
