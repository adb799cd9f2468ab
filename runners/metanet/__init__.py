"""Metanetworks on a model zoo (Lim et al. 2024, §5.3, Tables 3 and 6): ``kind: metanet``."""

from runners.metanet.runner import MetanetRunner

__all__ = ["MetanetRunner"]
