"""The runner interface and the engine that drives a run.

A runner (one per experiment ``kind``) splits its experiment into *stages* of independent
*units*: e.g. for ``lmc`` first the trained members, then the evaluated pairs.  The engine runs
each stage's units that are not complete yet through an executor (``local`` or ``ray``), then
calls :meth:`Runner.finalize` (aggregate -> ``results.json``) and :meth:`Runner.render`
(figures + ``report.md``; also used by ``asymspec report``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymspec.run.progress import Progress
from asymspec.run.spec import Experiment
from asymspec.run.store import RunStore, atomic_write_json


@dataclass(frozen=True)
class Unit:
    """One independent piece of work; ``group`` is its subdirectory (``members``, ``pairs``)."""

    group: str
    id: str
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class Runner:
    """Base class of experiment runners.  Subclasses implement :meth:`stages`,
    :meth:`run_unit`, :meth:`finalize` and :meth:`render`."""

    kind = "base"

    def __init__(self, experiment: Experiment, store: RunStore, device: str = "cpu",
                 progress: Progress | None = None) -> None:
        self.experiment = experiment
        self.store = store
        self.device = device
        self.progress = progress or Progress(quiet=True)

    def check(self) -> None:
        """Called once before any unit runs: fail early (e.g. missing data) with UserError."""

    def stages(self) -> list[list[Unit]]:
        raise NotImplementedError

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        """Do ``unit``'s work, writing any files into ``out_dir``; return its metrics (JSON)."""
        raise NotImplementedError

    def finalize(self) -> dict[str, Any]:
        """Aggregate the units' metrics into the run's results (JSON)."""
        raise NotImplementedError

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        """Write figures and ``report.md`` from ``results``; return the files written."""
        return []


def default_device() -> str:
    env = os.environ.get("ASYMSPEC_DEVICE")
    if env:
        return env
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("ASYMSPEC_THREADS", "1")))


def execute_unit(runner: Runner, unit: Unit) -> dict[str, Any]:
    """Run one unit and mark it complete (``metrics.json`` written last, atomically)."""
    store = runner.store
    out = store.unit_dir(unit.group, unit.id)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    metrics = runner.run_unit(unit, out)
    record = {"id": unit.id, "group": unit.group, "seed": unit.seed, "info": unit.info,
              "device": runner.device, "wall_s": round(time.time() - t0, 3), "metrics": metrics}
    atomic_write_json(store.metrics_path(unit.group, unit.id), record)
    return record
