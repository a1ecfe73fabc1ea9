"""CLI subcommands for the leaderboard and the regression checks.

`bench.cli` calls `add_subcommands(subparsers)`; each subcommand sets `func(args) -> int`.
Bad input raises BenchError, which `bench.cli.common.run_command` prints as one line and
maps to exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


from sqlalchemy.engine import Engine

from bench.cli.common import open_results
from bench.db.database import DEFAULT_DB, open_db
from bench.errors import BenchError, printable
from bench.protected_files import database_files, refuse_overwrite

RAW = argparse.RawDescriptionHelpFormatter

REPORT_EPILOG = """\
examples:
  python -m bench report --out site/
  python -m bench report --out site/ --export csv,json,md,tex
  python -m bench report --out lb --db sqlite:///results/bench.sqlite
  python -m bench report --out site/ --no-baselines

The committed baselines in results/baselines/ (the leaderboard's measured cells, with their
provenance) are added to what the database holds; on a fresh clone, with no database, the
tables come from suite.yaml and the baselines alone fill them.

Open site/index.html in a browser; the site has no external dependency and works from disk.
`bench run` renders it too, at the end of every run (into results/site by default).
With --export the tables are also written to site/export/<table>.{csv,json,md,tex} and linked
from each table page; the smoke results go beside them as smoke-<dataset>.<fmt>, marked smoke."""

BASELINE_EPILOG = """\
examples:
  python -m bench baseline save main
  python -m bench baseline save smoke --tag smoke --filter 'mnist_smoke/*'
  python -m bench baseline save nightly --dir results/baselines --db results/bench.sqlite

The file (default results/baselines/NAME.json) holds, per cell, the resolved config, n,
n_correct, the per-sample outcomes (base64 of the packed bits), precision, smoke, seed,
plugin versions, commit and date; commit it next to the code it measures."""

CHECK_EPILOG = """\
examples:
  python -m bench check --baseline results/baselines/main.json
  python -m bench check --baseline results/baselines/main.json --threshold 0.5 --alpha 0.01 \\
      --junit reports/check.xml --markdown reports/check.md
  python -m bench check --paper
  python -m bench check --paper --table table1 --table table2 --tolerance 1.5
  python -m bench check --paper --table table2 --allow-empty

--baseline: a cell is "worse" only if it dropped by at least --threshold percentage points
AND the drop is significant at --alpha (exact McNemar test on the per-sample outcomes; a
two-proportion z-test when they are missing). Cells whose config, plugin version, precision,
number of examples or smoke mode differ are "not_comparable" and never fail the check.
--paper: each table cell against the paper's value, within the table's tolerance. The first
column of the output marks each verdict (a legend line explains the symbols).

exit status: 0 nothing regressed, 1 something did (worse or failed; with --paper also below
or above the tolerance), 2 bad input (unreadable or malformed baseline, unknown table, no
database, a threshold that is not a finite number, an output file that is the database) or
nothing compared at all: with --paper no cell measured, with --baseline every baseline cell
missing or not comparable (unless --allow-empty). The summary line says how many baseline
cells were compared."""


# ============================================================================ helpers

def _output_dir(path: Path, flag: str) -> None:
    """A folder to write into: refuse a file in its place (or in place of a parent)."""
    for up in (path, *path.parents):
        if up.exists():
            if not up.is_dir():
                raise BenchError(f"{flag} {path} cannot be a folder: {up} is a file")
            return


def _output_file(path: str | Path, flag: str) -> Path:
    """A file to write: refuse a directory in its place or a file in place of its folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BenchError(f"{flag} {path} is a directory; give a file name")
    _output_dir(path.parent, flag)
    return path


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, metavar="URL",
                   help=f"results database: a SQLite path or a SQLAlchemy URL "
                        f"(default: {DEFAULT_DB})")


def _formats(text: str | None) -> list[str]:
    from bench.leaderboard.export import FORMATS
    if text is None:
        return []
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise BenchError(f"--export takes a comma-separated list of {', '.join(FORMATS)}; "
                         f"got {text!r}")
    return fmts


# ============================================================================ commands

def _report_sources(args: argparse.Namespace) -> tuple[Engine, list[dict], str]:
    """The database to render and the committed baselines to add to it. Without a
    database (a fresh clone), the tables come from --suite into a database in memory, so
    the committed baselines render on their own."""
    from bench.leaderboard.baseline import committed_baselines, load_baseline
    if args.baseline:
        baselines = [load_baseline(p) for p in args.baseline]
    elif args.no_baselines:
        baselines = []
    else:
        baselines = committed_baselines(args.baselines_dir)
    db_arg = str(DEFAULT_DB if args.db is None else args.db)
    target = Path(db_arg).expanduser()
    # Only the default database may be absent (a fresh clone); a named one must exist.
    if args.db is None and not target.exists():
        suite = Path(args.suite)
        if not suite.is_file():
            raise BenchError(f"no results database at {db_arg} and no suite file {suite} to take "
                             f"the tables from: run `python -m bench run suite.yaml` first, or "
                             f"pass --db or --suite")
        from bench.run.record import record_tables
        from bench.suite.load import load_suite
        engine = open_db("sqlite://")
        record_tables(engine, load_suite(suite))
        return engine, baselines, f"the tables of {suite} (no database at {db_arg})"
    return open_results(db_arg), baselines, db_arg


def _spare_database(out: Path, db_files: list[Path], export_dirname: str) -> None:
    """The site writes <out>/*.html and <out>/<export>/*: refuse when the database is one
    of those files (it would be replaced by a page)."""
    site = out.resolve()
    for f in db_files:
        f = f.expanduser().resolve()
        if (f.parent == site and f.suffix == ".html") or site / export_dirname in f.parents:
            raise BenchError(f"--out {printable(out)} would overwrite the results database "
                             f"{printable(f)}; render the site into another folder")


def cmd_report(args: argparse.Namespace) -> int:
    from bench.leaderboard.export import export_tables
    from bench.leaderboard.site import EXPORT_DIRNAME, render_site
    fmts = _formats(args.export)
    out = Path(args.out).expanduser()
    _output_dir(out, "--out")
    engine, baselines, what = _report_sources(args)
    _spare_database(out, database_files(engine), EXPORT_DIRNAME)
    written = export_tables(engine, out / EXPORT_DIRNAME, fmts, baselines) if fmts else []
    index = render_site(engine, out, baselines)
    cells = sum(len(b.get("cells") or []) for b in baselines)
    print(f"wrote {index} from {what}"
          + (f" and {len(baselines)} committed baseline(s) ({cells} cells)" if baselines else "")
          + (f"; {len(written)} export file(s) under {out / EXPORT_DIRNAME}" if written else ""))
    return 0


def cmd_baseline_save(args: argparse.Namespace) -> int:
    from bench.leaderboard.baseline import save_baseline
    _output_dir(Path(args.dir).expanduser(), "--dir")
    engine = open_results(args.db)
    path = save_baseline(engine, args.name, tags=args.tag or None, filters=args.filter or None,
                         out_dir=Path(args.dir).expanduser())
    n = json.loads(path.read_text(encoding="utf-8"))["n_cells"]
    print(f"saved baseline {args.name!r}: {n} cell(s) in {path}")
    return 0


def _settings(args: argparse.Namespace) -> tuple[float, float, float | None]:
    """--threshold, --alpha, --tolerance as finite numbers in range (a NaN threshold
    used to make every drop "unchanged")."""
    from bench.leaderboard.check import finite
    threshold = finite(1.0 if args.threshold is None else args.threshold, "--threshold",
                       "≥ 0 (percentage points)", lambda x: x >= 0)
    alpha = finite(0.05 if args.alpha is None else args.alpha, "--alpha", "in (0, 1)",
                   lambda x: 0 < x < 1)
    tolerance = None if args.tolerance is None else finite(
        args.tolerance, "--tolerance", "≥ 0 (percentage points)", lambda x: x >= 0)
    return threshold, alpha, tolerance


def _outputs(args: argparse.Namespace, protected: list) -> tuple[Path | None, Path | None]:
    """The --junit and --markdown files: never the database, the baseline or a SQLite
    file, never each other."""
    junit = markdown = None
    if args.junit:
        junit = refuse_overwrite(_output_file(args.junit, "--junit"), "--junit", protected)
    if args.markdown:
        markdown = refuse_overwrite(_output_file(args.markdown, "--markdown"), "--markdown",
                                    protected + ([junit] if junit else []))
    return junit, markdown


def cmd_check(args: argparse.Namespace) -> int:
    from bench.leaderboard import check, verdict_writers as out
    from bench.leaderboard.baseline import load_baseline
    if args.paper:
        if args.threshold is not None or args.alpha is not None:
            raise BenchError("--threshold and --alpha apply to --baseline, not --paper "
                             "(use --tolerance)")
        _, _, tolerance = _settings(args)
        engine = open_results(args.db)
        junit, markdown = _outputs(args, database_files(engine))
        verdicts = check.check_paper(engine, tables=args.table or None, tolerance=tolerance)
        title = "bench check --paper"
    else:
        if args.table or args.tolerance is not None:
            raise BenchError("--table and --tolerance apply to --paper, not --baseline (use "
                             "--threshold / --alpha)")
        threshold, alpha, _ = _settings(args)
        baseline = load_baseline(args.baseline)
        engine = open_results(args.db)
        junit, markdown = _outputs(args, database_files(engine) + [Path(args.baseline)])
        verdicts = check.compare(engine, baseline, threshold_pp=threshold, alpha=alpha)
        title = f"bench check against baseline {baseline.get('name', args.baseline)}"
    paper = bool(args.paper)
    print(out.format_table(verdicts, paper=paper))
    if junit:
        out.write_junit(verdicts, junit, suite="bench.check.paper" if paper else "bench.check")
    if markdown:
        out.write_markdown(verdicts, markdown, title=title, paper=paper)
    status = check.exit_status(verdicts)
    if status != 0:
        return status
    if paper and not check.measured_count(verdicts):
        what = (f"nothing measured: none of the {len(verdicts)} paper cell(s) checked has a "
                f"result, so nothing was compared; run the tables first (`python -m bench run "
                f"suite.yaml --tag TABLE`)")
    elif not paper and not check.compared_count(verdicts):
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(Counter(
            v.verdict for v in verdicts if v.cell_key_baseline is not None).items()))
        what = (f"nothing compared: none of the {check.baseline_count(verdicts)} baseline "
                f"cell(s) has a comparable result in the database ({kinds or 'no cells'}); run "
                f"them first (`python -m bench run suite.yaml`) with the baseline's settings")
    else:
        return 0
    if args.allow_empty:
        print(f"{what.split(':')[0]} (allowed by --allow-empty)", file=sys.stderr)
        return 0
    print(f"{what}, or pass --allow-empty", file=sys.stderr)
    return 2


# ============================================================================ registration

def add_subcommands(subparsers) -> None:
    """Register `report`, `baseline save` and `check` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "report", help="render the leaderboard as a static site (and export the tables)",
        description="Render the results database as a static site mirroring the paper's "
                    "tables: one page per table, per model, and the smoke results apart.",
        epilog=REPORT_EPILOG, formatter_class=RAW)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    _add_db(p)
    p.add_argument("--export", metavar="FORMATS", default=None,
                   help="also write the tables as files: comma-separated csv,json,md,tex")
    p.add_argument("--baseline", action="append", metavar="FILE",
                   help="add this baseline's cells to the leaderboard (repeatable; default: "
                        "every baseline in --baselines-dir)")
    p.add_argument("--baselines-dir", default="results/baselines", metavar="DIR",
                   help="where the committed baselines are (default: results/baselines)")
    p.add_argument("--no-baselines", action="store_true",
                   help="render the database alone, without the committed baselines")
    p.add_argument("--suite", default="suite.yaml", metavar="FILE",
                   help="take the tables from this suite when there is no database "
                        "(default: suite.yaml)")
    p.set_defaults(func=cmd_report)

    b = subparsers.add_parser(
        "baseline", help="freeze current results as a baseline for `check`",
        description="Manage regression baselines.", epilog=BASELINE_EPILOG, formatter_class=RAW)
    bsub = b.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    s = bsub.add_parser(
        "save", help="save the current done results as baseline NAME",
        description="Freeze the current done results (optionally a selection) into "
                    "DIR/NAME.json.", epilog=BASELINE_EPILOG, formatter_class=RAW)
    s.add_argument("name", metavar="NAME", help="baseline name (the file is DIR/NAME.json)")
    s.add_argument("--tag", action="append", metavar="T",
                   help="only results with this tag (repeat: any of them)")
    s.add_argument("--filter", action="append", metavar="GLOB",
                   help="only cells whose cell id matches this glob, e.g. 'mnist/*' "
                        "(repeat: any of them)")
    _add_db(s)
    s.add_argument("--dir", default="results/baselines", metavar="DIR",
                   help="where to write the baseline (default: results/baselines)")
    s.set_defaults(func=cmd_baseline_save)

    c = subparsers.add_parser(
        "check", help="regression check against a baseline or the paper's values",
        description="Compare the results database with a saved baseline (--baseline) or "
                    "with the values the paper reports (--paper).",
        epilog=CHECK_EPILOG, formatter_class=RAW)
    mode = c.add_mutually_exclusive_group(required=True)
    mode.add_argument("--baseline", metavar="FILE", help="baseline JSON from `baseline save`")
    mode.add_argument("--paper", action="store_true",
                      help="check the tables against the paper's reported values")
    c.add_argument("--threshold", type=float, default=None, metavar="PP",
                   help="smallest change that counts, in percentage points (default 1.0)")
    c.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="significance level of the test (default 0.05)")
    c.add_argument("--table", action="append", metavar="NAME",
                   help="with --paper: only this table (repeatable)")
    c.add_argument("--tolerance", type=float, default=None, metavar="PP",
                   help="with --paper: override every table's tolerance (percentage points)")
    c.add_argument("--allow-empty", action="store_true",
                   help="exit 0 when no paper cell has a result yet (--paper) or no baseline "
                        "cell could be compared (--baseline); default: exit 2, a check that "
                        "measured nothing must not pass")
    c.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one testcase per cell)")
    c.add_argument("--markdown", metavar="FILE", help="also write a Markdown table")
    _add_db(c)
    c.set_defaults(func=cmd_check)
