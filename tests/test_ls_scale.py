"""`ls` and `run --dry-run` on many cells (issue 16 §7): the results are read once (status
and accuracy from one read; in one pass when the table has fewer rows than there are
cells, else in IN lists of bounded length), keys and states a block at a time."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.cli import scale as cli_scale
from bench.cli.main import main
from bench.db import database as db
from bench.run import record
from bench.db.chunks import CHUNK, select_in
from bench.db.claims import Claims
from bench.run.evaluate import CellOutcome
from bench.run.plan import expand
from bench.suite.load import load_suite
from tests.test_plan_scale import HEAD

N_EPS = 400          # 2 models × (clean + 2 × 400 ε) = 1602 cells: more than three IN lists


@pytest.fixture
def recorded(tmp_path):
    """A suite of 1602 cells and a real SQLite results database in which 30 cells are done,
    3 failed, and m1's model job is held by a live worker."""
    eps = ", ".join(f"{(i + 1) / 1000:g}" for i in range(N_EPS))
    p = tmp_path / "suite.yaml"
    p.write_text(HEAD + f"  - name: all\n    models: [m0, m1]\n    attacks: [clean, pgd, pgd_b]\n"
                 f"    eps: [{eps}]\n    eval: {{n: 16}}\n")
    cells = expand(load_suite(p))
    path = tmp_path / "r.sqlite"
    engine = db.open_db(path)
    for i, c in enumerate(cells[::50]):
        outcome = CellOutcome(c, np.arange(16) < i % 16, seconds=1.0,
                              error="boom" if i % 11 == 10 else None)
        record.record_result(engine, outcome, None, c.model_key, device_desc="cpu")
    Claims(engine, "w-live").claim(cells[-1].model_key, "m1")
    return p, path, cells, engine


class Statements:
    """The SQL statements every engine runs meanwhile (a listener on all engines)."""

    def __init__(self):
        self.sql: list[str] = []

    def __enter__(self):
        event.listen(Engine, "before_cursor_execute", self._add)
        return self

    def __exit__(self, *exc):
        event.remove(Engine, "before_cursor_execute", self._add)

    def _add(self, conn, cursor, statement, *args):
        self.sql.append(" ".join(statement.split()))

    def on_results(self) -> list[str]:
        return [s for s in self.sql if "FROM results" in s]


def test_select_in_reads_every_key_past_the_chunk(recorded):
    _, _, cells, engine = recorded
    keys = [c.key for c in cells]
    assert len(keys) > 3 * CHUNK
    q = select(db.ResultRecord.cell_key, db.ResultRecord.status)
    with Session(engine) as s:
        got = {k for k, _ in select_in(s, q, db.ResultRecord.cell_key, keys)}
        every = set(s.scalars(select(db.ResultRecord.cell_key)))
    assert got == every == {c.key for c in cells[::50]} and len(got) == 33
    assert db.result_summaries(engine, keys) == db.result_summaries(engine, None)
    assert db.count_results(engine) == 33


def test_ls_reads_each_result_once(recorded, capsys):
    """Before: ls read the results twice per 500 cells (status, then accuracy): 8 queries
    for these 1602 cells. Now a count and one pass (33 rows ≤ 1602 cells)."""
    p, path, cells, _ = recorded
    with Statements() as st:
        assert main(["ls", str(p), "--db", str(path)]) == 0
    out, err = capsys.readouterr()
    assert len(st.on_results()) == 2, st.on_results()
    lines = out.splitlines()
    assert len(lines) == len(cells) and [ln.split()[0] for ln in lines] == [c.id for c in cells]
    done = {c.id for i, c in enumerate(cells[::50]) if i % 11 != 10}
    failed = {c.id for i, c in enumerate(cells[::50]) if i % 11 == 10}
    running = [c.id for c in cells if c.model.name == "m1" and c.id not in done]
    pending = len(cells) - len(done) - len(running) - len(failed - set(running))
    assert (f"1602 cells: {len(done)} done, {len(failed - set(running))} failed, {pending} pending, "
            f"{len(running)} running") in err
    # done cells with their accuracy (cell i of the recorded: i % 16 of 16 correct)
    first = lines[0].split()
    assert first[1:3] == ["done", "0.00%"] and first[3] == cells[0].key[:12]
    assert lines[50].split()[1:3] == ["done", "6.25%"]
    # the unfinished cells of the model job w-live holds are running on it
    assert [ln.split()[0] for ln in lines if " running " in ln] == running
    assert all("w-live since" in ln for ln in lines if " running " in ln)


def test_ls_by_key_and_by_pass_agree(recorded, capsys):
    """Fewer cells than rows (a filter): the results are read by key, in IN lists; the lines
    of those cells are the same as in the listing of the whole suite (read in one pass)."""
    p, path, cells, _ = recorded
    assert main(["ls", str(p), "--db", str(path)]) == 0
    whole = capsys.readouterr().out.splitlines()
    picked = "tiny/m0/pgd/eps=0.0[45]*"
    with Statements() as st:
        assert main(["ls", str(p), "--db", str(path), "--filter", picked]) == 0
    part = capsys.readouterr().out.splitlines()
    by_id = {ln.split()[0]: ln for ln in whole}
    assert 0 < len(part) < 33 and all(ln.split()[0] in by_id for ln in part)
    assert [" ".join(ln.split()) for ln in part] == [" ".join(by_id[ln.split()[0]].split()) for ln in part]
    assert any(" done " in ln for ln in part)
    on_results = st.on_results()
    assert len(on_results) == 2 and any(" IN " in s for s in on_results), on_results


def test_states_do_not_depend_on_the_block_size(recorded):
    _, _, cells, engine = recorded
    big = [(c.id, k, s) for c, k, s in cli_scale.iter_states(engine, cells)]
    small = [(c.id, k, s) for c, k, s in cli_scale.iter_states(engine, cells, block=7)]
    assert big == small and sum(s is not None for _, _, s in big) > 33
    states = cli_scale.cell_states(engine, cells)
    assert {k: s for _, k, s in big if s is not None} == states
    assert {s.status for s in states.values()} == {"done", "failed", "running"}


def test_dry_run_counts_what_is_done(recorded, capsys, tmp_path):
    p, path, cells, _ = recorded
    assert main(["run", str(p), "--db", str(path), "--dry-run", "--device", "cpu",
                 "--data-root", str(tmp_path / "no-data")]) == 0
    out = capsys.readouterr().out
    assert f"would evaluate {len(cells) - 30} cell(s) (30 already done):" in out
    assert out.count("\n  tiny/m") == len(cells) - 30
