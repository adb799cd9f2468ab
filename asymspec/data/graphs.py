"""Graphs for transductive node classification: ogbn-arxiv and the offline Fashion-MNIST k-NN
graph (real Fashion-MNIST images as nodes, PCA pixel features, labels = clothing class, edges =
symmetrised k nearest neighbours in feature space)."""

from __future__ import annotations

from pathlib import Path

import torch

from asymspec.atomic import atomic_torch_save
from asymspec.data.datasets import GraphData
from asymspec.errors import UserError
from asymspec.seeding import generator


def build_knn_graph(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Symmetrised k-NN edges (both directions, no self loops, no duplicates), ``(2, E)``."""
    n = len(features)
    sq = (features * features).sum(1)
    nbrs = []
    for start in range(0, n, chunk):
        block = features[start:start + chunk]
        d = sq[start:start + chunk, None] - 2 * block @ features.T + sq[None, :]
        d[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")
        # stable tie-breaking: topk on (distance, index) via a tiny index offset is not needed
        # because distances are computed identically in every process (fixed order, float64).
        nbrs.append(d.topk(k, largest=False).indices)
    dst = torch.cat(nbrs)
    src = torch.arange(n).repeat_interleave(k)
    dst = dst.reshape(-1)
    both = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    key = torch.unique(both[0] * n + both[1])
    return torch.stack([key // n, key % n])


def fmnist_knn(root: Path, num_nodes: int = 10000, k: int = 10, dim: int = 64,
               train_fraction: float = 0.6, val_fraction: float = 0.2) -> GraphData:
    """The Fashion-MNIST k-NN graph (cached as ``<root>/fmnist-knn/...pt``)."""
    cache = root / "fmnist-knn" / f"n{num_nodes}-k{k}-d{dim}-t{train_fraction}-v{val_fraction}.pt"
    if cache.is_file():
        try:
            return GraphData(**torch.load(cache, weights_only=True))
        except Exception:  # a corrupt cache is rebuilt
            pass
    from asymspec.data.vision import load_idx_dataset

    train = load_idx_dataset("fashion-mnist", "train", root)
    if num_nodes > len(train):
        raise UserError(f"fmnist-knn: num_nodes={num_nodes} exceeds the {len(train)} images")
    perm = torch.randperm(len(train), generator=generator(0, "fmnist-knn", "nodes"))[:num_nodes]
    pixels = train.x[perm].reshape(num_nodes, -1).double()
    y = train.y[perm]
    centred = pixels - pixels.mean(0)
    # PCA by SVD of the covariance (784 x 784): deterministic, sign fixed by the largest entry.
    _, vecs = torch.linalg.eigh(centred.T @ centred)
    vecs = vecs[:, -dim:].flip(1)
    signs = torch.sign(vecs[vecs.abs().argmax(0), torch.arange(dim)])
    feats = centred @ (vecs * signs)
    feats = feats / feats[:, 0].std()
    edge_index = build_knn_graph(feats, k)
    order = torch.randperm(num_nodes, generator=generator(0, "fmnist-knn", "split"))
    n_train = int(num_nodes * train_fraction)
    n_val = int(num_nodes * val_fraction)
    masks = []
    for lo, hi in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, num_nodes)):
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[order[lo:hi]] = True
        masks.append(m)
    data = dict(x=feats.float(), edge_index=edge_index, y=y, train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2], name="fmnist-knn")
    atomic_torch_save(data, cache)
    return GraphData(**data)


def ogbn_arxiv(root: Path) -> GraphData:
    """ogbn-arxiv through ``ogb`` (features 128-d, 40 classes, the official split)."""
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise UserError(
            "dataset 'ogbn-arxiv' needs the `ogb` package (pip install ogb) and its files in "
            f"{root / 'ogbn_arxiv'} (set ASYMSPEC_DATA to use another data root); for offline "
            "work use the 'fmnist-knn' graph (the cpu profile of specs/lmc_gnn.yaml)") from None
    from asymspec.data.vision import _download_allowed

    if not (root / "ogbn_arxiv").is_dir() and not _download_allowed():
        # ogb would download it silently; nothing downloads unless asked
        raise UserError(f"dataset 'ogbn-arxiv' not found under {root / 'ogbn_arxiv'} (nothing is "
                        "downloaded unless ASYMSPEC_DOWNLOAD=1); put ogb's files there or set "
                        "ASYMSPEC_DATA to a data root that has them")
    try:
        ds = PygNodePropPredDataset("ogbn-arxiv", root=str(root))
    except Exception as exc:
        raise UserError(f"dataset 'ogbn-arxiv' not available under {root / 'ogbn_arxiv'} "
                        f"({type(exc).__name__}: {exc}); set ASYMSPEC_DATA to point elsewhere"
                        ) from None
    g = ds[0]
    split = ds.get_idx_split()
    n = g.num_nodes
    masks = []
    for name in ("train", "valid", "test"):
        m = torch.zeros(n, dtype=torch.bool)
        m[split[name]] = True
        masks.append(m)
    ei = g.edge_index
    ei = torch.unique(torch.cat([ei, ei.flip(0)], 1), dim=1)
    return GraphData(g.x, ei, g.y.view(-1), *masks, name="ogbn-arxiv")
