"""torchvision Swin (V1) audited exactly: shifted-window attention with relative position bias.

Derivation (one stage: stream of ``C`` channels, ``L`` blocks, ``H`` heads of ``dh = C / H``,
MLP ``4C``).  Windows, padding, the cyclic shift and its attention mask act on spatial positions
only.  Inside a window a block is multi-head self-attention whose scores get a learned bias
``B[h, i, j] = table[index[i, j], h]`` per head, then an MLP, each with a pre-LayerNorm and a
residual.  So, as for a transformer layer: the stream's ``C`` channels permute (every LayerNorm,
the patch embedding's output, q/k/v input columns, proj and fc2 output rows: ``C!``); per block
the heads permute as blocks -- one order for q, k, v, proj's input columns *and the table's
columns* (head ``h``'s bias moves with head ``h``) -- ``H!``; within each head q and k share one
permutation of ``dh`` dimensions (scores are q . k) and v has its own: ``(dh!)^(2H)``; the MLP's
hidden units: ``(4C)!``.  |Aut| = ``C! [H! (dh!)^(2H) (4C)!]^L``.  A head permutation that leaves
the table's columns in place changes the scores (checked below on float64 parameters).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torchvision.models import SwinTransformer

from asymspec.audit import audit, lower_module
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict

warnings.filterwarnings("ignore")


def lg(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


def _swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2], num_heads=[2],
                           window_size=[2, 2], num_classes=3).double().eval()


X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _same(model, sd) -> bool:
    with torch.no_grad():
        return bool(torch.allclose(torch.func.functional_call(model, sd, (X,)), model(X),
                                   atol=1e-12, rtol=1e-12))


def test_swin_closed_form_and_perm_spec() -> None:
    model = _swin()
    report = audit(model, (X,))
    assert not report.unsupported and report.verdict == "symmetric"
    c, h, blocks = 8, 2, 2
    assert report.log10_order == pytest.approx(
        lg(c) + blocks * (lg(h) + 2 * h * lg(c // h) + lg(4 * c)), abs=1e-9)
    ir = lower_module(model, (X,))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    spec = perm_spec(ir, list(state))
    for seed in range(3):
        perms = random_group_perms(spec, torch.Generator().manual_seed(seed))
        assert _same(model, permute_state_dict(ir, state, spec.node_perms(ir, perms)))


def test_head_permutation_must_move_the_bias_table() -> None:
    model = _swin()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    a = "features.1.0.attn."
    swap = np.r_[4:8, 0:4]  # head 0 <-> head 1 (dh = 4) in q, k and v alike
    rows = torch.as_tensor(np.concatenate([swap, 8 + swap, 16 + swap]))
    sd[a + "qkv.weight"] = sd[a + "qkv.weight"][rows]
    sd[a + "qkv.bias"] = sd[a + "qkv.bias"][rows]
    sd[a + "proj.weight"] = sd[a + "proj.weight"][:, torch.as_tensor(swap)]
    assert not _same(model, sd)
    sd[a + "relative_position_bias_table"] = sd[a + "relative_position_bias_table"][:, [1, 0]]
    assert _same(model, sd)


def test_swin_v2_closed_form() -> None:
    """Swin V2 blocks: cosine attention (q, k normalised within each head, so the joint
    within-head permutation of q and k still leaves every score unchanged) scaled by a learned
    temperature per head (``logit_scale`` (H, 1, 1): moves with the heads), and a bias computed
    by an MLP ``2 -> 512 -> H`` from constant coordinates: its output units are the heads (moving
    the rows of its last layer with the heads) and its 512 hidden units permute freely.
    |Aut| = ``C! [H! (dh!)^(2H) (4C)! 512!]^L``."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2], num_heads=[2],
                            window_size=[2, 2], num_classes=3, block=SwinTransformerBlockV2,
                            downsample_layer=PatchMergingV2).double().eval()
    report = audit(model, (X,))
    assert not report.unsupported and report.verdict == "symmetric"
    c, h, blocks = 8, 2, 2
    assert report.log10_order == pytest.approx(
        lg(c) + blocks * (lg(h) + 2 * h * lg(c // h) + lg(4 * c) + lg(512)), abs=1e-9)
    ir = lower_module(model, (X,))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    spec = perm_spec(ir, list(state))
    perms = random_group_perms(spec, torch.Generator().manual_seed(0))
    assert _same(model, permute_state_dict(ir, state, spec.node_perms(ir, perms)))
