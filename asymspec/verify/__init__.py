"""Exact automorphism search on the unit-level graph (refinement -> reduction -> bliss)."""

from asymspec.verify.search import AutomorphismResult, find_automorphisms, verify_generator

__all__ = ["AutomorphismResult", "find_automorphisms", "verify_generator"]
