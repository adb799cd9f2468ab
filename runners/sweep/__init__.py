"""``kind: sweep`` — a grid over fields of a base experiment or model spec."""

from runners.sweep.runner import SweepRunner

__all__ = ["SweepRunner"]
