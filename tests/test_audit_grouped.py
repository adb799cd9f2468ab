"""Grouped convolutions in the permutation spec and in alignment.

A grouped convolution with ``g`` blocks lets a permutation move its input and output channels
only in whole blocks, with one block order on both sides, and freely within blocks; the
permutation spec says so with ``heads`` groups linked by ``head_partner`` (never ``fixed`` with a
misleading reason), and alignment permutes the grouped weight through its block-diagonal form.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from asymspec.align import weight_matching
from asymspec.audit import audit, lower_module, permutation_spec
from asymspec.ir.permgroups import plant_permutation


def _net(second_groups: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, groups=second_groups), nn.ReLU(),
        nn.Conv2d(12, 3, 1)).double().eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1)).double()


def test_grouped_chain_is_one_block_class_and_aligns() -> None:
    net, x = _net(2), _x()
    groups = {g["name"]: g for g in permutation_spec(net, x)["groups"]}
    # channels 8 -> 8 -> 12, two blocks each, one block order through the chain
    assert [groups[n]["kind"] for n in ("0", "2", "5")] == ["heads"] * 3
    assert all(groups[n]["heads"] == 2 for n in ("0", "2", "5"))
    # |Aut| = 2 (block order) * (4!^2) (within the 8-channel blocks, twice) * 6!^2
    assert audit(net, x).order == 2 * math.factorial(4) ** 4 * math.factorial(6) ** 2
    ir = lower_module(net, x)
    state = {k: v.detach() for k, v in net.state_dict().items()}
    ref = net(x)
    planted, moved = plant_permutation(ir, state, seed=1)
    permuted = copy.deepcopy(net)
    permuted.load_state_dict(moved)
    assert torch.allclose(permuted(x), ref, atol=1e-10)  # the planted permutation is legal
    assert any(not torch.equal(moved[k], state[k]) for k in state)
    res = weight_matching(ir, state, moved)
    aligned = copy.deepcopy(net)
    aligned.load_state_dict(res.state)
    assert torch.allclose(aligned(x), ref, atol=1e-10)  # alignment never changes the function
    floats = [k for k in state if state[k].is_floating_point()]
    dist = sum(float((res.state[k] - state[k]).norm()) for k in floats)
    before = sum(float((moved[k] - state[k]).norm()) for k in floats)
    assert dist < before


@pytest.mark.parametrize("second_groups", [4])
def test_incompatible_block_counts_are_fixed_with_the_reason(second_groups: int) -> None:
    net, x = _net(second_groups), _x()
    groups = {g["name"]: g for g in permutation_spec(net, x)["groups"]}
    assert groups["2"]["kind"] == "fixed" and "block count" in groups["2"]["reason"]
    assert "partly derived" not in " ".join(g["reason"] for g in groups.values())
    ir = lower_module(net, x)
    state = {k: v.detach() for k, v in net.state_dict().items()}
    _, moved = plant_permutation(ir, state, seed=1)
    permuted = copy.deepcopy(net)
    permuted.load_state_dict(moved)
    assert torch.allclose(permuted(x), net(x), atol=1e-10)
