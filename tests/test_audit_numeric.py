"""The numeric check's composite stage (asymspec.audit.numeric): pairs of wrong generators whose
product is a true symmetry must not mask each other, at O(log n) forward passes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from asymspec.audit import lower_module
from asymspec.audit.numeric import AuditError, check_generators, composite_plan


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model, torch.randn(8, 3, generator=g)


def _swap(size: int, a: int, b: int) -> np.ndarray:
    p = np.arange(size)
    p[[a, b]] = [b, a]
    return p


def _good(k: int) -> dict[str, np.ndarray]:
    """A true symmetry: swap hidden units k, k+1 (mod 6) in the linear and its ReLU."""
    p = _swap(6, k % 6, (k + 1) % 6)
    return {"0": p, "1": p}


def _masked_pair_case(n: int = 60, at: int = 20) -> tuple:
    """n generators; #at and #at+1 are each wrong, but their product is the true swap of hidden
    units 0, 1: g1 swaps only the first layer's rows, g2 only the second layer's columns."""
    model, x = _mlp()
    ir = lower_module(model, x)
    p = _swap(6, 0, 1)
    gens = [_good(k) for k in range(n)]
    gens[at], gens[at + 1] = {"0": p}, {"1": p}
    return model, ir, gens, x


def test_each_half_of_the_split_symmetry_fails_alone_and_their_product_holds() -> None:
    model, ir, gens, x = _masked_pair_case()
    with pytest.raises(AuditError, match=r"#0 .*changes the module's outputs"):
        check_generators(model, ir, [gens[20]], (x,))
    with pytest.raises(AuditError, match=r"#0 "):
        check_generators(model, ir, [gens[21]], (x,))
    both = {"0": gens[20]["0"], "1": gens[21]["1"]}
    assert check_generators(model, ir, [both], (x,)).forward_passes == 2


def test_masked_pair_in_one_contiguous_batch_is_caught() -> None:
    """#20 and #21 are adjacent, past the individually checked ones, in one contiguous batch of
    the old check, whose composite is a true symmetry: with the subset stage switched off
    (``separating=False, random_subsets=0``, exactly the old contiguous-batches-only check) the
    check passes and the audit would over-claim; with it, the bit-0 subset holds #21 without #20,
    fails and is bisected down to a named wrong generator."""
    model, ir, gens, x = _masked_pair_case()
    old = check_generators(model, ir, gens, (x,), separating=False, random_subsets=0)
    assert old.bit_split_subsets == old.random_subsets == 0 and not old.separates_pairs
    bounds = np.linspace(4, 60, 9).astype(int)
    assert any(lo <= 20 and 21 < hi for lo, hi in zip(bounds[:-1], bounds[1:]))
    with pytest.raises(AuditError, match=r"reported symmetry #(20|21) .*changes the module"):
        check_generators(model, ir, gens, (x,))
    # the bit-split subsets alone (no random ones) already separate the pair
    with pytest.raises(AuditError, match=r"#(20|21) "):
        check_generators(model, ir, gens, (x,), random_subsets=0)


def test_forward_passes_grow_logarithmically() -> None:
    model, x = _mlp()
    ir = lower_module(model, x)
    n = 1000
    res = check_generators(model, ir, [_good(k) for k in range(n)], (x,))
    m = n - res.individually_checked
    bits = 2 * math.ceil(math.log2(m))
    assert res.bit_split_subsets == bits and res.random_subsets == 8
    assert res.contiguous_batches == 8 and res.separates_pairs
    # reference pass + individual + composites, nothing per generator
    assert res.forward_passes == 1 + 4 + 8 + bits + 8 == 1 + 4 + res.composites
    assert res.max_rel_error < 1e-4
    text = res.summary()
    assert text.startswith("1,000 generators checked on the module: 4 individually, the other "
                           "996 in 36 composites (8 contiguous batches + 20 bit-split subsets + 8 "
                           "seeded random subsets; every pair separated)")
    assert "verified" not in text
    assert res.as_dict()["summary"] == text


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 13, 24])
def test_plan_covers_all_and_isolates_any_one_of_up_to_three(m: int) -> None:
    """Every generator is in a composite, and for any set of at most three generators some
    composite holds exactly one of them: the guarantee stated in the module docstring."""
    first = 4
    plan = [set(members) for _, members in composite_plan(first, first + m)]
    assert set().union(*plan) == set(range(first, first + m))
    assert len(plan) == len({frozenset(s) for s in plan})  # no composite checked twice
    for k in (1, 2, 3):
        for bad in itertools.combinations(range(first, first + m), k):
            assert any(len(s.intersection(bad)) == 1 for s in plan), bad


def test_plan_is_deterministic_and_seeded() -> None:
    a = composite_plan(4, 500, seed=3)
    assert a == composite_plan(4, 500, seed=3)
    assert [s for k, s in a if k == "random"] != \
        [s for k, s in composite_plan(4, 500, seed=4) if k == "random"]
    assert all(k != "bit" for k, _ in composite_plan(4, 500, separating=False))


def test_four_bad_generators_can_mask_each_other_in_every_bit_split_subset() -> None:
    """The stated limit of the guarantee: positions 0, 3, 5, 6 meet every bit-split subset and
    its complement in 0 or 2 members (so the docstring does not claim four)."""
    plan = composite_plan(0, 8, batches=1, random_subsets=0)
    bad = {0, 3, 5, 6}
    assert all(len(set(s) & bad) in (0, 2, 4) for k, s in plan if k == "bit")
