"""The metanetwork runner (``kind: metanet``; Lim et al. 2024, §5.3, Tables 3 and 6).

Reads a finished model zoo (``upstream: {zoo: ...}``; its identity is part of this run's hash)
and trains every metanetwork in ``metanet.models`` to predict each member's test accuracy from
its weights, per zoo variant.

Stages (each unit resumable: complete once its ``metrics.json`` exists):

1. ``data/<variant>`` — inputs, targets and the seeded split (:mod:`runners.metanet.prepare`);
2. ``grid/<variant>.<model>.<remedy>.lr<lr>`` — one run (seed 0) per learning rate of the grid;
3. ``final/<variant>.<model>.<remedy>.s<k>`` — seeds 1..N-1 at the learning rate with the best
   validation R² in the grid (read from the grid units when the unit runs, so the unit list
   does not depend on results and Ray workers find every unit by id).

``remedy`` is ``plain``, or — for standard variants and metanetworks that are not permutation
invariant, when switched on — ``nodesort`` (canonicalised inputs) or ``augment`` (random neuron
permutations while training).  Units are independent small models: under ``--executor ray``
they run in parallel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from asymspec.errors import UserError
from asymspec.metanet import get_metanet
from asymspec.run.barrier import mean_std
from asymspec.run.base import Resources, Runner, Unit
from asymspec.seeding import stable_seed
from runners.metanet.prepare import is_symmetric_standard, load_inputs, prepare_variant

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))
REMEDIES = ("plain", "nodesort", "augment")


def lr_tag(lr: float) -> str:
    return f"{lr:g}"


def jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (results are strict JSON; None reads as NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def num(value: Any) -> float:
    """A metric read back from JSON (None -> NaN)."""
    return math.nan if value is None else float(value)


class MetanetRunner(Runner):
    kind = "metanet"
    settings_schema = SETTINGS
    #: units are small models: four share a GPU under Ray
    resources = Resources(threads=1, gpus=0.25)

    # -- settings and the zoo --------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self.experiment.data["metanet"]

    def zoo_dir(self) -> Path:
        return Path(self.experiment.upstream_run(self.settings["zoo"]))

    def zoo(self):
        if getattr(self, "_zoo", None) is None:
            from asymspec.zoo import load

            zoo_dir = self.zoo_dir()
            if not zoo_dir.is_dir():
                raise UserError(f"the model zoo {zoo_dir} (upstream "
                                f"{self.settings['zoo']!r}) does not exist; run its spec first")
            try:
                self._zoo = load(zoo_dir)
            except UserError as exc:
                raise UserError(f"upstream {self.settings['zoo']!r}: {exc}") from None
        return self._zoo

    def variants(self) -> list[str]:
        zoo = self.zoo()
        wanted = self.settings["variants"] or zoo.variants
        unknown = [v for v in wanted if v not in zoo.variants]
        if unknown:
            raise self.experiment.spec.error(
                ("metanet", "variants"), f"the zoo {self.zoo_dir()} has no variant(s) "
                f"{', '.join(unknown)}; its variants: {', '.join(zoo.variants)}")
        return list(wanted)

    def check(self) -> None:
        for name in self.settings["models"]:
            try:
                get_metanet(name)
            except UserError as exc:
                raise self.experiment.spec.error(("metanet", "models"), str(exc)) from None
        self.variants()  # loads the zoo: a missing / unfinished one fails here

    def model_settings(self, model: str) -> dict[str, Any]:
        s = self.settings
        out = {k: s[k] for k in ("lr_grid", "epochs", "batch_size", "weight_decay")}
        out.update(s["overrides"].get(model, {}))
        out["lr_grid"] = list(dict.fromkeys(float(lr) for lr in out["lr_grid"]))
        return out

    def remedies(self, variant: str, model: str) -> list[str]:
        out = ["plain"]
        if get_metanet(model).permutation_invariant or \
                not is_symmetric_standard(self.zoo(), variant):
            return out
        if self.settings["canonicalize"]:
            out.append("nodesort")
        if self.settings["augment"]:
            out.append("augment")
        return out

    # -- units -----------------------------------------------------------------------------
    def _seed(self, variant: str, model: str, remedy: str, k: int) -> int:
        return stable_seed(self.experiment.data["seed"], "metanet", variant, model, remedy, k)

    def stages(self) -> list[list[Unit]]:
        data, grid, final = [], [], []
        for v in self.variants():
            data.append(Unit("data", v, self.experiment.data["seed"], {"variant": v}))
            for m in self.settings["models"]:
                for r in self.remedies(v, m):
                    base = {"variant": v, "model": m, "remedy": r}
                    for lr in self.model_settings(m)["lr_grid"]:
                        grid.append(Unit("grid", f"{v}.{m}.{r}.lr{lr_tag(lr)}",
                                         self._seed(v, m, r, 0), {**base, "lr": lr, "k": 0}))
                    for k in range(1, self.settings["seeds"]):
                        final.append(Unit("final", f"{v}.{m}.{r}.s{k}", self._seed(v, m, r, k),
                                          {**base, "k": k}))
        return [data, grid, final]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        if unit.group == "data":
            return prepare_variant(self.zoo(), unit.id, self.experiment.data["seed"],
                                   self.settings, out_dir, self.progress.log)
        info = unit.info
        lr = info["lr"] if unit.group == "grid" else self.chosen_lr(
            info["variant"], info["model"], info["remedy"])["lr"]
        return jsonable(self._train(info["variant"], info["model"], info["remedy"], lr,
                                    unit.seed))

    def _grid_records(self, variant: str, model: str, remedy: str) -> list[dict[str, Any]]:
        out = []
        for lr in self.model_settings(model)["lr_grid"]:
            uid = f"{variant}.{model}.{remedy}.lr{lr_tag(lr)}"
            if not self.store.is_done("grid", uid):
                raise RuntimeError(f"grid unit {uid} is not complete")
            out.append(self.store.load_metrics("grid", uid)["metrics"])
        return out

    def chosen_lr(self, variant: str, model: str, remedy: str) -> dict[str, Any]:
        """The grid's learning rate with the best validation R² (smallest lr on ties; the
        smallest lr when every run diverged)."""
        recs = self._grid_records(variant, model, remedy)
        finite = [r for r in recs if math.isfinite(num(r["val"]["r2"]))]
        if not finite:
            return {"lr": min(r["lr"] for r in recs), "all_diverged": True}
        best = max(finite, key=lambda r: (num(r["val"]["r2"]), -r["lr"]))
        return {"lr": best["lr"], "all_diverged": False}

    def _train(self, variant: str, model: str, remedy: str, lr: float,
               seed: int) -> dict[str, Any]:
        from asymspec.metanet import ParamLayout
        from asymspec.metanet.split import Split
        from asymspec.metanet.symmetry import FlatPermuter
        from asymspec.metanet.train import FitConfig, fit

        data = load_inputs(self.store.unit_dir("data", variant) / "inputs.pt")
        net = self.zoo().model(variant)
        layout = ParamLayout.from_model(net)
        x = data["x_canonical"] if remedy == "nodesort" else data["x"]
        permuter = FlatPermuter(net, layout) if remedy == "augment" else None
        ms = self.model_settings(model)
        cfg = FitConfig(lr=lr, epochs=ms["epochs"], batch_size=ms["batch_size"],
                        weight_decay=ms["weight_decay"], seed=seed, device=self.device,
                        options=dict(self.settings["options"].get(model, {})))
        split = Split(data["train"], data["val"], data["test"])
        res = fit(model, layout, x, data["y"], split, cfg, permuter)
        return {"variant": variant, "model": model, "remedy": remedy, "lr": lr, "seed": seed,
                **res.as_dict()}

    # -- results ---------------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        from runners.metanet.paper import guess_column

        s = self.settings
        out: dict[str, Any] = {"kind": self.kind, "zoo": {
            "run": str(self.zoo_dir()), "identity": self.zoo().identity,
            "dataset": self.zoo().dataset}, "settings": s, "variants": {}, "rows": []}
        for v in self.variants():
            rec = self.store.load_metrics("data", v)["metrics"]
            col = s["paper_columns"].get(v) or guess_column(v)
            out["variants"][v] = {**rec, "paper_column": col}
        for v in self.variants():
            for m in s["models"]:
                for r in self.remedies(v, m):
                    out["rows"].append(self._row(v, m, r))
        return jsonable(out)

    def _row(self, variant: str, model: str, remedy: str) -> dict[str, Any]:
        choice = self.chosen_lr(variant, model, remedy)
        grid = self._grid_records(variant, model, remedy)
        runs = [next(g for g in grid if g["lr"] == choice["lr"])]
        for k in range(1, self.settings["seeds"]):
            runs.append(self.store.load_metrics("final", f"{variant}.{model}.{remedy}.s{k}")
                        ["metrics"])
        return {
            "variant": variant, "model": model, "remedy": remedy, "lr": choice["lr"],
            "all_diverged": choice["all_diverged"], "n_params": runs[0]["n_params"],
            "grid": [{"lr": g["lr"], "val_r2": g["val"]["r2"], "val_tau": g["val"]["tau"],
                      "best_epoch": g["best_epoch"]} for g in grid],
            "test_r2": mean_std([num(r["test"]["r2"]) for r in runs]),
            "test_tau": mean_std([num(r["test"]["tau"]) for r in runs]),
            "val_r2": mean_std([num(r["val"]["r2"]) for r in runs]),
            "best_epochs": [r["best_epoch"] for r in runs],
            "seeds": [r["seed"] for r in runs],
            "test_pred": runs[0]["test_pred"],
        }

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Any) -> list[Path]:
        from runners.metanet.report import render

        return render(Path(run_dir), results)
