"""Batched training augmentation of the reference (FFCV pipeline, ``train_cifar.py:86-105``):
random horizontal flip, random translate (zero-pad ``translate`` pixels, then a random crop back
to size) and cutout (a ``cutout``×``cutout`` square at a uniformly random position), in that
order.  The reference works on uint8 images before normalisation and fills with black; our
images are already normalised, so the fill is the normalised black pixel, given per channel.

All random draws of one epoch of one member come from that member's own CPU generator
(:func:`draw_epoch`), so the batched trainer and the per-member loop see identical images; the
image operations (:func:`apply`) run batched on the device, on any number of images at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AugmentConfig:
    flip: bool = True
    translate: int = 2
    cutout: int = 4

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = d or {}
        return cls(bool(d.get("flip", True)), int(d.get("translate", 2)), int(d.get("cutout", 4)))

    @property
    def enabled(self) -> bool:
        return self.flip or self.translate > 0 or self.cutout > 0


@dataclass
class EpochDraws:
    """One member's epoch: the data order and, per position in it, the augmentation draws."""

    perm: torch.Tensor  # (n,) long
    flip: torch.Tensor  # (n,) bool
    shift: torch.Tensor  # (n, 2) long, crop offset into the padded image, in [0, 2·translate]
    cut: torch.Tensor  # (n, 2) long, top-left corner of the cutout square

    def rows(self, sl: slice) -> EpochDraws:
        """Positions ``sl`` of every member of stacked draws ``(M, n, ...)``, flattened to
        ``(M·len, ...)`` in member-major order."""
        return EpochDraws(self.perm[:, sl].reshape(-1), self.flip[:, sl].reshape(-1),
                          self.shift[:, sl].reshape(-1, 2), self.cut[:, sl].reshape(-1, 2))

    def to(self, device) -> EpochDraws:
        return EpochDraws(*(t.to(device) for t in (self.perm, self.flip, self.shift, self.cut)))


def draw_epoch(g: torch.Generator, n: int, hw: tuple[int, int],
               cfg: AugmentConfig) -> EpochDraws:
    """All random numbers of one epoch, always drawn in the same order (whatever is enabled)."""
    h, w = hw
    perm = torch.randperm(n, generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    shift = torch.randint(0, 2 * cfg.translate + 1, (n, 2), generator=g)
    c = min(cfg.cutout, h, w)
    cut = torch.stack([torch.randint(0, h - c + 1, (n,), generator=g),
                       torch.randint(0, w - c + 1, (n,), generator=g)], 1)
    return EpochDraws(perm, flip, shift, cut)


def apply(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor, cut: torch.Tensor,
          cfg: AugmentConfig, fill: torch.Tensor) -> torch.Tensor:
    """Augment images ``x`` ``(N, C, H, W)`` with per-image draws; ``fill`` is ``(C,)``."""
    n, c, h, w = x.shape
    fill = fill.to(x.device, x.dtype).view(1, c, 1, 1)
    if cfg.flip:
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    p = cfg.translate
    if p > 0:
        padded = torch.nn.functional.pad(x - fill, (p, p, p, p)) + fill
        rows = shift[:, 0, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = shift[:, 1, None] + torch.arange(w, device=x.device)  # (n, w)
        idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
        x = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    s = min(cfg.cutout, h, w)
    if s > 0:
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        cy, cx = cut[:, 0].view(n, 1, 1), cut[:, 1].view(n, 1, 1)
        box = (ys >= cy) & (ys < cy + s) & (xs >= cx) & (xs < cx + s)  # (n, h, w)
        x = torch.where(box[:, None], fill, x)
    return x.contiguous()
