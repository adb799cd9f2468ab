"""The zoo runner: ``members`` networks per variant, trained shard by shard.

Units are shards (``shards/<variant>-s<k>``, ``shard_size`` consecutive members of one variant):
each is trained with :func:`asymspec.zoo.train_shard` (batched ``torch.func`` on CUDA, a loop of
single networks on CPU), evaluated on the (non-augmented) train data and the test data, and
written as one safetensors file plus a JSON record.  The run directory is a zoo:
``asymspec.zoo.load(run_dir)`` reads it (``zoo.json`` is marked complete by :meth:`finalize`).
Downstream runs (MLI, metanetworks) name it as an upstream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asymspec.errors import UserError
from asymspec.run.base import Resources, Runner, Unit
from asymspec.run.spec import Experiment
from asymspec.run.tasks import ArrayTask, adapt_input, load_task
from asymspec.zoo import ZooConfig, ZooData, finish_zoo, start_zoo, train_shard
from asymspec.zoo.store import read_json, shard_name
from asymspec.zoo.train import TrainSettings

SETTINGS = json.loads((Path(__file__).with_name("settings.schema.json")).read_text("utf-8"))


class ZooRunner(Runner):
    kind = "zoo"
    settings_schema = SETTINGS
    resources = Resources(threads=1, gpus=1.0)

    # -- configuration ----------------------------------------------------------------
    def config(self) -> ZooConfig:
        """The :class:`ZooConfig` of this experiment (built once; errors located in the spec)."""
        cached = self.__dict__.get("_config")
        if cached is not None:
            return cached
        exp = self.experiment
        d = exp.data
        for v in exp.variant_names():
            spec_v = d["variants"][v]
            if spec_v.get("from") is not None:
                raise exp.spec.error(("variants", v, "from"), "a zoo trains every variant; "
                                     "`from` is for runners that reuse networks (lmc)")
            if spec_v.get("train"):
                raise exp.spec.error(("variants", v, "train"), "zoo members share the top-level "
                                     "`train:` recipe; per-member lr / weight decay / label "
                                     "smoothing / epochs come from `hparams:`")
        train = dict(d["train"])
        if train.get("chunk_members") is None:
            train["memory_mb"] = max(1, self.memory_budget() // 2 ** 20)
        try:
            settings = TrainSettings.from_dict(train)
        except UserError as exc:
            raise exp.spec.error(("train",), str(exc)) from None
        try:
            config = ZooConfig({v: exp.models[v] for v in exp.variant_names()}, d["members"],
                               d["shard_size"], d["seed"], d["hparams"], settings,
                               dict(d["dataset"]), d["distance_pairs"],
                               {v: d["variants"][v]["members"] for v in exp.variant_names()
                                if d["variants"][v].get("members") is not None})
        except UserError as exc:
            field = "hparams" if "hparams" in str(exc) else "train"
            raise exp.spec.error((field,), str(exc)) from None
        self.__dict__["_config"] = config
        return config

    def data(self) -> ZooData:
        task = load_task(self.experiment.data["dataset"])
        if not isinstance(task, ArrayTask) or task.train_x.dim() != 4:
            raise self.experiment.spec.error(("dataset", "name"), "a zoo trains image "
                                             "classifiers: use an image data set")
        return ZooData.from_tensors(task.train_x, task.train_y, task.test_x, task.test_y,
                                    task.num_classes or None)

    def check(self) -> None:
        config = self.config()
        data = self.data()  # missing data fails here
        from asymspec.nn import emit
        from asymspec.zoo.zoo import compile_variant

        for v, spec in config.variants.items():
            adapt_input(emit(compile_variant(spec), 0), data.train_x[:1], v)
        if len(data.train_y) < config.settings.batch_size:
            raise self.experiment.spec.error(("train", "batch_size"), f"exceeds the "
                                             f"{len(data.train_y)} training examples")
        start_zoo(self.store.root, config)

    # -- work -------------------------------------------------------------------------
    def stages(self) -> list[list[Unit]]:
        config = self.config()
        return [[Unit("shards", shard_name(v, k), k,
                      {"variant": v, "shard": k, "members": [r.start, r.stop]})
                 for v, k, r in config.shards()]]

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        config = self.config()
        record = train_shard(self.store.root, config, unit.info["variant"], unit.info["shard"],
                             self.data(), self.device, directory=out_dir)
        ok = [m for m in record["members"] if m["diverged"] is None]
        accs = [m["metrics"]["test_acc"] for m in ok if m["metrics"]["test_acc"] is not None]
        return {"members": len(record["members"]), "diverged": len(record["members"]) - len(ok),
                "mean_test_acc": sum(accs) / len(accs) if accs else None,
                "path": record["path"]}

    def finalize(self) -> dict[str, Any]:
        config = self.config()
        start_zoo(self.store.root, config)
        summary = finish_zoo(self.store.root, config)
        walls = {}
        for unit in self.stages()[0]:
            rec = self.load_unit_metrics(unit)
            v = unit.info["variant"]
            walls[v] = walls.get(v, 0.0) + float(rec.get("wall_s", 0.0))
        members = {}
        zoo_json = read_json(self.store.root / "zoo.json")
        from asymspec.zoo import load

        zoo = load(self.store.root)
        for v in zoo.variants:
            members[v] = [{"id": m["id"], "hparams": m["hparams"], "metrics": m["metrics"],
                           "diverged": m["diverged"]} for m in zoo.members(v)]
        labels = {v: self.experiment.data["variants"][v].get("label") or v
                  for v in zoo.variants}
        return {"identity": zoo_json["identity"], "dataset": zoo_json["dataset"],
                "members_per_variant": config.members, "labels": labels, "variants": summary,
                "train_wall_s": walls, "members": members, "device": self.device}

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from runners.zoo.report import render

        return render(Path(run_dir), results, experiment)
