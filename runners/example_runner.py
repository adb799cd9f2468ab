"""A minimal third-party runner: statistics of freshly initialised networks.

For every variant it builds ``params.models`` networks (default 3) with different init seeds
and records the standard deviation of their logits on a few test examples, then writes
``results.json`` and a one-table ``report.md``.  It shows the whole interface: stages of
independent units, per-unit files, aggregation and rendering; see runners/README.md.

Register it through the entry-point group ``asymspec.runners`` of *your* package::

    [project.entry-points."asymspec.runners"]
    init_stats = "example_runner:InitStatsRunner"

or in code, before calling ``run_experiment``: ``asymspec.run.register("init_stats",
InitStatsRunner)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from asymspec.compiler import build
from asymspec.run import Runner, Unit
from asymspec.run.barrier import mean_std
from asymspec.run.store import atomic_write_text
from asymspec.seeding import stable_seed


class InitStatsRunner(Runner):
    kind = "init_stats"

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        n = int(exp.data["params"].get("models", 3))
        return [[Unit("members", f"{v}-{i}", stable_seed(exp.data["seed"], v, i), {"variant": v})
                 for v in exp.trained_variants() for i in range(n)]]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        from asymspec import data as D

        variant = unit.info["variant"]
        model = build(self.experiment.models[variant], init_seed=unit.seed).to(self.device)
        test = D.load(self.experiment.data["dataset"]["name"], "test",
                      self.experiment.data["dataset"]["root"])
        x = test.x[:256].to(self.device)
        if len(model.ir.node(model.ir.inputs[0])["shape"]) == 1:
            x = x.flatten(1)
        with torch.no_grad():
            logits = model(x)
        (out_dir / "note.txt").write_text(f"variant {variant}, init seed {unit.seed}\n")
        return {"logit_std": float(logits.std())}

    def finalize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "variants": {}}
        for stage in self.stages():
            for unit in stage:
                rec = self.store.load_metrics(unit.group, unit.id)
                out["variants"].setdefault(unit.info["variant"], []).append(
                    rec["metrics"]["logit_std"])
        out["summary"] = {v: mean_std(vals) for v, vals in out["variants"].items()}
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment) -> list[Path]:
        lines = ["| variant | logit std at init |", "|---|---|"]
        for v, s in results["summary"].items():
            lines.append(f"| {v} | {s['mean']:.4f} ± {s['std']:.4f} |")
        path = Path(run_dir) / "report.md"
        atomic_write_text(path, "\n".join(lines) + "\n")
        return [path]
