"""Shared fixtures. The datasets are where `bench` looks for them: `pytest --data-root DIR`,
else $BENCH_DATA_ROOT, else the per-user cache ~/.cache/bench/data
(`bench.data.resolve_data_root`). A dataset missing there is fetched and verified the way
`python -m bench data fetch` does (`bench.fetch.fetch_dataset`), at most once per test
session and, through the fetch's file lock, once per machine: a fresh clone runs every
test. `.ci/run` points $BENCH_DATA_ROOT at ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data import resolve_data_root

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--data-root", default=None, metavar="DIR",
                     help="bench: dataset folder (default: $BENCH_DATA_ROOT, else "
                          "~/.cache/bench/data, as `python -m bench` looks)")


_READY: dict[str, BaseException | None] = {}


def ensure_dataset(root: Path, name: str) -> Path:
    """`root` with `name` present and verified (fetched if needed), or the test fails with
    the fetch's one-line reason (remembered: a failed fetch is not retried per test)."""
    if name not in _READY:
        from bench.fetch import fetch_dataset
        try:
            fetch_dataset(name, root)
            _READY[name] = None
        except Exception as e:        # DataError: no route worked; kept for the next test
            _READY[name] = e
    err = _READY[name]
    if err is not None:
        pytest.fail(f"dataset {name} is not in {root} and could not be fetched: {err}",
                    pytrace=False)
    return root


@pytest.fixture(scope="session")
def data_dir(pytestconfig) -> Path:
    """The data root bench would use (nothing fetched yet)."""
    return resolve_data_root(pytestconfig.getoption("--data-root"))


@pytest.fixture(scope="session")
def data_root(data_dir) -> Path:
    """The data root, with MNIST present and verified."""
    return ensure_dataset(data_dir, "mnist")


@pytest.fixture(scope="session")
def cifar10_root(data_dir) -> Path:
    """The data root, with CIFAR-10 present and verified."""
    return ensure_dataset(data_dir, "cifar10")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
