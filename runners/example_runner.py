"""A minimal third-party runner: statistics of freshly initialised networks.

For every variant it builds ``models`` networks (a setting of this kind, default 3) with
different init seeds and records the standard deviation of their logits and their test loss
on ``examples`` test examples, then writes ``results.json`` and a one-table ``report.md``.  It
shows the whole interface: a settings schema fragment, stages of independent units, per-unit
files, the toolkit's data and evaluator, aggregation and rendering; see runners/README.md.

Register it through the entry-point group ``asymspec.runners`` of *your* package::

    [project.entry-points."asymspec.runners"]
    init_stats = "example_runner:InitStatsRunner"

or in code, before calling ``run_experiment``: ``asymspec.run.register("init_stats",
InitStatsRunner)``.  A spec for it::

    name: init_demo
    kind: init_stats
    dataset: {name: digits}
    model_overrides: [model.input_dim=64]
    variants: {standard: {model: mlp_mnist.yaml}}
    models: 4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from asymspec.compiler import build
from asymspec.run import Runner, Unit
from asymspec.run.barrier import mean_std
from asymspec.run.evaluator import evaluate
from asymspec.run.report import markdown_table, pm, write_report
from asymspec.run.tasks import eval_batches, load_task
from asymspec.seeding import stable_seed


class InitStatsRunner(Runner):
    kind = "init_stats"
    settings_schema = {
        "description": "statistics of freshly initialised networks.",
        "required": ["dataset", "variants"],
        "properties": {
            "models": {"description": "Networks per variant.", "type": "integer",
                       "minimum": 1, "default": 3},
            "examples": {"description": "Test examples to evaluate.", "type": "integer",
                         "minimum": 1, "default": 256},
        },
    }

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        n = exp.data["models"]
        return [[Unit("members", f"{v}-{i}", stable_seed(exp.data["seed"], v, i), {"variant": v})
                 for v in exp.trained_variants() for i in range(n)]]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        variant = unit.info["variant"]
        model = build(self.experiment.models[variant], init_seed=unit.seed).to(self.device)
        task = load_task(self.experiment.data["dataset"])
        batches = eval_batches(task, "test", self.experiment.data["examples"],
                               device=self.device)[:1]
        res = evaluate(model, batches, return_logits=True, where=variant)
        (out_dir / "note.txt").write_text(f"variant {variant}, init seed {unit.seed}\n")
        return {"logit_std": float(torch.as_tensor(res.logits).std()), "test_loss": res.loss}

    def finalize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "variants": {}, "test_loss": {}}
        for stage in self.stages():
            for unit in stage:
                m = self.load_unit_metrics(unit)["metrics"]
                v = unit.info["variant"]
                out["variants"].setdefault(v, []).append(m["logit_std"])
                out["test_loss"].setdefault(v, []).append(m["test_loss"])
        out["summary"] = {v: mean_std(vals) for v, vals in out["variants"].items()}
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment) -> list[Path]:
        rows = [[v, pm(s, 4), pm(mean_std(results["test_loss"][v]), 3)]
                for v, s in results["summary"].items()]
        table = markdown_table(["variant", "logit std at init", "test loss at init"], rows)
        return [write_report(run_dir, "# Freshly initialised networks\n\n" + table)]
