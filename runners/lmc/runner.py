"""The LMC runner.

For every trained variant, ``pairs`` pairs of networks are trained from different
initialisations and data orders (masks / F are the spec's, hence shared within a variant).  Each
pair is interpolated at ``eval.points`` coefficients (all parameters *and* buffers), train and
test loss / accuracy are measured along the path, and the midpoint test-loss barrier
``L(½θ₁+½θ₂) − ½(L(θ₁)+L(θ₂))`` and the max-over-path barrier are reported.  A variant with
``from: standard`` and ``align: weight_matching`` (or ``activation_matching``) reuses the
standard pairs and aligns the second network to the first before interpolating.

Stages: ``members/<variant>-p<i>-<a|b>`` (training), then ``pairs/<variant>-p<i>``.
Training is :func:`asymspec.run.trainer.train`; evaluation along the path is
:func:`asymspec.run.evaluator.evaluate_states` within the runner's memory budget.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.run.barrier import grid, max_barrier, mean_std, midpoint_barrier
from asymspec.run.base import Runner, Unit
from asymspec.run.evaluator import evaluate_graph_states, evaluate_states
from asymspec.run.spec import Experiment
from asymspec.run.store import atomic_torch_save
from asymspec.run.tasks import GraphTask, adapt_input, eval_batches, load_task
from asymspec.run.trainer import TrainOptions, train
from asymspec.seeding import stable_seed

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))


def interpolate_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                      t: float) -> dict[str, torch.Tensor]:
    """``(1−t)·a + t·b`` over every floating tensor, as :func:`asymspec.align.interpolate`
    computes it (the function LMC has always used), else the toolkit's."""
    try:
        from asymspec.align import interpolate
    except ImportError:
        from asymspec.run.evaluator import interpolate_state as interpolate
    return interpolate(state_a, state_b, t)


def distance_per_parameter(model: torch.nn.Module, sa: dict[str, torch.Tensor],
                           sb: dict[str, torch.Tensor]) -> float:
    """‖θa − θb‖₂ over the trainable parameters divided by their number (Lim et al. App. A's
    "distance per parameter").  Frozen entries (W-Asym, FiGLU's F, fixed biases) are equal in
    both networks and not counted; buffers (masks, norm statistics) are not parameters."""
    from asymspec.paramtable import parameter_table, totals

    # model order, not a set's: a set of strings iterates in a per-process (hash-salted) order,
    # which made the float sum differ in its last bit between identical runs
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sq = math.fsum(float((sa[k].double() - sb[k].double()).pow(2).sum()) for k in names if k in sa)
    n = totals(parameter_table(model))["trainable"] if hasattr(model, "ir") else \
        sum(p.numel() for p in model.parameters() if p.requires_grad)
    return sq ** 0.5 / max(n, 1)


def _mean_std_present(values: list[float | None]) -> dict[str, float] | None:
    """mean ± std over the values present (runs made before a metric existed lack it)."""
    got = [v for v in values if v is not None]
    return mean_std(got) if got else None


def _has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class LMCRunner(Runner):
    kind = "lmc"
    settings_schema = SETTINGS

    def check(self) -> None:
        task = load_task(self.experiment.data["dataset"])  # missing data fails here
        if not isinstance(task, GraphTask):
            for v in self.experiment.models:
                adapt_input(self._build(v), task.test_x[:1], v)

    def _member_id(self, variant: str, pair: int, side: str) -> str:
        return f"{variant}-p{pair}-{side}"

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        seed = exp.data["seed"]
        members, pairs = [], []
        for v in exp.trained_variants():
            for i in range(exp.data["pairs"]):
                for side in ("a", "b"):
                    members.append(Unit("members", self._member_id(v, i, side),
                                        stable_seed(seed, "init", v, i, side),
                                        {"variant": v, "pair": i, "side": side,
                                         "data_seed": stable_seed(seed, "data", v, i, side)}))
        for v in exp.variant_names():
            for i in range(exp.data["pairs"]):
                pairs.append(Unit("pairs", f"{v}-p{i}", stable_seed(seed, "align", v, i),
                                  {"variant": v, "pair": i, "source": exp.source(v),
                                   "align": exp.data["variants"][v]["align"]}))
        return [members, pairs]

    def _build(self, variant: str, init_seed: int | None = None) -> torch.nn.Module:
        from asymspec.compiler import build

        return build(self.experiment.models[variant], init_seed=init_seed)

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        if unit.group == "members":
            return self._train(unit, out_dir)
        return self._pair(unit)

    # -- stage 1 --------------------------------------------------------------------------
    def _train(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        variant = unit.info["variant"]
        task = load_task(self.experiment.data["dataset"])
        recipe = self.experiment.recipe(variant)
        model = self._build(variant, unit.seed)
        with self.progress.bar(recipe["epochs"], unit.id, level=1,
                               every=max(1, recipe["epochs"] // 5)) as bar:
            hist = train(model, task, recipe,
                         TrainOptions(data_seed=unit.info["data_seed"], device=self.device,
                                      bar=bar, where=variant))
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save({"state_dict": state, "variant": variant, "init_seed": unit.seed,
                           "data_seed": unit.info["data_seed"]}, out_dir / "checkpoint.pt")
        test = eval_batches(task, "test", self.experiment.data["eval"]["batch_size"], None,
                            self.device)
        loss, acc = evaluate_states(model, [model.state_dict()], test, use_vmap=False,
                                    where=variant, budget_bytes=self.memory_budget())
        train_eval = eval_batches(task, "train", self.experiment.data["eval"]["batch_size"],
                                  self.experiment.data["eval"]["train_subset"], self.device)
        _, train_acc = evaluate_states(model, [model.state_dict()], train_eval, use_vmap=False,
                                       where=variant, budget_bytes=self.memory_budget())
        return {"train_loss": hist.train_loss[-1], "test_loss": loss[0],
                "test_acc": acc[0], "train_acc": train_acc[0], "steps": hist.steps,
                "train_loss_history": hist.train_loss}

    # -- stage 2 --------------------------------------------------------------------------
    def _load_state(self, member: str) -> dict[str, torch.Tensor]:
        path = self.store.unit_dir("members", member) / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    def _align(self, unit: Unit, model, sa, sb, task):
        """Align ``sb`` to ``sa``; returns (sb', info, optional BN reset)."""
        info, al = unit.info, self.experiment.data["align"]
        method, source = info["align"], info["source"]
        try:
            import asymspec.align as align
        except ImportError:
            raise UserError(f"variant {info['variant']!r} needs asymspec.align ({method}), "
                            "which is not installed in this version") from None
        reset = None
        if method == "weight_matching":
            res = align.weight_matching(model.ir, sa, sb, max_sweeps=al["max_sweeps"],
                                        seed=unit.seed % (2**31), restarts=al["restarts"])
        else:
            batches = [(adapt_input(model, b[0][0], info["variant"]),) + tuple(b[0][1:])
                       for b in eval_batches(task, "train", al["batch_size"], None,
                                             self.device)[: al["batches"]]]
            ma, mb = self._build(source).to(self.device), self._build(source).to(self.device)
            ma.load_state_dict(sa)
            mb.load_state_dict(sb)
            res = align.activation_matching(model.ir, ma, mb, batches, method=al["method"])
            if _has_batchnorm(model):
                reset = (align.reset_bn_stats, batches)
        obj = [float(o) for o in res.objective]
        return ({k: v.detach().cpu() for k, v in res.state.items()},
                {"objective": obj[-1] if obj else None, "objective_trace": obj}, reset)

    def _pair(self, unit: Unit) -> dict[str, Any]:
        exp = self.experiment
        info = unit.info
        source, i = info["source"], info["pair"]
        task = load_task(exp.data["dataset"])
        ev = exp.data["eval"]
        sa = self._load_state(self._member_id(source, i, "a"))
        sb = self._load_state(self._member_id(source, i, "b"))
        model = self._build(source).to(self.device)
        align_info: dict[str, Any] = {}
        reset = None
        raw_distance = distance_per_parameter(model, sa, sb)
        if info["align"] != "none":
            sb, align_info, reset = self._align(unit, model, sa, sb, task)
        align_info["distance_per_param_raw"] = raw_distance
        align_info["distance_per_param"] = distance_per_parameter(model, sa, sb)
        ts = grid(ev["points"])
        states = [interpolate_state(sa, sb, t) for t in ts]
        if reset is not None:
            states = [self._reset(model, s, *reset) for s in states]
        out: dict[str, Any] = {"t": ts, **align_info}
        use_vmap = "auto" if ev["vmap"] and reset is None else False
        if isinstance(task, GraphTask):  # one forward pass over the graph serves both splits
            (inputs, y, _), = eval_batches(task, "train", 1, None, self.device)
            masks = [task.train_mask.to(self.device), task.test_mask.to(self.device)]
            curves = evaluate_graph_states(model, states, inputs, y, masks)
        budget = self.memory_budget()
        for k, split in enumerate(("train", "test")):
            if isinstance(task, GraphTask):
                loss, acc = curves[k]
            else:
                batches = eval_batches(task, split, ev["batch_size"],
                                       ev["train_subset"] if split == "train" else None,
                                       self.device)
                loss, acc = evaluate_states(model, states, batches, use_vmap, info["variant"],
                                            budget_bytes=budget)
            out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
            out[f"{split}_barrier_mid"] = midpoint_barrier(ts, loss)
            out[f"{split}_barrier_max"] = max_barrier(ts, loss)
            out[f"{split}_acc_drop_mid"] = 0.5 * (acc[0] + acc[-1]) - acc[ts.index(0.5)]
        return out

    def _reset(self, model, state, reset_fn, batches):
        model.load_state_dict(state)
        reset_fn(model, batches)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    # -- aggregation ----------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        store = self.store
        out: dict[str, Any] = {"format": "asymspec-results/1", "kind": "lmc", "name": exp.name,
                               "profile": exp.profile, "dataset": exp.data["dataset"]["name"],
                               "pairs": exp.data["pairs"], "variants": {}}
        for v in exp.variant_names():
            spec_v = exp.data["variants"][v]
            source = exp.source(v)
            pairs = [store.load_metrics("pairs", f"{v}-p{i}")
                     for i in range(exp.data["pairs"])]
            members = [store.load_metrics("members", self._member_id(source, i, s))
                       for i in range(exp.data["pairs"]) for s in ("a", "b")]
            m = [p["metrics"] for p in pairs]
            out["t"] = m[0]["t"]
            entry = {
                "label": spec_v["label"] or v, "source": source, "align": spec_v["align"],
                "paper": spec_v["paper"],
                "curves": {k: [p[k] for p in m]
                           for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
                "barrier": {k: mean_std([p[k] for p in m]) | {"values": [p[k] for p in m]}
                            for k in ("test_barrier_mid", "test_barrier_max",
                                      "train_barrier_mid", "train_barrier_max",
                                      "test_acc_drop_mid")},
                "endpoint_test_acc": mean_std([mm["metrics"]["test_acc"] for mm in members]),
                "endpoint_train_acc": _mean_std_present([mm["metrics"].get("train_acc")
                                                         for mm in members]),
                "distance_per_param": _mean_std_present([p.get("distance_per_param")
                                                         for p in m]),
                "distance_per_param_raw": _mean_std_present([p.get("distance_per_param_raw")
                                                             for p in m]),
                "endpoint_test_loss": mean_std([mm["metrics"]["test_loss"] for mm in members]),
                "train_wall_s": round(sum(mm["wall_s"] for mm in members), 2),
                "eval_wall_s": round(sum(p["wall_s"] for p in pairs), 2),
            }
            if m[0].get("objective") is not None:
                entry["align_objective"] = mean_std([p["objective"] for p in m])
            out["variants"][v] = entry
        out["wall_s"] = {"train": sum(e["train_wall_s"] for v, e in out["variants"].items()
                                      if e["source"] == v),
                         "eval": sum(e["eval_wall_s"] for e in out["variants"].values())}
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.lmc.report import render

        return render(Path(run_dir), results, experiment)
