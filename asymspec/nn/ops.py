"""Parameter-free operations of the IR, one small module each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_dim(layout: str) -> int:
    return 1 if layout == "image" else -1


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(nn.Module):
    """Elementwise product; with a sigmoid gate input this is FiGLU."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return x * gate


class Concat(nn.Module):
    def __init__(self, layout: str) -> None:
        super().__init__()
        self.dim = channel_dim(layout)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class PadChannels(nn.Module):
    """ResNet option-A shortcut: subsample spatially, zero-pad channels on both sides."""

    def __init__(self, lo: int, hi: int, stride: int) -> None:
        super().__init__()
        self.lo, self.hi, self.stride = lo, hi, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.lo, self.hi))


class Pool(nn.Module):
    def __init__(self, kind: str, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kind, self.kernel_size, self.stride = kind, kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = F.avg_pool2d if self.kind == "avg" else F.max_pool2d
        return fn(x, self.kernel_size, self.stride)


class GlobalPool(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.kind == "avg" else x.amax(dim=(2, 3))


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class TokenPool(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) if self.kind == "mean" else x[:, 0]


class Aggregate(nn.Module):
    """Neighbourhood aggregation over ``edge_index`` (source row 0 -> target row 1), as in
    torch-geometric's message passing; nodes without neighbours receive zeros."""

    def __init__(self, aggr: str) -> None:
        super().__init__()
        self.aggr = aggr

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        from torch_geometric.utils import scatter

        src, dst = edge_index[0], edge_index[1]
        return scatter(x[src], dst, dim=0, dim_size=x.shape[0], reduce=self.aggr)


class Attention(nn.Module):
    """Multi-head scaled dot-product attention on pre-projected q, k, v of shape (B, T, D)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, t, d = q.shape
        h = self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, z.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(b, t, d)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
}
