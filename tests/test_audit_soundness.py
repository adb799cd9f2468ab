"""Soundness of ``asymspec audit``: tied weights, unsupported parametric ops, wrong generators.

A proof tool must never over-claim.  These tests pin the three ways it could: treating two names
of one tensor as independent parameters, dropping the symmetries of a parametric op it does not
understand, and letting a wrong generator through the numeric check.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import asymspec.audit as audit_pkg
from asymspec.audit import AuditError, audit, lower_module, permutation_spec
from asymspec.audit.numeric import check_generators
from asymspec.cli import main
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict

TRACERS = ["fx", "export"]


class TiedLM(nn.Module):
    """Embedding (V x d) -> Linear d->d -> ReLU -> output layer reading the embedding matrix."""

    def __init__(self, vocab: int = 7, d: int = 4, tie: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        if tie:
            self.out.weight = self.emb.weight  # what transformers' tie_weights does

    def forward(self, ids):
        return self.out(torch.relu(self.fc(self.emb(ids))))


def _ids() -> torch.Tensor:
    return torch.randint(0, 7, (2, 3), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tracer", TRACERS)
def test_tied_embedding_head_closed_form(tracer: str) -> None:
    # Untied: the embedding's d columns (P) and fc's d outputs (Q) permute independently:
    # E -> E P^T, fc: Q W P^T, Q b, head: H Q^T  => |Aut| = d! * d! = 576 for d = 4.
    # Tied (head = E): the head reads fc's units through E, so Q = P, leaving d! = 24.
    tied = audit(TiedLM(tie=True).double(), _ids(), tracer=tracer)
    assert tied.verdict == "symmetric" and not tied.unsupported
    assert tied.order == math.factorial(4)
    assert tied.numeric is not None and tied.numeric.generators == len(tied.generators)
    untied = audit(TiedLM(tie=False).double(), _ids(), tracer=tracer)
    assert untied.order == math.factorial(4) ** 2 and not untied.unsupported


def _apply(model: nn.Module, ir, perms: dict) -> dict:
    """Permute the model's unique tensors (a tied tensor once, under its first name)."""
    seen, sd = set(), {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            sd[k] = v.detach()
    return permute_state_dict(ir, sd, perms)


def test_tied_generators_preserve_the_function_by_hand() -> None:
    model = TiedLM(tie=True).double().eval()
    x = _ids()
    report = audit(model, x, numeric=False)
    ref = model(x)
    for gen in report.generators:
        out = torch.func.functional_call(model, _apply(model, report.ir, gen), (x,))
        assert torch.allclose(out, ref, atol=1e-12)
    # the old over-claim: permuting fc's units alone (legal if the head were independent)
    fc_only = {"fc": np.array([1, 0, 2, 3]), "relu": np.array([1, 0, 2, 3])}
    out = torch.func.functional_call(model, _apply(model, report.ir, fc_only), (x,))
    assert not torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("tracer", TRACERS)
def test_conflicting_permutation_of_a_tied_tensor_is_rejected(tracer: str) -> None:
    model = TiedLM(tie=True).eval()
    x = _ids()
    ir = lower_module(model, x, tracer=tracer)
    assert ir.g.graph["tied_keys"] == {"out.weight": "emb.weight"}
    # moves the embedding's columns but not the head's input columns of the same tensor
    p = np.array([1, 0, 2, 3])
    bad = {n: p for n in ir.g if ir.node(n)["size"] == 4 and n not in ("relu", "fc")
           and ir.node(n)["op"] != "pin"}
    assert bad
    with pytest.raises(AuditError, match=r"#0 .*conflicting permutations of the tied tensor"):
        check_generators(model, ir, [bad], (x,))


def test_tied_perm_spec_and_alignment_keep_the_tie() -> None:
    model = TiedLM(tie=True).double().eval()
    x = _ids()
    spec_json = permutation_spec(model, x)
    assert spec_json["tied"] == {"out.weight": "emb.weight"}
    assert spec_json["axes"]["out.weight"] == spec_json["axes"]["emb.weight"]
    free = [g for g in spec_json["groups"] if g["kind"] != "fixed"]
    assert len(free) == 1 and {"emb", "fc"} <= set(free[0]["nodes"])  # one group, not two
    ir = lower_module(model, x)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    spec = perm_spec(ir, list(state))
    for seed in range(3):
        perms = random_group_perms(spec, torch.Generator().manual_seed(seed))
        moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
        assert torch.equal(moved["emb.weight"], moved["out.weight"])  # the tie survives
        other = TiedLM(tie=True).double().eval()
        other.load_state_dict(moved)
        assert other.out.weight is other.emb.weight
        assert torch.allclose(other(x), model(x), atol=1e-12)


def test_module_called_twice_ties_its_uses() -> None:
    # f(x) = out(relu(fc(relu(fc(x))))): a permutation P of fc's units needs P W = P W P^T
    # (the first call reads the unpermuted input), i.e. W = W P^T for all W: P = I.
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))

    report = audit(Twice(), torch.randn(2, 5))
    assert report.verdict == "asymmetric" and not report.unsupported


@pytest.mark.parametrize("fn", ["cumsum", "sum"])
def test_parameter_also_read_outside_its_layer_is_never_a_proof(fn: str) -> None:
    # a.weight also enters a computation outside any layer.  With cumsum the sum depends on
    # the row order (a's units are really fixed); with a plain sum it does not (4! is real).
    # Either way the lowering pins a's units, so it must not claim a proof of asymmetry.
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            w = torch.cumsum(self.a.weight, dim=0) if fn == "cumsum" else self.a.weight
            return self.b(h) + w.sum()

    report = audit(Mixed(), torch.randn(2, 3))
    assert report.verdict == "unknown" and report.order == 1
    assert any(u.target == "a.weight" for u in report.unsupported)


# ------------------------------------------------------------------ unsupported parametric ops
class _Conv3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv3d(2, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.c(x).mean((2, 3, 4)))


class _Einsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(torch.einsum("bi,ij->bj", x, self.w)))


class _Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Bilinear(5, 5, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.b(x, x)))


class _Gather(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(7, 4))
        self.fc = nn.Linear(4, 3)

    def forward(self, ids):
        return self.fc(torch.relu(self.w[ids]))


CASES = [(_Conv3d, lambda: torch.randn(2, 2, 3, 3, 3), "conv3d"),
         (_Einsum, lambda: torch.randn(2, 5), "einsum"),
         (_Bilinear, lambda: torch.randn(2, 5), "bilinear"),
         (_Gather, lambda: torch.randint(0, 7, (2,)), "")]


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("cls,make,target", CASES, ids=[c[2] or "index" for c in CASES])
def test_unsupported_parametric_op_on_the_input_is_unknown(cls, make, target, tracer) -> None:
    # each of these has a real symmetry (swap two of the op's 4 output channels and fc's
    # matching input columns); the old lowering treated the op as input preprocessing and
    # proved ASYMMETRIC
    model = cls().double().eval()
    x = make()
    x = x.double() if x.is_floating_point() else x
    report = audit(model, x, tracer=tracer)
    assert report.verdict == "unknown" and not report.ok
    assert report.unsupported and all(u.reason for u in report.unsupported)
    assert target in " ".join(u.target for u in report.unsupported)
    assert report.to_json()["unsupported"]
    # ... and the symmetry is real
    ref = model(x)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    p = torch.tensor([1, 0, 2, 3])
    fc = sd["fc.weight"]
    sd["fc.weight"] = fc[:, p]
    for k in sd:
        if k != "fc.weight" and not k.startswith("fc.") and sd[k].shape[0] == 4:
            sd[k] = sd[k][p]
        elif k == "w" and sd[k].shape[-1] == 4:
            sd[k] = sd[k][..., p]
    assert torch.allclose(torch.func.functional_call(model, sd, (x,)), ref, atol=1e-12)


def test_unknown_verdict_always_names_its_cause() -> None:
    class NoLayers(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    report = audit(NoLayers(), torch.randn(2, 3))
    assert report.verdict == "unknown"
    assert report.unsupported and report.to_json()["unsupported"]


# ------------------------------------------------------------------ wrong generator -> exit 3
def test_injected_wrong_generator_exits_3(tmp_path, monkeypatch) -> None:
    src = tmp_path / "nets.py"
    src.write_text(textwrap.dedent("""
        from torch import nn

        class Net(nn.Sequential):
            def __init__(self):
                super().__init__(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    """))
    real = audit_pkg.check_ir

    def wrong(ir, expect=None):
        rep = real(ir, expect)
        bogus = {"0": np.array([1, 0, 2, 3])}  # moves layer 0 but not the tanh / next layer
        return dataclasses.replace(rep, generators=[bogus] + list(rep.generators))

    monkeypatch.setattr(audit_pkg, "check_ir", wrong)
    res = CliRunner().invoke(main, ["audit", f"{src}:Net", "--input-shape", "2,3"])
    assert res.exit_code == 3, (res.output, res.stderr if res.stderr_bytes else "")
    assert "#0" in res.output and "internal error" in res.output
    assert "Traceback" not in res.output


def test_tied_model_through_the_cli(tmp_path) -> None:
    src = tmp_path / "tied.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Tied(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(7, 4)
                self.fc = nn.Linear(4, 4)
                self.out = nn.Linear(4, 7, bias=False)
                self.out.weight = self.emb.weight

            def forward(self, ids):
                return self.out(torch.relu(self.fc(self.emb(ids))))
    """))
    res = CliRunner().invoke(main, ["audit", f"{src}:Tied", "--input-shape", "2,3:long7"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "log10 |Aut| = 1.38" in res.output
