"""Monotonic linear interpolation (Lim et al. 2024, §5.4, Table 4, Fig 5): ``kind: mli``."""

from runners.mli.runner import MLIRunner

__all__ = ["MLIRunner"]
