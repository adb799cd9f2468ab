"""The FiGLU rule claims "no continuous symmetry (proven)" only when Lim et al.'s Prop. 2 holds for
the F the IR actually uses (checked on F itself, not trusted from the σ-Asym pass)."""

from __future__ import annotations

import pytest
import torch

import asymspec
from asymspec.check import check_ir
from asymspec.continuous import continuous_symmetries, figlu_problem
from asymspec.passes.sigma_asym import prop2_problem

MLP = {"name": "t", "model": {"family": "mlp", "input_dim": 6, "widths": [5, 4],
                              "output_dim": 3},
       "asymmetry": {"sigma_asym": {"f_std": 1.0}}}
CNN = {"name": "t", "model": {"family": "cnn", "in_channels": 3, "input_size": 6,
                              "channels": [4, 5], "num_classes": 3},
       "asymmetry": {"sigma_asym": {"f_std": 1.0}}}


def _figlu_rules(ir):
    return [c for c in continuous_symmetries(ir) if c.kind == "none-figlu"]


def _edge(ir, f_node="act1_F"):
    (x,) = ir.node(f_node)["inputs"]
    return x, ir.edge(x, f_node)


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["linear F", "1x1 conv F"])
def test_drawn_f_is_proven(spec):
    ir = asymspec.compile_ir(spec)
    rules = _figlu_rules(ir)
    assert rules and all(c.status == "absent" and c.certainty == "proven" for c in rules)


def _swap_rows_within(F):
    """Row 1 := row 0 with its entries reversed: the rows are equal as multisets, so the
    row-distinctness certificate no longer applies."""
    M = F.reshape(F.shape[0], -1).clone()
    M[1] = M[0].flip(0)
    return M.reshape(F.shape)


def _zero_entry(F):
    F = F.clone()
    F.view(-1)[3] = 0.0
    return F


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["linear F", "1x1 conv F"])
@pytest.mark.parametrize("tamper, fragment", [
    (lambda ir, x, e: e.__setitem__("fixed", torch.zeros_like(e["fixed"])), "zero entr"),
    (lambda ir, x, e: e.__setitem__("fixed", _zero_entry(e["fixed"])), "1 zero entry"),
    (lambda ir, x, e: e.__setitem__("fixed", _swap_rows_within(e["fixed"])), "two rows"),
    (lambda ir, x, e: e.__setitem__("fixed", _swap_rows_within(e["fixed"].transpose(0, 1))
                                    .transpose(0, 1).contiguous()), "two columns"),
    (lambda ir, x, e: e.__setitem__("fixed", e["fixed"] * float("inf")), "infinite"),
    (lambda ir, x, e: e.__setitem__("mask", torch.ones_like(e["mask"])), "not entirely frozen"),
    (lambda ir, x, e: e.__setitem__("offset", -e["fixed"]), "zero entr"),
    (lambda ir, x, e: ir.node("act1_F").__setitem__(
        "bias", torch.ones(ir.node("act1_F")["size"])), "has a bias"),
])
def test_violated_hypotheses_are_never_proven(spec, tamper, fragment):
    ir = asymspec.compile_ir(spec)
    x, e = _edge(ir)
    tamper(ir, x, e)
    assert fragment in (figlu_problem(ir, "act1") or "")
    (rule,) = [c for c in _figlu_rules(ir) if "act1" in c.reason]
    assert (rule.status, rule.certainty) == ("unknown", "unproven")
    assert fragment in rule.reason
    # the other FiGLU is untouched and still proven
    assert [c.certainty for c in _figlu_rules(ir) if c.layer != rule.layer] == ["proven"]
    text = check_ir(ir).format_text()
    assert "none-figlu: unknown (unproven) at 1 layer(s)" in text


def test_structure_other_than_figlu_is_not_proven():
    ir = asymspec.compile_ir(MLP)
    ir.node("act1_gate")["attrs"]["fn"] = "tanh"
    assert "not a sigmoid" in figlu_problem(ir, "act1")
    assert [c.status for c in _figlu_rules(ir)].count("unknown") == 1


def test_prop2_problem_accepts_distinct_nonzero_and_rejects_non_square():
    g = torch.Generator().manual_seed(0)
    assert prop2_problem(torch.randn(16, 16, generator=g)) is None
    assert prop2_problem(torch.randn(16, 16, 1, 1, generator=g)) is None
    assert prop2_problem(torch.randn(4, 5, generator=g))[0] == "shape"
    assert prop2_problem(torch.randn(4, 4, 3, 3, generator=g))[0] == "shape"
