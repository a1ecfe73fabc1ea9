"""Data: both layouts, verification, device augmentation, the validation split."""

from __future__ import annotations

import gzip
import hashlib
import pickle

import numpy as np
import pytest
import torch

from bench.data.read import (DeviceData, augment_batch, carve_validation, load_split,
                             read_cifar_pickles)
from bench.errors import DataError


def test_npz_layout_loads_in_order(data_root, cifar10_root):
    x, y = load_split("mnist", "test", data_root, offline=True)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = load_split("cifar10", "train", cifar10_root, offline=True)
    assert x.shape == (50000, 32, 32, 3)
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]      # SOURCES.md


def _write_idx(path, arr):
    dims = arr.shape
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_torchvision_layouts_are_read_and_verified(data_root, cifar10_root, tmp_path):
    x, y = load_split("mnist", "test", data_root, offline=True)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", x[..., 0])
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", y.astype(np.uint8))
    x2, y2 = load_split("mnist", "test", tmp_path, offline=True)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    # a tampered copy is refused, in one sentence that says how to fix it
    x_bad = x.copy()
    x_bad[0, 0, 0, 0] ^= 1
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", x_bad[..., 0])
    with pytest.raises(DataError, match="corrupt.*bench data fetch mnist"):
        load_split("mnist", "test", tmp_path, offline=True)

    cx, cy = load_split("cifar10", "test", cifar10_root, offline=True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": cx.transpose(0, 3, 1, 2).reshape(len(cx), -1),
                     b"labels": cy.tolist()}, f, protocol=4)
    # the batch is read (numpy-only) when its md5 is the one given: the official one for
    # the plugin, so this re-pickled copy is refused there (tests/test_untrusted_files.py)
    md5 = hashlib.md5((folder / "test_batch").read_bytes()).hexdigest()
    cx2, cy2 = read_cifar_pickles(folder, {"test_batch": md5})
    assert np.array_equal(cx, cx2) and np.array_equal(cy, cy2)
    with pytest.raises(DataError, match="not the official CIFAR batch test_batch"):
        load_split("cifar10", "test", tmp_path, offline=True)


def test_corrupt_npz_is_detected(data_root, tmp_path):
    x, y = load_split("mnist", "test", data_root, offline=True)
    y = y.astype(np.uint8)
    y[5] = (y[5] + 1) % 10
    np.savez_compressed(tmp_path / "mnist-test.npz", x=x, y=y)
    with pytest.raises(DataError, match="corrupt"):
        load_split("mnist", "test", tmp_path, offline=True)
    (tmp_path / "mnist-test.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable dataset file"):
        load_split("mnist", "test", tmp_path, offline=True)


def test_missing_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as ei:
        load_split("mnist", "test", tmp_path, offline=True)
    msg = str(ei.value)
    assert "bench data fetch mnist" in msg and "\n" not in msg


def test_augmentation_is_a_padded_crop_or_its_mirror():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        windows = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54          # about half are flipped
    assert not torch.equal(out, x)  # and crops move


def test_validation_split_is_deterministic_and_disjoint():
    a_tr, a_val = carve_validation(1000, 100)
    b_tr, b_val = carve_validation(1000, 100)
    assert np.array_equal(a_val, b_val) and len(a_val) == 100 and len(a_tr) == 900
    assert not set(a_tr) & set(a_val) and set(a_tr) | set(a_val) == set(range(1000))
    assert not np.array_equal(a_val, np.arange(900, 1000))   # a permutation, not the tail
    with pytest.raises(DataError):
        carve_validation(100, 100)


def test_device_data_batches_are_floats_in_unit_range_in_order(data_root):
    x, y = load_split("mnist", "test", data_root, offline=True)
    d = DeviceData(x[:100], y[:100], "cpu").head(50)
    batches = list(d.batches(32))
    assert [len(b[1]) for b in batches] == [32, 18]
    xb, yb, ib = batches[0]
    assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1 and xb.shape == (32, 1, 28, 28)
    assert ib.tolist() == list(range(32)) and yb.tolist() == y[:32].tolist()
    assert torch.allclose(xb[0, 0], torch.from_numpy(x[0, :, :, 0]).float() / 255)
