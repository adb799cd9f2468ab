"""The runner interface and the engine that drives a run.

A runner (one per experiment ``kind``) splits its experiment into *stages* of independent
*units*: e.g. for ``lmc`` first the trained members, then the evaluated pairs.  The engine runs
each stage's units that are not complete yet through an executor (``local`` or ``ray``), then
calls :meth:`Runner.finalize` (aggregate -> ``results.json``) and :meth:`Runner.render`
(figures + ``report.md``; also used by ``asymspec report``).

A runner declares its spec settings as ``settings_schema`` (merged into the core experiment
schema, :mod:`asymspec.run.schema`) and the resources a unit needs (:class:`Resources`).
Executors look units up by id through :meth:`Runner.unit` (an index built once).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymspec.run.progress import Progress
from asymspec.run.spec import Experiment
from asymspec.run.store import RunStore


@dataclass(frozen=True)
class Unit:
    """One independent piece of work; ``group`` is its subdirectory (``members``, ``pairs``)."""

    group: str
    id: str
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Resources:
    """What one unit asks for: CPU threads, a GPU fraction (Ray), a memory budget (GiB, for
    batched work; ``None`` = derived from the machine, see :mod:`asymspec.run.memory`), and
    whether the trainer runs under ``torch.compile`` (``auto`` | ``on`` | ``off``, see
    :mod:`asymspec.nn.compile`; ``$ASYMSPEC_COMPILE`` overrides)."""

    threads: int = 1
    gpus: float = 1.0
    memory_gb: float | None = None
    compile: bool | str = "auto"  # YAML reads on / off as booleans


class Runner:
    """Base class of experiment runners.  Subclasses implement :meth:`stages`,
    :meth:`run_unit`, :meth:`finalize` and :meth:`render`, and declare their spec settings in
    ``settings_schema`` (a JSON Schema fragment, see :mod:`asymspec.run.schema`)."""

    kind = "base"
    #: JSON Schema fragment merged into the core experiment schema for this kind.
    settings_schema: dict[str, Any] | None = None
    #: Default resources per unit; the spec's ``resources:`` overrides them.
    resources = Resources()

    def __init__(self, experiment: Experiment, store: RunStore, device: str = "cpu",
                 progress: Progress | None = None) -> None:
        self.experiment = experiment
        self.store = store
        self.device = device
        self.progress = progress or Progress(quiet=True)

    def check(self) -> None:
        """Called once before any unit runs: fail early (e.g. missing data) with UserError."""

    # -- toolkit conveniences ------------------------------------------------------------
    def unit(self, group: str, unit_id: str) -> Unit:
        """The unit ``group/unit_id`` (an index over :meth:`stages`, built once)."""
        index = self.__dict__.get("_unit_index")
        if index is None:
            index = {(u.group, u.id): u for stage in self.stages() for u in stage}
            self.__dict__["_unit_index"] = index
        try:
            return index[(group, unit_id)]
        except KeyError:
            raise KeyError(f"{self.kind}: no unit {group}/{unit_id}") from None

    def unit_resources(self, unit: Unit | None = None) -> Resources:
        """Resources for ``unit``: the runner's defaults, overridden by the spec's
        ``resources:`` (a runner may override this per unit)."""
        spec = self.experiment.data.get("resources") or {}
        base = type(self).resources
        return Resources(
            threads=spec.get("threads") or int(os.environ.get("ASYMSPEC_THREADS", 0) or 0)
            or base.threads,
            gpus=base.gpus if spec.get("gpus") is None else spec["gpus"],
            memory_gb=spec.get("memory_gb", base.memory_gb) or base.memory_gb,
            compile=base.compile if spec.get("compile") is None else spec["compile"])

    def memory_budget(self) -> int:
        """Bytes one batched job of this runner may use (see :mod:`asymspec.run.memory`)."""
        from asymspec.run.memory import memory_budget

        return memory_budget(self.device, self.unit_resources().memory_gb)

    def upstream_run(self, name: str) -> Path:
        """The finished run directory of upstream ``name`` (see :mod:`asymspec.run.upstream`)."""
        return self.experiment.upstream_run(name)

    def load_unit_metrics(self, unit: Unit) -> dict[str, Any]:
        """The record ``execute_unit`` wrote for ``unit`` (``metrics`` holds run_unit's dict)."""
        return self.store.load_metrics(unit.group, unit.id)

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


def set_threads(threads: int | None = None) -> None:
    """``torch.set_num_threads``: ``threads``, else ``$ASYMSPEC_THREADS``, else 1."""
    import torch

    torch.set_num_threads(threads or int(os.environ.get("ASYMSPEC_THREADS", "1")))


def execute_unit(runner: Runner, unit: Unit) -> dict[str, Any]:
    """Run one unit and mark it complete (``metrics.json`` written last, atomically)."""
    store = runner.store
    out = store.unit_dir(unit.group, unit.id)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    from asymspec.nn.compile import use_default

    with use_default(runner.unit_resources(unit).compile):  # the trainer's compile default
        metrics = runner.run_unit(unit, out)
    record = {"id": unit.id, "group": unit.group, "seed": unit.seed, "info": unit.info,
              "device": runner.device, "wall_s": round(time.time() - t0, 3), "metrics": metrics}
    record = store.mark_done(unit.group, unit.id, record)  # + SHA-256 of the unit's files
    return record
