"""The model spec's ``init`` option: statistics, determinism, frozen entries, errors, defaults.

The expected digests of the ``default`` init were computed with the emitter of commit c5fec85
(before the option existed) by the same :func:`_digest` — so "default unchanged" is checked
against the old code, not against itself.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner
from scipy import stats

import asymspec
from asymspec.cli import main
from asymspec.errors import SpecError, SpecWarning
from asymspec.nn import AsymConv2d, AsymLinear
from asymspec.spec import load_spec, load_spec_text
from asymspec.zoo import ZooConfig, ZooData, load, train_zoo
from asymspec.zoo.train import TrainSettings
from tests.conftest import REPO, SPECS

SYRE = {"name": "syre_mlp", "seed": 3, "model": {
    "family": "mlp", "input_dim": 12, "widths": [16, 16], "output_dim": 5, "activation": "gelu",
    "norm": "layernorm"}, "asymmetry": {"seed": 3, "syre": {"kappa": 1.0}}}

# sha256 of the state dict (``_digest``) under the old emitter, at init_seed None (the spec's
# seed) and 7.  resnet8_zoo / _sigma / _small now set kaiming_normal: checked with init=default.
OLD_DIGESTS = {
    "resnet8_zoo.yaml": ("6033a4df1c9eb591ee6d96721b3b8f352dbfb7294cb2b053c320b4cb1f424db7",
                         "36d5cc7f8dd184985f0fdfb5a3e82636ca5c6b787d1200647385677d49244505"),
    "resnet8_zoo_sigma.yaml": (
        "e4275d44a95a6ea6521cd97fb445f3876f441f8b1b01e1492963a1658919d580",
        "e028680be22204fa6dc8d02476adf2fef3dd66a326720284c457ba9fa4b626a9"),
    "resnet8_zoo_small.yaml": (
        "28aa4fbafb3e967ff29824e5716d25d31cc25249a70ca4a5a1ef9d41a08210af",
        "142be1581b0de84bb155f25f3cbbf61dafe450a708446d4654c86e06dc83f216"),
    "resnet8_zoo_wasym_ref.yaml": (
        "b23c9483ff4f228aa4364637a88580f8804dc78000a67e41b0c1d9df497c219c",
        "d5bb2dfc09c310bd7aa21310fd04eecd474374f3f19c300f153f835cfc5899b0"),
    "mlp_mnist_wasym.yaml": (
        "3aac1226778472687bf7e93c9cef361ec2506f51ad59a0a8b65eaad666bdd28a",
        "8775be5336e9e32e84258ba1039286cd48cd58eeef6ab93ea03b763093400601"),
    "gnn_sigma.yaml": ("5b8b32cff762a4b8f045f34c832021fa3269b8b406197b81bbf7e326ece58328",
                       "be0b7919d43ece71826a94caf3dfa759dfa701a2af88efd98582fa85a24656ff"),
    "resnet20_fixed_bias.yaml": (
        "6934e899168a1af1de5bfee1ee69180078678e3316dd5be96fd6501079428d58",
        "2d59f94eb97e4fc34f8041db9882e9d0f6ffffd435a047a1ca4ca73617106f60"),
    "syre": ("894e6d4a3ce6a5e988c710be5d8b7e838850477bb3afc1d20a394f55e851f6d8",
             "02b0a11ea882a23ffa4e22efbefb80315742ab4dcb25b74e85eea90f1d4021c3"),
}
KAIMING_ZOO = ("resnet8_zoo.yaml", "resnet8_zoo_sigma.yaml", "resnet8_zoo_small.yaml")


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _dense(model: torch.nn.Module):
    """(name, layer) of every linear / conv layer with a trainable weight."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (AsymLinear, AsymConv2d)) and isinstance(m.weight, torch.nn.Parameter)]


def _trainable(layer) -> torch.Tensor:
    w = layer.weight.detach()
    return w[layer.weight_mask] if layer.weight_mask is not None else w.flatten()


# ------------------------------------------------------------------ default: bit-identical


@pytest.mark.parametrize("name", sorted(OLD_DIGESTS))
def test_default_init_is_bit_identical_to_the_old_emitter(name: str) -> None:
    spec = SYRE if name == "syre" else SPECS / name
    overrides = ["init=default"] if name in KAIMING_ZOO else None
    got = tuple(_digest(asymspec.build(spec, overrides, init_seed=s)) for s in (None, 7))
    assert got == OLD_DIGESTS[name]


def test_default_init_is_dropped_so_hashes_do_not_move() -> None:
    base = "name: t\nmodel: {family: mlp, input_dim: 4, widths: [8], output_dim: 2}\n"
    plain = load_spec_text(base)
    assert "init" not in plain.data
    for extra in ("init: default\n", "init: {weights: default}\n",
                  "init: {weights: default, mode: fan_in, a: 0}\n"):
        spec = load_spec_text(base + extra)
        assert "init" not in spec.data and spec.content_hash() == plain.content_hash(), extra
    short, long = (load_spec_text(base + t) for t in
                   ("init: kaiming_normal\n", "init: {weights: kaiming_normal}\n"))
    assert short.data == long.data and short.content_hash() == long.content_hash()
    assert short.content_hash() != plain.content_hash()
    assert short.data["init"]["mode"] == "fan_in" and short.data["init"]["layers"] == ["*"]
    assert load_spec(short.data).data == short.data  # the resolved spec reloads to itself


# ------------------------------------------------------------------ statistics


def test_zoo_standard_resnet8_is_kaiming_normal_like_the_reference() -> None:
    """std sqrt(2 / fan_in) per layer (within 5 standard errors), zero mean, normal shape."""
    model = asymspec.build(SPECS / "resnet8_zoo.yaml")
    layers = _dense(model)
    assert len(layers) == 10  # 7 3x3 convs, 2 1x1 shortcuts, the head
    z = []
    for name, layer in layers:
        w = _trainable(layer)
        fan_in = layer.weight[0].numel()
        expected = math.sqrt(2.0 / fan_in)
        se = expected / math.sqrt(2 * w.numel())  # standard error of a sample std
        assert abs(float(w.std()) - expected) < 5 * se, (name, float(w.std()), expected)
        z.append(w / expected)
    z = torch.cat(z).double()
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert abs(float(z.std()) - 1) < 5 / math.sqrt(2 * z.numel())
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    # biases are not re-drawn: the head's bias is PyTorch's default U(-1/sqrt(64), 1/sqrt(64)),
    # bit-identical to the default-init build
    default = asymspec.build(SPECS / "resnet8_zoo.yaml", ["init=default"])
    assert torch.equal(model.fc.bias, default.fc.bias)
    assert not torch.equal(model.fc.weight, default.fc.weight)


@pytest.mark.parametrize("name", KAIMING_ZOO[1:])
def test_sigma_and_smaller_zoo_variants_are_kaiming_normal_too(name: str) -> None:
    model = asymspec.build(SPECS / name)
    for lname, layer in _dense(model):
        w = _trainable(layer)
        expected = math.sqrt(2.0 / layer.weight[0].numel())
        assert abs(float(w.std()) - expected) < 5 * expected / math.sqrt(2 * w.numel()), lname


@pytest.mark.parametrize("variant", ["resnet8_zoo_wasym.yaml", "resnet8_zoo_wasym_ref.yaml"])
def test_wasym_zoo_variants_keep_the_default_like_the_reference(variant: str) -> None:
    assert "init" not in load_spec(SPECS / variant).data


@pytest.mark.parametrize(("rule", "torch_init"), [
    ({"weights": "kaiming_normal", "mode": "fan_out"},
     lambda t: torch.nn.init.kaiming_normal_(t, mode="fan_out")),
    ({"weights": "kaiming_uniform", "nonlinearity": "relu"},
     lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="relu")),
    ({"weights": "kaiming_normal", "a": 0.5},
     lambda t: torch.nn.init.kaiming_normal_(t, a=0.5)),
    ({"weights": "kaiming_normal", "nonlinearity": "linear"},  # VU's N(0, 1/d_in)
     lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="linear")),
    ({"weights": "xavier_normal"}, torch.nn.init.xavier_normal_),
    ({"weights": "xavier_uniform", "nonlinearity": "tanh"},
     lambda t: torch.nn.init.xavier_uniform_(t, gain=5 / 3)),
    ({"weights": "normal", "std": 0.05}, lambda t: torch.nn.init.normal_(t, std=0.05)),
])
def test_rules_match_torch_nn_init(rule: dict, torch_init) -> None:
    """Each rule's draws follow the distribution torch.nn.init gives the same weight shape:
    same std (5 standard errors), same support for uniform rules, two-sample KS test."""
    spec = {"name": "c", "model": {"family": "cnn", "channels": [24, 48], "in_channels": 3,
                                   "input_size": 8, "num_classes": 10}, "init": rule}
    model = asymspec.build(spec)
    g = torch.Generator().manual_seed(0)
    for name, layer in _dense(model):
        ours = layer.weight.detach().flatten().double()
        ref = torch.empty_like(layer.weight)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            torch_init(ref)
        ref = ref.flatten().double()
        se = float(ref.std()) / math.sqrt(2 * ref.numel())
        assert abs(float(ours.std()) - float(ref.std())) < 7 * se, name
        if rule["weights"].endswith("uniform"):
            plan = model.ir.g.graph["init"][name]
            assert float(ours.abs().max()) <= plan["scale"]
            assert float(ours.abs().max()) > 0.95 * plan["scale"]
        assert stats.ks_2samp(ours.numpy(), ref.numpy()).pvalue > 1e-4, name


def test_layers_and_overrides_select_rules_per_layer() -> None:
    spec = {"name": "m", "model": {"family": "mlp", "input_dim": 20, "widths": [30, 30],
                                   "output_dim": 4},
            "init": {"weights": "kaiming_normal", "layers": ["fc1", "fc2", "fc3"],
                     "overrides": {"fc3": {"weights": "normal", "std": 0.01},
                                   "fc2": {"weights": "default"}}}}
    model, default = asymspec.build(spec), asymspec.build({**spec, "init": "default"})
    plan = model.ir.g.graph["init"]
    assert sorted(plan) == ["fc1", "fc3"]
    assert plan["fc1"]["scale"] == pytest.approx(math.sqrt(2 / 20))
    assert plan["fc3"] == {"rule": "normal", "dist": "normal", "scale": 0.01, "fan_in": 30,
                           "fan_out": 4}
    assert torch.equal(model.fc2.weight, default.fc2.weight)  # default kept bit-identical
    assert not torch.equal(model.fc1.weight, default.fc1.weight)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(getattr(model, name).bias, getattr(default, name).bias)


# ------------------------------------------------------------------ determinism


def test_same_seed_bit_identical_across_processes() -> None:
    here = _digest(asymspec.build(SPECS / "resnet8_zoo.yaml", init_seed=11))
    code = ("import sys, torch, asymspec\n"
            "from tests.test_init_option import _digest\n"
            "print(_digest(asymspec.build('specs/resnet8_zoo.yaml', init_seed=11)))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                              "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "123"}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == here
    assert _digest(asymspec.build(SPECS / "resnet8_zoo.yaml", init_seed=12)) != here


def test_a_layers_draw_does_not_depend_on_other_layers_rules() -> None:
    spec = {"name": "m", "model": {"family": "mlp", "input_dim": 20, "widths": [30, 30],
                                   "output_dim": 4}, "init": "kaiming_normal"}
    only_fc2 = {**spec, "init": {"weights": "kaiming_normal", "layers": ["fc2"]}}
    assert torch.equal(asymspec.build(spec).fc2.weight, asymspec.build(only_fc2).fc2.weight)


# ------------------------------------------------------------------ frozen entries untouched


def test_wasym_frozen_entries_and_buffers_untouched() -> None:
    spec = SPECS / "resnet8_zoo_wasym_ref.yaml"
    kaiming = asymspec.build(spec, ["init.weights=kaiming_normal"])
    default = asymspec.build(spec)
    sk, sd = kaiming.state_dict(), default.state_dict()
    assert sk.keys() == sd.keys()
    for key in sk:
        if not key.endswith(".weight") or "norm" in key:
            assert torch.equal(sk[key], sd[key]), key  # masks, fixed values, biases, norms
    n_trainable = 0
    for name, layer in _dense(kaiming):
        mask, fixed = layer.weight_mask, layer.weight_fixed
        assert mask is not None and not bool(mask.all()), name
        assert torch.equal(layer.weight.detach()[~mask], fixed[~mask]), name
        assert torch.equal(layer.effective_weight().detach()[~mask],
                           default.get_submodule(name).effective_weight().detach()[~mask])
        w = layer.weight.detach()[mask]
        n_trainable += w.numel()
        expected = math.sqrt(2.0 / layer.weight[0].numel())  # fan counts fixed entries (torch)
        assert abs(float(w.std()) - expected) < 5 * expected / math.sqrt(2 * w.numel()), name
    assert n_trainable == 60_650 - sum(  # every trainable weight entry was drawn
        p.numel() for n, p in kaiming.named_parameters() if not n.endswith("weight")
        or "norm" in n)


def test_sigma_F_and_syre_noise_untouched() -> None:
    sigma = SPECS / "resnet8_zoo_sigma.yaml"
    a, b = asymspec.build(sigma), asymspec.build(sigma, ["init=default"])
    frozen = [n for n, m in a.named_modules() if isinstance(m, AsymConv2d) and m.frozen]
    assert frozen  # FiGLU's F layers: buffers, never re-drawn
    for n in frozen:
        assert torch.equal(a.get_submodule(n).weight, b.get_submodule(n).weight)
    assert all(n not in a.ir.g.graph["init"] for n in frozen)
    syre = {**SYRE, "init": "kaiming_normal"}
    a, b = asymspec.build(syre), asymspec.build(SYRE)
    for n, layer in _dense(a):
        assert torch.equal(layer.weight_offset, b.get_submodule(n).weight_offset)
        assert not torch.equal(layer.weight, b.get_submodule(n).weight)


# ------------------------------------------------------------------ zoo member path


def test_zoo_members_follow_the_rule_and_theta0_rebuilds_bit_identically(tmp_path) -> None:
    tiny = {"name": "tiny_std", "seed": 0, "init": {"weights": "kaiming_normal"}, "model": {
        "family": "resnet", "depth": 8, "base_width": 6, "norm": "layernorm", "in_channels": 1,
        "input_size": 12}}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64 + 32, 1, 12, 12, generator=g)
    y = (x[:, 0, :6].mean((1, 2)) > 0).long()
    data = ZooData.from_tensors(x[:64], y[:64], x[64:], y[64:], num_classes=2)
    config = ZooConfig({"standard": load_spec(tiny)}, 3, 3, seed=3,
                       hparams={"epochs": {"dist": "randint", "low": 2, "high": 2}},
                       settings=TrainSettings(batch_size=32, peak_epoch=1),
                       dataset={"name": "synthetic"})
    train_zoo(tmp_path, config, data)
    zoo = load(tmp_path)
    assert zoo.verify_initial("standard")  # rebuilt θ0 has the hash recorded in training
    theta0 = zoo.initial_state("standard")
    members = zoo.members("standard")
    for i, m in enumerate(members):
        built = asymspec.build(tiny, init_seed=m["init_seed"]).state_dict()
        assert all(torch.equal(theta0[k][i], v) for k, v in built.items())
    w = theta0["layer3.0.conv2.weight"]  # (members, 24, 24, 3, 3)
    expected = math.sqrt(2.0 / w[0, 0].numel())
    assert abs(float(w.std()) - expected) < 5 * expected / math.sqrt(2 * w.numel())
    default = asymspec.build({**tiny, "init": "default"}, init_seed=members[0]["init_seed"])
    assert not torch.equal(theta0["layer3.0.conv2.weight"][0], default.get_submodule(
        "layer3.0.conv2").weight)


# ------------------------------------------------------------------ located errors


BAD = [  # (init block, field path in the message, words of the message)
    ("init: kaiming_fancy", "init", "kaiming_normal"),
    ("init: {weights: kaiming_fancy}", "init.weights", "kaiming_normal"),
    ("init: {weights: kaiming_normal, bogus: 1}", "init.bogus", "bogus"),
    ("init: {weights: normal}", "init.weights", "needs a std"),
    ("init: normal", "init.weights", "needs a std"),  # located at the string
    ("init: {weights: normal, std: -1.0}", "init.std", "0"),
    ("init: {weights: normal, std: .inf}", "init.std", "finite"),
    ("init: {weights: kaiming_normal, std: 0.1}", "init.std", "only by weights: normal"),
    ("init: {weights: xavier_normal, mode: fan_out}", "init.mode", "only by the kaiming"),
    ("init: {weights: normal, std: 0.1, nonlinearity: relu}", "init.nonlinearity", "gain"),
    ("init: {weights: kaiming_normal, nonlinearity: relu, a: 0.2}", "init.a", "leaky_relu"),
    ("init: {weights: kaiming_normal, nonlinearity: swish}", "init.nonlinearity", "relu"),
    ("init: {weights: kaiming_normal, overrides: {fc2: {weights: normal}}}",
     "init.overrides.fc2.weights", "needs a std"),
    ("init: {weights: kaiming_normal, mode: fan_out, overrides: {fc2: {weights: xavier_normal}}}",
     "init.mode", "fc2"),
]
MODEL = "name: t\nmodel: {family: mlp, input_dim: 4, widths: [8], output_dim: 2}\n"


@pytest.mark.parametrize(("block", "field", "words"), BAD)
def test_bad_init_is_a_located_spec_error_exit_2(tmp_path, block: str, field: str,
                                                 words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MODEL + block + "\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    e = err.value
    assert e.file == str(path) and e.line == 3 and e.column is not None, str(e)
    assert f"field '{field}'" in str(e) and words in str(e), str(e)
    res = CliRunner().invoke(main, ["show", str(path)])
    assert res.exit_code == 2 and f"{path}:3:" in res.output and "Traceback" not in res.output


def test_a_bad_per_layer_merge_is_located_at_compile(tmp_path) -> None:
    """Two overrides, each fine with the block, that together give fc2 a std it cannot use."""
    path = tmp_path / "merge.yaml"
    path.write_text(MODEL + "init:\n  weights: kaiming_normal\n  overrides:\n"
                    "    'fc*': {weights: normal, std: 0.1}\n"
                    "    fc2: {weights: kaiming_uniform}\n")
    with pytest.raises(SpecError, match="layer 'fc2': std is used only") as err:
        asymspec.compile_ir(path, draw=False)
    assert err.value.line == 6 and err.value.field_path[:3] == ("init", "overrides", "fc*")
    res = CliRunner().invoke(main, ["show", str(path)])
    assert res.exit_code == 2 and f"{path}:6:" in res.output


def test_bad_set_override_is_located_at_the_override() -> None:
    res = CliRunner().invoke(main, ["show", str(SPECS / "resnet8_zoo.yaml"), "--set",
                                    "init.mode=sideways"])
    assert res.exit_code == 2 and "from override 'init.mode=sideways'" in res.output
    assert "fan_in" in res.output


def test_a_glob_matching_no_layer_warns() -> None:
    spec = {"name": "m", "model": {"family": "mlp", "input_dim": 4, "widths": [8],
                                   "output_dim": 2},
            "init": {"weights": "kaiming_normal", "layers": ["conv*", "fc1"]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ir = asymspec.compile_ir(spec, draw=False)
    assert sorted(ir.g.graph["init"]) == ["fc1"]
    assert any(issubclass(w.category, SpecWarning) and "'conv*'" in str(w.message)
               for w in caught)
