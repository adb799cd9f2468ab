"""Graph attention (PyG ``GATConv`` / ``GATv2Conv``) audited exactly, against closed forms.

Derivation (one ``GATConv`` layer, ``H`` heads of ``C`` channels, input ``x``, bias ``b``).
``x' = W x`` viewed as ``(H, C)``; per head ``h`` the logits are
``e_ij,h = LeakyReLU(a_src[h] . x'_j[h] + a_dst[h] . x'_i[h])``, the coefficients
``alpha_ij,h = softmax_j e_ij,h`` over the neighbours of ``i`` (self loops added), and the output
``out_i[h] = sum_j alpha_ij,h x'_j[h]``, then ``concat`` (``H C`` units) or ``mean_h`` (``C``
units), plus ``b``.

* Take a permutation ``pi`` of the heads and, for each head ``h``, a permutation ``tau_h`` of its
  channels; move unit ``(h, c)`` to ``(pi(h), tau_h(c))`` in the rows of ``W``, in ``a_src`` and
  ``a_dst``.  Each logit ``a_src[h] . x'_j[h]`` is a sum over the head's channels, so it is
  unchanged and moves to head ``pi(h)``; so do ``e``, ``alpha`` and ``out[h]`` (each channel of
  ``out[h]`` is a sum of the same channel of ``x'[h]``).
* ``concat=True``: the output's units are the units of ``x'``; moving ``b`` and the next layer's
  input columns alike, the network is unchanged: ``H! (C!)^H`` per hidden layer (none at the
  output layer, whose units are fixed).
* ``concat=False``: ``out = mean_h out[h]`` is symmetric in the heads (``pi`` free), but channel
  ``c`` of every head feeds output channel ``c``: ``tau_h`` must be one ``tau`` for all heads, and
  ``b`` and the next layer's columns move by ``tau``: ``H! C!``, and ``H!`` at the output layer.
* Nothing else: a permutation mixing two heads changes the heads' logits (generic weights), and
  moving ``W``'s rows without ``a_src`` changes the logits -- both checked below.
* ``GATv2Conv``: ``e_ij,h = a[h] . LeakyReLU(x_l,j[h] + x_r,i[h])`` with two projections added
  channel by channel: the same ``(pi, tau_h)`` must move ``W_l``, ``W_r`` (rows and biases) and
  ``a``: the same counts.
* ``edge_dim`` (``GATConv``): ``lin_edge(e)`` enters only through ``a_edge[h] . (W_e e)[h]``,
  added to head ``h``'s logit: its channels permute within each head on their own
  (``(C!)^H`` more, one head order ``pi`` shared with ``x'``).  In ``GATv2Conv`` the edge
  projection is added to ``x_l + x_r`` before the LeakyReLU, so it is tied to them (nothing more).

Every closed form is checked twice: the audit returns it (verdict ``symmetric``, nothing
unsupported), and a random element built here *from the derivation* (not from the audit) is
applied to the real float64 parameters and leaves the outputs unchanged.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit import audit, lower_module, permutation_spec
from asymspec.audit.numeric import AuditError, check_generators
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict

pyg = pytest.importorskip("torch_geometric")
from torch_geometric.nn import GATConv, GATv2Conv  # noqa: E402

warnings.filterwarnings("ignore")

X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
EI = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2], [1, 2, 3, 4, 5, 0, 3, 5]])
EA = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def lg(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


class Net(nn.Module):
    """One hidden graph attention layer (H heads of C channels), ELU, a linear readout."""

    def __init__(self, conv=GATConv, heads: int = 3, ch: int = 4, concat: bool = True,
                 **kw) -> None:
        super().__init__()
        self.conv = conv(3, ch, heads=heads, concat=concat, **kw)
        self.out = nn.Linear(heads * ch if concat else ch, 2)

    def forward(self, x, edge_index, edge_attr=None):
        if edge_attr is None:
            return self.out(F.elu(self.conv(x, edge_index)))
        return self.out(F.elu(self.conv(x, edge_index, edge_attr)))


def _sigma(heads: int, ch: int, gen: torch.Generator, shared: bool) -> np.ndarray:
    """Unit (h, c) -> (pi(h), tau_h(c)) (``shared``: one tau for every head)."""
    pi = torch.randperm(heads, generator=gen).numpy()
    tau = torch.randperm(ch, generator=gen).numpy()
    out = np.empty(heads * ch, dtype=np.int64)
    for h in range(heads):
        t = tau if shared else torch.randperm(ch, generator=gen).numpy()
        out[h * ch + np.arange(ch)] = pi[h] * ch + t
    return out


def _move(t: torch.Tensor, sigma: np.ndarray, dim: int = 0) -> torch.Tensor:
    """``new[sigma[u]] = old[u]`` along ``dim`` (``t`` flattened there if it is (1, H, C))."""
    inv = torch.as_tensor(np.argsort(sigma))
    if t.dim() == 3:  # (1, heads, channels)
        return t.reshape(-1).index_select(0, inv).reshape(t.shape)
    return t.index_select(dim, inv)


def _derived_element(model: Net, seed: int) -> dict[str, torch.Tensor]:
    """A random group element of the derivation above, applied to the float64 state."""
    c = model.conv
    heads, ch, concat = c.heads, c.out_channels, c.concat
    gen = torch.Generator().manual_seed(seed)
    s = _sigma(heads, ch, gen, shared=not concat)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = [k for k in sd if k.startswith("conv.lin") and not k.startswith("conv.lin_edge")]
    for k in rows + [k for k in sd if k in ("conv.att_src", "conv.att_dst", "conv.att")]:
        sd[k] = _move(sd[k], s)
    out_units = s if concat else s[:ch] % ch  # concat=False: tau (the same in every head)
    sd["conv.bias"] = _move(sd["conv.bias"], out_units)
    sd["out.weight"] = _move(sd["out.weight"], out_units, dim=1)
    if getattr(c, "lin_edge", None) is not None and isinstance(c, GATConv):
        pi = s.reshape(heads, ch)[:, 0] // ch  # the same head order, own channel perms
        e = np.concatenate([pi[h] * ch + torch.randperm(ch, generator=gen).numpy()
                            for h in range(heads)])
        sd["conv.lin_edge.weight"] = _move(sd["conv.lin_edge.weight"], e)
        sd["conv.att_edge"] = _move(sd["conv.att_edge"], e)
    elif getattr(c, "lin_edge", None) is not None:
        sd["conv.lin_edge.weight"] = _move(sd["conv.lin_edge.weight"], s)
    return sd


def _inputs(model: Net) -> tuple:
    return (X, EI, EA) if model.conv.edge_dim else (X, EI)


def _same(model: nn.Module, sd: dict, inputs: tuple) -> bool:
    with torch.no_grad():
        ref = model(*inputs)
        out = torch.func.functional_call(model, sd, inputs)
    return bool(torch.allclose(out, ref, atol=1e-10, rtol=1e-10))


CASES = {
    # name: (conv, heads, channels, concat, extra kwargs, log10 |Aut|)
    "gat-concat": (GATConv, 3, 4, True, {}, lg(3) + 3 * lg(4)),
    "gat-mean": (GATConv, 3, 4, False, {}, lg(3) + lg(4)),
    "gatv2-concat": (GATv2Conv, 2, 3, True, {}, lg(2) + 2 * lg(3)),
    "gatv2-mean": (GATv2Conv, 2, 3, False, {}, lg(2) + lg(3)),
    "gat-edge": (GATConv, 2, 3, True, {"edge_dim": 2}, lg(2) + 2 * lg(3) + 2 * lg(3)),
    "gatv2-edge": (GATv2Conv, 2, 3, True, {"edge_dim": 2}, lg(2) + 2 * lg(3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gat_layer_closed_form(case: str) -> None:
    conv, heads, ch, concat, kw, expected = CASES[case]
    torch.manual_seed(0)
    model = Net(conv, heads, ch, concat, **kw).double().eval()
    inputs = _inputs(model)
    for seed in range(3):  # the derivation's elements are symmetries of the real module
        assert _same(model, _derived_element(model, seed), inputs)
    report = audit(model, inputs)
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(expected, abs=1e-9)
    assert report.numeric is not None and report.numeric.generators > 0


def test_gat_model_under_export_closed_form() -> None:
    """``torch_geometric.nn.models.GAT(3, 8, num_layers=2, out_channels=2, heads=2)``: layer 1
    has 2 heads of 4 channels, concatenated (2! (4!)^2); layer 2 is the output layer, 2 heads of
    2 channels averaged (``concat=False``): its heads permute, its channels are the model's
    outputs (2!).  fx cannot trace the model, so it is exported; |Aut| = 2! (4!)^2 2!."""
    from torch_geometric.nn.models import GAT

    torch.manual_seed(0)
    model = GAT(3, 8, 2, out_channels=2, heads=2).double().eval()
    report = audit(model, (X, EI))
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(2 * lg(2) + 2 * lg(4), abs=1e-9)


def test_perm_spec_elements_preserve_outputs_and_att_vectors_move_with_units() -> None:
    """The permutation spec (used by align / canonicalize) of a concat GAT: heads groups whose
    random elements, applied through ``permute_state_dict`` (which moves the (1, H, C) attention
    vectors through their per-unit view), leave the real float64 outputs unchanged.  A mean over
    heads cannot be stated as a group kind: those groups are fixed (never over-claimed)."""
    torch.manual_seed(0)
    model = Net(GATConv, 3, 4, True).double().eval()
    ir = lower_module(model, (X, EI))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    spec = perm_spec(ir, list(state))
    assert any(g.kind == "heads" and g.heads == 3 and g.size == 12 for g in spec.free_groups)
    for seed in range(3):
        perms = random_group_perms(spec, torch.Generator().manual_seed(seed))
        moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
        assert not torch.equal(moved["conv.att_src"], state["conv.att_src"])
        assert _same(model, moved, (X, EI))
    js = permutation_spec(model, (X, EI))
    (entry,) = js["axes"]["conv.att_src"]
    assert entry["groups"] == 12 and entry["flattened"] == entry["grouped"] is not None
    mean = Net(GATConv, 3, 4, False).double().eval()
    spec = perm_spec(lower_module(mean, (X, EI)), list(mean.state_dict()))
    assert not spec.free_groups or all(g.size != 12 for g in spec.free_groups)


def _generator(ir, nodes: list[str], perm: np.ndarray) -> dict[str, np.ndarray]:
    return {n: perm for n in nodes}


def test_wrong_generators_are_rejected_by_the_numeric_check() -> None:
    """Two permutations that are *not* symmetries, injected into the numeric check: swapping a
    channel of head 0 with one of head 1 (mixes the heads' logits), and permuting the channels
    of a head in W (and everything downstream) while the attention vectors stay (the logit
    a . x' no longer matches).  Both must be rejected; the true within-head swap passes."""
    torch.manual_seed(0)
    model = Net(GATConv, 2, 3, True).double().eval()
    ir = lower_module(model, (X, EI))
    group = next(g for g in perm_spec(ir, list(model.state_dict())).free_groups if g.size == 6)
    within = np.array([1, 0, 2, 3, 4, 5])  # channels 0, 1 of head 0
    across = np.array([3, 1, 2, 0, 4, 5])  # channel 0 of head 0 <-> channel 0 of head 1
    ok = check_generators(model, ir, [_generator(ir, group.nodes, within)], (X, EI))
    assert ok.generators == 1
    with pytest.raises(AuditError, match="#0"):
        check_generators(model, ir, [_generator(ir, group.nodes, across)], (X, EI))
    scaled = {n for n in group.nodes if ir.node(n)["attrs"].get("per_unit")}
    assert len(scaled) == 2  # x' * att_src and x' * att_dst
    no_att = [n for n in group.nodes if n not in scaled]
    with pytest.raises(AuditError, match="#0"):
        check_generators(model, ir, [_generator(ir, no_att, within)], (X, EI))
    # and by hand: W's rows moved without a_src changes the real outputs
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["conv.lin.weight"] = _move(sd["conv.lin.weight"], within)
    sd["conv.bias"] = _move(sd["conv.bias"], within)
    sd["out.weight"] = _move(sd["out.weight"], within, dim=1)
    assert not _same(model, sd, (X, EI))
    sd["conv.att_src"] = _move(sd["conv.att_src"], within)
    sd["conv.att_dst"] = _move(sd["conv.att_dst"], within)
    assert _same(model, sd, (X, EI))


def test_unmodelled_use_of_split_heads_stays_unknown() -> None:
    """A per-head max of ``x' * a`` (not a sum) is not modelled: the audit must list it and
    stay a flagged lower bound, never claim the heads' channels."""

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 6)
            self.att = nn.Parameter(torch.randn(1, 2, 3))
            self.out = nn.Linear(2, 2)

        def forward(self, x):
            h = self.lin(x).view(-1, 2, 3)
            return self.out((h * self.att).amax(-1))

    report = audit(Odd(), (torch.randn(5, 3),))
    assert report.unsupported and report.verdict == "unknown"


def test_gat_layer_called_twice_ties_its_units() -> None:
    """One ``GATConv(12, 4, heads=3)`` applied twice (shared weights) after a linear input
    layer.  Its weight is read along (call-1 output, input layer) and (call-2 output, call-1
    output): one tensor, so the input layer's 12 units, the first call's and the second call's
    output units all move by one permutation, which must keep the 3 heads as blocks:
    |Aut| = 3! (4!)^3 -- not (3! (4!)^3)^2 as for two independent layers."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(3, 12)
            self.conv = GATConv(12, 4, heads=3)
            self.out = nn.Linear(12, 2)

        def forward(self, x, edge_index):
            h = F.elu(self.conv(self.inp(x), edge_index))
            return self.out(F.elu(self.conv(h, edge_index)))

    torch.manual_seed(0)
    report = audit(Twice().double().eval(), (X, EI))
    assert not report.unsupported and report.verdict == "symmetric"
    assert report.log10_order == pytest.approx(lg(3) + 3 * lg(4), abs=1e-9)
