"""The coherence runner: midpoint barrier of unaligned merging vs data coherence 1/c.

One unit per (construction, outer seed) trains, for every ``c`` in ``copies``, ``pairs`` pairs
of sparse networks (:mod:`asymspec.ident.synthetic`, batched: exactly equivalent to one at a
time) and records the midpoint and peak barriers of their straight-line interpolation on test
MSE.  ``finalize`` aggregates mean ± std (ddof 1) over outer seeds × pairs for each c.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asymspec.errors import UserError
from asymspec.ident.synthetic import SyntheticConfig, run_cell
from asymspec.run.barrier import mean_std
from asymspec.run.base import Runner, Unit
from asymspec.run.spec import Experiment

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))


def config(data: dict[str, Any]) -> SyntheticConfig:
    net, d, tr = data["network"], data["data"], data["training"]
    return SyntheticConfig(width=net["width"], dim=net["input_dim"],
                           copies=net["input_dim"] // 2, density=net["density"],
                           init_std=net["init_std"], n_train=d["n_train"], n_test=d["n_test"],
                           lr=tr["lr"], weight_decay=tr["weight_decay"],
                           batch_size=tr["batch_size"], epochs=tr["epochs"],
                           pairs=data["pairs"], points=data["points"])


class CoherenceRunner(Runner):
    kind = "coherence"
    settings_schema = SETTINGS

    def check(self) -> None:
        data = self.experiment.data
        cfg = config(data)
        too_many = [c for c in data["copies"] if c > cfg.copies]
        if too_many:
            raise self.experiment.spec.error(
                ("copies",), f"c = {too_many} exceed input_dim / 2 = {cfg.copies}; raise "
                "network.input_dim or drop those values")
        if data["points"] % 2 == 0:
            raise self.experiment.spec.error(("points",), "must be odd so that λ = 0.5 is on "
                                             "the grid")

    def stages(self) -> list[list[Unit]]:
        data = self.experiment.data
        return [[Unit("cells", f"{con}-s{s}", s, {"construction": con, "outer_seed": s})
                 for con in data["constructions"] for s in range(data["outer_seeds"])]]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        data = self.experiment.data
        cfg = config(data)
        con, s = unit.info["construction"], unit.info["outer_seed"]
        out: dict[str, Any] = {"construction": con, "outer_seed": s, "cells": []}
        with self.progress.bar(len(data["copies"]), unit.id, level=1) as bar:
            for c in data["copies"]:
                cell = run_cell(con, c, s, cfg)
                out["cells"].append(cell)
                bar.update(1, barrier=f"{sum(cell['midpoint_barrier']) / cfg.pairs:.4f}")
        return out

    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        data = exp.data
        out: dict[str, Any] = {"format": "asymspec-results/1", "kind": self.kind,
                               "name": exp.name, "profile": exp.profile,
                               "settings": {k: data[k] for k in (
                                   "constructions", "copies", "outer_seeds", "pairs", "points",
                                   "network", "data", "training")},
                               "constructions": {}, "wall_s": 0.0}
        for stage in self.stages():
            for unit in stage:
                rec = self.store.load_metrics(unit.group, unit.id)
                out["wall_s"] += rec["wall_s"]
                con = unit.info["construction"]
                per_c = out["constructions"].setdefault(con, {})
                for cell in rec["metrics"]["cells"]:
                    e = per_c.setdefault(str(cell["c"]), {"c": cell["c"],
                                                          "coherence": cell["coherence"],
                                                          "midpoint": [], "peak": [],
                                                          "endpoint_loss": []})
                    e["midpoint"] += cell["midpoint_barrier"]
                    e["peak"] += cell["peak_barrier"]
                    e["endpoint_loss"] += [v for pair in cell["endpoint_loss"] for v in pair]
        for per_c in out["constructions"].values():
            for e in per_c.values():
                e["midpoint_barrier"] = mean_std(e["midpoint"])
                e["peak_barrier"] = mean_std(e["peak"])
                e["endpoint_test_mse"] = mean_std(e.pop("endpoint_loss"))
        out["wall_s"] = round(out["wall_s"], 2)
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment
               ) -> list[Path]:
        from runners.coherence.report import render

        if not results.get("constructions"):
            raise UserError("results.json has no constructions; run the experiment first")
        return render(Path(run_dir), results)
