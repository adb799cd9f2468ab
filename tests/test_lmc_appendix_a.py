"""App. A's distance per parameter between LMC endpoints."""

from __future__ import annotations

import math

from asymspec.compiler import build
from asymspec.paramtable import parameter_table, totals
from runners.lmc.runner import distance_per_parameter

OVER = ["model.input_dim=12", "model.widths=[8, 8, 8]", "model.output_dim=3"]


def test_distance_per_parameter_counts_trainable_entries_only():
    model = build("specs/mlp_mnist_wasym.yaml", OVER + ["asymmetry.w_asym.nfix=3",
                                                        "asymmetry.w_asym.overrides.fc4.nfix=3"])
    sa = {k: v.clone() for k, v in model.state_dict().items()}
    assert distance_per_parameter(model, sa, sa) == 0.0
    sb = {k: v.clone() for k, v in sa.items()}
    sb["fc1.bias"] += 1.0  # 8 entries moved by 1: distance sqrt(8)
    n = totals(parameter_table(model))["trainable"]
    assert n < sum(p.numel() for p in model.parameters())  # frozen entries are not counted
    assert math.isclose(distance_per_parameter(model, sa, sb), math.sqrt(8) / n, rel_tol=1e-6)


def test_distance_ignores_buffers():
    model = build("specs/mlp_mnist.yaml", OVER)
    sa = {k: v.clone() for k, v in model.state_dict().items()}
    sb = {k: (v + 1 if not k.endswith(("weight", "bias")) and v.is_floating_point() else v)
          for k, v in sa.items()}
    assert distance_per_parameter(model, sa, sb) == 0.0



def test_distance_does_not_depend_on_the_order_of_the_tensors():
    """The per-tensor squared distances are summed exactly (``math.fsum``), so the result is
    the same in every order.  A plain ``sum`` over a set of names, whose order is salted per
    process by PYTHONHASHSEED, once made the last bit differ between identical runs."""
    import random

    import torch

    model = build("specs/mlp_mnist.yaml", OVER)
    sa = model.state_dict()
    g = torch.Generator().manual_seed(0)
    # one squared distance of ~1e16 (ulp 2), the others of ~1-10: each small term added after
    # the big one is rounded to a multiple of 2, so a plain sum depends on the order
    names = [k for k, _ in model.named_parameters()]
    sb = {k: v + torch.randn(v.shape, generator=g) * (1e7 if k == names[0] else 0.3)
          for k, v in sa.items()}
    terms = [float((sa[k].double() - sb[k].double()).pow(2).sum())
             for k, _ in model.named_parameters()]
    n = sum(p.numel() for p in model.parameters())
    got = distance_per_parameter(model, sa, sb)
    rng = random.Random(0)
    plain = set()
    for _ in range(50):
        rng.shuffle(terms)
        assert got == math.fsum(terms) ** 0.5 / n
        plain.add(sum(terms))
    assert len(plain) > 1  # a plain sum does depend on the order here
