"""``kind: train`` — train each variant from several seeds and record its training curves."""

from runners.train.runner import TrainRunner

__all__ = ["TrainRunner"]
