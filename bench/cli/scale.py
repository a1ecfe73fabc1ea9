"""CLI for many workers: `run`'s executor flags, `bench workers`, the running cells of `ls`.

`bench.cli.main` calls `add_run_args(run_parser)`, `executor_from_args(args, suite)`,
`add_subcommands(subparsers)`, `iter_states(engine, cells)` (`cell_states` for a
few cells) and `print_workers(summary)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
from dataclasses import dataclass

from bench.cli.numbers import lease_seconds, positive_int
from bench.db.claims import DEFAULT_LEASE_SECONDS
from bench.errors import BenchError, SuiteError, printable
from bench.suite.yamlload import load_yaml

RAW = argparse.RawDescriptionHelpFormatter

WORKERS_EPILOG = """\
examples:
  python -m bench workers
  python -m bench workers --db results/bench.sqlite --all

A worker is live while its heartbeat is younger than its lease; a worker that stopped
beating without signing off (killed, its node lost) is dead, and the model job it held
is taken over by another worker once the lease expires."""


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many workers (docs/scale.md)")
    g.add_argument("--executor", default=None, metavar="NAME",
                   help="what starts the workers (default: one worker in this process): local "
                        "(the same, by name), gpus (one process per visible GPU, or --workers CPU "
                        "processes), slurm (a job array through submitit), or a plugin's name")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="number of workers (gpus: default one per visible GPU; slurm: array size)")
    g.add_argument("--lease", type=lease_seconds, default=DEFAULT_LEASE_SECONDS, metavar="SECONDS",
                   help=f"a claim's lease: a worker silent this long is taken over "
                        f"(default {DEFAULT_LEASE_SECONDS:g}, at most 7 days)")
    g.add_argument("--executor-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an executor option, over suite.yaml's executors: section, e.g. "
                        "partition=gpu, time_min=720, gpus_per_task=1, 'sbatch={qos: high}' (repeatable)")


def executor_from_args(args, suite):
    """The executor named by --executor, configured from suite.yaml, then --workers and
    --executor-opt (the command line wins)."""
    from bench.plugins.executor import build_executor
    if args.lease <= 0:
        raise BenchError("--lease must be a positive number of seconds")
    if args.executor is None:               # one worker in this process
        if args.workers not in (None, 1) or args.executor_opt:
            raise BenchError("--workers and --executor-opt need --executor NAME "
                             "(gpus: processes on this machine, slurm: a job array)")
        return None
    options = dict((getattr(suite, "executors", None) or {}).get(args.executor, {}))
    for item in args.executor_opt:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--executor-opt {item!r}: write KEY=VALUE, e.g. partition=gpu")
        # the suite's YAML rules (bounded size, depth and aliases; 64-bit integers)
        try:
            options[key.strip()] = load_yaml("--executor-opt", value) if value.strip() else None
        except SuiteError as e:
            raise BenchError(f"--executor-opt {printable(item)[:80]!r}: the value is not a YAML "
                             f"scalar, list or mapping a suite could hold ({e.message})") from None
    if args.workers is not None:
        if args.workers < 1:
            raise BenchError("--workers must be at least 1")
        options["workers"] = args.workers
    return build_executor(args.executor, options, where="--executor-opt/suite.yaml")


# ---------------------------------------------------------------------- ls: running cells

LS_BLOCK = 10_000      # cells whose keys and states are held at once while `ls` lists them


@dataclass
class CellState:
    status: str          # done / failed / running / pending
    note: str = ""
    n: int = 0           # examples of the stored result (0: none)
    n_correct: int = 0


def cell_states(engine, cells, keys: list[str] | None = None) -> dict[str, CellState]:
    """The status of each cell that has a stored result or whose model job a worker
    holds, by cell key: a pending cell whose model job a live worker holds is running
    (with the worker, since when, and what it is doing). The other cells are pending and
    left out. One read of the results serves status and accuracy. (`iter_states` for
    many cells.)"""
    return {key: state for _, key, state in iter_states(engine, cells, keys=keys) if state is not None}


def _state(result: tuple[str, int, int] | None, lease) -> CellState:
    status, n, k = result if result is not None else ("pending", 0, 0)
    if status == "done":
        return CellState("done", "", n, k)
    if lease is not None and not lease.expired:
        return CellState("running", f"{lease.owner} since {_hms(lease.acquired)} UTC ({lease.stage})")
    if lease is not None:
        return CellState(status, f"claim by {lease.owner} expired {-lease.seconds_left:.0f}s ago", n, k)
    return CellState(status, "", n, k)


def iter_states(engine, cells, block: int = LS_BLOCK, keys: list[str] | None = None):
    """(cell, key, CellState or None: pending) of each cell in order, for `ls` and
    `run --dry-run`: keys made and states read `block` cells at a time, so memory stays
    bounded however many cells. The results are read in one pass when the table has no
    more rows than there are cells (10⁵ rows: a second), else by key in IN lists
    (`bench.db.chunks`). `keys`: the cells' keys, if the caller has them."""
    from bench.db import database as db
    from bench.db.claims import leases
    from bench.run.plan import cell_keys, model_keys
    results = held = None
    if engine is not None:
        held = leases(engine, sorted(model_keys(cells)))
        if db.count_results(engine) <= len(cells):
            results = db.result_summaries(engine, None)
    for i in range(0, len(cells), block):
        part = cells[i:i + block]
        part_keys = cell_keys(part) if keys is None else keys[i:i + block]
        if engine is None:
            yield from zip(part, part_keys, itertools.repeat(None))
            continue
        found = db.result_summaries(engine, part_keys) if results is None else results
        for c, key in zip(part, part_keys):
            r = found.get(key)
            lease = held.get(c.model_key) if held else None
            yield c, key, None if r is None and lease is None else _state(r, lease)


def _hms(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------- workers

def add_subcommands(sub) -> None:
    p = sub.add_parser("workers", help="list live and dead workers, their claims and heartbeats",
                       formatter_class=RAW, epilog=WORKERS_EPILOG,
                       description="The workers recorded in the results database: live ones with "
                                   "the model job they hold and their last heartbeat, dead ones "
                                   "(stopped beating), and finished ones with what they did.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="results database: a SQLAlchemy URL or a SQLite path (default results/bench.sqlite)")
    p.add_argument("--run", type=positive_int, metavar="ID", help="only the workers of this run")
    p.add_argument("--all", action="store_true", help="every worker ever recorded (default: the "
                                                      "live and dead ones and those of the last 3 runs)")
    p.set_defaults(func=cmd_workers)


def cmd_workers(args) -> int:
    from bench.db.claims import leases, workers
    from bench.cli.common import open_results
    from bench.run.summary import WorkerSummary
    engine = open_results(args.db)
    views = workers(engine, run_id=args.run)
    if not args.all and args.run is None:
        recent = sorted({v.record.run_id for v in views if v.record.run_id is not None})[-3:]
        views = [v for v in views if v.state in ("live", "dead") or v.record.run_id in recent]
    held = leases(engine)
    by_owner: dict[str, list] = {}
    for lease in held.values():
        by_owner.setdefault(lease.owner, []).append(lease)
    if not views:
        print("no workers recorded", file=sys.stderr)
        return 0
    rows = []
    for v in views:
        w = v.record
        claims = by_owner.get(w.id, [])
        claim = "; ".join(f"{lease.model_name} ({lease.stage}, since {_hms(lease.acquired)}"
                          + (", expired" if lease.expired else "") + ")" for lease in claims)
        rows.append((w.id, w.label or "-", w.executor or "-", f"run {w.run_id}", v.state,
                     f"{_hms(w.started)}", _age(v.heartbeat_age) if v.state in ("live", "dead") else "-",
                     claim or "-", WorkerSummary.from_record(w).line().split(": ", 1)[1]))
    head = ("worker", "label", "executor", "run", "state", "started (UTC)", "heartbeat", "holds", "did")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head) - 1)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[-1])
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)) + "  " + r[-1])
    counts: dict[str, int] = {}
    for v in views:
        counts[v.state] = counts.get(v.state, 0) + 1
    print(f"{len(views)} worker(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
          file=sys.stderr)
    return 0


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def print_workers(summary) -> None:
    """The run summary's last lines: which worker did what (when more than one worked)."""
    ws = getattr(summary, "workers", [])
    if len(ws) > 1 or any(w.takeovers or w.resumed for w in ws):
        print(f"{len(ws)} worker(s):")
        for w in ws:
            print(f"  {w.line()}")
    if getattr(summary, "elsewhere", 0):
        print(f"{summary.elsewhere} cell(s) were recorded meanwhile by another run sharing the work")
    if getattr(summary, "unfinished", 0):
        print(f"{summary.unfinished} cell(s) " + ("are left to the submitted workers"
                                                   if summary.detached else "are still pending"))
