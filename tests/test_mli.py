"""MLI (runners/mli): metrics on synthetic curves with known answers, the reference chord as a
compatibility flag, t-tests against scipy, aggregation (diverged / non-finite excluded and
counted, Figure 5 selection), and a tiny zoo -> MLI run end to end (θ0 rebuilt from the spec and
init seed, the zoo's identity in the MLI hash, report beside the paper's numbers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from runners.mli.metrics import (
    curve_metrics,
    global_convexity,
    is_monotonic,
    lim_delta,
    local_convexity,
    lucas_bump,
    ttest,
)
from runners.mli.report import aggregate

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
A = np.linspace(0, 1, 25)


def test_monotone_convex_curve():
    r = list(np.exp(-3 * A))  # decreasing, convex
    assert lim_delta(r) < 0 and is_monotonic(r) and lucas_bump(r) == 0.0
    assert local_convexity(r) == 1.0 and global_convexity(r) == 1.0
    assert global_convexity(r, "reference") == 1.0


def test_concave_curve():
    r = list(1 - A ** 2)  # decreasing, concave: every interior point above the chord
    assert is_monotonic(r) and lim_delta(r) == pytest.approx(r[1] - r[0])  # flattest step
    assert local_convexity(r) == 0.0 and global_convexity(r) == 0.0
    # the reference's line r[0] -> r[1] lies above any non-increasing path: always 1
    assert global_convexity(r, "reference") == 1.0


def test_one_bump():
    r = [2.0, 1.5, 1.0, 1.2, 1.6, 1.4, 0.9, 0.5, 0.4]
    assert lim_delta(r) == pytest.approx(0.4)  # largest single step: 1.2 -> 1.6
    assert not is_monotonic(r) and is_monotonic(r, tolerance=0.5)
    assert lucas_bump(r) == pytest.approx(0.6)  # from 1.0 up to 1.6, before falling below 1.0
    two = [3.0, 3.5, 2.0, 2.1, 2.05, 1.0]  # bumps of 0.5 and 0.1: the larger counts
    assert lucas_bump(two) == pytest.approx(0.5)
    rising = [1.0, 1.2, 1.1, 1.3]  # never drops below the start: one bump to the end
    assert lucas_bump(rising) == pytest.approx(0.3)


def test_chord_flag_on_a_non_monotone_curve():
    r = [1.0, 0.2, 0.5, 0.6, 0.3]  # α = 0, .25, .5, .75, 1
    # true chord 1 -> 0.3: line .825, .65, .475 -> interior .2, .5, .6 below, below, above
    assert global_convexity(r, "true") == pytest.approx(2 / 3)
    # reference line 1 -> 0.2 at α=1: .8, .6, .4 -> .2 yes, .5 yes, .6 no
    assert global_convexity(r, "reference") == pytest.approx(2 / 3)
    r2 = [1.0, 0.9, 0.95, 0.5, 0.1]
    # true chord: .775, .55, .325 -> .9 no, .95 no, .5 no; reference: .975, .95, .925 -> yes yes
    # yes
    assert global_convexity(r2, "true") == 0.0 and global_convexity(r2, "reference") == 1.0
    with pytest.raises(ValueError):
        global_convexity(r2, "last")
    m = curve_metrics(r2)
    assert m["global_convexity"] == 0.0 and m["global_convexity_reference"] == 1.0
    assert curve_metrics([1.0, float("nan"), 0.5]) == {"finite": False}


def test_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 40), rng.normal(0.5, 2.0, 30)
    got = ttest(a, b)
    ref = stats.ttest_ind(a, b)
    assert got["t"] == pytest.approx(ref.statistic) and got["p"] == pytest.approx(ref.pvalue)
    welch = ttest(a, b, welch=True)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert welch["p"] == pytest.approx(ref.pvalue) and welch["p"] != got["p"]
    assert ttest([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    assert ttest([1.0, 1.0], [0.0, 0.0])["p"] == 0.0
    assert math.isnan(ttest([1.0], [0.0, 1.0])["p"])
    # results.json is strict JSON: aggregate turns NaN / inf into null
    res = aggregate(SETTINGS, {"standard": [_member(0, [3.0, 2.0, 1.0])],
                               "w_asym": [_member(1, [1.0, 2.0, 3.0])]}, {}, [0, .5, 1],
                    {"name": "t"})
    json.dumps(res, allow_nan=False)
    assert res["variants"]["w_asym"]["ttest_vs_baseline"]["delta"]["p"] is None


def _member(i, curve, tol=0.0):
    return {"id": f"m{i}", "index": i, "hparams": {}, "curves": {"train_loss": curve},
            "metrics": curve_metrics(curve, tol)}


SETTINGS = {"baseline": "standard", "rows": {"w_asym": {"label": "W-Asym", "paper": None}},
            "metrics": {"ttest": "student", "chord": "true"}, "figure": {"trajectories": 2},
            "eval": {"mode": "fixed"}}


def test_aggregate_counts_excludes_and_selects():
    mono = [3.0, 2.0, 1.0]
    bump = [3.0, 3.5, 1.0]
    std = [_member(0, bump), _member(1, mono), _member(2, [3.0, float("inf"), 1.0]),
           _member(3, [2.0, 2.5, 0.5])]
    wasym = [_member(0, mono), _member(1, [3.0, 1.0, 0.9]), _member(2, [2.0, 1.5, 0.2])]
    res = aggregate(SETTINGS, {"standard": std, "w_asym": wasym},
                    {"standard": [], "w_asym": ["m7"]}, [0, 0.5, 1], {"name": "t"})
    s, w = res["variants"]["standard"], res["variants"]["w_asym"]
    assert (s["n"], s["nonfinite"], s["diverged"], s["selected"]) == (3, 1, 0, 4)
    assert (w["n"], w["diverged"], w["selected"], w["label"]) == (3, 1, 4, "W-Asym")
    assert s["monotonic"]["mean"] == pytest.approx(1 / 3) and w["monotonic"]["mean"] == 1.0
    assert s["delta"]["mean"] == pytest.approx(np.mean([0.5, -1.0, 0.5]))
    assert s["delta"]["std"] == pytest.approx(np.std([0.5, -1.0, 0.5], ddof=1))
    assert w["fig5_ids"] == ["m2", "m1"]  # the two lowest final train losses
    t = w["ttest_vs_baseline"]["delta"]
    ref = stats.ttest_ind([-1.0, -0.1, -0.5], [0.5, -1.0, 0.5])
    assert t["p"] == pytest.approx(ref.pvalue)
    assert "ttest_vs_baseline" not in s
    assert w["table_global_convexity"] == w["global_convexity"]
    compat = aggregate({**SETTINGS, "metrics": {"ttest": "student", "chord": "reference"}},
                       {"standard": std, "w_asym": wasym}, {}, [0, 0.5, 1], {"name": "t"})
    assert compat["variants"]["standard"]["table_global_convexity"] == \
        compat["variants"]["standard"]["global_convexity_reference"]


# -- end to end on a tiny zoo ------------------------------------------------------------------

ZOO = """\
name: tiny_zoo
kind: zoo
dataset: {name: digits}
model_overrides: [model.in_channels=1, model.input_size=8]
variants:
  standard: {model: resnet8_zoo.yaml}
  w_asym:
    model: resnet8_zoo_wasym.yaml
    overrides: [asymmetry.w_asym.overrides.conv1.nfix=7]
members: 3
shard_size: 3
hparams: {epochs: 2, lr: {dist: loguniform, low: 0.005, high: 0.05}}
train: {batch_size: 128, peak_epoch: 1, precision: fp32}
distance_pairs: 3
"""

MLI = """\
name: tiny_mli
kind: mli
upstream: {zoo: {spec: zoo.yaml}}
points: 5
members_per_unit: 2
rows:
  standard: {label: Standard, paper: {delta: [0.079, 0.109], monotonic: 26.3}}
  w_asym: {label: W-Asym}
eval: {train_subset: 150, test_subset: 60}
"""


@pytest.mark.slow
def test_tiny_zoo_to_mli_end_to_end(tmp_path):
    import asymspec
    from asymspec.run import load_experiment, run_experiment
    from asymspec.run.evaluator import evaluate
    from asymspec.run.tasks import ArrayTask, eval_batches, fixed_subset, load_task
    from asymspec.zoo import load

    (tmp_path / "zoo.yaml").write_text(ZOO)
    (tmp_path / "mli.yaml").write_text(MLI)
    run_dir = run_experiment(str(tmp_path / "mli.yaml"), quiet=True,
                             runs_dir=tmp_path / "runs")
    res = json.loads((run_dir / "results.json").read_text())
    zoo = load(next((tmp_path / "runs").glob("tiny_zoo-*")))
    assert res["zoo"]["identity"] == zoo.identity
    assert list(res["variants"]) == ["standard", "w_asym"]
    std = res["variants"]["standard"]
    assert std["n"] + std["diverged"] == 3 and len(res["alphas"]) == 5
    member = std["members"][0]
    assert len(member["curves"]["train_loss"]) == 5 and len(member["curves"]["test_loss"]) == 5
    # α = 0 is θ0 rebuilt from the variant's spec and the member's init seed
    info = next(m for m in zoo.members("standard") if m["id"] == member["id"])
    model = asymspec.build(zoo.spec("standard"), init_seed=info["init_seed"])
    task = load_task({**zoo.dataset})
    x, y = fixed_subset(task.train_x, task.train_y, 150, "mli-train")
    batches = eval_batches(ArrayTask(x, y, x[:0], y[:0], 10), "train", 1024)
    ls = info["hparams"]["label_smoothing"]
    assert member["curves"]["train_loss"][0] == pytest.approx(
        evaluate(model, batches, label_smoothing=ls).loss, rel=1e-5)
    # α = 1 is θT from the zoo's shards
    model.load_state_dict({k: v[0] for k, v in zoo.state("standard", [member["id"]]).items()})
    assert member["curves"]["train_loss"][-1] == pytest.approx(
        evaluate(model, batches, label_smoothing=ls).loss, rel=1e-5)
    report = (run_dir / "report.md").read_text()
    assert "| Standard |" in report and "26.3%" in report and "Δ (paper)" in report
    assert (run_dir / "mli_fig5.png").stat().st_size > 5000
    # the reference's measurement: augmented, reshuffled per α (noisier), same endpoints' scale
    ref_dir = run_experiment(str(tmp_path / "mli.yaml"), quiet=True, runs_dir=tmp_path / "runs",
                             overrides=["eval.mode=reference", "eval.batch_size=64"])
    ref = json.loads((ref_dir / "results.json").read_text())
    assert ref_dir != run_dir and ref["eval_mode"] == "reference"
    ref_member = ref["variants"]["standard"]["members"][0]
    assert ref_member["id"] == member["id"]
    assert ref_member["curves"]["train_loss"] != member["curves"]["train_loss"]
    assert all(math.isfinite(v) for v in ref_member["curves"]["train_loss"])
    assert "like the reference" in (ref_dir / "report.md").read_text()
    # a changed zoo spec changes the MLI run's hash (the zoo's identity is part of it)
    before = load_experiment(tmp_path / "mli.yaml").content_hash()
    (tmp_path / "zoo.yaml").write_text(ZOO.replace("members: 3", "members: 4"))
    assert load_experiment(tmp_path / "mli.yaml").content_hash() != before
