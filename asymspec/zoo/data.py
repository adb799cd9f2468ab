"""The zoo's data: whole train and test splits as tensors on the training device.

Every member indexes the same device tensors with its own order and augmentation draws, so no
data loader or host-to-device copy runs per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ZooData:
    train_x: torch.Tensor  # (N, C, H, W), normalised
    train_y: torch.Tensor  # (N,) long
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    fill: torch.Tensor  # (C,): the normalised black pixel (augmentation fill)

    @classmethod
    def from_tensors(cls, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, num_classes: int | None = None,
                     fill: torch.Tensor | None = None) -> ZooData:
        """``fill`` defaults to the per-channel minimum of the training images (a black pixel
        after normalisation in every real image set)."""
        if fill is None:
            fill = train_x.transpose(0, 1).reshape(train_x.shape[1], -1).amin(1)
        k = num_classes or int(max(train_y.max(), test_y.max())) + 1
        return cls(train_x.float(), train_y.long(), test_x.float(), test_y.long(), k, fill)

    @classmethod
    def from_datasets(cls, train, test) -> ZooData:
        """From two :class:`asymspec.data.ArrayDataset` splits."""
        return cls.from_tensors(train.x, train.y, test.x, test.y,
                                max(train.num_classes, test.num_classes))

    def to(self, device: str | torch.device) -> ZooData:
        return ZooData(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                       self.test_y.to(device), self.num_classes, self.fill.to(device))

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])
