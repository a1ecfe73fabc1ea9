"""Nothing foreign runs, and nothing bench did not write is trusted: a pickle planted in a data
root, a resume file or checkpoint planted in a shared results folder, a `models/` package in
the folder bench is run from (issue 16 §1). Real files, real pickles, real subprocesses."""

from __future__ import annotations

import ast
import hashlib
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy.orm import Session

from bench.cli.main import main
from bench.data.read import load_split, verify_dataset
from bench.db import database as db
from bench.db.schema import ModelRecord, ResumeRecord
from bench.errors import DataError
from bench.suite.load import load_suite
from tests.conftest import REPO
from tests.suites import ONE_MODEL

ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
CIFAR_BATCHES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]


class _Payload:
    """Unpickling this runs code: it writes `marker` (what an attacker's pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=4)


@pytest.fixture
def evil_root(tmp_path):
    """A data root whose torchvision-layout CIFAR-10 batches are all code-running pickles."""
    root, marker = tmp_path / "data", tmp_path / "MARKER"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR_BATCHES:
        (folder / name).write_bytes(evil_pickle(marker))
    assert not marker.exists()
    return root, marker


CIFAR_SUITE = textwrap.dedent("""\
    version: 1
    datasets:
      c: {plugin: cifar10, train_subset: 64}
    attacks:
      clean: {plugin: clean}
    models:
      m: {dataset: c, arch: small_cnn, defense: sgd, train: {epochs: 1, batch_size: 32}}
    matrix:
      - name: main
        models: [m]
        attacks: [clean]
        eval: {n: 32, batch_size: 32}
    """)


def test_a_planted_cifar_pickle_never_runs_through_the_cli(evil_root, tmp_path, capsys):
    root, marker = evil_root
    assert main(["data", "verify", "cifar10", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("cifar10")]
    assert len(lines) == 2 and all(" corrupt (torchvision layout: " in ln for ln in lines)
    assert "not the official CIFAR batch test_batch" in out
    suite = tmp_path / "suite.yaml"
    suite.write_text(CIFAR_SUITE)
    args = ["run", str(suite), "--db", str(tmp_path / "r.sqlite"), "--results-dir",
            str(tmp_path / "res"), "--data-root", str(root), "--device", "cpu", "--no-progress",
            "--offline", "--no-report"]
    assert main(args + ["--dry-run"]) == 0     # says the files are there, without reading them
    assert "  cifar10: present (test, train)" in capsys.readouterr().out
    assert not marker.exists()
    assert main(args) != 0              # the model cannot be trained on data that is not CIFAR-10
    both = "".join(capsys.readouterr())
    assert "not the official CIFAR batch" in both and "Traceback" not in both
    assert not marker.exists()


def test_a_planted_cifar_pickle_never_runs_through_the_api(evil_root):
    root, marker = evil_root
    with pytest.raises(DataError, match=r"not the official CIFAR batch test_batch .*md5"):
        load_split("cifar10", "test", root, offline=True)
    status = verify_dataset("cifar10", root)
    assert all(s.startswith("corrupt") for s in status.values())
    # a file too large to be a batch is not even hashed
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        f.truncate(41 << 20)
    with pytest.raises(DataError, match="larger than 40 MiB"):
        load_split("cifar10", "test", root, offline=True)
    assert not marker.exists()


def _py2_pickle(x: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR batch as Python 2's cPickle wrote the official files: protocol 2, byte strings
    (BINSTRING), numpy 1's `numpy.core.multiarray._reconstruct`."""
    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def i(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b")
           + b"\x87R(" + i(1) + i(x.shape[0]) + i(x.shape[1]) + b"\x86cnumpy\ndtype\n" + s(b"u1")
           + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb\x89"
           + s(x.tobytes()) + b"tb")
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"testing batch 1 of 1") + s(b"data") + arr
            + s(b"labels") + b"](" + b"".join(i(v) for v in labels) + b"eu.")


def test_the_official_format_is_read_by_the_numpy_only_unpickler(tmp_path):
    from bench.data.read import read_cifar_pickles
    x = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    data = _py2_pickle(x, [3, 1, 4, 1])
    (tmp_path / "b").write_bytes(data)
    got_x, got_y = read_cifar_pickles(tmp_path, {"b": hashlib.md5(data).hexdigest()})
    assert np.array_equal(got_x, x.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1))
    assert got_y.tolist() == [3, 1, 4, 1]
    # a pickle with the right md5 that still asks for code is refused by the unpickler itself
    marker = tmp_path / "MARKER"
    (tmp_path / "e").write_bytes(evil_pickle(marker))
    with pytest.raises(DataError, match="refusing to load builtins.exec"):
        read_cifar_pickles(tmp_path, {"e": hashlib.md5((tmp_path / "e").read_bytes()).hexdigest()})
    assert not marker.exists()


# ---------------------------------------------------------------------- shared results folder

@pytest.fixture
def tiny(tmp_path, data_root, suite_file):
    p = suite_file()
    spec = load_suite(p).models["m"]
    args = ["run", str(p), "--db", str(tmp_path / "r.sqlite"), "--results-dir", str(tmp_path / "res"),
            "--data-root", str(data_root), "--device", "cpu", "--no-progress", "--no-report"]
    return spec, args, tmp_path / "res" / "checkpoints"


def zero_weights(spec) -> dict:
    return {k: torch.zeros_like(v) for k, v in spec.build().state_dict().items()}


def recorded_weights(engine, key) -> dict:
    with Session(engine) as s:
        rec = s.get(ModelRecord, key)
        assert rec.status == "done" and len(rec.checkpoint_sha256) == 64
        path, sha = Path(rec.checkpoint_path), rec.checkpoint_sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    return torch.load(path, weights_only=True)


def is_zero(state: dict) -> bool:
    return all(not v.any() for v in state.values())


def test_a_planted_resume_file_is_not_trusted(tiny, capsys):
    """A resume file bench has no record of writing: all-zero weights, at the last epoch (the
    old code skipped training and recorded the zeros as the trained model)."""
    spec, args, ckpts = tiny
    ckpts.mkdir(parents=True)
    model = spec.build()
    torch.save({"key": spec.key, "model": zero_weights(spec),
                "optimizer": torch.optim.SGD(model.parameters(), lr=0.05).state_dict(),
                "defense": {}, "curves": {"epoch": [1, 2], "loss": [0.0, 0.0], "lr": [0.05, 0.05],
                                          "seconds": [0.0, 0.0]},
                "epoch": spec.train.epochs - 1, "step": 8, "best": -math.inf, "best_epoch": None,
                "best_state": None, "generator": torch.Generator().get_state(),
                "torch_rng": torch.get_rng_state()}, ckpts / f"{spec.key}.resume.pt")
    assert main(args) == 0
    out = "".join(capsys.readouterr())
    assert "resuming m" not in out
    warning = [ln for ln in out.splitlines() if ln.startswith("warning: resume file")]
    assert len(warning) == 1 and "has no sha256 recorded in the results database" in warning[0]
    engine = db.open_db(args[args.index("--db") + 1])
    assert not is_zero(recorded_weights(engine, spec.key))
    with Session(engine) as s:
        assert len(s.get(ModelRecord, spec.key).curves["loss"]) == 2     # both epochs trained
        assert s.get(ResumeRecord, spec.key) is None                     # forgotten once done
    assert not (ckpts / f"{spec.key}.resume.pt").exists()


def test_resume_files_load_only_as_recorded(tmp_path):
    """The record follows each write (the sha256 of the bytes bench wrote, and the one before),
    a changed file is ignored with one warning, a failed record leaves the old file."""
    from bench.run.resume import ResumeFile
    engine = db.open_db(tmp_path / "r.sqlite")
    path = tmp_path / "k.resume.pt"
    rf, notes = ResumeFile(engine, path, "k", worker="w"), []
    assert rf.load("cpu", notes.append) is None and not notes          # nothing there
    rf.save({"key": "k", "epoch": 0, "w": torch.ones(3)})
    first = path.read_bytes()
    rf.save({"key": "k", "epoch": 1, "w": torch.full((3,), 2.0)})
    with Session(engine) as s:
        rec = s.get(ResumeRecord, "k")
        assert (rec.epoch, rec.worker) == (1, "w")
        assert rec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert rec.previous_sha256 == hashlib.sha256(first).hexdigest()
    assert rf.load("cpu", notes.append)["epoch"] == 1 and not notes
    path.write_bytes(first)                 # the state it replaced (a writer killed before the rename)
    assert rf.load("cpu", notes.append)["epoch"] == 0 and not notes
    torch.save({"key": "k", "epoch": 1, "w": torch.zeros(3)}, path)       # not what bench wrote
    assert rf.load("cpu", notes.append) is None
    assert len(notes) == 1 and "does not match its recorded sha256" in notes[0]
    assert not list(tmp_path.glob(".*tmp*"))

    def refuse(sha):
        raise RuntimeError("the database is gone")
    from bench.checkpoints.cache import save_state
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        save_state({"key": "k"}, path, before_rename=refuse)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp*"))
    rf.discard()
    assert not path.exists() and rf.load("cpu", notes.append) is None and len(notes) == 1


def test_a_checkpoint_without_a_recorded_sha256_is_retrained(tiny, capsys):
    """A checkpoint file for a model key with no record, then with a record whose sha256 is
    empty (the old code loaded that one unchecked): both are retrained, never loaded."""
    spec, args, ckpts = tiny
    ckpts.mkdir(parents=True)
    planted = ckpts / f"{spec.key}.pt"
    torch.save(zero_weights(spec), planted)
    engine = db.open_db(args[args.index("--db") + 1])
    with engine.begin() as conn:
        db.upsert(conn, ModelRecord(
            key=spec.key, name="m", dataset="tiny", arch="small_cnn", defense="sgd",
            config=spec.resolved(), checkpoint_path=str(planted), checkpoint_sha256="",
            status="done"))
    assert main(args) == 0
    out = "".join(capsys.readouterr())
    assert "trained 1, loaded 0 model(s)" in out
    assert f"checkpoint {planted} has no sha256 recorded in the results database" in out
    assert not is_zero(recorded_weights(engine, spec.key))

    torch.save(zero_weights(spec), planted)              # replaced after it was recorded
    assert main(args + ["--force"]) == 0
    out = "".join(capsys.readouterr())
    assert "does not match its recorded sha256" in out and "trained 1, loaded 0 model(s)" in out
    assert not is_zero(recorded_weights(engine, spec.key))


# ---------------------------------------------------------------------- plugin packages

SHADOWS = {"models": "small_cnn", "attacks": "pgd", "defenses": "sgd", "executors": "local"}


@pytest.fixture
def project(tmp_path):
    """A user's project folder with its own `models/`, `attacks/`, … packages whose code
    writes a marker when imported, and a suite."""
    proj, marker = tmp_path / "project", tmp_path / "MARKER"
    for pkg, module in SHADOWS.items():
        (proj / pkg).mkdir(parents=True)
        code = f"open({str(marker)!r}, 'a').write({pkg!r})\n"
        (proj / pkg / "__init__.py").write_text(code)
        (proj / pkg / f"{module}.py").write_text(code)
    (proj / "suite.yaml").write_text(ONE_MODEL)
    return proj, marker


def run_in(proj: Path, *argv: str, pythonpath: bool = True) -> subprocess.CompletedProcess:
    env = dict(ENV)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *argv], cwd=proj, env=env, capture_output=True,
                          text=True, timeout=300)


def test_python_m_bench_uses_its_own_plugins_whatever_the_current_folder_holds(project):
    proj, marker = project
    r = run_in(proj, "-m", "bench", "ls", "--plugins")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "  small_cnn " in r.stdout and "  pgd " in r.stdout and "  local " in r.stdout
    r = run_in(proj, "-m", "bench", "validate", "suite.yaml")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("suite.yaml: ok — 1 models")
    # bench installed rather than on PYTHONPATH: its folder comes after the current one
    site = proj.parent / "site"
    site.mkdir()
    (site / "bench.pth").write_text(f"{REPO}\n")
    r = run_in(proj, "-c", f"import runpy, site, sys; site.addsitedir({str(site)!r}); "
                           f"sys.argv = ['bench', 'ls', '--plugins']; "
                           f"runpy.run_module('bench', run_name='__main__', alter_sys=True)",
               pythonpath=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "  small_cnn " in r.stdout
    assert not marker.exists(), marker.read_text()


def test_the_api_refuses_a_shadowing_plugin_package_in_one_sentence(project):
    proj, marker = project
    r = run_in(proj, "-c", "from bench.errors import PluginError\n"
                           "from bench.plugins.registry import MODELS\n"
                           "try:\n    MODELS.get('small_cnn')\n"
                           "except PluginError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == (f"{(proj / 'models').resolve()} shadows bench's plugin package 'models' "
                                f"({REPO / 'models'}) and is not imported; run bench from another "
                                f"folder, or rename that package")
    assert not marker.exists()


# ---------------------------------------------------------------------- lazy plugin imports

def test_a_lookup_imports_only_the_module_that_registers_the_name(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_MODEL.replace("arch: small_cnn", "arch: lenet5_madry"))
    r = run_in(REPO, "-c", textwrap.dedent(f"""\
        import sys
        from bench.suite.load import load_suite
        from bench.plugins.registry import ATTACKS, MODELS
        load_suite({str(suite)!r})
        print(sorted(m for m in sys.modules if m.split('.')[0] in
                     ('models', 'attacks', 'defenses', 'executors')))
        print('autoattack' in ATTACKS, len(MODELS.names()) > 5)
        """))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    imported = set(ast.literal_eval(lines[0]))
    assert {"attacks.clean", "defenses.sgd", "models.lenet5"} <= imported
    assert not imported & {"attacks.pgd", "attacks.autoattack", "defenses.trades",
                           "models.small_cnn", "models.wideresnet", "executors.local"}
    assert lines[1] == "True True"      # membership and listing still see every plugin


def test_the_source_index_finds_every_registered_plugin_in_its_module():
    from bench.plugins.registry import REGISTRIES, _index
    for registry in REGISTRIES:
        index = _index(registry.package)
        own = {n: obj.__module__ for n, obj in registry.items()
               if obj.__module__.startswith(registry.package + ".")}
        assert own and {n: index.get(n) for n in own} == own, registry.kind


def test_a_worker_plan_is_written_private_and_whole_through_a_planted_link(tmp_path):
    """A shared results folder may hold what another user put there: writing a worker plan
    (it holds the database URL) replaces a world-readable file or a planted symlink with a
    new file only its owner reads, and never writes through the link."""
    from bench.plugins.executor import write_private

    old = tmp_path / "run-1.json"
    old.write_text("{}")
    old.chmod(0o644)
    write_private(old, '{"db": "postgresql://user:secret@host/db"}')
    assert old.stat().st_mode & 0o777 == 0o600 and "secret" in old.read_text()

    target, link = tmp_path / "elsewhere.txt", tmp_path / "run-2.json"
    target.write_text("not yours")
    link.symlink_to(target)
    write_private(link, '{"db": "x"}')
    assert target.read_text() == "not yours"
    assert not link.is_symlink() and link.read_text() == '{"db": "x"}'
    assert link.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "run-1.json", "run-2.json"]
