"""Model zoo (Lim et al. 2024, §5.3, F.3, Table 13; App. A): ``kind: zoo``."""

from runners.zoo.runner import ZooRunner

__all__ = ["ZooRunner"]
