"""``asymspec audit``: any PyTorch module -> IR -> exact symmetry report, checked numerically."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from torch_geometric.nn import GINConv, global_add_pool

import asymspec
from asymspec.audit import AuditError, audit, lower_module, permutation_spec
from asymspec.audit.numeric import check_generators
from asymspec.check import check_ir
from asymspec.cli import main
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict
from tests.conftest import SPECS
from tests.test_compile import _mlp_spec

warnings.filterwarnings("ignore", category=FutureWarning)
tv = pytest.importorskip("torchvision")


def lg(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


# ------------------------------------------------------------------ torchvision, closed forms
def test_resnet18_closed_form_and_perm_spec() -> None:
    torch.manual_seed(0)
    model = tv.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    report = audit(model, x)
    # per stage: one residual stream (the stem belongs to stage 1's) + each block's inner
    # channels; fc reads the last stream through the global pool: no extra factor
    expected = sum(3 * lg(w) for w in (64, 128, 256, 512))
    assert report.verdict == "symmetric" and not report.unsupported
    assert report.log10_order == pytest.approx(expected, abs=1e-6)
    assert report.numeric.generators == len(report.generators) > 0
    assert isinstance(report, asymspec.CheckReport)
    import asymspec.audit as audit_pkg

    assert audit_pkg(nn.Linear(3, 2), torch.randn(1, 3)).verdict == "asymmetric"

    spec = permutation_spec(model, x)
    free = [g for g in spec["groups"] if g["kind"] == "free"]
    assert sorted(g["size"] for g in free) == sorted([64, 128, 256, 512] * 3)
    axes = spec["axes"]
    stream1 = axes["layer1.0.conv1.weight"][1]
    assert axes["conv1.weight"][0] == stream1 == axes["layer1.1.conv2.weight"][0]
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        assert axes[f"layer1.0.bn2.{leaf}"] == [stream1]
        assert axes[f"layer1.0.bn1.{leaf}"] == [axes["layer1.0.conv1.weight"][0]]
    assert axes["layer1.0.bn1.num_batches_tracked"] == []
    assert axes["layer2.0.downsample.0.weight"][0] == axes["layer2.1.conv2.weight"][0]
    assert axes["layer2.0.downsample.0.weight"][1] == stream1
    assert axes["fc.weight"] == [None, axes["layer4.1.conv2.weight"][0]]
    assert axes["layer1.0.conv1.weight"][0] != axes["layer1.1.conv1.weight"][0]


def test_resnet18_perm_spec_preserves_function() -> None:
    torch.manual_seed(1)
    model = tv.models.resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape) + 0.5)
        ref = model(x)
    ir = lower_module(model, x)
    state = model.state_dict()
    spec = perm_spec(ir, list(state))
    perms = random_group_perms(spec, torch.Generator().manual_seed(0))
    moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
    assert not torch.equal(moved["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    model.load_state_dict(moved)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def test_vgg11_closed_form() -> None:
    model = tv.models.vgg11()
    report = audit(model, torch.randn(1, 3, 32, 32))
    convs = [64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(lg(c) for c in convs) + 2 * lg(4096)
    assert report.verdict == "symmetric" and not report.unsupported
    assert report.log10_order == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ transformer, GNN, custom
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_heads(norm_first: bool) -> None:
    torch.manual_seed(0)
    d, heads, ff = 16, 4, 32
    layer = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True, norm_first=norm_first)
    report = audit(layer, torch.randn(2, 5, d))
    dh = d // heads
    # head order x (q/k dims within each head) x (v dims within each head) x feed-forward
    expected = lg(heads) + 2 * heads * lg(dh) + lg(ff)
    assert report.log10_order == pytest.approx(expected, abs=1e-6)
    assert not report.unsupported
    spec = permutation_spec(layer, torch.randn(2, 5, d))
    packed = spec["axes"]["self_attn.in_proj_weight"][0]
    assert isinstance(packed, list) and len(packed) == 3
    assert packed[0] == packed[1] != packed[2]  # q and k share a group, v has its own


def test_transformer_encoder_stack_and_embedding() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(11, 8)
            layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(8, 11)

        def forward(self, ids):
            return self.head(self.enc(self.emb(ids)))

    torch.manual_seed(0)
    ids = torch.randint(0, 11, (2, 6))
    report = audit(LM(), ids)
    assert not report.unsupported
    # the embedding dims form the residual stream: free (its width 8) once per model
    per_layer = lg(2) + 2 * 2 * lg(4) + lg(16)
    assert report.log10_order == pytest.approx(2 * per_layer + lg(8), abs=1e-6)


def test_pyg_gin() -> None:
    class GIN(nn.Module):
        def __init__(self, f: int = 3, h: int = 6, out: int = 2) -> None:
            super().__init__()
            self.c1 = GINConv(nn.Sequential(nn.Linear(f, h), nn.ReLU(), nn.Linear(h, h)))
            self.c2 = GINConv(nn.Sequential(nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
                                            nn.Linear(h, h)), train_eps=True)
            self.head = nn.Linear(h, out)

        def forward(self, x, edge_index, batch):
            x = self.c1(x, edge_index).relu()
            x = self.c2(x, edge_index).relu()
            return self.head(global_add_pool(x, batch))

    torch.manual_seed(0)
    x = torch.randn(7, 3)
    ei = torch.randint(0, 7, (2, 16))
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    report = audit(GIN(), (x, ei, batch))
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.log10_order == pytest.approx(4 * lg(6), abs=1e-6)


def test_pyg_gcn_and_sage() -> None:
    from torch_geometric.nn import GCNConv, SAGEConv

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = GCNConv(3, 5)
            self.b = SAGEConv(5, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x, edge_index):
            return self.out(F.relu(self.b(F.relu(self.a(x, edge_index)), edge_index)))

    torch.manual_seed(0)
    report = audit(Net(), (torch.randn(6, 3), torch.randint(0, 6, (2, 12))))
    assert not report.unsupported
    assert report.log10_order == pytest.approx(lg(5) + lg(4), abs=1e-6)


class _Hand(nn.Module):
    """Functional ops, a concat of two branches and a global mean: |Aut| = 4! 5! 3!."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(4, 3, 1, stride=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.c1(x))
        y = torch.cat([torch.tanh(self.c2(h)), self.c3(h).sigmoid()], dim=1)
        return self.fc(y.mean(dim=(2, 3)))


def test_hand_written_module_known_order() -> None:
    torch.manual_seed(0)
    report = audit(_Hand(), torch.randn(2, 3, 8, 8))
    assert not report.unsupported
    assert report.order == math.factorial(4) * math.factorial(5) * math.factorial(3)


def test_depthwise_and_flatten_view() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pw = nn.Conv2d(3, 4, 1)
            self.dw = nn.Conv2d(4, 8, 3, padding=1, groups=4)  # channel multiplier 2
            self.fc = nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            h = self.dw(F.relu6(self.pw(x)))
            return self.fc(h.view(h.size(0), -1))

    torch.manual_seed(0)
    report = audit(Net(), torch.randn(2, 3, 4, 4))
    assert not report.unsupported
    # pw's 4 channels permute with their depthwise pairs; each pair's two outputs can swap
    assert report.order == math.factorial(4) * 2 ** 4


def test_grouped_conv_order_and_perm_spec() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pw = nn.Conv2d(3, 4, 1)
            self.g = nn.Conv2d(4, 6, 3, padding=1, groups=2)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(F.relu(self.g(F.relu(self.pw(x)))).mean((2, 3)))

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    report = audit(Net(), x)
    assert not report.unsupported
    # one permutation of the 2 groups, shared by both sides; free within each group
    assert report.order == 2 * math.factorial(2) ** 2 * math.factorial(3) ** 2
    assert report.numeric.generators == len(report.generators)
    axes = permutation_spec(Net(), x)["axes"]
    assert axes["g.weight"][1]["groups"] == 2


def test_masked_grouped_conv_is_unknown_not_asymmetric() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 2, 3, 3))
            self.register_buffer("mask", (torch.rand(4, 2, 3, 3) > 0.3).float())

        def forward(self, x):
            return F.conv2d(x, self.weight * self.mask, None, 1, 0, 1, 2)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), Masked(), nn.Flatten(), nn.Linear(36, 2))
    report = audit(net, torch.randn(1, 3, 5, 5))
    assert report.verdict == "unknown"
    assert any("grouped convolution" in u.reason for u in report.unsupported)


# ------------------------------------------------------------------ asymspec's own models
def test_emitted_wasym_model_agrees_with_check() -> None:
    spec = _mlp_spec({"w_asym": {"nfix": 3, "kappa": 1.0}}, norm="layernorm")
    model = asymspec.build(spec)
    inputs = asymspec.example_inputs(model.ir, batch=3)
    report = audit(model, inputs)
    assert check_ir(model.ir).order == 1
    assert report.verdict == "asymmetric" and report.order == 1 and report.ok


@pytest.mark.parametrize("spec", [_mlp_spec(norm="batchnorm"), SPECS / "resnet20.yaml",
                                  SPECS / "transformer_small.yaml", SPECS / "gnn.yaml"])
def test_emitted_standard_models_same_order_as_check(spec) -> None:
    model = asymspec.build(spec)
    inputs = asymspec.example_inputs(model.ir, batch=6, num_edges=20)
    report = audit(model, inputs)
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.log10_order == pytest.approx(check_ir(model.ir).log10_order, abs=1e-6)


@pytest.mark.parametrize("name", ["resnet20_wasym", "gnn_wasym", "transformer_small_wasym",
                                  "resnet20_sigma"])
def test_shipped_asymmetric_specs_audit_as_asymmetric(name: str) -> None:
    model = asymspec.build(SPECS / f"{name}.yaml")
    report = audit(model, asymspec.example_inputs(model.ir, batch=6, num_edges=20))
    assert report.verdict == "asymmetric" and not report.unsupported


def test_emitted_sigma_and_syre_models() -> None:
    for asym in ({"sigma_asym": {"f_std": 1.0}}, {"syre": {"kappa": 0.5}},
                 {"fixed_bias": {"k": 1.0}}):
        model = asymspec.build(_mlp_spec(asym))
        report = audit(model, asymspec.example_inputs(model.ir, batch=2))
        assert report.order == check_ir(model.ir).order, asym
        assert not report.unsupported


# ------------------------------------------------------------------ other people's masked layers
class _TheirMaskedLinear(nn.Module):
    """Someone else's W-Asym: W * M + (1 - M) * F with a float 0/1 mask buffer."""

    def __init__(self, n_in: int, n_out: int, nfix: int, gen: torch.Generator,
                 style: str = "arith") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=gen) * 0.3)
        self.bias = nn.Parameter(torch.zeros(n_out))
        mask = torch.ones(n_out, n_in)
        for r in range(n_out):
            mask[r, torch.randperm(n_in, generator=gen)[:nfix]] = 0
        self.register_buffer("mask", mask)
        self.register_buffer("fixed", torch.randn(n_out, n_in, generator=gen))
        self.style = style

    def forward(self, x):
        if self.style == "arith":
            w = self.weight * self.mask + (1 - self.mask) * self.fixed
        elif self.style == "where":
            w = torch.where(self.mask.bool(), self.weight, self.fixed)
        else:  # noise on top of a plain weight (syre-like)
            w = self.weight + self.fixed
        return F.linear(x, w, self.bias)


def _their_mlp(style: str, nfix: int = 3) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    return nn.Sequential(_TheirMaskedLinear(8, 10, nfix, g, style), nn.ReLU(),
                         _TheirMaskedLinear(10, 10, nfix, g, style), nn.GELU(),
                         _TheirMaskedLinear(10, 3, nfix, g, style))


@pytest.mark.parametrize("style", ["arith", "where", "noise"])
def test_foreign_masked_layers_audit_as_asymmetric(style: str) -> None:
    report = audit(_their_mlp(style), torch.randn(4, 8))
    assert report.verdict == "asymmetric" and not report.unsupported


def test_foreign_masked_layers_without_frozen_entries_are_symmetric() -> None:
    report = audit(_their_mlp("arith", nfix=0), torch.randn(4, 8))
    assert report.log10_order == pytest.approx(2 * lg(10), abs=1e-6)


def test_masked_lowering_records_frozen_entries() -> None:
    model = _their_mlp("arith")
    ir = lower_module(model, torch.randn(2, 8))
    assert not any(k.startswith("_tensor_constant") for k in vars(model))
    e = [d for _, _, d in ir.dense_edges()][0]
    assert e["mask"] is not None and int((~e["mask"]).sum()) == 30
    assert ir.g.graph["tensor_axes"]["0.mask"] == ir.g.graph["tensor_axes"]["0.weight"]
    assert "0.mask" in ir.g.graph["constant_keys"]


# ------------------------------------------------------------------ unsupported ops, soundness
class _Weird(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.cumsum(h, dim=1)  # not channel-equivariant: not understood
        return self.c(torch.relu(self.b(h)))


def test_unsupported_op_gives_unknown_with_location() -> None:
    class OnlyWeird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.c = nn.Linear(6, 2)

        def forward(self, x):
            return self.c(torch.cumsum(torch.relu(self.a(x)), dim=1))

    report = audit(OnlyWeird(), torch.randn(3, 4))
    assert report.verdict == "unknown" and not report.ok
    (u,) = report.unsupported
    assert u.target == "torch.cumsum" and u.fx_node == "cumsum"
    assert "cumsum" in report.format_text() and "UNKNOWN" in report.format_text()
    assert report.to_json()["unsupported"][0]["target"] == "torch.cumsum"
    assert "relu" in report.unknown_layers
    rows = {r["layer"]: r for r in report.to_json()["layers"]}
    assert rows["relu"]["unknown"] and not rows["c"]["unknown"]


def test_unsupported_op_keeps_real_symmetries_elsewhere() -> None:
    report = audit(_Weird(), torch.randn(3, 4))
    assert report.verdict == "symmetric" and report.unsupported
    assert report.order == math.factorial(6)  # b's units; a's are pinned by cumsum
    assert report.to_json()["order_is_lower_bound"]


def test_untraceable_submodule_becomes_unknown() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.br = Branchy()
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.br(self.a(x)))

    report = audit(Net(), torch.randn(2, 3))
    assert report.verdict == "unknown"
    assert report.unsupported[0].module == "br"


def test_module_called_twice_is_tied_not_pinned() -> None:
    # the two calls' uses of fc.weight are tied in the IR (see test_audit_soundness.py): a
    # permutation P of fc's units would need W = W P^T for every W, so there is none
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))

    report = audit(Tied(), torch.randn(2, 5))
    assert report.verdict == "asymmetric" and not report.unsupported


def test_wrong_generator_fails_loudly() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(5, 3)
    ir = lower_module(model, x)
    bogus = {"0": np.array([1, 0, 2, 3])}  # moves the linear's units but not the BN's
    with pytest.raises(AuditError, match="bug"):
        check_generators(model, ir, [bogus], (x,))
    good = {n: np.array([1, 0, 2, 3]) for n in ("0", "1", "2")}
    assert check_generators(model, ir, [good], (x,)).forward_passes == 2


# ------------------------------------------------------------------ CLI
def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_audit_torchvision_and_file(tmp_path) -> None:
    res = run("audit", "torchvision.models:resnet18", "--input-shape", "1,3,32,32")
    assert res.exit_code == 1, res.output
    assert "log10 |Aut| = 5934.49" in res.output
    src = tmp_path / "models.py"
    src.write_text("import torch\nfrom torch import nn\n\n"
                   "class Net(nn.Module):\n"
                   "    def __init__(self):\n"
                   "        super().__init__()\n"
                   "        self.a = nn.Linear(784, 16)\n"
                   "        self.b = nn.Linear(16, 10)\n\n"
                   "    def forward(self, x):\n"
                   "        return self.b(torch.relu(self.a(x)))\n")
    res = run("audit", f"{src}:Net", "--input-shape", "8,784", "--json")
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    assert out["verdict"] == "symmetric"
    assert out["log10_order"] == pytest.approx(lg(16))
    assert out["numeric_check"]["generators"] == out["num_generators"]


def test_cli_audit_checkpoint_agrees_with_check(tmp_path) -> None:
    ck = tmp_path / "m.pt"
    assert run("compile", str(SPECS / "mlp_mnist_wasym.yaml"), "-o", str(ck)).exit_code == 0
    res = run("audit", str(ck), "--spec", str(SPECS / "mlp_mnist_wasym.yaml"))
    assert res.exit_code == 0, res.output
    assert "ASYMMETRIC" in res.output
    res = run("audit", str(ck))  # the spec stored in the checkpoint
    assert res.exit_code == 0


def test_cli_perm_spec_and_errors(tmp_path) -> None:
    out = tmp_path / "vgg.json"
    res = run("perm-spec", "torchvision.models:vgg11", "--input-shape", "1,3,32,32",
              "-o", str(out))
    assert res.exit_code == 0, res.output
    spec = json.loads(out.read_text())
    assert spec["format"] == "asymspec-permspec/1"
    assert spec["axes"]["features.0.weight"][0] == spec["axes"]["features.3.weight"][1]
    assert spec["axes"]["classifier.0.weight"][1] == {"derived": "flatten"}
    for args in (["audit", "torchvision.models:nope", "--input-shape", "1,3,8,8"],
                 ["audit", "nonexistent_pkg_xyz:Net", "--input-shape", "1,3"],
                 ["audit", "torchvision.models:resnet18"],
                 ["audit", "torchvision.models:resnet18", "--input-shape", "1,x"],
                 ["audit", "torchvision.models:resnet18", "--input-shape", "1,5,8,8"],
                 ["audit", str(tmp_path / "missing.pt")]):
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ every torchvision model
# the smallest input each family takes (its architecture unchanged): ViTs are built for a 32 px
# image (28 for patch 14: a 2 x 2 patch grid plus the class token -- image_size only sizes the
# position embedding), MaxViT's 7 x 7 partitions need 224, Inception-v3 needs >= 75
TV_SIZE = {"vit_h_14": 28, "vit": 32, "maxvit": 224, "inception": 96}
TV_NOT_UNDERSTOOD = {"maxvit_t"}  # einsum relative attention: a flagged lower bound


@pytest.mark.slow
def test_every_torchvision_classifier_audits_without_crashing() -> None:
    """Every torchvision classifier is lowered, verified and its every generator checked
    numerically on the real module (the audit's own check, composites bisected on failure);
    each is fully understood except those listed in TV_NOT_UNDERSTOOD (whose unknown verdict
    must name its cause).  Measured: 12 min 56 s wall on the shared 2-core machine (it got 45 %
    of a core: 6 min 2 s CPU), 10 GB peak RSS; slowest regnet_y_128gf (131 s), vit_h_14."""
    import time

    names = tv.models.list_models(module=tv.models)
    partial, slowest = [], []
    for name in names:
        size = next((s for p, s in TV_SIZE.items() if name.startswith(p)), 64)
        kw = {"image_size": size} if name.startswith("vit") else {}
        t0 = time.perf_counter()
        model = tv.models.get_model(name, weights=None, **kw)
        report = audit(model, torch.randn(1, 3, size, size))
        slowest.append((time.perf_counter() - t0, name))
        assert report.verdict in ("symmetric", "unknown"), name
        assert report.verdict == "symmetric" or report.unsupported, name  # unknown names why
        assert report.numeric is not None and report.numeric.generators == len(
            report.generators), name
        if report.unsupported:
            partial.append(name)
        del model, report
    slowest.sort(reverse=True)
    print(f"{len(names) - len(partial)} of {len(names)} fully understood; lower bounds: "
          f"{', '.join(partial)}; slowest: "
          f"{', '.join(f'{n} {t:.0f} s' for t, n in slowest[:5])}")
    assert set(partial) <= TV_NOT_UNDERSTOOD, partial


def test_channel_shuffle_split_heads_and_sdpa() -> None:
    class Net(nn.Module):
        """ShuffleNet-style channel shuffle, then hand-written multi-head attention via SDPA."""

        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv1d(3, 6, 1)
            self.q = nn.Linear(6, 6)
            self.k = nn.Linear(6, 6)
            self.v = nn.Linear(6, 6)
            self.o = nn.Linear(6, 2)

        def forward(self, x):
            h = self.inp(x)  # (B, 6, T)
            b, c, t = h.shape
            h = h.view(b, 2, c // 2, t).transpose(1, 2).reshape(b, c, t)  # channel shuffle
            h = h.transpose(1, 2)  # (B, T, 6)

            def split(z):
                return z.view(b, t, 2, 3).transpose(1, 2)

            a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)),
                                               split(self.v(h)))
            a = a.transpose(1, 2).reshape(b, t, c)
            return self.o(torch.roll(a, 1, dims=1))

    torch.manual_seed(0)
    report = audit(Net(), torch.randn(2, 3, 5))
    assert not report.unsupported, [str(u) for u in report.unsupported]
    # inp: 6! (the shuffle is a fixed relabelling); heads 2! x (3!)^2 q/k x (3!)^2 v
    assert report.order == math.factorial(6) * 2 * 6 ** 4


def test_matmul_weight_instance_norm_and_integer_inputs_cli(tmp_path) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 5))  # stored (in, out): used as x @ w
            self.conv = nn.Conv1d(5, 4, 1)
            self.norm = nn.InstanceNorm1d(4, affine=True)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(x @ self.w)  # (B, T, 5)
            h = self.norm(self.conv(h.transpose(1, 2)))
            return self.out(h.mean(-1))

    report = audit(Net(), torch.randn(2, 6, 3))
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.order == math.factorial(5) * math.factorial(4)
    src = tmp_path / "gnn.py"
    src.write_text("from torch import nn\nfrom torch_geometric.nn import GINConv\n\n"
                   "class GIN(nn.Module):\n"
                   "    def __init__(self):\n"
                   "        super().__init__()\n"
                   "        self.c = GINConv(nn.Sequential(nn.Linear(3, 8), nn.ReLU(),"
                   " nn.Linear(8, 8)))\n"
                   "        self.out = nn.Linear(8, 2)\n\n"
                   "    def forward(self, x, edge_index):\n"
                   "        return self.out(self.c(x, edge_index).relu())\n")
    res = run("audit", f"{src}:GIN", "--input-shape", "7,3", "--input-shape", "2,16:long7",
              "--json")
    assert res.exit_code == 1, res.output
    assert json.loads(res.output)["log10_order"] == pytest.approx(2 * lg(8))


def test_hooked_modules_and_channel_masks_are_unknown() -> None:
    import torch.nn.utils as nn_utils

    hooked = nn.Sequential(nn_utils.weight_norm(nn.Linear(3, 5)), nn.ReLU(), nn.Linear(5, 2))
    report = audit(hooked, torch.randn(2, 3))
    assert report.verdict == "unknown" and "hooks" in report.unsupported[0].reason

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)[x[:, :3] > 0]  # a boolean mask over (batch, channel)

    report = audit(Masked(), torch.randn(2, 4))
    assert report.verdict == "unknown"
    assert report.unsupported[0].target == "operator.getitem"


# ------------------------------------------------------------------ torch.export fallback
class _ResMLP(nn.Module):
    """h = relu(fc1(x)); head(h + fc3(relu(fc2(h)))): |Aut| = 8! (stream) * 7! (fc2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 7)
        self.fc3 = nn.Linear(7, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.head(h + self.fc3(F.relu(self.fc2(h))))


class _ShapeBranchResMLP(_ResMLP):
    """The same function, written with Python control flow on shapes (torch.fx cannot trace)."""

    def forward(self, x):
        h = F.relu(self.fc1(x.view(len(x), -1)))
        if x.shape[-1] > 4:
            h = h + self.fc3(F.relu(self.fc2(h)))
        else:
            h = self.fc3(self.fc2(h))
        for _ in range(x.size(0) - x.size(0)):  # zero iterations, shape-dependent
            h = h * 2
        return self.head(h)


def test_shape_control_flow_falls_back_to_export() -> None:
    torch.manual_seed(0)
    model, ref = _ShapeBranchResMLP(), _ResMLP()
    x = torch.randn(4, 6)
    fx_only = audit(model, x, tracer="fx")
    assert fx_only.verdict == "unknown" and fx_only.unsupported[0].fx_node == "<root>"
    report = audit(model, x)  # auto: torch.fx fails on the root, torch.export takes over
    expected = audit(ref, x)
    assert report.verdict == expected.verdict == "symmetric" and not report.unsupported
    assert report.log10_order == pytest.approx(expected.log10_order, abs=1e-9)
    assert report.log10_order == pytest.approx(lg(8) + lg(7), abs=1e-6)
    assert report.numeric.generators == len(report.generators) > 0
    # the IR's tensor names are the module's state_dict keys
    axes = report.ir.g.graph["tensor_axes"]
    assert set(axes) == set(model.state_dict())
    ref_axes = expected.ir.g.graph["tensor_axes"]
    assert axes["fc1.weight"][0] == ref_axes["fc1.weight"][0] == "fc1"
    # (fc1 reads x.view(...) instead of x: only that input node's name differs)
    assert {k: v for k, v in axes.items() if k != "fc1.weight"} == \
        {k: v for k, v in ref_axes.items() if k != "fc1.weight"}


class _ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(5)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.pool(torch.relu(self.bn(self.conv(x))))
        h = F.gelu(self.bn2(self.conv2(h)))
        h = torch.flatten(self.gap(h), 1)
        return self.head(torch.tanh(self.ln(self.fc(h))))


def test_conv_bn_pool_linear_export_matches_fx() -> None:
    torch.manual_seed(0)
    model = _ConvBN()
    for bn in (model.bn, model.bn2):  # non-trivial running statistics: eval mode must use them
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    model.train()
    x = torch.randn(2, 3, 8, 8)
    a = audit(model, x, tracer="fx")
    b = audit(model, x, tracer="export")
    assert model.training  # the audit restores the mode
    assert a.verdict == b.verdict == "symmetric" and not a.unsupported and not b.unsupported
    assert b.log10_order == pytest.approx(a.log10_order, abs=1e-9)
    assert b.order == math.factorial(6) * math.factorial(5) * math.factorial(4)
    assert b.numeric.generators == len(b.generators) > 0
    assert a.ir.g.graph["tensor_axes"] == b.ir.g.graph["tensor_axes"]
    assert sorted(a.ir.g.nodes) == sorted(b.ir.g.nodes)  # leaf modules keep their names
    assert permutation_spec(model, x, tracer="export")["axes"] == permutation_spec(model, x)["axes"]


@pytest.mark.parametrize("style", ["arith", "where", "noise"])
def test_masked_layers_through_export_never_falsely_asymmetric(style: str) -> None:
    x = torch.randn(4, 8)
    report = audit(_their_mlp(style), x, tracer="export")
    assert report.verdict in ("asymmetric", "unknown")
    if report.verdict == "asymmetric":
        assert not report.unsupported
    # the same layers without frozen entries: symmetric, each generator verified numerically
    free = audit(_their_mlp(style, nfix=0), x, tracer="export")
    if style != "noise":
        assert free.log10_order == pytest.approx(2 * lg(10), abs=1e-6)
    assert free.numeric.generators == len(free.generators)


def test_export_fallback_unsupported_and_untraceable() -> None:
    class Cum(_ShapeBranchResMLP):
        def forward(self, x):
            h = F.relu(self.fc1(x))
            if x.shape[-1] > 4:
                h = torch.cumsum(h, dim=1)  # mixes channels: no handler
            return self.fc3(F.relu(self.fc2(h)))

    report = audit(Cum(), torch.randn(3, 6))
    assert report.unsupported[0].target == "aten.cumsum.default"
    assert report.unsupported[0].module == ""
    assert report.verdict == "symmetric" and report.order == math.factorial(7)  # fc2's units
    assert report.numeric.generators == len(report.generators)

    class DataDependent(_ResMLP):
        def forward(self, x):
            h = self.fc1(x)
            return self.head(h) if h.sum() > 0 else self.head(-h)

    report = audit(DataDependent(), torch.randn(3, 6))
    assert report.verdict == "unknown"
    assert "torch.fx" in report.unsupported[0].reason
    assert "torch.export" in report.unsupported[0].reason
    with pytest.raises(ValueError):
        lower_module(_ResMLP(), torch.randn(2, 6), tracer="jit")
