"""Which IR node's unit permutation acts on each axis of each tensor, and applying permutations.

This is the *permutation spec* every consumer uses: the verifier's tests apply reported
automorphisms with it, alignment (Git Re-Basin, activation matching) and canonicalisation
permute state dicts with it.  It is derived from the IR alone — the emitter names a node's
tensors ``<node>.<leaf>`` — so no per-architecture table exists anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from asymspec.ir.graph import IRGraph

_WEIGHT_LEAVES = ("weight", "weight_mask", "weight_fixed", "weight_offset")
_UNIT_LEAVES = ("bias", "weight", "running_mean", "running_var")


def tensor_axes(ir: IRGraph, key: str) -> tuple[str | None | tuple[str, ...], ...] | None:
    """For a state_dict key, the IR node permuting each axis (None: not permuted).

    Returns None for keys that do not belong to an IR node (they are never permuted).  Entries
    are node names, None, or (audit IRs only) a tuple of node names for a packed axis.
    """
    table = ir.g.graph.get("tensor_axes")
    if table is not None:
        return table.get(key)
    prefix, _, leaf = key.rpartition(".")
    if prefix not in ir.g:
        return None
    node = ir.node(prefix)
    op = node["op"]
    if op in ("linear", "conv2d"):
        src, _ = ir.dense_edge(prefix)
        if leaf in _WEIGHT_LEAVES:
            return (prefix, src) + ((None, None) if op == "conv2d" else ())
        if leaf == "bias":
            return (prefix,)
    if op in ("layernorm", "batchnorm", "groupnorm") and leaf in _UNIT_LEAVES:
        return (prefix,)
    return ()


def permute_state_dict(
    ir: IRGraph, state: Mapping[str, torch.Tensor], perms: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Apply unit permutations to a state dict.

    ``perms[node][u]`` is the new position of unit ``u`` of ``node`` (nodes not listed stay).
    A tensor axis permuted by node ``n`` is rearranged so ``new[perm[u]] = old[u]``.
    """
    inverse = {n: torch.as_tensor(np.argsort(np.asarray(p)), dtype=torch.long)
               for n, p in perms.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        axes = tensor_axes(ir, key)
        t = value
        for dim, node in enumerate(axes or ()):
            if dim >= t.dim() or node is None:
                continue
            if isinstance(node, tuple):  # packed axis: concatenated units of several nodes
                if not any(n in inverse for n in node):
                    continue
                parts, offset = [], 0
                for n in node:
                    size = ir.node(n)["size"]
                    inv = inverse.get(n, torch.arange(size))
                    parts.append(inv + offset)
                    offset += size
                t = t.index_select(dim, torch.cat(parts).to(t.device))
            elif node in inverse:
                t = t.index_select(dim, inverse[node].to(t.device))
        out[key] = t
    return out
