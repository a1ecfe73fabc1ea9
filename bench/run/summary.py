"""What a run did, and which worker did what."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.run.plan import Cell


@dataclass
class WorkerSummary:
    """One worker's share of a run (stored as JSON in its workers row as it goes)."""
    worker: str
    label: str = ""
    trained: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    resumed: dict[str, int] = field(default_factory=dict)      # model → epoch training resumed at
    takeovers: dict[str, str] = field(default_factory=dict)    # model → the worker it took over from
    done: int = 0
    failed: int = 0
    state: str = ""

    def as_dict(self) -> dict:
        return {"trained": self.trained, "loaded": self.loaded, "resumed": self.resumed,
                "takeovers": self.takeovers, "done": self.done, "failed": self.failed}

    @classmethod
    def from_record(cls, rec, state: str = "") -> "WorkerSummary":
        d = rec.summary or {}
        return cls(rec.id, rec.label or "", list(d.get("trained", [])), list(d.get("loaded", [])),
                   dict(d.get("resumed", {})), dict(d.get("takeovers", {})),
                   int(d.get("done", 0)), int(d.get("failed", 0)), state)

    def line(self) -> str:
        parts = []
        if self.trained:
            parts.append("trained " + ", ".join(
                m + (f" (resumed at epoch {self.resumed[m]})" if m in self.resumed else "")
                + (f" (taken over from {self.takeovers[m]})" if m in self.takeovers else "")
                for m in self.trained))
        if self.loaded:
            parts.append("loaded " + ", ".join(self.loaded))
        parts.append(f"evaluated {self.done} cell(s)" + (f", {self.failed} failed" if self.failed else ""))
        who = self.worker + (f" [{self.label}]" if self.label else "")
        return f"{who}{' (' + self.state + ')' if self.state and self.state != 'done' else ''}: " + "; ".join(parts)


@dataclass
class RunSummary:
    run_id: int
    done: list[tuple[Cell, float, float]] = field(default_factory=list)  # cell, acc, seconds
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped: int = 0
    trained: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: list[WorkerSummary] = field(default_factory=list)
    elsewhere: int = 0       # cells another run recorded while this one ran (two terminals)
    unfinished: int = 0      # cells no worker got to (all workers died, or not waited for)
    detached: bool = False   # the executor returned without waiting for its workers

    @property
    def exit_status(self) -> int:
        return 1 if self.failed or (self.unfinished and not self.detached) else 0
