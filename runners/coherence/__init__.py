"""The synthetic coherence experiment (Bürgin et al. 2026): ``kind: coherence``."""

from runners.coherence.runner import CoherenceRunner

__all__ = ["CoherenceRunner"]
