"""Third-party families audited exactly, against closed forms derived by hand.

Each model is built from a config with random weights (nothing is downloaded).  Every test
checks (i) the audit's order against the closed form in the test's docstring, with no
unsupported op (so no lower-bound flag), and (ii) a random element of the symmetry group, drawn
from the permutation spec, applied to the real float64 parameters (a tied tensor once), leaves
the outputs unchanged -- besides the audit's own numeric check of every generator.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from asymspec.audit import audit, lower_module
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore")


def lg(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


def _flat(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict) or hasattr(x, "to_tuple"):
        x = x.to_tuple() if hasattr(x, "to_tuple") else tuple(x.values())
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat(v)]
    return []


def _random_element_preserves_outputs(model, x, seed: int = 0) -> None:
    """Permute the real float64 parameters by a random group element of the perm spec."""
    model = model.double().eval()
    x = tuple(t.double() if t.is_floating_point() else t for t in x)
    ir = lower_module(model, x)
    seen, state = set(), {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) not in seen:  # a tied tensor is permuted once, under its first name
            seen.add(id(v))
            state[k] = v.detach()
    spec = perm_spec(ir, list(state))
    perms = random_group_perms(spec, torch.Generator().manual_seed(seed))
    assert perms, "no free group"
    moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
    assert any(not torch.equal(moved[k], state[k]) for k in state)
    with torch.no_grad():
        ref = _flat(model(*x))
        out = _flat(torch.func.functional_call(model, moved, x))
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9)


def _ids(vocab: int = 31, n: int = 8) -> tuple[torch.Tensor]:
    return (torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0)),)


@pytest.mark.parametrize("tie", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_gpt2_closed_form(tie: bool) -> None:
    """GPT-2, d = 16, H = 2 heads of dh = 8, L = 2 layers, MLP 4d = 64.

    Residual stream (wte and wpe columns, every LayerNorm, both c_proj outputs, ln_f, and the
    head's input columns): d!.  Per layer: the H heads of c_attn (a Conv1D, i.e. addmm with the
    weight stored (in, out), split into q | k | v and into heads by view + permute) permute as
    blocks with one head order for q, k, v (H!); within each head q and k share one permutation
    of dh dims (scores are q . k) and v has its own: (dh!)^2 per head; the MLP's 4d units: (4d)!.
    |Aut| = d! [H! (dh!)^(2H) (4d)!]^L.  The lm_head is tied to wte (or not): either way it reads
    the stream through d columns, so the order is the same -- but the tie must be found by
    identity and the tensor permuted once.
    """
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=31, n_positions=16,
                                  use_cache=False, tie_word_embeddings=tie, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    assert (model.lm_head.weight is model.transformer.wte.weight) == tie
    report = audit(model, _ids())
    assert not report.unsupported and report.verdict == "symmetric"
    d, h, dh, L = 16, 2, 8, 2
    expected = lg(d) + L * (lg(h) + 2 * h * lg(dh) + lg(4 * d))
    assert report.log10_order == pytest.approx(expected, abs=1e-6)
    tied = report.ir.g.graph["tied_keys"]
    assert (tied == {"lm_head.weight": "transformer.wte.weight"}) == tie
    _random_element_preserves_outputs(model, _ids())


def test_bert_closed_form() -> None:
    """BERT (BertModel with pooler), d = 16, H = 2, dh = 8, one layer, intermediate 32.

    Word, position (constant ``arange`` indices) and token-type (a constant zero buffer)
    embeddings feed the stream, and ``last_hidden_state`` *is* the stream, so every stream unit is
    an output unit: fixed.  What remains is the layer's attention, H! (dh!)^(2H), and its
    intermediate units, 32!.  The pooler (dense + tanh on the first token) is an output too.
    """
    cfg = transformers.BertConfig(vocab_size=31, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    report = audit(model, _ids())
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(2) + 4 * lg(8) + lg(32), abs=1e-6)
    _random_element_preserves_outputs(model, _ids())


def test_timm_convnext_layer_scale_closed_form() -> None:
    """timm ConvNeXt, 4 stages of one block, 8 channels, MLP ratio 4, layer scale
    ``gamma.reshape(1, -1, 1, 1)``.

    Each stage's residual stream (stem / downsample conv output, the depthwise 7x7 conv that maps
    channel i to channel i, LayerNorms, fc2's outputs, gamma): 8!; each block's MLP: 32! units.
    |Aut| = (8!)^4 (32!)^4; the classifier's outputs are fixed.
    """
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8),
                              num_classes=3, ls_init_value=0.5).eval()
    x = (torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),)
    report = audit(model, x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(4 * lg(8) + 4 * lg(32), abs=1e-6)
    _random_element_preserves_outputs(model, x)


def test_timm_vit_packed_qkv_closed_form() -> None:
    """timm ViT, 32x32 images in 8x8 patches (16 tokens + class token), d = 16, H = 2 heads of
    dh = 8, one block, MLP 64, 3 classes.

    ``qkv(x).reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)`` packs q | k | v into one
    linear layer.  Stream (patch-embedding conv, class token, position embedding, LayerNorms,
    attention / MLP outputs): d!; the block's attention: H! (dh!)^(2H); its MLP: 64!.
    """
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                              embed_dim=16, num_heads=2, num_classes=3).eval()
    x = (torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),)
    report = audit(model, x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(16) + lg(2) + 4 * lg(8) + lg(64), abs=1e-6)
    _random_element_preserves_outputs(model, x)


@pytest.mark.slow
def test_timm_resnet18_matches_torchvision() -> None:
    """timm's resnet18 has torchvision's structure: the same closed form (log10 |Aut| =
    5934.49, derived in tests/test_audit.py::test_resnet18_closed_form_and_perm_spec)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3).eval()
    report = audit(model, (torch.randn(1, 3, 32, 32),))
    assert not report.unsupported
    assert report.log10_order == pytest.approx(5934.493, abs=1e-3)


def test_cli_builds_transformers_models_from_a_config(tmp_path) -> None:
    from click.testing import CliRunner

    from asymspec.cli import main

    res = CliRunner().invoke(main, [
        "audit", "transformers:GPT2LMHeadModel", "--config",
        "n_layer=1,n_embd=8,n_head=2,vocab_size=11,n_positions=8,bos_token_id=0,eos_token_id=0",
        "--input-shape", "1,6:long11"])
    assert res.exit_code == 1, res.output
    d, h, dh = 8, 2, 4
    expected = lg(d) + lg(h) + 2 * h * lg(dh) + lg(4 * d)
    assert f"log10 |Aut| = {expected:.2f}" in res.output
    bad = CliRunner().invoke(main, ["audit", "transformers:GPT2LMHeadModel", "--config",
                                    "n_layer", "--input-shape", "1,6:long"])
    assert bad.exit_code == 2 and "key=value" in bad.output
    cfg = tmp_path / "c.json"
    cfg.write_text('{"n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 11}')
    res = CliRunner().invoke(main, ["perm-spec", "transformers:GPT2LMHeadModel",
                                    "--config-json", str(cfg), "--input-shape", "1,6:long11"])
    assert res.exit_code == 0, res.output
    assert '"lm_head.weight": "transformer.wte.weight"' in res.output.replace("\n", "")


def test_pyg_gcn_model_under_export_closed_form() -> None:
    """``torch_geometric.nn.models.GCN(3, 8, num_layers=2, out_channels=2)``: fx cannot trace
    the whole model, so it is exported; message passing becomes ``index_select`` of source rows,
    per-edge normalisation (constants) and ``scatter_add_`` onto zeros -- all row operations that
    keep each channel.  The 8 hidden channels (first layer's linear, aggregation, bias, ReLU) are
    the only free units: |Aut| = 8!."""
    from torch_geometric.nn.models import GCN

    torch.manual_seed(0)
    model = GCN(3, 8, 2, out_channels=2).eval()
    x = (torch.randn(6, 3, generator=torch.Generator().manual_seed(0)),
         torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 3]]))
    report = audit(model, x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(8), abs=1e-6)
    _random_element_preserves_outputs(model, x)


@pytest.mark.slow
def test_pyg_gin_model_under_export_closed_form() -> None:
    """``torch_geometric.nn.models.GIN(3, 8, num_layers=2, out_channels=2)``: layer 1's MLP is
    [3, 8, 8], layer 2's [8, 2, 2] (its hidden width is out_channels).  Free units: layer 1's
    two hidden layers (8! each; the second also carries the aggregation and layer 2's
    ``(1 + eps) x + sum`` input) and layer 2's hidden layer (2!): |Aut| = (8!)^2 2!."""
    from torch_geometric.nn.models import GIN

    torch.manual_seed(0)
    model = GIN(3, 8, 2, out_channels=2).eval()
    x = (torch.randn(6, 3, generator=torch.Generator().manual_seed(0)),
         torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 3]]))
    report = audit(model, x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(2 * lg(8) + lg(2), abs=1e-6)
    _random_element_preserves_outputs(model, x)
