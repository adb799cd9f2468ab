"""The identifiability runner (Bürgin et al. 2026): ``kind: identifiability``.

Stage 1, ``members/<variant>-m<i>``: ``models`` networks per variant (model kind) trained from
independent initialisations and data orders; the asymmetry (masks, F, noise) is the variant's
spec's, so it is shared within a kind.  Each member is saved at every checkpoint epoch (epoch 0,
the initialisation, and the last epoch always).

Stage 2, one unit per selected analysis and variant (see :mod:`.analyses`):
``lmc_unaligned/<v>-p<k>``, ``lmc_aligned/<v>-p<k>`` and ``am_objective/<v>-p<k>`` for the
member pairs (0, 1), (2, 3), ...; ``realization/<v>-m<i>`` for one member;
``coherence/<v>-m<i>`` for the first ``coherence.members`` members.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from asymspec.run.base import Runner, Unit
from asymspec.run.evaluator import evaluate
from asymspec.run.spec import Experiment
from asymspec.run.store import atomic_torch_save
from asymspec.run.tasks import GraphTask, adapt_input
from asymspec.run.trainer import TrainOptions, train
from asymspec.seeding import stable_seed
from runners.identifiability import analyses
from runners.identifiability.aggregate import aggregate
from runners.identifiability.data import ident_data

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))
PAIR_ANALYSES = ("lmc_unaligned", "lmc_aligned", "am_objective")


class IdentifiabilityRunner(Runner):
    kind = "identifiability"
    settings_schema = SETTINGS

    # -- plan --------------------------------------------------------------------------------
    def checkpoint_epochs(self, variant: str) -> list[int]:
        last = self.experiment.recipe(variant)["epochs"]
        wanted = {0, last} | {e for e in self.experiment.data["checkpoints"] if e <= last}
        return sorted(wanted)

    def pairs(self) -> list[tuple[int, int]]:
        n = self.experiment.data["models"]
        k = self.experiment.data["pairs"] or n // 2
        return [(2 * i, 2 * i + 1) for i in range(min(k, n // 2))]  # check() rejects k > n // 2

    def _epochs(self, variant: str, wanted: list[int] | None, field: str) -> list[int]:
        have = self.checkpoint_epochs(variant)
        if wanted is None:
            return have
        missing = [e for e in wanted if e not in have]
        if missing:
            raise self.experiment.spec.error(
                (field, "epochs") if field != "lmc" else (field, "epoch"),
                f"epochs {missing} are not checkpoint epochs of variant {variant!r} "
                f"({have}); add them to `checkpoints`")
        return list(wanted)

    def check(self) -> None:
        d = self.experiment.data
        data = self._data()
        for v in self.experiment.trained_variants():
            model = self._build(v)
            if not isinstance(data.train, GraphTask):
                adapt_input(model, data.train.train_x[:1], v)
            last = self.checkpoint_epochs(v)[-1]
            self._epochs(v, [d["lmc"]["epoch"] or last], "lmc")
            self._epochs(v, [d["realization"]["epoch"] or last], "realization")
            self._epochs(v, d["am_objective"]["epochs"], "am_objective")
            self._epochs(v, d["coherence"]["epochs"], "coherence")
        if d["pairs"] is not None and d["pairs"] > d["models"] // 2:
            raise self.experiment.spec.error(("pairs",), f"{d['pairs']} pairs need "
                                             f"{2 * d['pairs']} members; models is "
                                             f"{d['models']}")
        if d["realization"]["member"] >= d["models"]:
            raise self.experiment.spec.error(("realization", "member"),
                                             f"only {d['models']} members per variant")

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        d = exp.data
        seed = d["seed"]
        members, work = [], []
        for v in exp.trained_variants():
            for i in range(d["models"]):
                members.append(Unit("members", f"{v}-m{i}", stable_seed(seed, "init", v, i),
                                    {"variant": v, "member": i,
                                     "data_seed": stable_seed(seed, "data", v, i)}))
        for analysis in d["analyses"]:
            for v in exp.trained_variants():
                if analysis in PAIR_ANALYSES:
                    for k, pair in enumerate(self.pairs()):
                        work.append(Unit(analysis, f"{v}-p{k}", stable_seed(seed, analysis, v, k),
                                         {"variant": v, "pair": list(pair)}))
                elif analysis == "realization":
                    i = d["realization"]["member"]
                    work.append(Unit(analysis, f"{v}-m{i}", 0, {"variant": v, "member": i}))
                else:
                    n = d["coherence"]["members"] or d["models"]
                    for i in range(min(n, d["models"])):
                        work.append(Unit(analysis, f"{v}-m{i}", 0, {"variant": v, "member": i}))
        return [members, work]

    # -- helpers -----------------------------------------------------------------------------
    def _data(self):
        d = self.experiment.data
        return ident_data(d["dataset"], d["val_fraction"], d["val_seed"])

    def _build(self, variant: str, init_seed: int | None = None) -> torch.nn.Module:
        from asymspec.compiler import build

        return build(self.experiment.models[variant], init_seed=init_seed)

    def _ckpt(self, variant: str, member: int, epoch: int) -> Path:
        return self.store.unit_dir("members", f"{variant}-m{member}") / f"epoch{epoch}.pt"

    def load_member(self, variant: str, member: int, epoch: int) -> torch.nn.Module:
        model = self._build(variant)
        state = torch.load(self._ckpt(variant, member, epoch), map_location="cpu",
                           weights_only=True)
        model.load_state_dict(state)
        return model.to(self.device).eval()

    def _context(self, variant: str) -> analyses.Context:
        d = self.experiment.data
        last = self.checkpoint_epochs(variant)[-1]
        return analyses.Context(
            d, self._data(), self.device, self.load_member, self.memory_budget(),
            lmc_epoch=d["lmc"]["epoch"] if d["lmc"]["epoch"] is not None else last,
            am_epochs=tuple(self._epochs(variant, d["am_objective"]["epochs"], "am_objective")),
            realization_epoch=(d["realization"]["epoch"] if d["realization"]["epoch"]
                               is not None else last),
            coherence_epochs=tuple(self._epochs(variant, d["coherence"]["epochs"],
                                                "coherence")))

    # -- units -------------------------------------------------------------------------------
    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        if unit.group == "members":
            return self._train(unit, out_dir)
        v = unit.info["variant"]
        ctx = self._context(v)
        if unit.group == "lmc_unaligned":
            return analyses.lmc(ctx, v, tuple(unit.info["pair"]), False, unit.seed)
        if unit.group == "lmc_aligned":
            return analyses.lmc(ctx, v, tuple(unit.info["pair"]), True, unit.seed)
        if unit.group == "am_objective":
            return analyses.am_objective(ctx, v, tuple(unit.info["pair"]), unit.seed)
        if unit.group == "realization":
            return analyses.realization(ctx, v, unit.info["member"])
        return analyses.coherence(ctx, v, unit.info["member"])

    def _train(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        variant = unit.info["variant"]
        data = self._data()
        recipe = self.experiment.recipe(variant)
        model = self._build(variant, unit.seed)
        epochs = set(self.checkpoint_epochs(variant))

        def save(epoch: int, m: torch.nn.Module) -> None:
            state = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            atomic_torch_save(state, out_dir / f"epoch{epoch}.pt")

        save(0, model)

        def on_epoch(info) -> None:
            if info.epoch in epochs:
                save(info.epoch, info.model)

        with self.progress.bar(recipe["epochs"], unit.id, level=1,
                               every=max(1, recipe["epochs"] // 5)) as bar:
            hist = train(model, data.train, recipe,
                         TrainOptions(data_seed=unit.info["data_seed"], device=self.device,
                                      on_epoch=[on_epoch], bar=bar, where=variant))
        out: dict[str, Any] = {"train_loss_history": hist.train_loss, "steps": hist.steps,
                               "checkpoints": sorted(epochs)}
        for split in ("val", "test"):
            if split in data.splits:
                res = evaluate(model, data.batches(split, 1024, None, self.device),
                               where=variant)
                out[f"{split}_loss"], out[f"{split}_acc"] = res.loss, res.accuracy
        return out

    # -- results -----------------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        return aggregate(self)

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment
               ) -> list[Path]:
        from runners.identifiability.report import render

        return render(Path(run_dir), results)
