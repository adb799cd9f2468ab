"""The BNN runner (Lim et al. 2024 §5.2, Table 2, Figure 4, Table 7): ``kind: bnn``.

Every trained variant (a base network: standard or W-Asym) is made variational with
:func:`asymspec.bayes.elrg` and trained ``seeds`` times by the toolkit trainer on the negative
ELBO ``NLL + KL / N_eff`` (``N_eff`` = training-set size x ``bnn.augmentation_multiplier``),
one unit per (variant, seed) — ``members/<variant>-s<i>`` — so an interrupted run resumes
with the units it has not finished.  After the epochs in ``eval.epochs`` and after the last
epoch the Bayesian model average over ``eval.samples`` posterior draws (mean of probabilities)
is scored on the test split: NLL, accuracy, and 15-bin ECE (torchmetrics).  "Train loss" is the
mean one-sample NLL of the training batches of an epoch (noise on, augmented) — the quantity
the reference logs and Fig 4 plots.

Units run on the GPU when there is one.  Seeds are not batched into one process (the hooks draw
from one generator per model); on a GPU, ``--executor ray`` with ``resources: {gpus: 0.25}``
packs several (variant, seed) units onto one device instead (bnn_mlp's paper profile does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asymspec.run.barrier import mean_std
from asymspec.run.base import Runner, Unit
from asymspec.run.spec import Experiment
from asymspec.run.store import atomic_torch_save
from asymspec.run.tasks import adapt_input, load_task
from asymspec.run.trainer import TrainOptions, train
from asymspec.seeding import stable_seed

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))
METRICS = ("train_loss", "test_loss", "ece", "acc_final", "acc_mid")


class BNNRunner(Runner):
    kind = "bnn"
    settings_schema = SETTINGS

    # -- planning -------------------------------------------------------------------------
    def check(self) -> None:
        task = load_task(self.experiment.data["dataset"])  # missing data fails here
        for v in self.experiment.trained_variants():
            adapt_input(self._build(v, 0), task.test_x[:1], v)

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        seed = exp.data["seed"]
        units = [Unit("members", f"{v}-s{i}", stable_seed(seed, "bnn-init", v, i),
                      {"variant": v, "index": i,
                       "data_seed": stable_seed(seed, "bnn-data", v, i)})
                 for v in exp.trained_variants() for i in range(exp.data["seeds"])]
        return [units]

    def _build(self, variant: str, init_seed: int):
        from asymspec.bayes import elrg, init_means
        from asymspec.compiler import build

        b = self.experiment.data["bnn"]
        model = build(self.experiment.models[variant], init_seed=init_seed)
        init_means(model, b["mean_init"], init_seed)
        vm = elrg(model, rank=b["rank"], q_init_logvar=b["q_init_logvar"],
                  learn_diag=b["learn_diag"], prior_precision=b["prior_precision"],
                  prior_fan=b["prior_fan"], conv_factor_init=b["conv_factor_init"],
                  seed=init_seed)
        return vm

    # -- one (variant, seed) --------------------------------------------------------------
    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        exp = self.experiment
        variant = unit.info["variant"]
        b, ev = exp.data["bnn"], exp.data["eval"]
        task = load_task(exp.data["dataset"])
        recipe = exp.recipe(variant)
        vm = self._build(variant, unit.seed).to(self.device)
        n_eff = len(task.train_y) * b["augmentation_multiplier"]
        epoch_sums = {"nll": 0.0, "kl": 0.0, "n": 0}
        curves: dict[str, list[float]] = {"train_nll": [], "kl_per_example": []}
        evals: list[dict[str, Any]] = []

        def loss_fn(out: torch.Tensor, target: torch.Tensor, ctx: dict) -> torch.Tensor:
            nll = F.cross_entropy(out, target)
            kl = vm.kl()
            epoch_sums["nll"] += float(nll.detach()) * len(target)
            epoch_sums["kl"] += float(kl.detach()) / n_eff * len(target)
            epoch_sums["n"] += len(target)
            return nll + kl / n_eff

        def on_epoch(info) -> None:
            n = max(epoch_sums["n"], 1)
            curves["train_nll"].append(epoch_sums["nll"] / n)
            curves["kl_per_example"].append(epoch_sums["kl"] / n)
            epoch_sums.update(nll=0.0, kl=0.0, n=0)
            if info.epoch in ev["epochs"] and info.epoch < recipe["epochs"]:
                evals.append({"epoch": info.epoch, **self._evaluate(vm, task, ev)})
                vm.train()

        with self.progress.bar(recipe["epochs"], unit.id, level=1,
                               every=max(1, recipe["epochs"] // 5)) as bar:
            hist = train(vm, task, recipe,
                         TrainOptions(data_seed=unit.info["data_seed"], device=self.device,
                                      loss_fn=loss_fn, on_epoch=[on_epoch], bar=bar,
                                      drop_last=b["drop_last"], where=variant))
        final = {"epoch": hist.epochs, **self._evaluate(vm, task, ev)}
        evals.append(final)
        state = {k: v.detach().cpu() for k, v in vm.state_dict().items()}
        atomic_torch_save({"state_dict": state, "variant": variant, "init_seed": unit.seed,
                           "data_seed": unit.info["data_seed"]}, out_dir / "checkpoint.pt")
        mid = evals[:-1]
        return {"train_loss": curves["train_nll"][-1], "test_loss": final["nll"],
                "ece": final["ece"], "acc_final": final["accuracy"],
                "acc_mid": mid[-1]["accuracy"] if mid else None,
                "mid_epoch": mid[-1]["epoch"] if mid else None,
                "epochs": hist.epochs, "steps": hist.steps, "n_eff": n_eff,
                "num_parameters": vm.num_parameters(), "evals": evals,
                "train_nll_history": curves["train_nll"],
                "kl_per_example_history": curves["kl_per_example"],
                "neg_elbo_history": hist.train_loss}

    @torch.no_grad()
    def _evaluate(self, vm, task, ev: dict[str, Any]) -> dict[str, float]:
        """Test NLL, accuracy and ECE of the Bayesian model average."""
        from asymspec.bayes import evaluate_predictions

        vm.eval()
        logp = []
        for xb in task.test_x.split(ev["batch_size"]):
            xb = adapt_input(vm, xb.to(self.device))
            logp.append(vm.predict(xb, samples=ev["samples"]).cpu())
        return evaluate_predictions(torch.cat(logp), task.test_y.long(), ev["ece_bins"])

    # -- aggregation ----------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        out: dict[str, Any] = {"name": exp.name, "profile": exp.profile,
                               "dataset": exp.data["dataset"]["name"],
                               "seeds": exp.data["seeds"],
                               "eval": exp.data["eval"], "bnn": exp.data["bnn"],
                               "variants": {}}
        for stage in self.stages():
            for unit in stage:
                rec = self.load_unit_metrics(unit)["metrics"]
                v = unit.info["variant"]
                entry = out["variants"].setdefault(v, {"runs": []})
                entry["runs"].append(rec)
        for v, entry in out["variants"].items():
            spec = exp.data["variants"][v]
            runs = entry["runs"]
            entry["label"] = spec.get("label") or v
            entry["panel"] = spec.get("panel")
            entry["paper"] = spec.get("paper")
            entry["num_parameters"] = runs[0]["num_parameters"]
            entry["mid_epoch"] = runs[0]["mid_epoch"]
            entry["epochs"] = runs[0]["epochs"]
            entry["stats"] = {m: _stat([r[m] for r in runs if r[m] is not None])
                              for m in METRICS}
            entry["curves"] = {"train_nll": [r["train_nll_history"] for r in runs]}
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.bnn.report import render

        return render(Path(run_dir), results)


def _stat(values: list[float]) -> dict[str, float] | None:
    """Mean and std (ddof 1) over seeds; ``None`` when nothing was measured."""
    return mean_std(values) if values else None
