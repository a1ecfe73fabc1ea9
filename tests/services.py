"""Real servers for the tests: PostgreSQL and a one-node Slurm cluster, in temporary
directories on loopback, started and stopped by fixtures (tests/conftest.py).

They come from Debian's packages (`postgresql`; `slurmctld`, `slurmd`, `munge`), which
.ci/run installs. Where a binary is missing the tests that need it are skipped, naming
it; under CI (BENCH_CI=1) they fail instead, so a broken install cannot pass as a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def missing(what: str) -> None:
    """Skip for a missing component, or fail under CI (BENCH_CI=1)."""
    if os.environ.get("BENCH_CI"):
        pytest.fail(f"{what} (BENCH_CI=1: CI must install it; see .ci/run)", pytrace=False)
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, *, user: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, user=user, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {out.returncode}: "
                           f"{(out.stderr or out.stdout).strip()[-2000:]}")
    return out


# ---------------------------------------------------------------------- PostgreSQL

def postgres_bindir() -> Path | None:
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name)
                  if Path(d).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


class Postgres:
    """A throwaway PostgreSQL server: initdb in a temporary directory, a free loopback port,
    trust authentication for the user `bench`. As root it runs as the `postgres` system user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = None
        if os.geteuid() == 0:
            import pwd
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the 'postgres' system user "
                                   "(Debian's postgresql package creates it)") from None
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()

    def _pg(self, *args, check=True):
        return _run([str(self.bindir / args[0]), *args[1:]], user=self.user, check=check,
                    cwd=self.dir)

    def start(self) -> "Postgres":
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        os.chmod(self.dir, 0o755)
        self._pg("initdb", "-D", str(self.data), "-U", "bench", "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions")
        self._start()
        return self

    def _start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._pg("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"),
                 "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self._start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://bench@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=bench dbname=postgres",
                             autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def admin(self, database: str):
        import psycopg
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=bench dbname={database}",
                               autocommit=True)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------- Slurm

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "srun", "sinfo")


def slurm_binaries() -> dict[str, str | None]:
    extra = ["/usr/sbin", "/usr/bin"]
    path = os.pathsep.join([os.environ.get("PATH", "")] + extra)
    return {b: shutil.which(b, path=path) for b in SLURM_BINARIES}


class SlurmCluster:
    """A one-node Slurm cluster on loopback: munged with its own key and socket, slurmctld and
    slurmd with a slurm.conf in a temporary directory (proctrack/linuxproc, no cgroups, no
    accounting). Clients find it through SLURM_CONF."""

    def __init__(self, bins: dict[str, str]):
        self.bins = bins
        self.dir = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.ctld_port, self.d_port = free_port(), free_port()
        while self.d_port == self.ctld_port:
            self.d_port = free_port()

    def start(self) -> "SlurmCluster":
        d = self.dir
        os.chmod(d, 0o755)
        for sub in ("munge", "state", "spool", "log"):
            (d / sub).mkdir()
        os.chmod(d / "munge", 0o711)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        sock = d / "munge" / "munge.sock"
        _run([self.bins["munged"], f"--key-file={key}", f"--socket={sock}",
              f"--pid-file={d / 'munge' / 'munged.pid'}", f"--log-file={d / 'munge' / 'munged.log'}",
              f"--seed-file={d / 'munge' / 'seed'}", "--force"])
        user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""\
ClusterName=benchtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.d_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
        env = self.env()
        _run([self.bins["slurmctld"], "-f", str(self.conf)], env=env)
        _run([self.bins["slurmd"], "-f", str(self.conf), "-N", self.node], env=env)
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline:
            out = _run([self.bins["sinfo"], "-h", "-o", "%T"], env=env, check=False)
            state = out.stdout.strip()
            if out.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test Slurm node did not come up (sinfo: {state!r}); "
                           f"logs: {self.log_tail()}")

    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def log_tail(self) -> str:
        parts = []
        for f in sorted((self.dir / "log").glob("*.log")) + [self.dir / "munge" / "munged.log"]:
            if f.exists():
                parts.append(f"{f.name}: " + " | ".join(f.read_text().splitlines()[-5:]))
        return "\n".join(parts)

    def close(self) -> None:
        env = self.env()
        _run([self.bins["scancel"], "--full", "--partition", "debug"],
             env=env, check=False)
        for _ in range(120):       # let the jobs' steps end before their daemons do
            out = _run([self.bins["squeue"], "-h"], env=env, check=False)
            if out.returncode != 0 or not out.stdout.strip():
                break
            time.sleep(0.5)
        for pidfile in (self.dir / "slurmd.pid", self.dir / "slurmctld.pid", self.dir / "munge" / "munged.pid"):
            try:
                _stop(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        for pid in self._leftovers():  # job step processes of this cluster (by its SLURM_CONF)
            _stop(pid)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _leftovers(self) -> list[int]:
        mark = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if mark in (d / "environ").read_bytes().split(b"\0"):
                        pids.append(int(d.name))
                except OSError:
                    continue
        return pids


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
