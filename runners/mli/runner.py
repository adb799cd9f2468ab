"""The MLI runner: loss along θ(α) = (1−α)θ0 + αθT for the members of a model zoo.

The zoo is the spec's upstream ``zoo`` (read through :func:`asymspec.zoo.load`).  For each
variant, the first ``members`` members are taken (diverged ones are excluded and counted); θT
comes from the zoo's shards and θ0 is rebuilt bit-identically from the variant's spec and the
member's init seed (never stored).  Every parameter and buffer is interpolated at ``points``
coefficients.  At each α the *train* loss includes the member's own label smoothing (as the
reference and F.4), the test loss is plain cross-entropy.

Evaluation set (``eval.mode``):

* ``fixed`` (default): the zoo's training images without augmentation, in a fixed order, the
  same at every α (a deterministic curve); all α of a member are evaluated together with
  :func:`asymspec.run.evaluator.evaluate_states` within the memory budget.
* ``reference``: as the reference code — at each α a freshly shuffled pass over the training
  set with the zoo's augmentation (flip / translate / cutout) and ``drop_last`` at the zoo's
  batch size, seeded per (member, α); optionally under fp16 autocast (``eval.precision``).

Units: ``curves/<variant>-<k>``, ``members_per_unit`` members each.  Metrics: see
:mod:`runners.mli.metrics`; aggregation, t-tests and the report: :mod:`runners.mli.report`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.run.base import Runner, Unit
from asymspec.run.evaluator import evaluate_states, interpolate_state
from asymspec.run.spec import Experiment
from asymspec.run.tasks import ArrayTask, eval_batches, fixed_subset, load_task
from asymspec.seeding import generator, stable_seed
from runners.mli.metrics import curve_metrics

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))
DATASET_DEFAULTS = {"root": None, "train_subset": None, "test_subset": None, "options": {}}


class MLIRunner(Runner):
    kind = "mli"
    settings_schema = SETTINGS

    # -- the zoo ------------------------------------------------------------------------
    def zoo(self):
        """The upstream zoo (loaded once per runner)."""
        if "_zoo" not in self.__dict__:
            from asymspec.zoo import load

            self.__dict__["_zoo"] = load(self.upstream_run("zoo"))
        return self.__dict__["_zoo"]

    def variants(self) -> list[str]:
        """Table rows in order: the spec's ``rows`` or every zoo variant."""
        rows = list(self.experiment.data["rows"])
        return rows or self.zoo().variants

    def selected(self, variant: str) -> list[dict[str, Any]]:
        """The first ``members`` members of ``variant`` by index (diverged included)."""
        members = sorted(self.zoo().members(variant), key=lambda m: m["index"])
        n = self.experiment.data["members"]
        return members if n is None else members[:n]

    def check(self) -> None:
        if "zoo" not in self.experiment.upstreams:
            raise self.experiment.spec.error(("upstream",), "an mli experiment reads a model "
                                             "zoo: name it as `upstream: {zoo: {spec: ...}}`")
        zoo = self.zoo()
        missing = [v for v in self.experiment.data["rows"] if v not in zoo.variants]
        if missing:
            raise self.experiment.spec.error(("rows", missing[0]), f"the zoo has no variant "
                                             f"{missing[0]!r}; its variants: "
                                             f"{', '.join(zoo.variants)}")
        base = self.experiment.data["baseline"]
        if base not in self.variants():
            raise self.experiment.spec.error(("baseline",), f"baseline {base!r} is not one of "
                                             f"the rows: {', '.join(self.variants())}")
        self.task()  # missing data fails here

    def task(self) -> ArrayTask:
        ds = {**DATASET_DEFAULTS, **self.zoo().dataset}
        task = load_task(ds)
        if not isinstance(task, ArrayTask):
            raise UserError("mli needs an image zoo (an array dataset)")
        return task

    # -- stages -------------------------------------------------------------------------
    def stages(self) -> list[list[Unit]]:
        per = self.experiment.data["members_per_unit"]
        units = []
        for v in self.variants():
            ids = [m["id"] for m in self.selected(v) if m["diverged"] is None]
            for k in range(0, len(ids), per):
                units.append(Unit("curves", f"{v}-{k // per}",
                                  stable_seed(self.experiment.data["seed"], "mli", v, k // per),
                                  {"variant": v, "members": ids[k:k + per]}))
        return [units]

    # -- one unit -----------------------------------------------------------------------
    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        exp = self.experiment.data
        zoo = self.zoo()
        variant, ids = unit.info["variant"], unit.info["members"]
        model = zoo.model(variant).to(self.device).eval()
        theta_t = zoo.state(variant, ids)
        theta_0 = zoo.initial_state(variant, ids)
        by_id = {m["id"]: m for m in zoo.members(variant)}
        alphas = [i / (exp["points"] - 1) for i in range(exp["points"])]
        tol = exp["metrics"]["monotonic_tolerance"]
        out = []
        bar = self.progress.bar(len(ids), unit.id, level=1)
        for j, member_id in enumerate(ids):
            member = by_id[member_id]
            s0 = {k: v[j] for k, v in theta_0.items()}
            s1 = {k: v[j].to(s0[k].dtype) for k, v in theta_t.items()}
            states = [interpolate_state(s0, s1, a) for a in alphas]
            ls = float(member["hparams"].get("label_smoothing", 0.0))
            curves = self._curves(model, states, ls, unit.seed, member)
            out.append({"id": member_id, "index": member["index"],
                        "hparams": member["hparams"], "zoo_metrics": member.get("metrics"),
                        "curves": curves,
                        "metrics": curve_metrics(curves["train_loss"], tol)})
            bar.update(1, delta=f"{out[-1]['metrics'].get('delta', float('nan')):+.4f}")
        bar.close()
        return {"variant": variant, "alphas": alphas, "members": out}

    def _autocast(self):
        precision = self.experiment.data["eval"]["precision"]
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def _curves(self, model, states, ls: float, seed: int, member: dict) -> dict[str, list]:
        ev = self.experiment.data["eval"]
        task = self.task()
        budget = self.memory_budget()
        out: dict[str, list] = {}
        with self._autocast():
            if ev["mode"] == "fixed":
                x, y = fixed_subset(task.train_x, task.train_y, ev["train_subset"],
                                    "mli-train")
                sub = ArrayTask(x, y, x[:0], y[:0], task.num_classes)
                batches = eval_batches(sub, "train", ev["batch_size"] or 1024, None,
                                       self.device)
                loss, acc = evaluate_states(model, states, batches, label_smoothing=ls,
                                            budget_bytes=budget)
            else:
                loss, acc = self._reference_curve(model, states, ls, seed, member, task)
            out["train_loss"], out["train_acc"] = loss, acc
            if ev["test"]:
                x, y = fixed_subset(task.test_x, task.test_y, ev["test_subset"], "mli-test")
                sub = ArrayTask(x[:0], y[:0], x, y, task.num_classes)
                batches = eval_batches(sub, "test", ev["batch_size"] or 1024, None, self.device)
                out["test_loss"], out["test_acc"] = evaluate_states(model, states, batches,
                                                                    budget_bytes=budget)
        return out

    def _reference_curve(self, model, states, ls, seed, member, task):
        """The reference's measurement: augmented, reshuffled, drop_last, per α."""
        from asymspec.zoo.augment import AugmentConfig, apply, draw_epoch

        zoo_train = self.zoo().config.get("train", {})
        cfg = AugmentConfig.from_dict(zoo_train.get("augment"))
        bs = self.experiment.data["eval"]["batch_size"] or int(zoo_train.get("batch_size", 512))
        x, y = fixed_subset(task.train_x, task.train_y,
                            self.experiment.data["eval"]["train_subset"], "mli-train")
        fill = x.transpose(0, 1).reshape(x.shape[1], -1).amin(1)
        n = len(y) - len(y) % bs if len(y) >= bs else len(y)
        losses, accs = [], []
        for i, state in enumerate(states):
            g = generator(seed, "mli-reference", member["id"], i)
            d = draw_epoch(g, len(y), (x.shape[2], x.shape[3]), cfg)
            batches = []
            for lo in range(0, n, bs):
                idx = d.perm[lo:lo + bs]
                xb = apply(x[idx], d.flip[lo:lo + bs], d.shift[lo:lo + bs], d.cut[lo:lo + bs],
                           cfg, fill)
                batches.append(((xb.to(self.device),), y[idx].to(self.device), None))
            loss, acc = evaluate_states(model, [state], batches, use_vmap=False,
                                        label_smoothing=ls, budget_bytes=self.memory_budget())
            losses.append(loss[0])
            accs.append(acc[0])
        return losses, accs

    # -- aggregation --------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        from runners.mli.report import aggregate

        per_variant: dict[str, list[dict]] = {v: [] for v in self.variants()}
        alphas = None
        for unit in self.stages()[0]:
            rec = self.load_unit_metrics(unit)["metrics"]
            alphas = rec["alphas"]
            per_variant[rec["variant"]].extend(rec["members"])
        diverged = {v: [m["id"] for m in self.selected(v) if m["diverged"] is not None]
                    for v in self.variants()}
        exp = self.experiment
        return aggregate(exp.data, per_variant, diverged, alphas or [],
                         {"name": exp.name, "profile": exp.profile,
                          "zoo": {"run": Path(self.upstream_run("zoo")).name,
                                  "identity": self.zoo().identity,
                                  "dataset": self.zoo().dataset}})

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.mli.report import render

        return render(Path(run_dir), results, experiment)
