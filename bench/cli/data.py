"""`bench data fetch` and `bench data verify`."""

from __future__ import annotations

import sys


def _dataset_names(names: list[str]) -> list[str]:
    from bench.errors import BenchError
    from bench.plugins.registry import DATASETS, did_you_mean
    known = DATASETS.names()
    for n in names:
        if n not in known:
            raise BenchError(f"unknown dataset {n!r}{did_you_mean(n, list(known))}; known: "
                             f"{', '.join(known)}")
    return list(dict.fromkeys(names))


def cmd_data_fetch(args) -> int:
    from bench.data import fetch
    from bench.data.read import resolve_data_root
    root = resolve_data_root(args.data_root)
    for name in _dataset_names(args.name):
        paths = fetch.fetch_dataset(name, root, sources=args.source, progress=not args.quiet)
        print(f"{name}: {len(paths)} file(s) verified in {root}")
    return 0


def cmd_data_verify(args) -> int:
    from bench.data.read import resolve_data_root, verify_dataset
    from bench.errors import BenchError
    from bench.plugins.registry import DATASETS
    root = resolve_data_root(args.data_root)
    asked = _dataset_names(args.name)
    if root.exists() and not root.is_dir():
        raise BenchError(f"the data root {root} is a file, not a directory")
    print(f"data root: {root}" + ("" if root.exists() else " (does not exist yet: nothing fetched)"))
    bad, missing_asked, missing = 0, [], []
    for name in asked or DATASETS.names():
        for split, status in verify_dataset(name, root).items():
            print(f"{name:<14} {split:<6} {status}")
            if status.startswith("corrupt"):
                bad += 1
            elif not status.startswith("ok"):
                (missing_asked if name in asked else missing).append(name)
    if bad or missing_asked:
        parts = ([f"{bad} split(s) corrupt"] if bad else []) + \
                ([f"asked-for {', '.join(dict.fromkeys(missing_asked))} missing"] if missing_asked else [])
        print(f"FAIL: {'; '.join(parts)} (`python -m bench data fetch NAME` fetches and verifies)",
              file=sys.stderr)
        return 1
    if missing:
        print(f"ok; not fetched: {', '.join(dict.fromkeys(missing))} "
              f"(`python -m bench data fetch NAME` when needed)", file=sys.stderr)
    return 0
