"""How a run runs: one frozen object, built once per run (from `bench run`'s flags, or from
the keywords given to `Runner`), that every worker of the run shares.

The runner, its workers (in this process or started by an executor elsewhere), the model
store (`bench.run.weights`) and the evaluation data (`bench.run.evaluate`) all read the
same settings from here instead of each restating them. A worker started elsewhere gets
them in its `WorkerPlan` (JSON: `portable`, then `to_dict`/`from_dict`) and resolves the
requested device on its own machine (`here`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bench.db.claims import DEFAULT_LEASE_SECONDS


@dataclass(frozen=True)
class RunSettings:
    """`bench run`'s flags that every worker obeys (--data-root, --device, --results-dir,
    --offline, --force, --no-progress, --lease); the selection of cells is not among them."""
    data_root: Path
    device: str                     # resolved in this process: cpu, cuda, cuda:N, mps
    results_dir: Path = Path("results")
    offline: bool = False           # no downloads: data and checkpoints must be here already
    force: bool = False             # rerun cells already done
    progress: bool = True           # progress bars on stderr
    lease_seconds: float = DEFAULT_LEASE_SECONDS   # a claim's lease (bench.db.claims)
    device_request: str = ""        # as asked (auto, cuda, …): what a worker elsewhere resolves; "" = device

    def __post_init__(self):
        # str from the Python API and from JSON too
        object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "device_request", str(self.device_request or self.device))
        object.__setattr__(self, "lease_seconds", float(self.lease_seconds))
        if not self.lease_seconds > 0:
            raise ValueError("lease_seconds must be positive")

    @property
    def ckpt_dir(self) -> Path:
        return self.results_dir / "checkpoints"

    def replace(self, **kw) -> "RunSettings":
        return dataclasses.replace(self, **kw)

    def on_device(self, device: str) -> "RunSettings":
        """These settings for a worker asked to run on `device` (resolved again by `here`)."""
        return self.replace(device=device, device_request=device)

    def portable(self) -> "RunSettings":
        """These settings as a worker elsewhere gets them (`WorkerPlan`): absolute paths (its
        working directory may differ), the device as requested (`here` resolves it on the
        worker's machine), no progress bars (its stderr is a log)."""
        return self.replace(data_root=self.data_root.resolve(), results_dir=self.results_dir.resolve(),
                            device=self.device_request, progress=False)

    def here(self) -> "RunSettings":
        """These settings in this process: the requested device resolved on this machine."""
        from bench.run.precision import resolve_device
        return self.replace(device=resolve_device(self.device_request))

    # ------------------------------------------------------------------ the plan's JSON
    def to_dict(self) -> dict:
        """JSON-able (of `portable` settings, as a `WorkerPlan` holds them)."""
        return {f.name: str(v) if isinstance(v, Path) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        return cls(**d)
