#!/usr/bin/env python
"""Write a large generated suite (and optionally a results database with some of its
cells recorded) for the planner benchmark (issue 16 §7, `benchmarks/bench_planner.py`).

The suite is MODELS × ATTACKS × EPS cells, one matrix entry per model (default 100 × 100 ×
100 = 10⁶): the models are one SmallCNN recipe with different learning rates (cheap to
resolve, distinct keys), the attacks PGD with different step sizes. `--include N` adds N
include entries (half repeat cells of the cross product, half are new ε values).

    python benchmarks/make_big_suite.py /tmp/big.yaml                        # 10⁶ cells
    python benchmarks/make_big_suite.py /tmp/big.yaml --db /tmp/big.sqlite --results 0.1
    python benchmarks/make_big_suite.py /tmp/small.yaml --models 10 --attacks 10 --eps 10

With `--db`, a fraction `--results` of the cells (every k-th) gets a result row (status
done, some failed), written straight into a new SQLite file: a database as `ls` meets it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def suite_text(models: int, attacks: int, eps: int, include: int = 0) -> str:
    """The YAML text of a MODELS × ATTACKS × EPS suite (plus `include` include entries)."""
    lines = ["version: 1", "name: big", "seed: 0", "datasets:",
             "  tiny: {plugin: mnist, train_subset: 256}", "attacks:"]
    for a in range(attacks):
        lines.append(f"  pgd_{a}: {{plugin: pgd, config: {{norm: linf, steps: 5, "
                     f"step_size: {0.01 + a * 1e-4:.4f}}}}}")
    lines.append("models:")
    for m in range(models):
        lines.append(f"  m_{m}: {{dataset: tiny, arch: small_cnn, defense: sgd, "
                     f"train: {{epochs: 1, batch_size: 64, lr: {0.01 + m * 1e-4:.4f}}}}}")
    eps_list = ", ".join(f"{(e + 1) / 1000:g}" for e in range(eps))
    # one matrix entry per model: a suite caps an entry at 10⁵ cells (bench.suite.load)
    lines.append("matrix:")
    for m in range(models):
        lines += [f"  - name: all_{m}", "    tags: [big]", f"    models: [m_{m}]",
                  f"    attacks: [{', '.join(f'pgd_{a}' for a in range(attacks))}]",
                  f"    eps: [{eps_list}]", "    eval: {n: 64}"]
        if include and m == 0:
            lines.append("    include:")
            for i in range(include):
                a = i % attacks
                # even i: a cell of the cross product again; odd i: an ε outside it
                e = f"{(i // 2 % eps + 1) / 1000:g}" if i % 2 == 0 else f"{2 + i / 1e6:g}"
                lines.append(f"      - {{model: m_0, attack: pgd_{a}, eps: {e}}}")
    return "\n".join(lines) + "\n"


def write_results(db_path: Path, cells, every: int) -> int:
    """Record every `every`-th cell as done (each 10th of those failed): a direct bulk
    insert, as fast as SQLite takes it. Returns the number of rows."""
    import datetime as dt

    from sqlalchemy import insert

    from bench.db import database as db
    engine = db.open_db(str(db_path))
    now = dt.datetime(2024, 1, 1)
    rows = []
    for i, c in enumerate(cells[::every]):
        failed = i % 10 == 9
        rows.append(dict(cell_key=c.key, cell_id=c.id, model_key=c.model_key, model_name=c.model.name,
                         dataset=c.model.dataset.name, attack=c.attack.name,
                         attack_plugin=c.attack.plugin, norm="linf", eps_literal=c.eps.literal,
                         eps=c.eps.value, split=c.eval.split, n=64, n_correct=0 if failed else 32 + i % 32,
                         robust_acc=None if failed else (32 + i % 32) / 64, flags=[], config={},
                         tags=[], precision=c.precision, seed=c.seed, smoke=c.smoke, seconds=1.0,
                         status="failed" if failed else "done", error="boom" if failed else None,
                         device="cpu", versions={}, commit="", run_id=None, created=now, worker=None))
    with engine.begin() as conn:
        for i in range(0, len(rows), 10_000):
            conn.execute(insert(db.ResultRecord), rows[i:i + 10_000])
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the suite file to write")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--attacks", type=int, default=100)
    ap.add_argument("--eps", type=int, default=100)
    ap.add_argument("--include", type=int, default=0, help="number of include entries")
    ap.add_argument("--db", type=Path, help="also write a SQLite results database (must not exist)")
    ap.add_argument("--results", type=float, default=0.1,
                    help="fraction of the cells recorded in --db (default 0.1)")
    args = ap.parse_args(argv)
    args.out.write_text(suite_text(args.models, args.attacks, args.eps, args.include))
    print(f"{args.out}: {args.models} models × {args.attacks} attacks × {args.eps} ε"
          + (f" + {args.include} includes" if args.include else ""))
    if args.db is not None:
        if args.db.exists():
            ap.error(f"{args.db} exists; give a new path")
        from bench.run.plan import expand
        from bench.suite.load import load_suite
        cells = expand(load_suite(args.out))
        n = write_results(args.db, cells, max(1, round(1 / args.results)) if args.results > 0 else len(cells) + 1)
        print(f"{args.db}: {n} result rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
