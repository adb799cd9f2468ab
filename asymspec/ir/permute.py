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
from asymspec.ir.ops import OPS


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
    op = OPS.get(ir.node(prefix)["op"])
    if op is None:
        return ()
    if leaf in op.weight_leaves:  # laid out like a dense weight: (out, in, *kernel)
        src, e = ir.dense_edge(prefix)
        return (prefix, src) + (None,) * (len(e["weight_shape"]) - 2)
    if leaf in op.unit_leaves:
        return (prefix,)
    return ()


def permute_state_dict(
    ir: IRGraph, state: Mapping[str, torch.Tensor], perms: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Apply unit permutations to a state dict.

    ``perms[node][u]`` is the new position of unit ``u`` of ``node`` (nodes not listed stay).
    A tensor axis permuted by node ``n`` is rearranged so ``new[perm[u]] = old[u]``.  A grouped
    convolution's weight (graph attribute ``grouped_tensors``: key -> (output node, input node,
    groups)) is permuted through its dense block-diagonal form (:func:`permute_grouped`).
    """
    inverse = {n: torch.as_tensor(np.argsort(np.asarray(p)), dtype=torch.long)
               for n, p in perms.items()}
    grouped = ir.g.graph.get("grouped_tensors", {})
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in grouped:  # grouped conv weight: inputs indexed within the output's group
            size = ir.node(grouped[key][0])["size"]
            if value.dim() and value.shape[0] != size:  # stored in another shape (GAT's
                # per-unit attention vectors (1, heads, dim)): permuted as its (out, -1) view
                moved = permute_grouped(value.reshape(size, -1), *grouped[key], perms)
                out[key] = moved.reshape(value.shape)
                continue
            out[key] = permute_grouped(value, *grouped[key], perms)
            continue
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


def permute_grouped(w: torch.Tensor, out_node: str, in_node: str, groups: int,
                    perms: dict[str, np.ndarray]) -> torch.Tensor:
    """Permute a grouped conv weight ``(out, in / groups, *k)``: expand it to the dense
    block-diagonal ``(out, in, *k)``, permute both axes, compress back."""
    out, cin = w.shape[0], w.shape[1]
    n_in = cin * groups
    cout = out // groups
    rows = torch.arange(out)
    cols = (rows // cout)[:, None] * cin + torch.arange(cin)[None, :]
    dense = w.new_zeros((out, n_in) + tuple(w.shape[2:]))
    dense[rows[:, None], cols] = w
    p_out = perms.get(out_node, np.arange(out))
    p_in = perms.get(in_node, np.arange(n_in))
    inv_out = torch.as_tensor(np.argsort(p_out), dtype=torch.long)
    inv_in = torch.as_tensor(np.argsort(p_in), dtype=torch.long)
    dense = dense.index_select(0, inv_out).index_select(1, inv_in)
    return dense[rows[:, None], cols]
