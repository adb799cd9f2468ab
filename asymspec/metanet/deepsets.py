"""DeepSets over scalar parameters (Lim et al. 2024, Table 14; Zaheer et al. 2017).

Maths:  every trainable entry θ_i is a set element;
φ(θ_i) = ReLU(LN(w θ_i + b)) ∈ R^h,  y = ρ(mean_i φ(θ_i)),
ρ = [Linear(h→h) → LN → ReLU] × (layers − 1) → Linear(h→1).

Invariant to *any* permutation of the parameter vector, not only neuron permutations — it can
only use the distribution of all weights (``permutation_invariant``).

**Exact fast pooling.**  Evaluated directly, φ costs B·D·h operations (B = 128, D = 78,042,
h = 64: 640 M per batch, and 2.5 GB per stored activation).  But φ is a function of one scalar:
with a = w − mean(w), c = b − mean(b), LayerNorm gives

    z_k(x) = γ_k (a_k x + c_k) r(x) + β_k,   r(x) = (A x² + 2C x + E + ε)^(-1/2),

A = mean(a²), C = mean(a c), E = mean(c²).  So Σ_i ReLU(z_k(θ_i)) = γ_k a_k Σ_{P_k} θ_i r(θ_i)
+ γ_k c_k Σ_{P_k} r(θ_i) + β_k |P_k| over the set P_k where z_k > 0.  z_k changes sign only at
roots of the quadratic (γ_k(a_k x + c_k))² = β_k² (A x² + 2C x + E + ε), so P_k is a union of at
most three intervals; with the parameters sorted once per network, the three sums over an
interval are differences of prefix sums (found by binary search).  Sorting is done once per
network (:meth:`featurize`; ``forward`` sorts rows that are not sorted).  The cost is O(B·D) — no
factor h — and the result is the same function (gradients too: the sums are over fixed sets
almost everywhere); :meth:`forward_direct` is the literal evaluation, kept for tests.

Args:
    layout: the input networks' layout (D = layout.dim).
    hidden (int, default 64): width h.
    layers (int, default 3): number of LN blocks (1 in φ, ``layers - 1`` in ρ).

Shapes:
    input (B, D) -> output (B,).
Parameters: h = 64, 3 layers: 8,897 (Table 14).
"""

from __future__ import annotations

import torch
from torch import nn

from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.registry import register_metanet


def _roots(a2: torch.Tensor, a1: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
    """Real roots of a2 x² + a1 x + a0 (per entry), sorted, +inf where missing: (h, 2)."""
    disc = a1 * a1 - 4 * a2 * a0
    sq = torch.sqrt(torch.clamp(disc, min=0))
    q = -0.5 * (a1 + torch.where(a1 >= 0, sq, -sq))  # numerically stable form
    r1 = torch.where(a2 != 0, q / a2, torch.full_like(q, float("inf")))
    r2 = torch.where(q != 0, a0 / q, torch.full_like(q, float("inf")))
    roots = torch.stack([r1, r2], dim=-1)
    roots = torch.where((disc >= 0).unsqueeze(-1) & torch.isfinite(roots), roots,
                        torch.full_like(roots, float("inf")))
    return roots.sort(dim=-1).values


@register_metanet("deepsets")
class DeepSetsMetanet(nn.Module):
    permutation_invariant = True

    def __init__(self, layout: ParamLayout, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("DeepSets needs layers >= 1")
        self.phi = nn.Sequential(nn.Linear(1, hidden), nn.LayerNorm(hidden), nn.ReLU())
        rho: list[nn.Module] = []
        for _ in range(layers - 1):
            rho += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        self.rho = nn.Sequential(*rho, nn.Linear(hidden, 1))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """mean_i φ(x_i) per row, (B, h), by the exact prefix-sum evaluation."""
        lin, ln = self.phi[0], self.phi[1]
        w, b = lin.weight[:, 0].double(), lin.bias.double()
        gamma, beta = ln.weight.double(), ln.bias.double()
        a, c = w - w.mean(), b - b.mean()
        A, C, E = (a * a).mean(), (a * c).mean(), (c * c).mean() + ln.eps
        if x.shape[1] > 1 and not bool((x[:, 1:] >= x[:, :-1]).all()):
            x = x.sort(dim=1).values
        xs = x.double()  # (B, D), sorted
        r = torch.rsqrt(A * xs * xs + 2 * C * xs + E)
        zero = xs.new_zeros(xs.shape[0], 1)
        p1 = torch.cat([zero, torch.cumsum(xs * r, dim=1)], dim=1)  # (B, D + 1)
        p0 = torch.cat([zero, torch.cumsum(r, dim=1)], dim=1)
        ga, gc = gamma * a, gamma * c
        with torch.no_grad():
            bb = beta * beta
            roots = _roots(ga * ga - bb * A, 2 * (ga * gc - bb * C), gc * gc - bb * E)  # (h, 2)
            inf = torch.full_like(roots[:, :1], float("inf"))
            edges = torch.cat([-inf, roots, inf], dim=1)  # (h, 4): three intervals
            t1, t2 = roots[:, 0], roots[:, 1]
            fin1, fin2 = torch.isfinite(t1), torch.isfinite(t2)
            probes = torch.stack([
                torch.where(fin1, t1 - 1, torch.zeros_like(t1)),
                torch.where(fin2, (t1 + t2) / 2, torch.where(fin1, t1 + 1, torch.zeros_like(t1))),
                torch.where(fin2, t2 + 1, torch.zeros_like(t2))], dim=1)  # (h, 3)
            rp = torch.rsqrt(A * probes * probes + 2 * C * probes + E)
            positive = (gamma[:, None] * (a[:, None] * probes + c[:, None]) * rp +
                        beta[:, None]) > 0  # (h, 3)
            idx = torch.searchsorted(xs.detach().contiguous(),
                                     edges.reshape(1, -1).expand(xs.shape[0], -1).contiguous())
        idx = idx.reshape(xs.shape[0], -1, 4)  # (B, h, 4)

        def interval_sums(prefix: torch.Tensor) -> torch.Tensor:
            g = prefix.gather(1, idx.reshape(xs.shape[0], -1)).reshape(idx.shape)
            parts = g[..., 1:] - g[..., :-1]  # (B, h, 3)
            return (parts * positive).sum(-1)

        count = ((idx[..., 1:] - idx[..., :-1]) * positive).sum(-1).double()
        total = ga * interval_sums(p1) + gc * interval_sums(p0) + beta * count
        return (total / x.shape[1]).to(x.dtype)

    @staticmethod
    def featurize(flat: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
        """Each network's parameters sorted once (the set is unordered; forward needs order)."""
        return flat.sort(dim=1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rho(self.pooled(x)).squeeze(-1)

    def forward_direct(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """The literal evaluation (B·D·h work); same function as :meth:`forward`."""
        total = 0
        for i in range(0, x.shape[1], chunk):
            total = total + self.phi(x[:, i:i + chunk].unsqueeze(-1)).sum(dim=1)
        return self.rho(total / x.shape[1]).squeeze(-1)
