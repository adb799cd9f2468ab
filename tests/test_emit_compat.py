"""Checkpoints saved by the emitter before the fast masked layers load and give the same outputs.

``tests/data/emit_checkpoints_v1.*`` was written by ``tests/data/make_emit_checkpoints.py`` with
the emitter of commit 2feb70e (``where``-based forward), after three AdamW steps with weight decay
— so the raw ``weight`` entries at frozen positions had drifted away from the fixed values, as
they do in real checkpoints.  Outputs must be bit-identical, except through FiGLU's frozen 1x1
convolutions, which now run as a matmul over channels (same arithmetic, another summation
order): there they agree to float32 rounding.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import asymspec
from asymspec.nn import AsymConv2d
from tests.conftest import REPO

DATA = REPO / "tests" / "data"
META = json.loads((DATA / "emit_checkpoints_v1.json").read_text())


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(DATA / "emit_checkpoints_v1.safetensors")


@pytest.mark.parametrize("key", sorted(META))
def test_old_checkpoint_loads_and_gives_identical_outputs(key: str, tensors) -> None:
    meta = META[key]
    model = asymspec.build(meta["spec"], init_seed=5)  # another init: everything must load
    state = {k.split("/state/", 1)[1]: v for k, v in tensors.items()
             if k.startswith(f"{key}/state/")}
    assert set(state) == set(model.state_dict())  # same keys, no new ones
    model.load_state_dict(state)
    model.eval()
    inputs = [tensors[f"{key}/input/{i}"] for i in range(meta["n_inputs"])]
    with torch.no_grad():
        out = model(*inputs)
    old = tensors[f"{key}/output"]
    pointwise = any(isinstance(m, AsymConv2d) and m.frozen and m.kernel_size == 1
                    for m in model.modules())
    if pointwise:
        assert torch.allclose(out, old, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(out, old)
    # the state written back is the loaded one, except frozen raw entries now hold the fixed
    # values (never used while drifted): saving again and reloading changes nothing
    again = asymspec.build(meta["spec"], init_seed=6)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(*inputs), out)
