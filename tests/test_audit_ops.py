"""Op table: one row per supported op family -- a tiny module and the order of its symmetry
group, derived by hand in the row's comment.  Every row is also checked numerically by the audit
(each reported generator is applied to the module's parameters), and its IR must lint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit import audit

f = math.factorial


class Pool1d(nn.Sequential):
    """``body`` then average over length and a linear read-out (fixes nothing in ``body``)."""

    def __init__(self, body: list[nn.Module], c: int) -> None:
        super().__init__(*body, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, 2))


class Pool2d(nn.Sequential):
    def __init__(self, body: list[nn.Module], c: int) -> None:
        super().__init__(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2))


class Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.relu(torch.cat([self.a(x), self.b(x)], dim=-1)))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.inner, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + torch.relu(self.inner(h)))


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.v, self.g, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.v(x) * torch.sigmoid(self.g(x)))


class Functional(nn.Module):
    """F.linear / F.layer_norm with parameters held by the module itself."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 3))
        self.ln_w, self.ln_b = nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.randn(4))
        self.w2 = nn.Parameter(torch.randn(2, 4))

    def forward(self, x):
        h = F.layer_norm(F.linear(x, self.w1), (4,), self.ln_w, self.ln_b)
        return F.linear(F.gelu(h), self.w2)


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(5, 4), nn.Linear(4, 2)

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


def vec(*s):
    return torch.randn(*s, generator=torch.Generator().manual_seed(0))


ROWS = [
    # id, module factory, input, |Aut|
    ("linear", lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
     vec(5, 3), f(4)),  # the 4 hidden neurons
    ("conv1d", lambda: Pool1d([nn.Conv1d(2, 3, 3), nn.ReLU()], 3), vec(2, 2, 6), f(3)),
    ("conv2d+batchnorm", lambda: Pool2d([nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()], 3),
     vec(2, 2, 5, 5), f(3)),  # BN follows its channel
    ("maxpool+flatten", lambda: nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.MaxPool2d(2),
                                              nn.Flatten(), nn.Linear(3 * 2 * 2, 2)),
     vec(2, 2, 4, 4), f(3)),  # flatten repeats the channel permutation at each position
    ("depthwise", lambda: Pool2d([nn.Conv2d(2, 4, 1), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU()], 4),
     vec(2, 2, 5, 5), f(4)),  # channel i only reads channel i: both permute together
    ("groupnorm", lambda: Pool2d([nn.Conv2d(2, 4, 1), nn.GroupNorm(2, 4), nn.ReLU()], 4),
     vec(2, 2, 3, 3), f(2) ** 2 * f(2)),  # within each of 2 groups, and the 2 groups
    ("instancenorm", lambda: Pool2d([nn.Conv2d(2, 3, 1), nn.InstanceNorm2d(3), nn.ReLU()], 3),
     vec(2, 2, 3, 3), f(3)),
    ("layernorm+prelu", lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.PReLU(4),
                                              nn.Linear(4, 2)), vec(5, 3), f(4)),
    ("functional", Functional, vec(5, 3), f(4)),  # F.linear / F.layer_norm / F.gelu
    ("concat", Cat, vec(5, 3), f(2) * f(2)),  # each branch; the slots cannot swap
    # the sum ties the inner layer's outputs to the stream: one permutation of 4 units
    ("residual", Residual, vec(5, 3), f(4)),
    ("gating", Gated, vec(5, 3), f(4)),  # v and g permute together
    ("embedding", Tokens, torch.randint(0, 5, (2, 3)), f(4)),  # the embedding dimension
]


@pytest.mark.parametrize("make,x,order", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_op_row(make, x, order) -> None:
    torch.manual_seed(0)
    model = make().eval()
    report = audit(model, x)
    assert not report.unsupported, [str(u) for u in report.unsupported]
    assert report.order == order
    assert report.verdict == ("asymmetric" if order == 1 else "symmetric")
    assert report.numeric is not None and report.numeric.generators == len(report.generators)
    report.ir.lint()
