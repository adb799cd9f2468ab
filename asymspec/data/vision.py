"""MNIST, Fashion-MNIST, CIFAR-10/100 and scikit-learn's digits as :class:`ArrayDataset`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from asymspec.data.datasets import ArrayDataset
from asymspec.data.idx import find_idx, read_idx
from asymspec.errors import UserError

# Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IDX_DIRS = {"mnist": ("MNIST/raw", "mnist"),
             "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist")}
_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _normalise(images: np.ndarray, name: str) -> torch.Tensor:
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    mean, std = _STATS[name]
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _idx_candidates(name: str, root: Path) -> list[Path]:
    dirs = [root / d for d in _IDX_DIRS[name]]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def _download_allowed() -> bool:
    """Downloads are opt-in (``ASYMSPEC_DOWNLOAD=1``): by default nothing is fetched."""
    return os.environ.get("ASYMSPEC_DOWNLOAD", "0").lower() in ("1", "true", "yes")


def _remove_new_empty_dirs(root: Path, before: set[Path]) -> None:
    """Undo the empty directories a failed download attempt created under ``root``."""
    if not root.is_dir():
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if d not in before and not any(d.iterdir()):
            d.rmdir()
    if root not in before and not any(root.iterdir()):
        root.rmdir()


def _dirs(root: Path) -> set[Path]:
    return {root, *(p for p in root.rglob("*") if p.is_dir())} if root.is_dir() else set()


def _missing(name: str, root: Path, where: list[Path], reason: str = "") -> UserError:
    places = ", ".join(str(p) for p in where)
    if name == "fashion-mnist":
        places += " (Debian/Ubuntu: apt-get install dataset-fashion-mnist)"
    extra = f" ({reason})" if reason else ""
    return UserError(
        f"dataset '{name}' not found{extra}: put the files in {places} or point the environment "
        f"variable ASYMSPEC_DATA at a directory that has them (data root now: {root})")


def load_idx_dataset(name: str, split: str, root: Path) -> ArrayDataset:
    """MNIST-format data read from IDX files; downloads through torchvision when allowed."""
    stems = _IDX_STEMS[split]
    candidates = _idx_candidates(name, root)
    for directory in candidates:
        img, lab = (find_idx(directory, s) for s in stems)
        if img is not None and lab is not None:
            return ArrayDataset(_normalise(read_idx(img), name), torch.from_numpy(
                read_idx(lab).astype(np.int64)), name, 10)
    reason = "nothing is downloaded unless ASYMSPEC_DOWNLOAD=1"
    if _download_allowed():
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        before = _dirs(root)
        try:
            cls(str(root), train=split == "train", download=True)
        except Exception as exc:  # offline: URLError, socket errors, ...
            reason = "download failed: " + " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            _remove_new_empty_dirs(root, before)
        else:
            return load_idx_dataset(name, split, root)
    raise _missing(name, root, candidates, reason)


def load_cifar(name: str, split: str, root: Path) -> ArrayDataset:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    try:
        ds = cls(str(root), train=split == "train", download=False)
    except RuntimeError:
        reason = "nothing is downloaded unless ASYMSPEC_DOWNLOAD=1"
        if not _download_allowed():
            raise _missing(name, root, [folder], reason) from None
        before = _dirs(root)
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as exc:
            reason = "download failed: " + " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            _remove_new_empty_dirs(root, before)
            raise _missing(name, root, [folder], reason) from None
    x = _normalise(np.asarray(ds.data).transpose(0, 3, 1, 2), name)
    return ArrayDataset(x, torch.as_tensor(ds.targets), name, 10 if name == "cifar10" else 100)


def load_digits_dataset(split: str, test_fraction: float = 0.2) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images); a fixed stratified-free 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = np.random.RandomState(0).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    idx = torch.from_numpy(np.sort(idx))
    train = perm[n_test:]
    mean = float(x[train].mean())
    std = float(x[train].std())
    return ArrayDataset((x[idx] - mean) / std, y[idx], "digits", 10)
