"""Deterministic, process-independent random streams.

Every random tensor asymspec creates (masks, fixed values, FiGLU matrices, noise, initial weights)
comes from its own ``torch.Generator`` whose seed is derived from *names* — the spec seed, the
purpose and the layer name — through SHA-256.  Python's ``hash()`` is salted per process and the
global RNG depends on call order, so neither is ever used: the same spec and seed give
bit-identical tensors in any process, in any order of construction.
"""

from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the string forms of ``parts`` (order matters)."""
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`stable_seed` of ``parts``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(stable_seed(*parts))
    return g
