"""Shared fixtures: the data root (../shared/data beside the checkout, or $BENCH_DATA_ROOT)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    env = os.environ.get("BENCH_DATA_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if not (root / "mnist-test.npz").exists():
        pytest.skip(f"no dataset copies under {root} (set BENCH_DATA_ROOT)")
    return root


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
