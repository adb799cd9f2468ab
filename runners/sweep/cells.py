"""From a sweep cell to the run that computes it.

An *experiment* base runs as itself with the cell's overrides (``variants.<v>.overrides`` are
extended for derived axes); a *model* base becomes a ``kind: train`` experiment whose one
variant is the base model with the cell's model overrides (axes under ``train.``, ``eval.``,
``dataset.``, ``seeds`` and ``thresholds`` go to that experiment instead).

Every cell run lives in the ordinary runs directory under its own content hash, exactly as if
it had been run by hand — so a changed grid value reruns only that cell, and a finished cell
is reused by any sweep (or person) that asks for the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from asymspec.errors import SpecError, UserError
from asymspec.run.spec import Experiment, find_spec_file, load_experiment
from asymspec.sweep.grid import Cell, experiment_overrides, model_overrides, override_text

EXPERIMENT_AXES = ("train.", "eval.", "dataset.", "seeds", "thresholds", "stop_at_threshold")
VARIANT_MODEL = "model@"


@dataclass
class CellRun:
    """How to run one cell: the spec file, its profile and overrides (or why it cannot run)."""

    spec_path: str | None
    profile: str | None
    overrides: list[str]
    invalid: str | None = None  # a message when the cell's spec is invalid

    def load(self) -> Experiment:
        assert self.spec_path is not None
        return load_experiment(self.spec_path, self.profile, self.overrides)

    def validate(self) -> Experiment:
        """Load and compile every model: a spec that cannot be built (e.g. an nfix for which
        distinct mask rows are impossible) raises here, before anything runs."""
        from asymspec.compiler import compile_ir

        exp = self.load()
        for model in exp.models.values():
            compile_ir(model)
        return exp


class Base:
    """The sweep's base spec, resolved once per runner."""

    def __init__(self, sweep: Experiment, cells_dir: Path) -> None:
        self.sweep = sweep
        data = sweep.data
        here = Path(sweep.spec.file).resolve().parent if sweep.spec.file else None
        found = find_spec_file(data["base"], here)
        if found is None:
            raise sweep.spec.error(("base",), f"base spec {data['base']!r} not found (looked "
                                   "next to the sweep spec, in the current directory and in "
                                   "the shipped specs/)")
        self.path = found.resolve()
        try:
            raw = yaml.safe_load(self.path.read_text(encoding="utf-8-sig"))
        except (OSError, yaml.YAMLError) as exc:
            raise sweep.spec.error(("base",), f"cannot read base spec {self.path}: {exc}") \
                from None
        if not isinstance(raw, dict):
            raise sweep.spec.error(("base",), f"base spec {self.path} is not a mapping")
        self.raw = raw
        self.is_model = "model" in raw and "variants" not in raw and "kind" not in raw
        if raw.get("kind") == "sweep":
            raise sweep.spec.error(("base",), "the base of a sweep cannot itself be a sweep")
        self.cells_dir = cells_dir
        profile = data["base_profile"]
        if profile is None and sweep.profile and not self.is_model:
            if sweep.profile in (raw.get("profiles") or {}) or sweep.profile == "paper":
                profile = sweep.profile
        self.profile = profile

    # -- experiment base ----------------------------------------------------------------
    @cached_property
    def experiment(self) -> Experiment:
        return load_experiment(self.path, self.profile, self.sweep.data["base_overrides"])

    def _variant_w_asym(self) -> dict[str, dict[str, Any] | None]:
        exp = self.experiment
        return {v: _w_asym_block(exp.models[v].data) for v in exp.trained_variants()}

    def _variant_overrides(self, variant: str) -> list[str]:
        return list(self.experiment.data["variants"][variant]["overrides"])

    # -- model base ---------------------------------------------------------------------
    @cached_property
    def model_w_asym(self) -> dict[str, Any] | None:
        from asymspec.spec import load_spec

        spec = load_spec(self.path, overrides=list(self.sweep.data["base_overrides"]))
        return _w_asym_block(spec.data)

    def _train_spec(self, cell: Cell, overrides: list[str]) -> dict[str, Any]:
        d = self.sweep.data
        model = dict(self.raw)
        return {
            "name": f"{d['name']}_cell",
            "kind": "train",
            "description": f"cell {cell.label()} of sweep {d['name']}",
            "seed": d["seed"],
            "dataset": d["dataset"],
            "model_overrides": list(d["base_overrides"]),
            "variants": {"model": {"model": model, "overrides": overrides,
                                   "label": model.get("name", "model")}},
            "seeds": d["seeds"], "train": d["train"], "eval": d["eval"],
            "thresholds": d["thresholds"], "stop_at_threshold": d["stop_at_threshold"],
        }

    # -- cells --------------------------------------------------------------------------
    def cell_run(self, cell: Cell) -> CellRun:
        """The run of ``cell`` (``invalid`` set when the cell cannot be a valid spec)."""
        try:
            if self.is_model:
                return self._model_cell(cell)
            return self._experiment_cell(cell)
        except (SpecError, UserError, ValueError) as exc:
            return CellRun(None, None, [], invalid=str(exc))

    def _split_variant_axes(self, cell: Cell) -> tuple[Cell, dict[str, list[str]]]:
        plain, extra = {}, {}
        for axis, value in cell.values.items():
            if axis.startswith(VARIANT_MODEL):
                variant, _, path = axis[len(VARIANT_MODEL):].partition(".")
                if not path:
                    raise ValueError(f"axis {axis!r}: write model@<variant>.<model field>")
                extra.setdefault(variant, []).append(f"{path}={json.dumps(value)}")
            else:
                plain[axis] = value
        return Cell(plain, cell.index), extra

    def _experiment_cell(self, cell: Cell) -> CellRun:
        plain, extra = self._split_variant_axes(cell)
        overrides = list(self.sweep.data["base_overrides"])
        overrides += experiment_overrides(plain, self._variant_w_asym, self._variant_overrides)
        for variant, more in extra.items():
            if variant not in self.experiment.data["variants"]:
                raise ValueError(f"no variant {variant!r} in {self.path.name} (variants: "
                                 f"{', '.join(self.experiment.data['variants'])})")
            overrides.append(override_text(("variants", variant, "overrides"),
                                           self._variant_overrides(variant) + more))
        run = CellRun(str(self.path), self.profile, overrides)
        run.validate()  # an invalid cell is reported, not run
        return run

    def _model_cell(self, cell: Cell) -> CellRun:
        model_axes = {a: v for a, v in cell.values.items()
                      if not a.startswith(EXPERIMENT_AXES) and not a.startswith(VARIANT_MODEL)}
        exp_axes = [f"{a}={json.dumps(v)}" for a, v in cell.values.items()
                    if a.startswith(EXPERIMENT_AXES)]
        if any(a.startswith(VARIANT_MODEL) for a in cell.values):
            raise ValueError("model@<variant> axes need an experiment base; with a model base "
                             "write model fields directly")
        overrides = model_overrides(Cell(model_axes), self.model_w_asym)
        spec = self._train_spec(cell, overrides)
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        path = self.cells_dir / f"{cell.id}.yaml"
        text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            from asymspec.run.store import atomic_write_text

            atomic_write_text(path, text)
        run = CellRun(str(path), None, exp_axes)
        run.validate()
        return run


def _w_asym_block(model_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved ``asymmetry.w_asym`` block of a model spec (``asymmetry`` may be 'none')."""
    asym = model_spec.get("asymmetry")
    return asym.get("w_asym") if isinstance(asym, dict) else None


def fixed_counts(experiment: Experiment) -> dict[str, int]:
    """W-Asym frozen weight entries per trained variant, counted on the compiled IR (Fig 6's
    "number fixed" axis is this total over all layers)."""
    from asymspec.compiler import compile_ir

    out = {}
    for v in experiment.trained_variants():
        ir = compile_ir(experiment.models[v])
        n = 0
        for _, _, e in ir.dense_edges():
            if e.get("mask") is not None and "w_asym" in (e.get("decided_by") or ()):
                n += int((~e["mask"]).sum())
        out[v] = n
    return out
