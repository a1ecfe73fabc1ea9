"""Shared fixtures. The datasets are where `bench` looks for them: `pytest --data-root DIR`,
else $BENCH_DATA_ROOT, else the per-user cache ~/.cache/bench/data
(`bench.data.read.resolve_data_root`). A dataset missing there is fetched and verified the way
`python -m bench data fetch` does (`bench.data.fetch.fetch_dataset`), at most once per test
session and, through the fetch's file lock, once per machine: a fresh clone runs every
test. `.ci/run` points $BENCH_DATA_ROOT at ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.data.read import resolve_data_root

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
        from bench.data.fetch import fetch_dataset
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


@pytest.fixture
def suite_file(tmp_path):
    """`suite_file(text=ONE_MODEL, name="suite.yaml")` writes a suite into the test's folder
    and returns its path; the shared texts are in tests/suites.py."""
    from tests.suites import ONE_MODEL

    def write(text: str = ONE_MODEL, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


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


# ---------------------------------------------------------------------- real servers
# PostgreSQL and a one-node Slurm cluster, started once per session in temporary
# directories on loopback (tests/services.py); missing binaries skip, or fail under BENCH_CI.

@pytest.fixture(scope="session")
def postgres_server():
    from tests.services import Postgres, missing, postgres_bindir
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[postgres]')")
    server = Postgres(bindir).start()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server, request):
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import re
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    return postgres_server.create_database(name)


@pytest.fixture(scope="session")
def slurm_cluster():
    from tests.services import SlurmCluster, missing, slurm_binaries
    bins = slurm_binaries()
    absent = [b for b, p in bins.items() if p is None]
    if absent:
        missing(f"Slurm binaries not found: {', '.join(absent)} (apt-get install slurmctld slurmd munge)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        missing("submitit is not installed (pip install -e '.[slurm]')")
    cluster = SlurmCluster(bins)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
