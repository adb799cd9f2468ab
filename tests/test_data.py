"""asymspec.data: IDX reading, bundled digits, missing-data errors, the Fashion-MNIST k-NN graph
and per-image augmentation."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from asymspec import data as D
from asymspec.data.idx import read_idx
from asymspec.data.vision import DEBIAN_FASHION_MNIST
from asymspec.errors import UserError

torch.set_num_threads(1)

needs_fmnist = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")


def test_mnist_from_torchvision_layout(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", np.full((5, 28, 28), 7))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    monkeypatch.setenv("ASYMSPEC_DATA", str(tmp_path))
    ds = D.load("mnist", "test")
    assert ds.x.shape == (5, 1, 28, 28) and ds.y.tolist() == [0, 1, 2, 3, 4]


def test_missing_dataset_names_directory_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSPEC_DOWNLOAD", "0")
    with pytest.raises(UserError) as err:
        D.load("mnist", "train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "ASYMSPEC_DATA" in msg
    with pytest.raises(UserError, match="ASYMSPEC_DATA"):
        D.load("cifar10", "test", root=tmp_path)


def test_unknown_names():
    with pytest.raises(UserError, match="unknown dataset"):
        D.load("imagenet", "train")
    with pytest.raises(UserError, match="no split"):
        D.load("digits", "val")


def test_digits_split_is_deterministic_and_disjoint():
    tr, te = D.load("digits", "train"), D.load("digits", "test")
    assert len(tr) + len(te) == 1797 and tr.x.shape[1:] == (1, 8, 8)
    tr2 = D.load("digits", "train")
    assert torch.equal(tr.x, tr2.x) and torch.equal(tr.y, tr2.y)
    rows_tr = {tuple(r) for r in tr.x.flatten(1).tolist()}
    rows_te = [tuple(r) for r in te.x.flatten(1).tolist()]
    # digits has a few duplicate images; the split itself must not share indices
    assert sum(r in rows_tr for r in rows_te) < 10
    assert abs(float(tr.x.mean())) < 1e-4
    sub = tr.subset(100, seed=3)
    assert len(sub) == 100 and torch.equal(sub.x, tr.subset(100, seed=3).x)


@needs_fmnist
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSPEC_DOWNLOAD", "0")
    ds = D.load("fashion-mnist", "test", root=tmp_path)
    assert ds.x.shape == (10000, 1, 28, 28) and ds.num_classes == 10
    assert sorted(ds.y.unique().tolist()) == list(range(10))


@needs_fmnist
def test_fmnist_knn_graph(tmp_path):
    split = D.load("fmnist-knn", "train", root=tmp_path, num_nodes=600, k=5, dim=16)
    g = split.graph
    assert g.x.shape == (600, 16) and len(g.y) == 600
    ei = g.edge_index
    assert (ei[0] != ei[1]).all()
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs)  # symmetric
    assert len(pairs) == ei.shape[1]  # no duplicates
    deg = torch.bincount(ei[0], minlength=600)
    assert (deg >= 5).all()
    masks = torch.stack([g.train_mask, g.val_mask, g.test_mask]).int()
    assert (masks.sum(0) == 1).all() and int(g.train_mask.sum()) == 360
    assert torch.equal(split.mask, g.train_mask)
    assert list((tmp_path / "fmnist-knn").glob("*.pt"))  # cached
    again = D.load("fmnist-knn", "test", root=tmp_path, num_nodes=600, k=5, dim=16).graph
    assert torch.equal(again.edge_index, ei) and torch.equal(again.x, g.x)
    # neighbours mostly share the label: the features are real
    assert float((g.y[ei[0]] == g.y[ei[1]]).float().mean()) > 0.5


def test_random_crop_flip_per_image():
    imgs = torch.arange(4 * 6 * 6, dtype=torch.float32).view(4, 1, 6, 6).repeat(8, 1, 1, 1)
    aug = D.RandomCropFlip(padding=2, flip=True)
    a = aug.batch(imgs, torch.Generator().manual_seed(0))
    b = aug.batch(imgs, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == imgs.shape
    # identical input images get different crops / flips within one batch
    same_src = a[0::4]
    assert len({tuple(x.flatten().tolist()) for x in same_src}) > 1
    assert torch.equal(D.RandomCropFlip(0, False).batch(imgs), imgs)
    flipped = D.RandomCropFlip(0, True).batch(imgs, torch.Generator().manual_seed(1))
    for x, y in zip(flipped, imgs):
        assert torch.equal(x, y) or torch.equal(x, y.flip(-1))
    one = aug(imgs[0], torch.Generator().manual_seed(5))
    assert one.shape == imgs[0].shape


def test_augmented_dataset_is_seeded_per_sample():
    base = D.load("digits", "test")
    ds = D.AugmentedDataset(base, D.RandomCropFlip(2, True), seed=7)
    x1, y1 = ds[3]
    assert torch.equal(ds[3][0], x1) and int(y1) == int(base.y[3])
    changed = False
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        changed |= not torch.equal(ds[3][0], x1)
    assert changed
