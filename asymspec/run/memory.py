"""Memory budgets for batched (vmapped) evaluation and training.

Evaluating many parameter states at once multiplies activation memory by the number of states;
issue 11 saw 25 states of a ResNet8 reach 24 GB.  Every batched job therefore works in chunks
sized to a *budget* in bytes:

* an explicit budget (``resources.memory_gb`` in the experiment spec, or the environment
  variable ``ASYMSPEC_MEMORY_BUDGET`` in bytes or with a ``K/M/G`` suffix), else
* on CUDA, half of the device memory free right now, else
* on CPU, a quarter of the memory available to this process (cgroup limit or
  ``MemAvailable``), at most 8 GiB, at least 256 MiB.

:func:`activation_bytes` measures (rather than guesses) what one example costs: it runs the
model on a probe batch under a ``TorchDispatchMode`` that adds up the bytes of every tensor any
op produces, an upper bound on the activations alive at once whatever the module frees.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

GiB = 1 << 30
MiB = 1 << 20


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GB"``, ``"1000000"`` -> bytes."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(float(s))


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            return int(raw)
    return None


def available_bytes() -> int:
    """Memory this process can still use (``MemAvailable``, capped by a cgroup limit)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if avail is None:
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except Exception:  # no /proc, no psutil: assume a small machine
            avail = 4 * GiB
    limit = _cgroup_limit()
    return min(avail, limit) if limit else avail


def memory_budget(device: str | torch.device = "cpu", setting_gb: float | None = None) -> int:
    """The byte budget for one batched job on ``device`` (see the module docstring)."""
    if setting_gb is not None:
        return max(int(setting_gb * GiB), 16 * MiB)
    env = os.environ.get("ASYMSPEC_MEMORY_BUDGET")
    if env:
        return max(parse_bytes(env), 16 * MiB)
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return max(free // 2, 256 * MiB)
    return int(min(max(available_bytes() // 4, 256 * MiB), 8 * GiB))


class _ByteCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Adds up the bytes of every tensor produced by an op."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.total += t.numel() * t.element_size()
        return out


def forward_bytes(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of every op output of one forward of ``model`` on ``inputs`` (no grad)."""
    counter = _ByteCounter()
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.total


def activation_bytes(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                     examples: int) -> tuple[float, float]:
    """``(fixed, per_example)`` bytes of op outputs of one forward of ``model``.

    ``inputs`` hold ``examples`` examples in their first tensor (graphs: the whole graph,
    ``examples=1``).  Two probes (1 and up to 8 examples) separate what a forward costs
    whatever the batch (e.g. masked weights built per call) from what each example adds.  The
    count includes every intermediate, so it bounds the peak activation memory of one state.
    """
    if examples <= 1:
        return 0.0, float(forward_bytes(model, inputs))
    big = min(examples, 8)
    one = forward_bytes(model, (inputs[0][:1],) + tuple(inputs[1:]))
    many = forward_bytes(model, (inputs[0][:big],) + tuple(inputs[1:]))
    per = max((many - one) / (big - 1), 1.0)
    return max(one - per, 0.0), per


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def plan_chunks(num_states: int, batch: int, per_example: float, per_state: int,
                budget: int, overhead: float = 2.0) -> tuple[int, int]:
    """``(states_per_chunk, examples_per_chunk)`` keeping
    ``states · (per_state + examples · per_example · overhead) <= budget``
    (``per_state``: the state's tensors plus its batch-independent forward cost).

    Examples are reduced only when a single state at the full batch does not fit; both are
    at least 1.  ``overhead`` covers the vmap / allocator slack (measured ~1.3-1.8 on CPU).
    """
    cost = per_example * overhead
    examples = batch
    if per_state + examples * cost > budget:
        examples = max(1, int((budget - per_state) // max(cost, 1.0)))
        examples = min(examples, batch)
    states = int(budget // max(per_state + examples * cost, 1.0))
    return max(1, min(num_states, states)), max(1, examples)
