"""Decimal strings of huge integers in subquadratic time.

The order of a full-size language model's symmetry group has millions of digits
(Llama-3-8B-shaped: 1.78 million); CPython before 3.12 converts an int to a decimal string in
quadratic time (two minutes for that one).  :func:`int_to_decimal` splits the integer in binary
halves and reassembles the decimal value with the ``decimal`` module, whose multiplication of
huge operands is fast (number-theoretic transform): ``D(x) = D(hi) * D(2^w) + D(lo)``.
"""

from __future__ import annotations

import decimal

_DIRECT_BITS = 1 << 14  # below this, str() is fast enough


def int_to_decimal(n: int) -> str:
    """``str(n)`` for any int, subquadratic for huge ones (exact)."""
    if n < 0:
        return "-" + int_to_decimal(-n)
    if n.bit_length() <= _DIRECT_BITS:
        return str(n)
    ctx = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                          traps=[decimal.Inexact, decimal.Rounded])
    powers: dict[int, decimal.Decimal] = {}

    def pow2(w: int) -> decimal.Decimal:
        if w not in powers:
            powers[w] = ctx.power(decimal.Decimal(2), w)
        return powers[w]

    def inner(x: int, w: int) -> decimal.Decimal:
        if w <= _DIRECT_BITS:
            return decimal.Decimal(x)
        half = w >> 1
        hi = x >> half
        lo = x - (hi << half)
        return ctx.add(ctx.multiply(inner(hi, w - half), pow2(half)), inner(lo, half))

    out = inner(n, n.bit_length())
    return format(out, "f")
