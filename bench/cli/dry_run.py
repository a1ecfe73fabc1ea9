"""`bench run --dry-run`: the device, which datasets are present, the work per model and
cell, and a time estimate; runs nothing."""

from __future__ import annotations

import sys
from pathlib import Path


def dry_run(suite, cells, engine, device: str, data_root: Path, args) -> int:
    import contextlib

    from sqlalchemy.orm import Session

    from bench.db.schema import ModelRecord
    from bench.data.read import split_present
    from bench.humanize import human_count, human_seconds
    from bench.run.estimate import estimate
    from bench.run.plan import group
    from bench.run.precision import device_name
    from bench.cli import scale as cli_scale
    if engine is None or args.force:
        pending = list(cells)
    else:                        # results read in blocks of cells (or in one pass), not per cell
        pending = [c for c, _, state in cli_scale.iter_states(engine, cells)
                   if state is None or state.status != "done"]
    jobs = group(pending)
    to_train, released = [], [j for j in jobs if j.model.checkpoint is not None]
    with Session(engine) if engine is not None else contextlib.nullcontext() as s:
        for j in jobs:
            rec = s.get(ModelRecord, j.key) if s is not None else None
            if j.model.checkpoint is None and (rec is None or not Path(rec.checkpoint_path).exists()):
                to_train.append(j)
    training = {id(j) for j in to_train}
    desc = device_name(device)
    print(f"device: {device} — {desc}")

    # the data each pending job reads: training split if it trains, the evaluation splits
    needs: dict[str, set[str]] = {}
    for j in jobs:
        ds = j.model.dataset.plugin
        if id(j) in training:
            needs.setdefault(ds, set()).add("train")
        needs.setdefault(ds, set()).update(c.eval.split for c in j.cells)
    print(f"data root: {data_root}")
    for ds, splits in needs.items():
        missing = sorted(sp for sp in splits if not split_present(ds, sp, data_root))
        if not missing:
            print(f"  {ds}: present ({', '.join(sorted(splits))})")
        elif args.offline:
            print(f"  {ds}: missing {', '.join(missing)}, and --offline forbids fetching it: "
                  f"its models would fail (`python -m bench data fetch {ds}`)")
        else:
            print(f"  {ds}: missing {', '.join(missing)}: would be fetched and verified first "
                  f"(`python -m bench data fetch {ds}`)")

    est, costs = estimate(to_train, pending, device, desc, engine)
    print(f"would train {len(to_train)} model(s):")
    for j, w, cost in est.train:
        m = j.model
        print(f"  {m.name:<28} {m.dataset.name}/{m.arch}/{m.defense}: {w.epochs} epochs × "
              f"{w.examples:,} examples × (1 + {w.inner} inner steps) = {w.passes:,} "
              f"forward/backward passes ≈ {human_seconds(w.passes * cost.seconds_per_pass)}"
              f"  [{j.key[:12]}]")
    print(f"would load {len(jobs) - len(to_train) - len(released)} model(s) from the checkpoint cache")
    if released:
        from bench.checkpoints.download import RemoteCheckpoint, cache_name
        print(f"would load {len(released)} released checkpoint(s):")
        for j in released:
            src = j.model.checkpoint
            if isinstance(src, RemoteCheckpoint) and src.url.lower().startswith("file:"):
                where = f"{src.shown} (local file, read in place)"
            elif isinstance(src, RemoteCheckpoint):
                dl = Path(args.results_dir) / "checkpoints" / "downloads" / cache_name(src.url)
                where = f"{src.shown} ({'cached' if dl.exists() else 'to download'})"
            else:
                where = str(src)
            print(f"  {j.model.name:<28} {where}")
    print(f"would evaluate {len(pending)} cell(s) ({len(cells) - len(pending)} already done):")
    works: dict[int, str] = {}                # the cells share their EvalWork objects
    lines: list[str] = []
    for c, w, cost in est.evals:
        text = works.get(id(w))
        if text is None:
            per = f"{w.per_example}" if w.exact else f"≥{w.per_example}"
            text = works[id(w)] = f"  n={w.n:,} × {per} passes = {'' if w.exact else '≥'}{w.passes:,}"
        lines.append(f"  {c.id}{text}" + ("  smoke\n" if c.smoke else "\n"))
        if len(lines) >= 10_000:              # 10⁶ cells: written as they come, not kept
            sys.stdout.write("".join(lines))
            lines.clear()
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
    print(f"estimate on {device}: training {human_count(est.train_passes)} passes ≈ "
          f"{human_seconds(est.train_seconds)}, evaluation {'≥' if not est.eval_exact else ''}"
          f"{human_count(est.eval_passes)} passes ≈ {human_seconds(est.eval_seconds)}")
    for cost in costs.values():
        print(f"  {cost.label}: {cost.params / 1e6:.2f} M parameters, "
              f"{human_count(cost.macs)} multiply-adds per example, "
              f"{1e3 * cost.seconds_per_pass:.3g} ms per example pass ({cost.source})")
    if torch_device_type(device) == "cpu":
        for cost in costs.values():
            if cost.gpu_sized:
                print(f"warning: {cost.label} is GPU-sized ({human_count(cost.macs)} multiply-adds "
                      f"per example) and is planned on a CPU; run it on a GPU (--device cuda)",
                      file=sys.stderr)
    return 0


def torch_device_type(device: str) -> str:
    import torch
    return torch.device(device).type
