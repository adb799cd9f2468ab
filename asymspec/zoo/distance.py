"""Mean pairwise distance per parameter within a variant (Lim et al. 2024, App. A).

The paper reports "distance per parameter" (.0034 standard vs .0051 W-Asym ResNet8, 20,000
pairs) without a formula; we take ``‖θ_i − θ_j‖₂ / D`` over the D trainable entries (our
reading: the only common definition that gives values of that size for independently trained
networks), and also report the root-mean-square difference ``‖θ_i − θ_j‖₂ / √D`` and the mean
absolute difference, so any other reading can be compared.
"""

from __future__ import annotations

import itertools

import torch

from asymspec.seeding import generator


def sample_pairs(m: int, count: int, seed: int, tag: str = "") -> list[tuple[int, int]]:
    """All pairs when there are at most ``count``, else ``count`` random distinct pairs."""
    total = m * (m - 1) // 2
    if total <= count:
        return list(itertools.combinations(range(m), 2))
    g = generator(seed, "zoo-distance-pairs", tag)
    seen: set[tuple[int, int]] = set()
    while len(seen) < count:
        a = torch.randint(0, m, (count,), generator=g).tolist()
        b = torch.randint(0, m, (count,), generator=g).tolist()
        for i, j in zip(a, b):
            if i != j and len(seen) < count:
                seen.add((min(i, j), max(i, j)))
    return sorted(seen)


@torch.no_grad()
def pairwise_distance(flat: torch.Tensor, pairs: list[tuple[int, int]],
                      chunk: int = 1024) -> dict[str, float | int]:
    """Mean over ``pairs`` of the three distances between rows of ``flat`` ``(M, D)``."""
    d = flat.shape[1]
    if not pairs or d == 0:
        return {"pairs": 0, "l2_per_param": None, "rms": None, "mean_abs": None}
    l2 = abs_sum = 0.0
    for lo in range(0, len(pairs), chunk):
        idx = torch.tensor(pairs[lo:lo + chunk])
        diff = (flat[idx[:, 0]] - flat[idx[:, 1]]).double()
        l2 += float(diff.norm(dim=1).sum())
        abs_sum += float(diff.abs().mean(1).sum())
    n = len(pairs)
    return {"pairs": n, "l2_per_param": l2 / n / d, "rms": l2 / n / d ** 0.5,
            "mean_abs": abs_sum / n}
