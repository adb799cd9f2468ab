"""Shared test setup: one torch thread (2-core machines spin badly with more), repo paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"


@pytest.fixture
def specs_dir() -> Path:
    return SPECS
