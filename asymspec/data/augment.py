"""Per-image augmentation: random crop with zero padding and random horizontal flip.

Each image gets its own crop offset and flip (not one crop per batch), drawn from a seeded
``torch.Generator``, so a training run is reproducible from its data seed.
"""

from __future__ import annotations

import torch


class RandomCropFlip:
    """``transform(img, generator)`` for one ``(C, H, W)`` image; ``batch`` for ``(N, C, H, W)``."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if padding < 0:
            raise ValueError("padding must be >= 0")
        self.padding = padding
        self.flip = flip

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.batch(img.unsqueeze(0), generator)[0]

    def batch(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment every image of ``imgs`` independently (one crop offset and flip per image)."""
        n, _, h, w = imgs.shape
        p = self.padding
        out = imgs
        if p:
            padded = torch.nn.functional.pad(imgs, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            rows = (dy[:, None] + torch.arange(h)[None, :]).to(imgs.device)  # (n, h)
            cols = (dx[:, None] + torch.arange(w)[None, :]).to(imgs.device)  # (n, w)
            idx_n = torch.arange(n, device=imgs.device)[:, None, None]
            # gather per-image windows: (n, h, w, C) -> (n, C, h, w)
            out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
            out = out.permute(0, 3, 1, 2).contiguous()
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
            if flip.any():
                out = out.clone()
                f = flip.to(out.device)
                out[f] = out[f].flip(-1)
        return out
