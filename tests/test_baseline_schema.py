"""Malformed baseline files (issue 16 §4): each of ~50 variants of a real saved baseline
goes through the real command line, `check --baseline F` and `report`. `check` ends in
exit 2 and one sentence naming the file and what is wrong (never a traceback, never a
verdict); `report` names each malformed file of results/baselines/ in one warning line
and renders the rest; `run` renders its site in spite of them; a FIFO does not hang."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bench.cli.main import main
from test_check import db_with, outcomes
from tests.cli_runner import run_cli

BIG = 64 * 2**20


CELLS = [{"cell_id": "mnist/a", "correct": outcomes(100, 90)},
         {"cell_id": "mnist/b", "correct": outcomes(100, 50)}]
MODEL = {"key": "km", "name": "M", "dataset": "mnist", "arch": "smallcnn", "defense": "sgd",
         "config": {"arch": "smallcnn"}, "checkpoint_sha256": "ab" * 32, "train_seconds": 2.0,
         "curves": {"epoch": [1, 2], "loss": [0.5, 0.25], "best_epoch": 2}, "smoke": False,
         "precision": "fp32", "seed": 0, "device": "cpu", "versions": {"torch": "2.4.0"},
         "created": "2026-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A baseline saved by `bench baseline save` and a database it compares clean with."""
    d = tmp_path_factory.mktemp("saved")
    db_with(d / "base.sqlite", CELLS).dispose()
    rc, _, err = run_cli(["baseline", "save", "good", "--db", str(d / "base.sqlite"),
                          "--dir", str(d)])
    assert rc == 0, err
    doc = json.loads((d / "good.json").read_text())
    doc["models"] = [MODEL]
    (d / "good.json").write_text(json.dumps(doc))
    return d, doc


def _cell(field, value):
    def edit(doc):
        if value is DELETE:
            del doc["cells"][0][field]
        else:
            doc["cells"][0][field] = value
    return edit


def _top(field, value):
    def edit(doc):
        if value is DELETE:
            del doc[field]
        else:
            doc[field] = value
    return edit


def _model(field, value):
    def edit(doc):
        if value is DELETE:
            del doc["models"][0][field]
        else:
            doc["models"][0][field] = value
    return edit


DELETE = object()


def _bits(edit_bits):
    """Edit the packed outcome bits of cell 0 (n = 100: 13 bytes, 4 padding bits)."""
    def edit(doc):
        raw = bytearray(base64.b64decode(doc["cells"][0]["outcomes"]))
        edit_bits(raw)
        doc["cells"][0]["outcomes"] = base64.b64encode(bytes(raw)).decode()
    return edit


def _flip_first(raw):
    raw[0] ^= 0x80


def _pad_bit(raw):
    raw[-1] |= 0x01


def _deep(doc):
    inner = {}
    for _ in range(100):
        inner = {"x": inner}
    doc["cells"][0]["config"]["deep"] = inner


def _dup_key(doc):
    doc["cells"][1]["cell_key"] = doc["cells"][0]["cell_key"]


def _huge(doc):
    doc["cells"][0]["config"]["pad"] = "x" * (BIG + 1)


def _text_edit(fn):
    """A variant written as text (JSON that json.dumps cannot produce)."""
    def edit(doc):
        return fn(json.dumps(doc))
    return edit


# (id, edit of the saved document, or the file's bytes; a phrase the sentence must hold)
VARIANTS = [
    ("not-json", b"{not json", "not valid JSON"),
    ("empty-file", b"", "not valid JSON"),
    ("not-utf8", b"\xff\xfe{\x00", "not UTF-8"),
    ("top-level-list", b"[]", "not a bench baseline"),
    ("top-level-string", b'"bench-baseline"', "not a bench baseline"),
    ("other-format", _top("format", "asv"), "not a bench baseline"),
    ("no-version", _top("version", DELETE), "$.version is null"),
    ("version-string", _top("version", "1"), '$.version is "1"'),
    ("version-true", _top("version", True), "$.version is true"),
    ("version-newer", _top("version", 2), "newer than this bench"),
    ("version-zero", _top("version", 0), "$.version is 0"),
    ("no-cells", _top("cells", DELETE), "$.cells must be a list"),
    ("cells-object", _top("cells", {"a": 1}), "$.cells must be a list"),
    ("cell-a-number", lambda d: d["cells"].__setitem__(0, 5), "$.cells[0] must be an object"),
    ("cell-lacks-n_correct", _cell("n_correct", DELETE), "$.cells[0] lacks n_correct"),
    ("negative-n", _cell("n", -1), "$.cells[0].n is -1"),
    ("n-string", _cell("n", "100"), "$.cells[0].n must be a whole number"),
    ("n-fraction", _cell("n", 100.5), "$.cells[0].n must be a whole number"),
    ("n-bool", _cell("n", True), "$.cells[0].n must be a whole number"),
    ("n_correct-above-n", _cell("n_correct", 101), "more than n (100)"),
    ("negative-n_correct", _cell("n_correct", -1), "$.cells[0].n_correct is -1"),
    ("robust_acc-nan", _cell("robust_acc", float("nan")), "robust_acc is nan, not a finite"),
    ("accuracy-infinite", _cell("accuracy_pct", float("inf")), "is inf, not a finite"),
    ("eps-overflow", _text_edit(lambda t: t.replace('"eps": 0.3', '"eps": 1e999', 1)),
     "eps is inf"),
    ("eps-of-400-digits", _text_edit(lambda t: t.replace('"eps": 0.3', '"eps": 1' + "0" * 400, 1)),
     "eps is 1000"),
    ("accuracy-disagrees", _cell("accuracy_pct", 99.0), "but n_correct/n is 90"),
    ("robust_acc-above-1", _cell("robust_acc", 90.0), "robust_acc is 90"),
    ("outcomes-not-base64", _cell("outcomes", "!!!not base64!!!"), "is not base64"),
    ("outcomes-too-short", _bits(lambda raw: raw.__delitem__(slice(6, None))), "holds 48 bits"),
    ("outcomes-disagree-with-n_correct", _bits(_flip_first), "marks 89 examples correct"),
    ("outcomes-padding-bit", _bits(_pad_bit), "bits set beyond"),
    ("outcomes-a-number", _cell("outcomes", 12), "outcomes must be a string"),
    ("config-list", _cell("config", [1]), "$.cells[0].config must be an object"),
    ("smoke-string", _cell("smoke", "no"), "$.cells[0].smoke must be true or false"),
    ("cell_id-empty", _cell("cell_id", ""), "cell_id must be a non-empty string"),
    ("cell_id-number", _cell("cell_id", 7), "cell_id must be a string"),
    ("seed-string", _cell("seed", "1"), "$.cells[0].seed must be a whole number"),
    ("tags-string", _cell("tags", "ci"), "$.cells[0].tags must be a list of strings"),
    ("versions-nested", _cell("versions", {"torch": {"v": 1}}), "versions.torch must be a plain"),
    ("created-not-a-date", _cell("created", "yesterday"), "not an ISO date"),
    ("created-with-offset", _cell("created", "2026-01-01T00:00:00+02:00"), "not an offset"),
    ("duplicate-cell_key", _dup_key, "$.cells[1].cell_key repeats"),
    ("n_cells-disagrees", _top("n_cells", 5), "$.n_cells is 5"),
    ("selection-filter-number", _top("selection", {"tags": [], "filters": [1]}),
     "$.selection.filters[0] must be a string"),
    ("models-object", _top("models", {}), "$.models must be a list"),
    ("model-without-key", _model("key", DELETE), "$.models[0].key must be a string"),
    ("model-curve-of-strings", _model("curves", {"loss": ["a", "b"]}), "curves.loss must be"),
    ("model-train_seconds-nan", _model("train_seconds", float("nan")), "not a finite"),
    ("too-many-cells", lambda d: d.update(cells=[0] * 100_001, n_cells=None),
     "holds 100001 entries"),
    ("deeply-nested-config", _deep, "nested more than 64 levels"),
    ("nested-beyond-the-parser", b'{"format": "bench-baseline", "version": 1, "cells": ['
     + b"[" * 100_000 + b"]" * 100_000 + b"]}", "cannot be read as JSON"),
    ("5000-digit-number", _text_edit(lambda t: t.replace('"n": 100,', '"n": ' + "9" * 5000 + ",",
                                                         1)), "cannot be read as JSON"),
    ("larger-than-64-MiB", _huge, "larger than 64 MiB"),
]


def write_variant(saved_doc: dict, path: Path, edit) -> Path:
    if isinstance(edit, bytes):
        path.write_bytes(edit)
        return path
    doc = copy.deepcopy(saved_doc)
    text = edit(doc)
    path.write_text(text if isinstance(text, str) else json.dumps(doc, indent=1))
    return path


def one_error_line(err: str, phrase: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert phrase in lines[0], lines[0]
    return lines[0]


def test_the_saved_baseline_itself_passes(saved):
    d, _ = saved
    rc, out, err = run_cli(["check", "--baseline", str(d / "good.json"), "--db",
                            str(d / "base.sqlite")])
    assert rc == 0 and "OK: 2 cell(s)" in out, out + err


@pytest.mark.parametrize("name, edit, phrase", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_check_refuses_a_malformed_baseline_in_one_sentence(saved, tmp_path, name, edit, phrase):
    d, doc = saved
    bad = write_variant(doc, tmp_path / f"{name}.json", edit)
    rc, out, err = run_cli(["check", "--baseline", str(bad), "--db", str(d / "base.sqlite")])
    assert rc == 2, (rc, out[-500:], err[-500:])
    line = one_error_line(err, phrase)
    assert str(bad) in line                       # it names the file
    assert out == ""                              # no verdict from a file that is not one
    rc, out, err = run_cli(["report", "--out", str(tmp_path / "site"), "--baseline", str(bad),
                            "--db", str(d / "base.sqlite")])
    assert rc == 2 and str(bad) in one_error_line(err, phrase)


def test_report_names_and_skips_every_malformed_committed_baseline(saved, tmp_path):
    d, doc = saved
    folder = tmp_path / "baselines"
    folder.mkdir()
    bad = [write_variant(doc, folder / f"{name}.json", edit) for name, edit, _ in VARIANTS]
    (folder / "a-folder.json").mkdir()
    bad.append(folder / "a-folder.json")
    good = doc | {"cells": [c | {"cell_key": "k" + c["cell_key"][1:]} for c in doc["cells"]]}
    (folder / "zz-good.json").write_text(json.dumps(good))
    rc, out, err = run_cli(["report", "--out", str(tmp_path / "site"), "--db",
                            str(d / "base.sqlite"), "--baselines-dir", str(folder)])
    assert rc == 0, err[-2000:]
    assert "1 committed baseline(s) (2 cells)" in out
    warnings = err.strip().splitlines()
    assert "Traceback" not in err and len(warnings) == len(bad)
    for path, line in zip(sorted(bad), warnings):
        assert line.startswith(f"warning: skipping baseline {path}: "), line
    assert (tmp_path / "site" / "index.html").is_file()


def _in_child(fn, timeout: float) -> tuple[int | None, str]:
    """Run fn() in a forked child (its stdout and stderr to a file); its exit status, or
    None when it had to be killed after `timeout` seconds, and what it wrote."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-child-{os.getpid()}-{time.time_ns()}"
    pid = os.fork()
    if pid == 0:                                              # the child
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", 0), write_through=True)
            rc = fn()
        except BaseException as e:                             # noqa: BLE001
            print(f"child raised {type(e).__name__}: {e}", file=sys.stderr)
            rc = 99
        os._exit(rc if isinstance(rc, int) else 98)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            text = log.read_text(errors="replace")
            log.unlink()
            return os.waitstatus_to_exitcode(status), text
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    text = log.read_text(errors="replace")
    log.unlink()
    return None, text


def test_a_fifo_in_place_of_a_baseline_does_not_hang(saved, tmp_path):
    d, _ = saved
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    rc, text = _in_child(lambda: main(["check", "--baseline", str(fifo), "--db",
                                       str(d / "base.sqlite")]), timeout=30)
    assert rc == 2, f"hung or failed: {rc} {text[-500:]}"
    assert "not a regular file" in text and "Traceback" not in text
    folder = tmp_path / "baselines"
    folder.mkdir()
    os.mkfifo(folder / "shared.json")
    rc, text = _in_child(lambda: main(["report", "--out", str(tmp_path / "site"), "--db",
                                       str(d / "base.sqlite"), "--baselines-dir", str(folder)]),
                         timeout=60)
    assert rc == 0, f"hung or failed: {rc} {text[-500:]}"
    assert "warning: skipping baseline" in text and "shared.json" in text


def test_run_renders_its_site_in_spite_of_a_malformed_committed_baseline(
        tmp_path, monkeypatch, data_root, suite_file):
    monkeypatch.chdir(tmp_path)
    suite_file()
    (tmp_path / "results" / "baselines").mkdir(parents=True)
    (tmp_path / "results" / "baselines" / "broken.json").write_text('{"format": "bench-baseline"')
    rc, out, err = run_cli(["run", "suite.yaml", "--db", "r.sqlite", "--data-root", str(data_root),
                            "--results-dir", "ckpt", "--site", "site", "--device", "cpu",
                            "--no-progress"])
    assert rc == 0, err[-2000:]
    assert "warning: skipping baseline results/baselines/broken.json" in err
    assert (tmp_path / "site" / "index.html").is_file() and "leaderboard:" in out
