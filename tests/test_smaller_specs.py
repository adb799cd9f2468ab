"""App. E.1: the parameter-matched smaller standard nets match their W-Asym twins within 1 %."""

from __future__ import annotations

import pytest

from asymspec.compiler import build
from asymspec.paramtable import parameter_table, totals


def _trainable(path: str) -> int:
    return totals(parameter_table(build(path)))["trainable"]


@pytest.mark.parametrize("smaller,wasym,expected", [
    ("specs/resnet20_smaller.yaml", 230_026, 230_547),
    ("specs/resnet8_smaller.yaml", 60_634, 60_703),
])
def test_smaller_standard_matches_wasym_count(smaller, wasym, expected):
    got = _trainable(smaller)
    assert got == expected
    assert abs(got - wasym) / wasym < 0.01


def test_resnet20_wasym_reference_count():
    assert _trainable("specs/resnet20_wasym.yaml") == 230_026
