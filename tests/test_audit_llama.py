"""Llama-style decoders audited exactly: RMSNorm (with its ``.to(dtype)``), SwiGLU, rotary position
embeddings (full and partial) and grouped-query attention, tied and untied heads.

Closed form for ``LlamaForCausalLM`` (hidden ``d``, ``H`` query heads of ``dh`` dims, ``K``
key/value heads, ``n = H / K`` query heads per kv head, MLP width ``m``, ``L`` layers)::

    |Aut| = d! * [ K! * (n!)^K * (dh!)^K * m! ]^L

Derivation.  *Stream*: the embedding columns, every RMSNorm weight (``w * x * rsqrt(mean(x^2))``
is permutation-equivariant: the mean is symmetric, the weight is permuted with x), the q/k/v and
gate/up input columns, the o_proj / down_proj output rows, the final norm and the head's input
columns permute by one ``d!`` (outputs and token ids are fixed).  *MLP*: ``down(silu(gate x) *
up x)`` -- a permutation of the ``m`` intermediate units applied to gate and up rows and down
columns: ``m!``.  *Attention*: query head ``h`` attends with kv head ``g(h) = h // n``.
(i) Permuting the kv heads by ``pi`` and carrying each kv head's block of ``n`` query heads
along (q rows, o_proj columns) maps every (q_h, k_g(h), v_g(h)) triple to another: ``K!``.
(ii) Within a block the ``n`` query heads share k and v, so any permutation of them (q rows with
their o_proj columns) just reorders the per-head outputs o_proj sums: ``(n!)^K``.  (iii) v's
``dh`` dims of a kv head enter only through ``softmax(.) v`` and then o_proj's columns of every
query head of the block: one permutation per kv head, ``(dh!)^K``.  (iv) q/k dims: without RoPE
one joint permutation per kv head would survive; with RoPE the score is ``q^T R(n - m) k`` and a
joint permutation survives iff it commutes with every R(delta) -- with distinct frequencies
``theta_i = base^(-2i/dh)`` only the identity (the derivation is written out in
:mod:`asymspec.audit.lowering.handlers.rope`).  With ``partial_rotary_factor`` (Phi, GPT-NeoX) the
``dh - r`` unrotated dims keep one joint permutation per kv head: ``((dh - r)!)^K``.  A tied head
(``lm_head.weight is embed_tokens.weight``) reads the stream through the same ``d`` columns: same
order, found by tensor identity and permuted once.

Each factor is also checked here by hand on float64 parameters: the maps above leave the logits
unchanged, and the maps RoPE forbids (swapping two rotated dims, or a pair's two members,
jointly in q and k) change them.  An injected generator that moves rotated dims must fail the
audit's numeric check (exit 3), never pass as a symmetry.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import asymspec.audit as audit_pkg
from asymspec.audit import audit
from asymspec.cli import main

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore")


def lg(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


def _ids(vocab: int = 50, n: int = 16) -> tuple[torch.Tensor]:
    return (torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0)),)


def _llama(kv: int, tie: bool = False, layers: int = 2, d: int = 32, heads: int = 4,
           m: int = 48):
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=d, intermediate_size=m,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=kv, max_position_embeddings=64,
                                   use_cache=False, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def llama_log10(d: int, heads: int, kv: int, dh: int, m: int, layers: int,
                unrotated: int = 0) -> float:
    n = heads // kv
    return lg(d) + layers * (lg(kv) + kv * lg(n) + kv * lg(dh) + kv * lg(unrotated) + lg(m))


@pytest.mark.parametrize("kv,tie", [(4, False), (2, False), (2, True),
                                    pytest.param(1, False, marks=pytest.mark.slow)],
                         ids=["mha", "gqa", "gqa-tied", "mqa"])
def test_llama_closed_form(kv: int, tie: bool) -> None:
    """d = 32, H = 4 heads of dh = 8, K = kv heads (4: MHA, 2: GQA, 1: multi-query), m = 48,
    L = 2: log10 |Aut| = log10 d! + L (log10 K! + K log10 n! + K log10 dh! + log10 m!)."""
    model = _llama(kv, tie)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    report = audit(model, _ids())
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(llama_log10(32, 4, kv, 8, 48, 2), abs=1e-6)
    assert report.numeric is not None and report.numeric.generators == len(report.generators)
    tied = report.ir.g.graph["tied_keys"]
    assert (tied == {"lm_head.weight": "model.embed_tokens.weight"}) == tie


@pytest.mark.parametrize("family", ["Gemma", pytest.param("Gemma2", marks=pytest.mark.slow),
                                    pytest.param("Qwen2", marks=pytest.mark.slow),
                                    pytest.param("Mistral", marks=pytest.mark.slow)])
def test_llama_like_families_closed_form(family: str) -> None:
    """Decoders built like Llama have its closed form (one layer, GQA 4 / 2, dh 8, m 48):
    Gemma's RMSNorm scales by ``1 + weight.float()`` (a parameter under a scalar shift, cast:
    permuted with the channels) and its output ``type_as``; its embedding is scaled by a
    constant and tied to the head; Gemma2 adds soft-capping and pre/post-feedforward norms;
    Qwen2 has q/k/v biases; Mistral a sliding-window mask."""
    kw = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              use_cache=False)
    if family.startswith("Gemma"):
        kw["head_dim"] = 8
    cfg = getattr(transformers, f"{family}Config")(**kw)
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForCausalLM")(cfg).eval()
    report = audit(model, _ids())
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(llama_log10(32, 4, 2, 8, 48, 1), abs=1e-6)


# ------------------------------------------------------------------ every factor by hand
def _logits(model, state: dict, x) -> torch.Tensor:
    with torch.no_grad():
        return torch.func.functional_call(model, state, x).logits


def _permuted_llama_state(model, rng: np.random.Generator, sigma: np.ndarray | None = None
                          ) -> dict:
    """The state dict under a random element of the derived group (stream, kv heads with their
    query blocks, query heads within blocks, v dims per kv head, MLP units), with ``sigma``
    (default: identity) applied jointly to every head's q and k dims.  Gather convention: new
    unit j of a node is old unit idx[j]."""
    cfg = model.config
    d, H, K = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    dh, n, m = d // H, H // K, cfg.intermediate_size
    sigma = np.arange(dh) if sigma is None else sigma
    s = {k: v.clone() for k, v in model.state_dict().items()}
    P = rng.permutation(d)
    s["model.embed_tokens.weight"] = s["model.embed_tokens.weight"][:, P]
    s["model.norm.weight"] = s["model.norm.weight"][P]
    if model.lm_head.weight is not model.model.embed_tokens.weight:
        s["lm_head.weight"] = s["lm_head.weight"][:, P]
    else:
        s["lm_head.weight"] = s["model.embed_tokens.weight"]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        kappa = rng.permutation(K)
        rho = [rng.permutation(n) for _ in range(K)]
        tau = [rng.permutation(dh) for _ in range(K)]
        mu = rng.permutation(m)
        q_idx = np.concatenate([(kappa[j] * n + rho[j][r]) * dh + sigma
                                for j in range(K) for r in range(n)])
        o_idx = np.concatenate([(kappa[j] * n + rho[j][r]) * dh + tau[j]
                                for j in range(K) for r in range(n)])
        k_idx = np.concatenate([kappa[j] * dh + sigma for j in range(K)])
        v_idx = np.concatenate([kappa[j] * dh + tau[j] for j in range(K)])
        a = p + "self_attn."
        s[a + "q_proj.weight"] = s[a + "q_proj.weight"][q_idx][:, P]
        s[a + "k_proj.weight"] = s[a + "k_proj.weight"][k_idx][:, P]
        s[a + "v_proj.weight"] = s[a + "v_proj.weight"][v_idx][:, P]
        s[a + "o_proj.weight"] = s[a + "o_proj.weight"][P][:, o_idx]
        for nm in ("gate_proj", "up_proj"):
            s[p + f"mlp.{nm}.weight"] = s[p + f"mlp.{nm}.weight"][mu][:, P]
        s[p + "mlp.down_proj.weight"] = s[p + "mlp.down_proj.weight"][P][:, mu]
        for nm in ("input_layernorm", "post_attention_layernorm"):
            s[p + f"{nm}.weight"] = s[p + f"{nm}.weight"][P]
    return s


def _random_norms(model):
    """RMSNorm weights start at one, which would hide a wrong permutation of them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if type(mod).__name__.endswith("RMSNorm"):
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
    return model


def test_llama_factors_by_hand_on_float64() -> None:
    """GQA (H = 4, K = 2), one layer, float64, RMSNorm weights randomised: a random element of
    d! K! (n!)^K (dh!)^K m! leaves the logits unchanged (to float32 rounding: RMSNorm computes
    in float32 whatever the parameters' dtype, so a permuted sum differs in the last bits);
    adding a joint q/k
    permutation of rotated dims -- two dims of different pairs, or the two members of one pair
    (``i <-> i + dh/2``, which turns R(delta) into R(-delta)) -- changes them."""
    model = _random_norms(_llama(2, layers=1).double())
    x = _ids()
    ref = _logits(model, dict(model.state_dict()), x)
    rng = np.random.default_rng(0)
    for _ in range(3):
        out = _logits(model, _permuted_llama_state(model, rng), x)
        assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)
    for sigma in ([1, 0, 2, 3, 4, 5, 6, 7], [4, 1, 2, 3, 0, 5, 6, 7]):
        out = _logits(model, _permuted_llama_state(model, rng, np.array(sigma)), x)
        assert (out - ref).abs().max() > 1e-3 * ref.abs().max(), sigma


def test_llama_cli_builds_and_audits_from_a_config() -> None:
    cfg = ("vocab_size=50,hidden_size=32,intermediate_size=48,num_hidden_layers=2,"
           "num_attention_heads=4,num_key_value_heads=2,max_position_embeddings=64")
    res = CliRunner().invoke(main, ["audit", "transformers:LlamaForCausalLM", "--config", cfg,
                                    "--input-shape", "1,16:long50"])
    assert res.exit_code == 1, res.output
    assert f"log10 |Aut| = {llama_log10(32, 4, 2, 8, 48, 2):.2f}" in res.output
    assert "unsupported" not in res.output and "lower bound" not in res.output


def test_llama_perm_spec_is_sound_and_frees_the_stream() -> None:
    """The permutation spec (what align / canonicalize use) states the stream (RMSNorm's mean is
    a reduction, not a copy of the stream's units) and MLP groups as free; q/k/v, whose RoPE and
    repeated-head structure no group kind can state, are fixed there (sound, a lower bound --
    the audit counts them exactly).  A random element permutes the real float64 parameters
    without changing the logits (to float32 rounding inside RMSNorm)."""
    from asymspec.audit import lower_module
    from asymspec.ir.permgroups import perm_spec, random_group_perms
    from asymspec.ir.permute import permute_state_dict

    model = _random_norms(_llama(2).double())
    x = _ids()
    ir = lower_module(model, x)
    state = dict(model.state_dict())
    spec = perm_spec(ir, list(state))
    free = {g.name: g.size for g in spec.free_groups if g.size > 1}
    assert free == {"model.embed_tokens": 32, "model.layers.0.mlp.gate_proj": 48,
                    "model.layers.1.mlp.gate_proj": 48}
    perms = random_group_perms(spec, torch.Generator().manual_seed(0))
    moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
    assert not torch.equal(moved["model.norm.weight"], state["model.norm.weight"])
    ref = _logits(model, state, x)
    assert torch.allclose(_logits(model, moved, x), ref, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ partial rotary
def test_phi_partial_rotary_gqa_closed_form() -> None:
    """Phi (``partial_rotary_factor = 0.5``: RoPE on the first r = 4 of dh = 8 dims), d = 32,
    H = 4, K = 2, one layer, MLP 48 (fc1 -> gelu -> fc2), parallel attention / MLP around one
    LayerNorm: log10 |Aut| = log10 d! + log10 K! + K log10 n! + K log10 (dh - r)! +
    K log10 dh! + log10 m!.  By hand: permuting the unrotated dims 4..7 of q and k jointly
    keeps the logits, permuting rotated ones does not."""
    cfg = transformers.PhiConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=48, max_position_embeddings=64,
                                 use_cache=False, partial_rotary_factor=0.5)
    torch.manual_seed(0)
    model = transformers.PhiForCausalLM(cfg).eval()
    report = audit(model, _ids())
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(llama_log10(32, 4, 2, 8, 48, 1, unrotated=4),
                                               abs=1e-6)
    model = model.double()
    x = _ids()
    ref = _logits(model, dict(model.state_dict()), x)
    a = "model.layers.0.self_attn."
    for sigma, same in (([0, 1, 2, 3, 6, 4, 7, 5], True), ([1, 0, 2, 3, 4, 5, 6, 7], False),
                        ([2, 1, 0, 3, 4, 5, 6, 7], False)):
        s = dict(model.state_dict())
        for proj, heads in (("q_proj", 4), ("k_proj", 2)):
            idx = np.concatenate([h * 8 + np.array(sigma) for h in range(heads)])
            for leaf in ("weight", "bias"):
                s[f"{a}{proj}.{leaf}"] = s[f"{a}{proj}.{leaf}"][idx]
        out = _logits(model, s, x)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10) == same, sigma


def test_gptj_interleaved_partial_rotary_closed_form() -> None:
    """GPT-J rotates interleaved pairs ``(2i, 2i + 1)`` of the first ``rotary_dim = 4`` of
    dh = 8 dims (``rotate_every_two``: ``x[..., ::2]``, ``x[..., 1::2]``,
    ``stack((-x2, x1), -1).flatten(-2)``, tables by ``repeat_interleave``); the same derivation
    with pairs ``(2i, 2i + 1)`` instead of ``(i, i + r/2)``.  d = 32, H = 4 (MHA), one layer,
    MLP 48, parallel attention / MLP: log10 d! + log10 H! + H log10 4! + H log10 8! +
    log10 48!."""
    cfg = transformers.GPTJConfig(vocab_size=50, n_embd=32, n_layer=1, n_head=4, rotary_dim=4,
                                  n_positions=64, use_cache=False, n_inner=48, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    report = audit(transformers.GPTJForCausalLM(cfg).eval(), _ids())
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(llama_log10(32, 4, 4, 8, 48, 1, unrotated=4),
                                               abs=1e-6)


# ------------------------------------------------------------------ a hand-written RoPE block
ROPE_NET = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


    class RopeNet(nn.Module):
        """Embedding -> one attention block (RoPE on the first `rot` dims of each head) ->
        residual -> vocabulary head.  fx-traceable (no control flow on values)."""

        def __init__(self, vocab=20, d=16, heads=2, rot=4, base=10000.0, inv_freq=None):
            super().__init__()
            self.h, self.dh, self.rot = heads, d // heads, rot
            self.emb = nn.Embedding(vocab, d)
            self.q = nn.Linear(d, d, bias=False)
            self.k = nn.Linear(d, d, bias=False)
            self.v = nn.Linear(d, d, bias=False)
            self.o = nn.Linear(d, d, bias=False)
            self.out = nn.Linear(d, vocab)
            inv = 1.0 / base ** (torch.arange(0, rot, 2).float() / rot)
            if inv_freq is not None:
                inv = torch.tensor(inv_freq, dtype=torch.float32)
            self.register_buffer("inv_freq", inv, persistent=False)

        def rope(self, x, cos, sin):
            r, p = x[..., :self.rot], x[..., self.rot:]
            return torch.cat((r * cos + rotate_half(r) * sin, p), dim=-1)

        def forward(self, ids):
            x = self.emb(ids)
            b, t, _ = x.shape
            pos = torch.arange(t).float()
            freqs = pos[:, None] * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos()[None, None], emb.sin()[None, None]
            q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
            k = self.k(x).view(b, t, self.h, self.dh).transpose(1, 2)
            v = self.v(x).view(b, t, self.h, self.dh).transpose(1, 2)
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out(x + self.o(a.transpose(1, 2).reshape(b, t, -1)))
''')


@pytest.fixture
def rope_net(tmp_path, monkeypatch):
    src = tmp_path / "ropenet.py"
    src.write_text(ROPE_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import ropenet

    importlib.reload(ropenet)
    return src, ropenet


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_hand_written_partial_rope_closed_form(rope_net, tracer: str) -> None:
    """d = 16, H = 2 heads of dh = 8, RoPE on r = 4 dims: stream d!, heads H!, unrotated q/k
    dims ((dh - r)!)^H, v dims (dh!)^H; the rotated dims are fixed."""
    _, mod = rope_net
    torch.manual_seed(0)
    model = mod.RopeNet().eval()
    x = (torch.randint(0, 20, (1, 8), generator=torch.Generator().manual_seed(0)),)
    report = audit(model, x, tracer=tracer)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(16) + lg(2) + 2 * lg(4) + 2 * lg(8),
                                               abs=1e-6)


def test_equal_rotary_frequencies_let_whole_pairs_trade_places(rope_net) -> None:
    """Two rotated pairs with the *same* frequency (never for ``base^(-2i/r)``, forced here):
    ``R(delta)`` rotates both planes alike, so mapping pair (0, 2) onto pair (1, 3) with its
    orientation kept (0 -> 1, 2 -> 3, jointly in q and k) leaves every score unchanged -- one
    extra factor 2! per head, which the lowering finds from the cos / sin columns alone."""
    _, mod = rope_net
    torch.manual_seed(0)
    x = (torch.randint(0, 20, (1, 8), generator=torch.Generator().manual_seed(0)),)
    distinct = lg(16) + lg(2) + 2 * lg(4) + 2 * lg(8)
    report = audit(mod.RopeNet(inv_freq=[0.7, 0.7]).eval(), x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(distinct + 2 * lg(2), abs=1e-6)


def _inject(monkeypatch, generator: dict) -> None:
    real = audit_pkg.check_ir

    def wrong(ir, expect=None):
        rep = real(ir, expect)
        return dataclasses.replace(rep, generators=[generator] + list(rep.generators))

    monkeypatch.setattr(audit_pkg, "check_ir", wrong)


@pytest.mark.parametrize("dims,ok", [((0, 1), False), ((0, 2), False), ((4, 5), True)],
                         ids=["two-pairs", "pair-members", "unrotated"])
def test_injected_rotated_dim_generator_exits_3(rope_net, monkeypatch, dims, ok: bool) -> None:
    """A generator swapping two dims of head 0 jointly in q and k: rotated dims (of two pairs,
    or the two members of one pair) must fail the numeric check -- exit 3 naming it -- while
    the same move on unrotated dims is a true symmetry and passes."""
    src, _ = rope_net
    perm = np.arange(16)
    perm[[dims[0], dims[1]]] = perm[[dims[1], dims[0]]]
    _inject(monkeypatch, {"q": perm, "k": perm})
    res = CliRunner().invoke(main, ["audit", f"{src}:RopeNet", "--input-shape", "1,8:long20"])
    assert "Traceback" not in res.output
    if ok:
        assert res.exit_code == 1, res.output
    else:
        assert res.exit_code == 3, res.output
        assert "#0" in res.output and "internal error" in res.output


@pytest.mark.parametrize("kv", [2, pytest.param(1, marks=pytest.mark.slow)],
                         ids=["gqa", "mqa"])
def test_eager_attention_closed_form(kv: int) -> None:
    """``attn_implementation="eager"``: ``matmul(q, repeat_kv(k).transpose(2, 3)) * scaling``,
    ``+ causal_mask``, ``softmax(dim=-1)``, ``matmul(weights, repeat_kv(v))`` is lowered to
    the same attention node as SDPA: the same closed form, one layer."""
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=kv, use_cache=False,
                                   attn_implementation="eager")
    torch.manual_seed(0)
    report = audit(transformers.LlamaForCausalLM(cfg).eval(), _ids())
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(llama_log10(32, 4, kv, 8, 48, 1), abs=1e-6)


class _ScoresNet(nn.Module):
    """Attention weights of two heads of 4 dims (no RoPE), returned as the output or reduced
    in a way the lowering does not model."""

    def __init__(self, mode: str = "out"):
        super().__init__()
        self.mode = mode
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 2, 4).transpose(1, 2)
        k = self.k(x).view(b, t, 2, 4).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
        return w if self.mode == "out" else w.sum(-1)


def test_attention_weights_as_output_keep_heads_fixed() -> None:
    """Scores ``softmax(q k^T)`` as the model output: heads are fixed (they index the output),
    the dims of each head permute jointly in q and k: (4!)^2 -- k is never left free.  Reading
    the scores with an op the lowering does not model (a sum over keys) is unsupported and pins
    q and k."""
    x = (torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(0)),)
    report = audit(_ScoresNet().eval(), x)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(2 * lg(4), abs=1e-9)
    report = audit(_ScoresNet("sum").eval(), x)
    assert [u.reason for u in report.unsupported] == ["sum of a packed projection / attention "
                                                      "scores"]
    assert report.verdict == "unknown" and {"q", "k"} <= set(report.unknown_layers)


def test_split_heads_never_leak_as_unpinned_values() -> None:
    """Ops on split heads the lowering does not model (padding head_dim, softmax across heads)
    are listed as unsupported -- never passed on as constants."""

    class Net(nn.Module):
        def __init__(self, mode: str):
            super().__init__()
            self.mode = mode
            self.q = nn.Linear(8, 8)
            self.o = nn.Linear(8, 3)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.q(x).view(b, t, 2, 4).transpose(1, 2)
            if self.mode == "pad":
                h = F.pad(h, (0, 1))[..., :4]
            else:
                h = torch.softmax(h, dim=1)
            return self.o(h.transpose(1, 2).reshape(b, t, 8))

    for mode, why in (("pad", "padding of split attention heads"),
                      ("softmax", "softmax of split heads across the heads axis")):
        report = audit(Net(mode).eval(), (torch.randn(1, 5, 8),))
        assert [u.reason for u in report.unsupported] == [why], mode
        assert "q" in report.unknown_layers  # the split projection is pinned, not ignored


class _Rms(nn.Module):
    """Linear -> RMSNorm (``nn.RMSNorm`` or ``F.rms_norm``) -> ReLU -> Linear: 8 free units."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)
        self.n = nn.RMSNorm(8)

    def forward(self, x):
        h = self.a(x)
        h = F.rms_norm(h, (8,), self.n.weight) if self.functional else self.n(h)
        return self.b(torch.relu(h))


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_torch_rms_norm(functional: bool, tracer: str) -> None:
    """``nn.RMSNorm`` / ``F.rms_norm`` / ``aten.rms_norm``: channel-equivariant, weight permuted
    with the channels: |Aut| = 8!, checked numerically (the weight is randomised by the check)."""
    report = audit(_Rms(functional).eval(), (torch.randn(2, 4),), tracer=tracer)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(8), abs=1e-9)
    (axis,) = report.ir.g.graph["tensor_axes"]["n.weight"]  # permuted with the 8 channels
    assert axis is not None and report.ir.node(axis)["size"] == 8


class _EinsumAttention(nn.Module):
    """Packed q | k | v, two heads of 4 dims, attention written with ``torch.einsum`` in two
    letter orders (heads before or after the tokens); the stream is the model input (fixed)."""

    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout
        self.qkv = nn.Linear(8, 24, bias=False)
        self.o, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.layout == "bhid":
            q, k, v = (z.view(b, t, 2, 4).transpose(1, 2) for z in (q, k, v))
            s = torch.einsum("bhid,bhjd->bhij", q, k) * 0.5
            a = torch.einsum("bhij,bhjd->bhid", s.softmax(-1), v).transpose(1, 2)
        else:
            q, k, v = (z.view(b, t, 2, 4) for z in (q, k, v))
            s = torch.einsum("b i h d, b j h d -> b h i j", q, k)
            a = torch.einsum("b h i j, b j h d -> b i h d", s.softmax(-1), v)
        return self.out(x + self.o(a.reshape(b, t, 8)))


@pytest.mark.parametrize("layout", ["bhid", "bihd"])
@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_einsum_attention_closed_form(layout: str, tracer: str) -> None:
    """``einsum('bhid,bhjd->bhij')`` then ``einsum('bhij,bhjd->bhid')``: the attention node of
    SDPA.  Input stream fixed; heads 2!, joint q/k dims (4!)^2, v dims (4!)^2."""
    x = (torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(0)),)
    report = audit(_EinsumAttention(layout).eval(), x, tracer=tracer)
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(2) + 4 * lg(4), abs=1e-9)


def test_t5_learned_relative_position_bias_ties_the_heads() -> None:
    """T5 encoder (eager): the relative-position bias is an embedding of constant buckets with
    one column per head, added to every layer's scores (computed in layer 0, reused).  A head
    permutation must move those columns, so one head order serves every layer: H! once, not
    per layer.  The stream is the output (fixed).  log10 |Aut| = log10 H! +
    L (2 H log10 dk! + log10 d_ff!), H = 2, dk = 4, d_ff = 24, L = 2."""
    cfg = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                num_heads=2, attn_implementation="eager")
    torch.manual_seed(0)
    report = audit(transformers.T5EncoderModel(cfg).eval(), _ids(n=8))
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(2) + 2 * (4 * lg(4) + lg(24)), abs=1e-6)


class _Alibi(nn.Module):
    """Four heads of 2 dims with ALiBi: scores + slope_h * (j - i), slopes a buffer."""

    def __init__(self, slopes, sdpa: bool = False):
        super().__init__()
        self.sdpa = sdpa
        self.q, self.k, self.v = (nn.Linear(8, 8, bias=False) for _ in range(3))
        self.o = nn.Linear(8, 8)
        self.register_buffer("slopes", torch.tensor(slopes), persistent=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, 4, 2).transpose(1, 2) for f in (self.q, self.k, self.v))
        pos = torch.arange(t).float()
        bias = self.slopes[:, None, None] * (pos[None, :] - pos[:, None])[None]
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) + bias, dim=-1) @ v
        return self.o(a.transpose(1, 2).reshape(b, t, 8))


@pytest.mark.parametrize("sdpa", [False, True], ids=["eager", "sdpa-mask"])
def test_alibi_slopes_colour_the_heads(sdpa: bool) -> None:
    """A constant per-head table added to the scores (or passed as SDPA's ``attn_mask``):
    heads with different slopes are fixed, heads with equal slopes may trade places.  Per head
    (2 dims): q/k 2!, v 2!; heads: none (distinct slopes) or 2! (slopes 0.5, 0.5, 0.25,
    0.125)."""
    x = (torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(0)),)
    per_head = 4 * (lg(2) + lg(2))
    for slopes, heads in (([0.5, 0.25, 0.125, 0.0625], 0.0), ([0.5, 0.5, 0.25, 0.125], lg(2))):
        report = audit(_Alibi(slopes, sdpa).eval(), x)
        assert not report.unsupported and report.verdict == "symmetric"
        assert report.log10_order == pytest.approx(per_head + heads, abs=1e-9), slopes
