"""The ``sweep`` runner: one unit per grid cell; each cell is an ordinary, resumable run.

A cell's unit id joins the cell's id (from its grid values) and the content hash of its run,
so a changed grid value — or a changed base spec — gives new units, while unchanged cells are
skipped.  A cell whose spec is invalid (e.g. an nfix for which distinct mask rows are
impossible) or whose run fails with a user error (e.g. training diverged) is recorded with the
message and shown as such; it never stops the sweep.

Results: per cell its values, status, W-Asym fixed counts (from the IR), the collected metrics
and its run directory; figures are a heatmap per metric for a 2-D product grid (first axis =
rows), line plots for a 1-D grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asymspec.errors import SpecError, UserError
from asymspec.run.base import Runner, Unit
from asymspec.run.spec import Experiment
from asymspec.run.store import read_json
from asymspec.sweep.curves import epochs_to_threshold, lookup
from asymspec.sweep.grid import Cell, expand
from runners.sweep.cells import Base, fixed_counts

SETTINGS = json.loads(Path(__file__).with_name("settings.schema.json").read_text("utf-8"))


class SweepRunner(Runner):
    kind = "sweep"
    settings_schema = SETTINGS

    # -- set-up ---------------------------------------------------------------------------
    @property
    def base(self) -> Base:
        if not hasattr(self, "_base"):
            self._base = Base(self.experiment, self.store.root / "cells")
        return self._base

    def cells(self) -> list[Cell]:
        g = self.experiment.data["grid"]
        cells = expand(g.get("axes"), g.get("points"))
        if not cells:
            raise self.experiment.spec.error(("grid",), "the grid has no cells: give `axes` "
                                             "(path -> values) or `points`")
        return cells

    def check(self) -> None:
        self.base  # noqa: B018 - resolves the base; a missing one fails here
        if self.base.is_model and not self.experiment.data.get("dataset"):
            raise self.experiment.spec.error(("dataset",), "a sweep over a model spec trains "
                                             "it: give `dataset` (and `train`)")

    def stages(self) -> list[list[Unit]]:
        units = []
        for cell in self.cells():
            run = self.base.cell_run(cell)
            if run.invalid is not None:
                suffix, info = "invalid", {"invalid": run.invalid}
            else:
                suffix = run.load().content_hash()[:10]
                info = {"spec": run.spec_path, "profile": run.profile,
                        "overrides": run.overrides}
            units.append(Unit("cells", f"{cell.id}-{suffix}", cell.index,
                              {"values": cell.values, "label": cell.label(), **info}))
        return [units]

    # -- one cell -------------------------------------------------------------------------
    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        info = unit.info
        base = {"values": info["values"], "label": info["label"]}
        if "invalid" in info:
            return {**base, "status": "invalid", "message": info["invalid"]}
        from asymspec.run.engine import run_experiment
        from asymspec.run.spec import load_experiment

        try:
            exp = load_experiment(info["spec"], info["profile"], info["overrides"])
            fixed = fixed_counts(exp)
            run_dir = run_experiment(info["spec"], info["profile"], info["overrides"],
                                     quiet=True, runs_dir=self.store.root.parent)
        except (SpecError, UserError) as exc:
            return {**base, "status": "failed", "message": str(exc)}
        results = read_json(Path(run_dir) / "results.json")
        return {**base, "status": "ok", "run_dir": str(Path(run_dir).resolve()),
                "kind": exp.kind, "fixed": fixed, "metrics": self._metrics(results, exp)}

    def _metric_specs(self, results: dict[str, Any]) -> list[dict[str, Any]]:
        specs = list(self.experiment.data["metrics"])
        if specs:
            return specs
        out: list[dict[str, Any]] = []
        kind = results.get("kind")
        variants = list(results.get("variants", {}))
        if kind == "train":
            for v in variants:
                tag = "" if len(variants) == 1 else f"{v}: "
                for t in results.get("thresholds", []):
                    out.append({"name": f"{tag}epochs to {t:g} train acc", "epochs_to": t,
                                "variant": v})
                out.append({"name": f"{tag}final train acc",
                            "path": f"variants.{v}.final_train_acc.mean"})
                out.append({"name": f"{tag}test acc", "path": f"variants.{v}.test_acc.mean"})
        elif kind == "lmc":
            for v in variants:
                out.append({"name": f"{v}: test barrier",
                            "path": f"variants.{v}.barrier.test_barrier_mid.mean"})
        return out

    def _metrics(self, results: dict[str, Any], exp: Experiment) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self._metric_specs(results):
            try:
                if "epochs_to" in m:
                    out[m["name"]] = _epochs_to(results, m["epochs_to"], m.get("variant"))
                elif "path" in m:
                    value = lookup(results, m["path"])
                    out[m["name"]] = value if isinstance(value, (int, float)) or value is None \
                        else None
                else:
                    raise KeyError("a metric needs `path` or `epochs_to`")
            except KeyError as exc:
                raise UserError(f"sweep metric {m['name']!r}: {exc.args[0]} in the cell's "
                                f"results ({exp.kind} run)") from None
        return out

    # -- aggregation ----------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        (units,) = self.stages()
        cells = [self.store.load_metrics("cells", u.id)["metrics"] for u in units]
        names: list[str] = []
        for c in cells:
            for n in (c.get("metrics") or {}):
                if n not in names:
                    names.append(n)
        g = exp.data["grid"]
        return {"format": "asymspec-results/1", "kind": "sweep", "name": exp.name,
                "profile": exp.profile, "base": exp.data["base"],
                "axes": g.get("axes") or {}, "points": g.get("points") or [],
                "metrics": names, "cells": cells,
                "paper": {m["name"]: m.get("paper") for m in exp.data["metrics"]
                          if m.get("paper") is not None},
                "paper_note": exp.data["paper_note"]}

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.sweep.report import render

        return render(Path(run_dir), results)


def _epochs_to(results: dict[str, Any], threshold: float, variant: str | None) -> float | None:
    """Mean over seeds of the epochs to ``threshold`` (None when any seed never reached it —
    the mean of the others would understate the cost)."""
    variants = results.get("variants") or {}
    if not variants:
        raise KeyError("no variants")
    v = variant or next(iter(variants))
    if v not in variants:
        raise KeyError(f"variants.{v}")
    entry = variants[v]
    if "train_acc_curves" not in entry:
        raise KeyError(f"variants.{v}.train_acc_curves (epochs_to needs a train run)")
    if entry["diverged"]:
        return None
    epochs = entry.get("epochs_per_seed") or [entry["epochs"]] * len(entry["train_acc_curves"])
    values = [epochs_to_threshold(e[:len(c)], c[:len(e)], threshold)
              for e, c in zip(epochs, entry["train_acc_curves"])]
    if not values or any(x is None for x in values):
        return None
    return sum(values) / len(values)
