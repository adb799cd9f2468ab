"""Linear mode connectivity (Lim et al. 2024, §5.1, Table 1, Figure 3): ``kind: lmc``."""

from runners.lmc.runner import LMCRunner

__all__ = ["LMCRunner"]
