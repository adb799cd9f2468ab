"""``asymspec audit --meta``: full-size configs audited with parameters on the meta device.

What must hold: the meta audit of a config equals the ordinary audit of the same config (same
order, same units per layer); no parameter storage is allocated; the numeric check runs on a
width-reduced twin and the report says which; values that decide symmetries (buffers) are read
for real, and a buffer that has no values on meta is refused, never guessed."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from asymspec.audit import audit
from asymspec.audit.meta import (
    VALUES_NOTE,
    audit_meta,
    build_on_meta,
    config_defaults,
    parameters_on_meta,
    twin_config,
)
from asymspec.cli import main
from asymspec.errors import UserError

transformers = pytest.importorskip("transformers")

GPT2 = dict(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=32)


def _gpt2(cfg: dict) -> nn.Module:
    from asymspec.audit.cli import build_from_config

    return build_from_config("transformers:GPT2LMHeadModel", cfg)


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, 40, (1, 8), generator=torch.Generator().manual_seed(0)),)


def _units(report) -> list[tuple[str, int, int]]:
    return [(r.layer, r.units, r.orbits) for r in report.layers]


def test_meta_build_allocates_no_parameter_storage():
    model = build_on_meta(lambda: _gpt2(GPT2))
    assert all(p.device.type == "meta" for p in model.parameters())
    # buffers are materialised (their values are read by the audit)
    assert all(b.device.type == "cpu" for b in model.buffers())
    # weight tying by assignment keeps tensor identity on meta
    assert model.lm_head.weight is model.transformer.wte.weight
    # the patch is undone after the block
    layer = nn.Linear(3, 2)
    assert layer.weight.device.type == "cpu"


def test_meta_audit_equals_ordinary_audit_gpt2():
    full = audit(_gpt2(GPT2), _tokens(), numeric=False)
    meta = audit_meta(_gpt2, GPT2, _tokens(), numeric=False)
    assert meta.verdict == full.verdict == "symmetric"
    assert not meta.unsupported and not full.unsupported
    assert math.isclose(meta.log10_order, full.log10_order, rel_tol=0, abs_tol=1e-9)
    assert meta.order == full.order
    assert _units(meta) == _units(full)
    assert meta.meta["values_inspected"] is False
    assert VALUES_NOTE in meta.format_text()
    assert "skipped" in meta.format_text()  # numeric=False says no generator was verified


def test_twin_check_runs_and_is_reported():
    cfg = dict(GPT2, n_head=4, n_embd=32)  # the twin: 2 heads of width 8
    report = audit_meta(_gpt2, cfg, _tokens())
    twin = report.meta["twin"]
    assert twin["config"]["n_embd"] == 16 and twin["config"]["n_head"] == 2
    assert twin["verdict"] == "symmetric"
    assert twin["numeric_check"]["generators"] > 0
    # closed form of the twin (GPT-2, d 16, 2 heads, 2 layers, tied head; README):
    # d! [H! (dh!)^(2H) (4d)!]^L
    d, h, dh, L = 16, 2, 8, 2
    closed = (math.lgamma(d + 1) + L * (math.lgamma(h + 1) + 2 * h * math.lgamma(dh + 1)
                                        + math.lgamma(4 * d + 1))) / math.log(10)
    assert math.isclose(twin["log10_order"], closed, abs_tol=1e-6)
    # the full-size model: the same closed form at its widths (d 32, 4 heads of 8)
    d, h = 32, 4
    closed = (math.lgamma(d + 1) + L * (math.lgamma(h + 1) + 2 * h * math.lgamma(dh + 1)
                                        + math.lgamma(4 * d + 1))) / math.log(10)
    assert math.isclose(report.log10_order, closed, abs_tol=1e-6)
    text = report.format_text()
    assert "width-reduced twin (n_layer=2, n_embd=16" in text
    assert "generators checked" in text and "every pair separated" in text


def test_twin_config_llama3_8b_keeps_structure():
    cfg = json.loads(open("specs/audit/llama3_8b.json").read())
    twin, notes = twin_config(cfg)
    assert twin["num_hidden_layers"] == 2
    assert twin["num_key_value_heads"] == 2
    # 4 query heads per key-value head, as in the 8B config (32 / 8)
    assert twin["num_attention_heads"] == 8
    assert twin["head_dim"] == 8 and twin["hidden_size"] == 64
    assert twin["intermediate_size"] == 224  # 14336 / 4096 = 3.5 of the hidden width
    assert twin["vocab_size"] == 96 and twin["bos_token_id"] < 96
    assert twin["rope_theta"] == cfg["rope_theta"]
    assert twin["tie_word_embeddings"] is False
    assert any(n.startswith("hidden_size: 4096 -> 64") for n in notes)
    # an empty config still gets a twin: the class's own default widths are reduced
    defaults = config_defaults(transformers.GPT2LMHeadModel)
    assert defaults["n_embd"] == 768 and "hidden_size" not in defaults  # no aliases
    twin, _ = twin_config(defaults)
    assert twin["n_embd"] == 16 and twin["n_layer"] == 2
    assert config_defaults(nn.Linear) == {}


class _MaskedNet(nn.Module):
    """A W-Asym-like layer: a random frozen pattern held in buffers (seeded generator)."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.fc1 = nn.Linear(4, width)
        self.fc2 = nn.Linear(width, 2)
        self.register_buffer("mask", torch.rand(width, 4, generator=g) > 0.4)
        self.register_buffer("fixed", torch.randn(width, 4, generator=g))

    def forward(self, x):
        w = torch.where(self.mask, self.fc1.weight, self.fixed)
        return self.fc2(torch.relu(nn.functional.linear(x, w, self.fc1.bias)))


class _PrunedNet(_MaskedNet):
    """Its mask is computed from the parameter's *values* at construction: on meta it has none."""

    def __init__(self, width: int = 6) -> None:
        super().__init__(width)
        self.register_buffer("mask", self.fc1.weight.detach().abs() > 0.2)


def test_value_patterns_in_buffers_are_read_on_meta():
    x = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),)
    full = audit(_MaskedNet(), x, numeric=False)
    meta = audit_meta(lambda cfg: _MaskedNet(**cfg), {}, x, numeric=False)
    assert full.verdict == "asymmetric"
    assert meta.verdict == full.verdict and meta.log10_order == full.log10_order
    # without the frozen pattern the hidden layer is S_6: reading the buffers is what matters
    free = audit_meta(lambda cfg: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)),
                      {}, x, numeric=False)
    assert math.isclose(free.log10_order, math.log10(math.factorial(6)))


def test_buffer_computed_from_parameters_is_refused_on_meta():
    with pytest.raises(UserError, match=r"buffer\(s\) mask .* no values on the meta device"):
        build_on_meta(lambda: _PrunedNet())
    # the ordinary audit reads its values
    x = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),)
    assert audit(_PrunedNet(), x, numeric=False).verdict in ("asymmetric", "symmetric")


def test_parameters_on_meta_keeps_parameter_class_and_flags():
    with parameters_on_meta():
        p = nn.Parameter(torch.ones(3), requires_grad=False)
        m = nn.Module()
        m.register_parameter("p", p)
    assert m.p.device.type == "meta" and not m.p.requires_grad
    assert isinstance(m.p, nn.Parameter)


# ------------------------------------------------------------------------------- the CLI
def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_meta_gpt2(tmp_path):
    cfg = tmp_path / "gpt2.json"
    cfg.write_text(json.dumps(dict(GPT2, n_head=4, n_embd=32)))
    res = _cli(["audit", "transformers:GPT2LMHeadModel", "--config-json", str(cfg),
                "--input-shape", "1,8:long40", "--meta", "--json"])
    assert res.exit_code == 1, res.output  # symmetric
    out = json.loads(res.output[res.output.index("{"):])
    assert out["verdict"] == "symmetric"
    assert out["meta"]["values_inspected"] is False
    assert out["meta"]["twin"]["numeric_check"]["generators"] > 0
    assert out["numeric_check"] is None  # no generator was checked on the meta model itself


def test_cli_meta_user_errors(tmp_path):
    # a module instance is already built with its weights
    f = tmp_path / "inst.py"
    f.write_text("from torch import nn\nnet = nn.Linear(3, 2)\n")
    res = _cli(["audit", f"{f}:net", "--input-shape", "1,3", "--meta"])
    assert res.exit_code == 2 and "module instance" in res.output
    # a checkpoint holds weights
    res = _cli(["audit", str(tmp_path / "m.pt"), "--meta", "--input-shape", "1,3"])
    assert res.exit_code == 2 and "checkpoint" in res.output
    # a buffer computed from parameters: refused, exit 2
    f = tmp_path / "pruned.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Pruned(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 4)
                self.register_buffer("keep", self.fc.weight.detach().abs() > 0.1)

            def forward(self, x):
                return nn.functional.linear(x, self.fc.weight * self.keep)
    """))
    res = _cli(["audit", f"{f}:Pruned", "--input-shape", "1,3", "--meta", "--no-numeric"])
    assert res.exit_code == 2 and "no values on the meta device" in res.output
    # inputs the model cannot take are a user error, also without the numeric check (they run
    # through the small twin; meta kernels skip such checks)
    res = _cli(["audit", "transformers:GPT2LMHeadModel", "--config", "n_layer=1,n_embd=32,n_head=4",
                "--input-shape", "1,8", "--meta", "--no-numeric"])
    assert res.exit_code == 2 and "fails on the example inputs" in res.output
    # --twin-config without --meta
    res = _cli(["audit", "transformers:GPT2LMHeadModel", "--config", "n_layer=1",
                "--input-shape", "1,4:long", "--twin-config", "n_embd=8"])
    assert res.exit_code == 2 and "--twin-config" in res.output


def _llama_closed_form(d: int, layers: int, kv: int, per_kv: int, dh: int, mlp: int) -> float:
    """log10 |Aut| of a Llama (RMSNorm, RoPE with distinct frequencies, GQA, SwiGLU, untied head):
    d! [K! (r!)^K (dh!)^K m!]^L.  The residual stream's d channels permute freely (RMSNorm's
    weight moves with them); per layer the K key-value groups permute as wholes, the r query
    heads within a group permute, the value dims of a group permute (v rows and o columns, the
    same for the group's r heads, which share v), and the m SwiGLU units permute (gate and up
    rows, down columns).  Query/key dims within a head: RoPE rotates dim i with dim i + dh/2 at
    its own frequency, so a permutation must map pairs to pairs of the same frequency (all
    distinct: the identity), and swapping inside a pair flips the rotation's sign: none."""
    lg = math.lgamma
    return (lg(d + 1) + layers * (lg(kv + 1) + kv * lg(per_kv + 1) + kv * lg(dh + 1)
                                  + lg(mlp + 1))) / math.log(10)


@pytest.mark.slow
def test_llama3_8b_shaped_meta_audit():
    """The shipped Llama-3-8B-shaped config: neuron level, no parameter memory; the order is the
    closed form at full size, and the twin's (numerically checked) at its widths."""
    from asymspec.audit.cli import build_from_config

    cfg = json.loads(open("specs/audit/llama3_8b.json").read())
    report = audit_meta(lambda c: build_from_config("transformers:LlamaForCausalLM", c), cfg,
                        (torch.randint(0, 128, (1, 16)),))
    assert report.meta["parameters"] == 8_030_261_248  # Llama-3-8B's parameter count
    assert not report.unsupported and report.verdict == "symmetric"
    assert math.isclose(report.log10_order, _llama_closed_form(4096, 32, 8, 4, 128, 14336),
                        abs_tol=1e-6)
    twin = report.meta["twin"]
    assert twin["numeric_check"]["generators"] > 0 and twin["unsupported"] == 0
    assert math.isclose(twin["log10_order"], _llama_closed_form(64, 2, 2, 4, 8, 224),
                        abs_tol=1e-6)
    units = {r.layer: r.units for r in report.layers}
    assert units["model.layers.31.mlp.gate_proj"] == 14336


def test_attention_reading_one_input_three_times_verifies():
    """``attention`` with ``in: [x, x, x]`` adds parallel unit-graph edges (q, k, v slots from
    the same units); they are merged into one edge coloured by the multiset of their colours
    (same automorphisms), so the verifier no longer crashes -- and the order it reports equals
    the audit of the emitted module, whose every generator is checked numerically."""
    import yaml

    from asymspec.check import check_ir
    from asymspec.compiler import build, example_inputs
    from tests.malformed_cases import BASE_SPECS

    model = build(yaml.safe_load(BASE_SPECS["layers_tokens"]))
    checked = check_ir(model.ir)
    x = example_inputs(model.ir, batch=4, seed=0)
    audited = audit(model.double(), tuple(t.double() for t in x))
    assert checked.verdict == audited.verdict == "symmetric" and not audited.unsupported
    assert math.isclose(checked.log10_order, audited.log10_order, abs_tol=1e-9)
    assert audited.numeric.generators == len(audited.generators) > 0


class _WriteInto(nn.Module):
    """``buf[:, :2] = fc(x)``: an in-place write whose result no node reads (torch.export:
    ``aten.copy_`` into a slice of ``buf``).  Swapping fc's two outputs with out's first two
    columns is a symmetry, so ``asymmetric`` would be a false proof."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        buf = x.new_zeros(x.shape[0], 4)
        buf[:, :2] = self.fc(x)
        return self.out(buf)


def test_in_place_write_is_never_dropped_as_dead():
    x = (torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),)
    full = audit(_WriteInto(), x)
    assert full.verdict == "unknown"  # was "asymmetric": the write was skipped as dead code
    assert any("in-place write" in u.reason for u in full.unsupported)
    meta = audit_meta(lambda cfg: _WriteInto(), {}, x, numeric=False)
    assert meta.verdict == "unknown" and meta.unsupported


class _AddInto(nn.Module):
    """``buf.add_(fc(x))`` into zeros made from the input's shape (torch.fx: a ``call_method``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        buf = x.new_zeros(x.shape[0], 4)
        buf.add_(self.fc(x))
        return self.out(buf)


def test_in_place_write_of_meta_values_into_a_real_tensor_is_refused():
    x = (torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),)
    assert audit(_AddInto(), x).verdict == "unknown"
    with pytest.raises(UserError, match="cannot be followed on the meta device"):
        audit_meta(lambda cfg: _AddInto(), {}, x, numeric=False)
