"""Sweep grid expansion, derived nfix scaling, curve metrics and figures (no training)."""

from __future__ import annotations

import pytest

from asymspec.compiler import compile_ir
from asymspec.spec import load_spec
from asymspec.sweep import epochs_to_threshold, expand, lookup, mean_curve, model_overrides
from asymspec.sweep.grid import Cell, experiment_overrides, scale_count, scaled_nfix
from asymspec.sweep.plots import heatmap, lines


def test_product_order_and_points():
    cells = expand({"a": [1, 2], "b": ["x", "y", "z"]}, [{"a": 9}, {"a": 1, "b": "x"}])
    assert [c.values for c in cells[:3]] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                             {"a": 1, "b": "z"}]
    assert len(cells) == 2 * 3 + 1  # the duplicate explicit point is kept once
    assert cells[-1].values == {"a": 9}
    assert len({c.id for c in cells}) == len(cells)


def test_cell_id_depends_only_on_its_values():
    before = {c.label(): c.id for c in expand({"k": [0.0, 0.75, 1.5], "n": [0, 1]})}
    after = {c.label(): c.id for c in expand({"k": [0.0, 0.8, 1.5], "n": [0, 1]})}
    changed = {lab for lab in before if before[lab] != after.get(lab)}
    assert changed == {"k=0.75, n=0", "k=0.75, n=1"}
    assert Cell({"k": 1}).id == Cell({"k": 1}, index=5).id


def test_scale_count_rounds_half_up():
    assert [scale_count(n, s) for n, s in [(12, .25), (6, .25), (54, .75), (2, .25), (8, 0)]] \
        == [3, 2, 41, 1, 0]


def _fixed_total(spec) -> int:
    ir = compile_ir(spec)
    return sum(int((~e["mask"]).sum()) for _, _, e in ir.dense_edges() if e.get("mask") is not None)


def test_nfix_scale_overrides_apply_to_every_layer():
    spec = load_spec("specs/resnet20_wasym.yaml")
    block = spec.data["asymmetry"]["w_asym"]
    assert dict(scaled_nfix(block, 0.5))[("overrides", "layer3.*.conv*", "nfix")] == 36
    full = _fixed_total(spec)
    assert full == 42_448  # Table 11 (Table 5's count for W-Asym ResNet20 is 42,450)
    half = load_spec("specs/resnet20_wasym.yaml",
                     overrides=model_overrides(Cell({"nfix_scale": 0.5}), block))
    got = _fixed_total(half)
    assert abs(got - full / 2) <= 0.01 * full
    kappa = model_overrides(Cell({"asymmetry.w_asym.kappa": 0.75}), block)
    assert kappa == ["asymmetry.w_asym.kappa=0.75"]


def test_experiment_overrides_append_to_variant_overrides():
    cell = Cell({"nfix_scale": 0.25, "train.lr": 0.1})
    out = experiment_overrides(cell, lambda: {"w_asym": {"nfix": 8}, "standard": None},
                               lambda v: ["model.width=2"])
    assert out[0] == ('variants.w_asym.overrides=["model.width=2", '
                      '"asymmetry.w_asym.nfix=2"]')
    assert out[1] == "train.lr=0.1"
    with pytest.raises(ValueError, match="w_asym"):
        experiment_overrides(Cell({"nfix_scale": 1}), lambda: {"standard": None}, lambda v: [])


@pytest.mark.parametrize("epochs,values,thr,want", [
    ([0, 1, 2, 3], [0.1, 0.5, 0.8, 0.9], 0.7, 1 + 2 / 3),
    ([0, 1, 2], [0.1, 0.2, 0.3], 0.7, None),
    ([0, 1, 2], [0.75, 0.8, 0.9], 0.7, 0.0),
    ([0, 2, 4], [0.0, 0.7, 0.9], 0.7, 2.0),
    ([0, 1, 2, 3], [0.1, float("nan"), 0.8, 0.9], 0.7, 2.0),
    ([1, 2, 3], [0.6, 0.9, 0.5], 0.75, 1.5),
])
def test_epochs_to_threshold(epochs, values, thr, want):
    got = epochs_to_threshold(epochs, values, thr)
    assert got == pytest.approx(want) if want is not None else got is None


def test_lookup_and_mean_curve():
    res = {"variants": {"w": {"barrier": [0.1, 0.2]}}}
    assert lookup(res, "variants.w.barrier.1") == 0.2
    with pytest.raises(KeyError, match="variants.x"):
        lookup(res, "variants.x")
    assert mean_curve([[1, 2, 3], [3, 4]]) == [2.0, 3.0]


def test_figures_written(tmp_path):
    h = heatmap(tmp_path / "h.png", [0.0, 1.5], [0, 0.5, 1],
                [[11.0, 10.0, None], [11.0, 19.0, 25.0]], "kappa", "nfix scale", "epochs",
                notes=[["", "", "invalid"], ["", "", ""]])
    ln = lines(tmp_path / "l.png", [1, 20], {"w_asym": [0.1, None], "standard": [2.0, 1.0]},
               "warmup", "barrier", "Table 8")
    assert h.stat().st_size > 1000 and ln.stat().st_size > 1000
