"""Aggregation of the identifiability units into ``results.json`` (mean ± std over pairs /
members; per-pair values kept for the figures)."""

from __future__ import annotations

from typing import Any

from asymspec.ident.points import recording_points
from asymspec.run.barrier import mean_std

BARRIERS = ("loss_barrier_mid", "loss_barrier_max", "acc_barrier_rel")


def _path_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Barriers (mean ± std over pairs), curves and distances of LMC path records."""
    out: dict[str, Any] = {"t": records[0]["t"], "splits": {}}
    for split in [s for s in ("train", "val", "test") if s in records[0]]:
        out["splits"][split] = {
            **{b: mean_std([r[split][b] for r in records]) for b in BARRIERS},
            "loss": [r[split]["loss"] for r in records],
            "acc": [r[split]["acc"] for r in records]}
    for key in ("distance", "normalized_distance"):
        out[key] = mean_std([r[key] for r in records])
    return out


def _metrics(runner, group: str, variant: str) -> list[dict[str, Any]]:
    units = [u for stage in runner.stages() for u in stage
             if u.group == group and u.info["variant"] == variant]
    return [runner.load_unit_metrics(u)["metrics"] for u in units]


def aggregate(runner) -> dict[str, Any]:
    exp = runner.experiment
    d = exp.data
    out: dict[str, Any] = {
        "format": "asymspec-results/1", "kind": "identifiability", "name": exp.name,
        "profile": exp.profile, "dataset": d["dataset"]["name"], "models": d["models"],
        "pairs": [list(p) for p in runner.pairs()], "analyses": list(d["analyses"]),
        "similarity": d["lmc"]["similarity"], "variants": {}}
    for v in exp.trained_variants():
        members = _metrics(runner, "members", v)
        ir = runner._build(v).ir
        entry: dict[str, Any] = {
            "label": d["variants"][v].get("label") or v,
            "checkpoints": runner.checkpoint_epochs(v),
            "layers": [p.layer for p in recording_points(ir)],
            "test_acc": mean_std([m["test_acc"] for m in members]),
            "test_loss": mean_std([m["test_loss"] for m in members])}
        if "val_acc" in members[0]:
            entry["val_acc"] = mean_std([m["val_acc"] for m in members])
        if "lmc_unaligned" in d["analyses"]:
            entry["lmc_unaligned"] = _path_summary(_metrics(runner, "lmc_unaligned", v))
        if "lmc_aligned" in d["analyses"]:
            recs = _metrics(runner, "lmc_aligned", v)
            entry["lmc_aligned"] = {m: _path_summary([r["methods"][m] for r in recs])
                                    for m in d["lmc"]["methods"]}
        if "am_objective" in d["analyses"]:
            entry["am_objective"] = _am(_metrics(runner, "am_objective", v))
        if "realization" in d["analyses"]:
            (rec,) = _metrics(runner, "realization", v)
            entry["realization"] = rec
        if "coherence" in d["analyses"]:
            entry["coherence"] = _coherence(_metrics(runner, "coherence", v))
        out["variants"][v] = entry
    return out


def _am(records: list[dict[str, Any]]) -> dict[str, Any]:
    """group -> epoch -> statistic -> mean ± std over pairs."""
    out: dict[str, dict[str, Any]] = {}
    for epoch, groups in records[0]["epochs"].items():
        for g, first in groups.items():
            vals = [r["epochs"][epoch][g] for r in records]
            out.setdefault(g, {"nodes": first["nodes"], "size": first["size"],
                               "epochs": {}})["epochs"][epoch] = {
                k: mean_std([x[k] for x in vals])
                for k in ("optimal", "identity", "random_mean", "random_std")}
    return out


def _coherence(records: list[dict[str, Any]]) -> dict[str, Any]:
    """layer -> epoch -> statistic -> mean ± std over members."""
    out: dict[str, dict[str, Any]] = {}
    for epoch, layers in records[0]["epochs"].items():
        for layer in layers:
            vals = [r["epochs"][epoch][layer] for r in records]
            stats = {k: mean_std([x[k] for x in vals])
                     for k in ("nu", "k", "anisotropy_mean", "anisotropy_max", "explained")}
            stats["bound"] = {dl: mean_std([x["bound"][dl] for x in vals])
                              for dl in vals[0]["bound"]}
            stats["p"] = vals[0]["p"]
            stats["d"] = vals[0]["d"]
            stats["bound_valid"] = vals[0]["bound_valid"]
            out.setdefault(layer, {})[epoch] = stats
    return out
