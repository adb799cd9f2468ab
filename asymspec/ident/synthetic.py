"""The synthetic coherence experiment (Bürgin et al. 2026, rebuttal; reference
``configs/synthetic_coherence.yaml``, ``src/data/synthetic.py``).

Claim under test: merging two independently trained sparse ("W-Asym with zero fixed values")
networks without alignment works when the data subspace has *low coherence* and fails when the
data sit on few input coordinates.

* Model: ``f(x) = Σ_n ReLU((W ⊙ M)_n · x + b_n)`` — width 128, no output weights; mask
  ``M ~ Bernoulli(0.15)`` of shape 128 × 20, fixed per outer seed ``s`` (seed ``10000 + s``),
  masked entries zero; ``W ~ N(0, 0.05²)``, ``b = 0`` at init, both trained.
* Data: ``z ~ N(0, I₂)`` (seed ``20000 + s``; 1024 train, 2048 test), ``y = ReLU(z₁ + z₂)``,
  ``x = z Bᵀ ∈ ℝ²⁰`` with ``B`` (20 × 2, orthonormal columns) made of ``c`` active copies of
  the plane, each scaled ``1/√c``:

  - ``exact_copy``: copy ``i`` writes ``(z₁, z₂)/√c`` into coordinates ``(2i, 2i+1)``;
  - ``random_tight_frame``: a random coordinate permutation (seed ``30000 + s``) places copy
    ``i``, rotated by ``θ_i ~ U(0, π)``, on two coordinates.

  Every coordinate of an active copy has leverage ``1/c``, so the coherence of the data
  subspace is exactly ``1/c`` for both constructions.
* Training: AdamW (lr 1e-2, weight decay 1e-2 on ``W``, 0 on ``b``), batch 512, 100 epochs,
  MSE.  Pair ``p`` of outer seed ``s`` uses seeds ``40000 + 1000 s + 2p`` and ``+1`` (init and
  data order); 10 pairs, outer seeds 0–4.
* Interpolation of ``(W, b)`` at 21 points, test MSE; ``midpoint barrier = L(½) − max(L(0),
  L(1))``, ``peak barrier = max_λ L(λ) − max(L(0), L(1))``.

The pairs of one (construction, c, outer seed) train together as one batched tensor: AdamW is
elementwise, so this is equivalent to training them one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CONSTRUCTIONS = ("exact_copy", "random_tight_frame")


@dataclass(frozen=True)
class SyntheticConfig:
    width: int = 128
    dim: int = 20
    copies: int = 10  # maximal number of copies (dim = 2 · copies)
    density: float = 0.15
    init_std: float = 0.05
    n_train: int = 1024
    n_test: int = 2048
    lr: float = 1e-2
    weight_decay: float = 1e-2
    batch_size: int = 512
    epochs: int = 100
    pairs: int = 10
    points: int = 21


def frame(construction: str, c: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()
          ) -> torch.Tensor:
    """``B`` (dim × 2) with orthonormal columns: ``c`` copies of the plane, scaled ``1/√c``."""
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"unknown construction {construction!r}; use {CONSTRUCTIONS}")
    if not 1 <= c <= cfg.copies or cfg.dim < 2 * cfg.copies:
        raise ValueError(f"c must be in 1..{cfg.copies} with dim >= 2·copies")
    B = torch.zeros(cfg.dim, 2, dtype=torch.float64)
    scale = 1 / math.sqrt(c)
    if construction == "exact_copy":
        for i in range(c):
            B[2 * i:2 * i + 2] = torch.eye(2, dtype=torch.float64) * scale
        return B
    g = torch.Generator().manual_seed(30000 + seed)
    perm = torch.randperm(cfg.dim, generator=g)
    theta = torch.rand(cfg.copies, generator=g, dtype=torch.float64) * math.pi
    for i in range(c):
        ct, st = math.cos(float(theta[i])), math.sin(float(theta[i]))
        rot = torch.tensor([[ct, -st], [st, ct]], dtype=torch.float64)
        B[perm[2 * i:2 * i + 2]] = rot * scale
    return B


def data(construction: str, c: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()
         ) -> dict[str, torch.Tensor]:
    """Train / test inputs and targets for outer seed ``seed``."""
    g = torch.Generator().manual_seed(20000 + seed)
    z_train = torch.randn(cfg.n_train, 2, generator=g, dtype=torch.float64)
    z_test = torch.randn(cfg.n_test, 2, generator=g, dtype=torch.float64)
    B = frame(construction, c, seed, cfg)
    out = {}
    for split, z in (("train", z_train), ("test", z_test)):
        out[f"x_{split}"] = (z @ B.T).float()
        out[f"y_{split}"] = torch.relu(z.sum(1)).float()
    out["B"] = B
    return out


def mask(seed: int, cfg: SyntheticConfig = SyntheticConfig()) -> torch.Tensor:
    g = torch.Generator().manual_seed(10000 + seed)
    return (torch.rand(cfg.width, cfg.dim, generator=g) < cfg.density).float()


def forward(W: torch.Tensor, b: torch.Tensor, M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``W``: (models, width, dim), ``b``: (models, width), ``x``: (models, batch, dim) or
    (batch, dim) -> (models, batch)."""
    pre = torch.matmul(x, (W * M).transpose(1, 2)) + b[:, None, :]
    return torch.relu(pre).sum(-1)


def train_models(x: torch.Tensor, y: torch.Tensor, M: torch.Tensor, seeds: list[int],
                 cfg: SyntheticConfig = SyntheticConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one model per seed (init and data order from ``Generator(seed)``) on ``x``
    ``(n, dim)``."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    W = torch.stack([torch.randn(cfg.width, cfg.dim, generator=g) * cfg.init_std
                     for g in gens]).requires_grad_()
    b = torch.zeros(len(seeds), cfg.width, requires_grad=True)
    opt = torch.optim.AdamW([{"params": [W], "weight_decay": cfg.weight_decay},
                             {"params": [b], "weight_decay": 0.0}], lr=cfg.lr)
    n = x.shape[0]
    for _ in range(cfg.epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for lo in range(0, n, cfg.batch_size):
            idx = orders[:, lo:lo + cfg.batch_size]
            pred = forward(W, b, M, x[idx])
            # mean over samples per model, summed over models: each model's own MSE gradient
            loss = ((pred - y[idx]) ** 2).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return W.detach(), b.detach()


def interpolation_losses(Wa: torch.Tensor, ba: torch.Tensor, Wb: torch.Tensor,
                         bb: torch.Tensor, M: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         points: int) -> torch.Tensor:
    """Test MSE along the straight path for each pair -> (pairs, points)."""
    lams = torch.linspace(0, 1, points)
    out = []
    with torch.no_grad():
        for lam in lams:
            W = torch.lerp(Wa, Wb, float(lam))
            b = torch.lerp(ba, bb, float(lam))
            out.append(((forward(W, b, M, x) - y) ** 2).mean(1))
    return torch.stack(out, 1)


def run_cells(construction: str, copies: list[int], seed: int,
              cfg: SyntheticConfig = SyntheticConfig()) -> list[dict]:
    """All pairs of one (construction, outer seed) for every ``c`` in ``copies``.

    The pairs of one c train as one batch; different c are trained one after the other
    (batching them too gives bit-identical results but measured slower on CPU: the per-model
    gather of their different inputs costs more than the loop)."""
    if cfg.points % 2 == 0:
        raise ValueError("points must be odd so that λ = 0.5 is on the grid")
    M = mask(seed, cfg)
    seeds = [40000 + 1000 * seed + 2 * p + side for p in range(cfg.pairs) for side in (0, 1)]
    out = []
    for c in copies:
        d = data(construction, c, seed, cfg)
        W, b = train_models(d["x_train"], d["y_train"], M, seeds, cfg)
        curves = interpolation_losses(W[0::2], b[0::2], W[1::2], b[1::2], M, d["x_test"],
                                      d["y_test"], cfg.points)
        ends = torch.maximum(curves[:, 0], curves[:, -1])
        mid = curves[:, (cfg.points - 1) // 2]
        out.append({"construction": construction, "c": c, "seed": seed, "coherence": 1.0 / c,
                    "midpoint_barrier": (mid - ends).tolist(),
                    "peak_barrier": (curves.max(1).values - ends).tolist(),
                    "endpoint_loss": torch.stack([curves[:, 0], curves[:, -1]], 1).tolist(),
                    "curves": curves.tolist()})
    return out


def run_cell(construction: str, c: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()
             ) -> dict:
    """All pairs of one (construction, c, outer seed): barriers and endpoint losses."""
    return run_cells(construction, [c], seed, cfg)[0]
