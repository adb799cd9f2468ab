"""The ``train`` runner: N independently initialised networks per variant, trained with the
toolkit's trainer, with train accuracy recorded every ``eval.every`` epochs (on a fixed,
non-augmented subset) and test loss / accuracy at the end.

It reports per variant the mean train-accuracy curve, final and maximum train accuracy, test
accuracy (App. A's train / validation gap) and, for each of ``thresholds``, the epochs until
train accuracy first reaches it (interpolated between evaluations; Fig 6's quantity).  Each
cell of a sweep over a *model* spec is one such run.

Stage: ``members/<variant>-s<i>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asymspec.run.barrier import mean_std
from asymspec.run.base import Runner, Unit
from asymspec.run.evaluator import evaluate
from asymspec.run.spec import Experiment
from asymspec.run.tasks import GraphTask, adapt_input, eval_batches, load_task
from asymspec.run.trainer import StepInfo, TrainOptions, train
from asymspec.seeding import stable_seed
from asymspec.sweep.curves import epochs_to_threshold

SETTINGS = json.loads(Path(__file__).with_name("settings.schema.json").read_text("utf-8"))


def _stat(values: list[float]) -> dict[str, Any]:
    """mean ± std (ddof 1), JSON-safe: ``None`` instead of NaN when there is no value."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return mean_std(values)


class TrainRunner(Runner):
    kind = "train"
    settings_schema = SETTINGS

    def check(self) -> None:
        task = load_task(self.experiment.data["dataset"])  # a missing data set fails here
        if not isinstance(task, GraphTask):
            for v in self.experiment.models:
                adapt_input(self._build(v), task.test_x[:1], v)

    def _build(self, variant: str, init_seed: int | None = None):
        from asymspec.compiler import build

        return build(self.experiment.models[variant], init_seed=init_seed)

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        seed = exp.data["seed"]
        return [[Unit("members", f"{v}-s{i}", stable_seed(seed, "init", v, i),
                      {"variant": v, "index": i, "data_seed": stable_seed(seed, "data", v, i)})
                 for v in exp.trained_variants() for i in range(exp.data["seeds"])]]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        exp = self.experiment
        variant = unit.info["variant"]
        task = load_task(exp.data["dataset"])
        recipe = exp.recipe(variant)
        ev = exp.data["eval"]
        thresholds = exp.data["thresholds"]
        stops = []
        if exp.data["stop_at_threshold"] and thresholds:
            target = max(thresholds)

            def reached(info: StepInfo) -> bool:
                evals = info.history.evals
                return bool(evals) and evals[-1]["epoch"] == info.epoch and \
                    evals[-1]["train_acc"] >= target

            stops.append(reached)
        model = self._build(variant, unit.seed)
        with self.progress.bar(recipe["epochs"], unit.id, level=1,
                               every=max(1, recipe["epochs"] // 5)) as bar:
            hist = train(model, task, recipe,
                         TrainOptions(data_seed=unit.info["data_seed"], device=self.device,
                                      eval_every=ev["every"], eval_subset=ev["train_subset"],
                                      eval_batch_size=ev["batch_size"], on_epoch=stops,
                                      on_nonfinite="stop", bar=bar, where=variant))
        test = evaluate(model, eval_batches(task, "test", ev["batch_size"], None, self.device),
                        where=variant)
        epochs = [e["epoch"] for e in hist.evals]
        accs = [e["train_acc"] for e in hist.evals]
        return {"epochs": epochs, "train_acc": accs,
                "train_loss_eval": [e["train_loss"] for e in hist.evals],
                "train_loss_history": hist.train_loss,
                "final_train_acc": accs[-1] if accs else None,
                "max_train_acc": max(accs) if accs else None,
                "test_acc": test.accuracy, "test_loss": test.loss,
                "epochs_trained": hist.epochs, "stopped_early": hist.stopped_early,
                "diverged": hist.diverged,
                "epochs_to": {str(t): epochs_to_threshold(epochs, accs, t) for t in thresholds}}

    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        out: dict[str, Any] = {"format": "asymspec-results/1", "kind": "train",
                               "name": exp.name, "profile": exp.profile,
                               "dataset": exp.data["dataset"]["name"],
                               "seeds": exp.data["seeds"],
                               "thresholds": exp.data["thresholds"], "variants": {}}
        for v in exp.trained_variants():
            ms = [self.store.load_metrics("members", f"{v}-s{i}")["metrics"]
                  for i in range(exp.data["seeds"])]
            ok = [m for m in ms if m["diverged"] is None]
            n = min((len(m["train_acc"]) for m in ok), default=0)
            entry: dict[str, Any] = {
                "label": exp.data["variants"][v]["label"] or v,
                "diverged": len(ms) - len(ok),
                "epochs": ok[0]["epochs"][:n] if ok else [],
                "train_acc_curves": [m["train_acc"] for m in ok],
                "epochs_per_seed": [m["epochs"] for m in ok],
                "train_acc_mean": [sum(m["train_acc"][i] for m in ok) / len(ok)
                                   for i in range(n)],
            }
            for key in ("final_train_acc", "max_train_acc", "test_acc", "test_loss"):
                entry[key] = _stat([m[key] for m in ok])
            entry["train_test_gap"] = _stat([m["max_train_acc"] - m["test_acc"] for m in ok])
            entry["epochs_to"] = {}
            for t in exp.data["thresholds"]:
                vals = [m["epochs_to"][str(t)] for m in ok]
                got = [x for x in vals if x is not None]
                entry["epochs_to"][str(t)] = {**_stat(got), "reached": len(got),
                                              "of": len(vals), "values": vals}
            out["variants"][v] = entry
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.train.report import render

        return render(Path(run_dir), results)
