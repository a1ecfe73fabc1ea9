"""Datasets: where they live, how they are read and verified, and how batches are made.

Data root, in order: the `--data-root` flag, the `BENCH_DATA_ROOT` environment
variable, else `$XDG_CACHE_HOME/bench/data` (`~/.cache/bench/data`). Two layouts are
read: the project's `.npz` files (`x` uint8 N×H×W×C, `y`; CIFAR-10 train may come in
parts) and torchvision's own layout, so an existing torchvision download works as is.
Every split is verified against the sha256 of its pixel and label arrays, whatever
its layout. This module reads and verifies and never downloads: obtaining a missing
dataset is `bench.data.fetch` (which imports this module, never the other way round).

On the device, images stay uint8 (N×C×H×W); batches are converted to float in [0, 1]
and augmented (random crop with padding, horizontal flip) there.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.unpickle import loads_numpy_only
from bench.errors import DataError, one_line, printable
from bench.plugins.registry import DATASETS

ENV_DATA_ROOT = "BENCH_DATA_ROOT"


def default_data_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "bench" / "data"


def resolve_data_root(flag: str | os.PathLike | None = None) -> Path:
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get(ENV_DATA_ROOT)
    return Path(env).expanduser() if env else default_data_root()


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What models and defenses may know about a dataset."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]            # C, H, W
    mean: tuple[float, ...]                # per channel, of x/255 on the train split
    std: tuple[float, ...]
    augment: bool                          # crop-with-padding + flip by default for training
    crop_padding: int = 4


@dataclasses.dataclass(frozen=True)
class NpzPart:
    file: str                              # file name under the data root
    sha256: str                            # sha256 of x.tobytes() + y.astype(uint8).tobytes()
    n: int


class DatasetPlugin:
    """Base of dataset plugins: `info`, the `.npz` parts of each split and a torchvision reader."""

    info: DatasetInfo
    splits: dict[str, tuple[NpzPart, ...]]
    fetch_hint: str = ""

    def read_torchvision(self, root: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Read `split` from torchvision's layout under root, or None if it is not there."""
        return None

    def torchvision_present(self, root: Path, split: str) -> bool:
        """Whether `split` is in torchvision's layout under root (not verified)."""
        return self.read_torchvision(root, split) is not None


# ------------------------------------------------------------------------- reading

def content_sha256(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y).astype(np.uint8).tobytes())
    return h.hexdigest()


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as d:
            return d["x"], d["y"]
    except Exception as e:  # zip, key or format errors all mean the same to a user
        raise DataError(f"{path} is not a readable dataset file ({one_line(e)}); "
                        f"delete it and run `python -m bench data fetch`") from None


def _verify(name: str, where: str, x: np.ndarray, y: np.ndarray, expected: str) -> None:
    got = content_sha256(x, y)
    if got != expected:
        raise DataError(f"{name}: {where} is corrupt (content sha256 {got[:12]}… ≠ expected "
                        f"{expected[:12]}…); delete it and run `python -m bench data fetch {name}`")


def read_idx(path: Path) -> np.ndarray:
    """Read an MNIST-style idx file (optionally .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / (stem + ".gz")):
        if cand.exists():
            return cand
    return None


MAX_CIFAR_BATCH_BYTES = 40 << 20      # an official batch is 31,035,704 bytes (test: 31,035,526)


def read_cifar_pickles(folder: Path, md5s: dict[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
    """torchvision's CIFAR batches (file name → official md5, in order) under folder as
    (x uint8 N×H×W×C, y), or None when one of them is absent.

    Anyone may have put these files in a data root, and the format is a pickle: a file is
    read only if it is small enough and its md5 is the official one, and then with
    `bench.data.unpickle.NumpyOnlyUnpickler`, so a planted pickle is a DataError and none
    of its code runs.
    """
    if not all((folder / n).exists() for n in md5s):
        return None
    xs, ys = [], []
    for name, md5 in md5s.items():
        path = folder / name
        data = _read_at_most(path, MAX_CIFAR_BATCH_BYTES)
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != md5:
            raise DataError(f"{printable(path)} is not the official CIFAR batch {name} (md5 "
                            f"{got[:12]}… ≠ {md5[:12]}…), so it is not read; delete it and run "
                            f"`python -m bench data fetch cifar10`")
        try:
            d = loads_numpy_only(data, encoding="bytes")   # torchvision's format is a pickle
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(d[b"labels"], dtype=np.uint8))
        except Exception as e:  # an official file always parses; anything else is damage
            raise DataError(f"{printable(path)} cannot be read ({one_line(e)})") from None
    return np.concatenate(xs), np.concatenate(ys)


def _read_at_most(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"{printable(path)} cannot be read: {e.strerror or one_line(e)}") from None
    if len(data) > limit:
        raise DataError(f"{printable(path)} is larger than {limit >> 20} MiB, so it is not "
                        f"the official file; delete it and run `python -m bench data fetch cifar10`")
    return data


class DatasetMissing(DataError):
    """A split that is not in the data root (neither as `.npz` files nor torchvision's layout)."""


def load_split(name: str, split: str, root: Path, *, offline: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """The verified (x uint8 N×H×W×C, y int64) of a split under root.

    Never downloads: a missing split raises DatasetMissing (`bench.data.fetch.load_or_fetch`
    fetches it first); `offline` only says, in that error, that fetching was forbidden.
    """
    plugin: DatasetPlugin = DATASETS.get(name)()
    if split not in plugin.splits:
        raise DataError(f"{name} has no split {split!r} (splits: {', '.join(plugin.splits)})")
    parts = plugin.splits[split]
    if not all((root / p.file).exists() for p in parts):
        tv = plugin.read_torchvision(root, split)
        if tv is not None:
            x, y = tv
            _verify(name, f"the torchvision copy of its {split} split under {root}",
                    x, y, _combined_hash(plugin, parts))
            return x, y.astype(np.int64)
        why = " and --offline forbids fetching it" if offline else ""
        raise DatasetMissing(f"{name} ({split}) is not in the data root {root}{why}; run "
                             f"`python -m bench data fetch {name} --data-root {root}` or point "
                             f"--data-root / ${ENV_DATA_ROOT} at a copy")
    xs, ys = [], []
    for p in parts:
        x, y = _read_npz(root / p.file)
        _verify(name, str(root / p.file), x, y, p.sha256)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _combined_hash(plugin: DatasetPlugin, parts: tuple[NpzPart, ...]) -> str:
    """The content hash of a split made of several parts, as one array."""
    if len(parts) == 1:
        return parts[0].sha256
    return getattr(plugin, "combined_sha256", {}).get(tuple(p.file for p in parts), "")


# ------------------------------------------------------------------------- verification

def part_status(root: Path, part: NpzPart) -> str:
    """'ok', 'missing' or 'corrupt (why)' for one `.npz` part under root."""
    path = root / part.file
    if not path.exists():
        return "missing"
    try:
        with np.load(path, allow_pickle=False) as d:
            x, y = d["x"], d["y"]
    except Exception as e:  # zip, key or format errors
        return f"corrupt (unreadable: {type(e).__name__})"
    if len(x) != part.n or len(y) != part.n:
        return f"corrupt ({len(x)} images, expected {part.n})"
    got = content_sha256(x, y)
    return "ok" if got == part.sha256 else f"corrupt (content sha256 {got[:12]}… ≠ {part.sha256[:12]}…)"


def verify_dataset(name: str, root: Path) -> dict[str, str]:
    """Each split's status under root: 'ok', 'ok (torchvision layout)', 'missing …' or 'corrupt …'.

    A status starts with 'ok' exactly when `load_split` accepts the split.
    """
    plugin: DatasetPlugin = DATASETS.get(name)()
    root = Path(root)
    out: dict[str, str] = {}
    for split, parts in plugin.splits.items():
        status = {p.file: part_status(root, p) for p in parts}
        if all(s == "ok" for s in status.values()):
            out[split] = "ok"
            continue
        if all(s == "missing" for s in status.values()):
            try:
                tv = plugin.read_torchvision(root, split)
            except DataError as e:
                out[split] = f"corrupt (torchvision layout: {one_line(e)})"
                continue
            except Exception as e:
                out[split] = f"corrupt (torchvision layout unreadable: {type(e).__name__})"
                continue
            if tv is None:
                out[split] = "missing"
            elif content_sha256(*tv) == _combined_hash(plugin, parts):
                out[split] = "ok (torchvision layout)"
            else:
                out[split] = "corrupt (torchvision layout: content sha256 mismatch)"
            continue
        bad = [(f, s) for f, s in status.items() if s != "ok"]
        bad.sort(key=lambda fs: fs[1] == "missing")                  # corrupt parts first
        out[split] = "; ".join(f"{s.partition(' ')[0]} {f}" + (f" {s.partition(' ')[2]}" if " " in s else "")
                               for f, s in bad)
    return out


def split_present(name: str, split: str, root: Path) -> bool:
    """Whether the split's files are in root (either layout), without verifying them."""
    plugin: DatasetPlugin = DATASETS.get(name)()
    parts = plugin.splits.get(split, ())
    if parts and all((Path(root) / p.file).exists() for p in parts):
        return True
    try:
        return plugin.torchvision_present(Path(root), split)
    except Exception:
        return False


# ------------------------------------------------------------------------- on the device

def carve_validation(n_train: int, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, val_idx): a fixed-seed permutation, the last val_size held out.

    The split depends only on (n_train, val_size, seed), never on the run's seed, so every
    model of a suite is early-stopped on the same images (as Rice et al.'s
    `generate_validation.py` fixes one held-out split).
    """
    if val_size <= 0:
        return np.arange(n_train), np.arange(0)
    if val_size >= n_train:
        raise DataError(f"validation split of {val_size} leaves no training images (train has {n_train})")
    perm = np.random.default_rng(seed).permutation(n_train)
    return np.sort(perm[:-val_size]), np.sort(perm[-val_size:])


class DeviceData:
    """A split resident on the device as uint8 N×C×H×W, with labels and source indices."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device | str,
                 index: np.ndarray | None = None):
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        self.index = torch.arange(len(self.y), device=device) if index is None else \
            torch.from_numpy(np.asarray(index, dtype=np.int64)).to(device)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, idx: np.ndarray | torch.Tensor) -> "DeviceData":
        out = DeviceData.__new__(DeviceData)
        idx = torch.as_tensor(idx, device=self.device, dtype=torch.long)
        out.x, out.y, out.index, out.device = self.x[idx], self.y[idx], self.index[idx], self.device
        return out

    def head(self, n: int | None) -> "DeviceData":
        """The first n examples in dataset order (the evaluation set)."""
        return self if n is None or n >= len(self) else self.subset(torch.arange(n))

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                padding: int = 4, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (x float in [0, 1], y, dataset index) batches."""
        n = len(self)
        order = (torch.randperm(n, generator=generator, device="cpu").to(self.device)
                 if shuffle else torch.arange(n, device=self.device))
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            xb = self.x[idx]
            if augment:
                xb = augment_batch(xb, padding, generator)
            yield xb.float().div_(255.0), self.y[idx], self.index[idx]


def augment_batch(x: torch.Tensor, padding: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, on x's device."""
    n, c, h, w = x.shape
    cpu_rand = lambda *shape, high: torch.randint(0, high, shape, generator=generator)  # noqa: E731
    oy = cpu_rand(n, high=2 * padding + 1).to(x.device)
    ox = cpu_rand(n, high=2 * padding + 1).to(x.device)
    flip = cpu_rand(n, high=2).to(x.device).bool()
    padded = F.pad(x, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # N, H', W', C
    rows = oy[:, None] + torch.arange(h, device=x.device)[None]
    cols = ox[:, None] + torch.arange(w, device=x.device)[None]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
