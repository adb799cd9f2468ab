"""Embedding lookups: ``nn.Embedding`` and ``F.embedding`` (a dense layer from one-hot ids)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers.linear import _module_of, _transpose_eff
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Feat, Raw, Unsupported, _arg, _qual_key
from asymspec.audit.params import (
    EffectiveWeight,
    plain_weight,
)


# ---------------------------------------------------------------- embedding
def _embedding(L: Lowerer, base: str, ids_low, eff: EffectiveWeight, out) -> Feat:
    if isinstance(ids_low, Raw) and ids_low.kind == "static" \
            and not L.params_in(ids_low.fxnode):
        return _constant_lookup(L, base, eff, out)
    if isinstance(ids_low, Feat) or (isinstance(ids_low, Raw) and ids_low.kind == "static"):
        raise Unsupported("embedding indices are features")
    vocab, dim = eff.shape
    vname = L.add_node(f"{base}.vocab", "input", [], vocab, torch.zeros(1, vocab), 1,
                       role="input")
    L.ir.inputs.append(vname)
    t = _transpose_eff(eff)  # IR layout (out=dim, in=vocab)
    f = L.dense(base, "embedding", Feat(vname, 1), t, dim, out, out.dim() - 1)
    return f


@handles(nn.Embedding)
def _m_embedding(c: Call):
    L, m, qual, al, out = c.lowerer, c.module, c.qual, c.args, c.out
    eff = plain_weight(_qual_key(qual, "weight"), m.weight)
    return _embedding(L, qual, al[0], eff, out)


@handles(F.embedding, raw=True)
def _f_embedding(c: Call):
    L, n, al, kl, out = c.lowerer, c.node, c.args, c.kwargs, c.out
    eff = L.weight(_arg(al, kl, 1, "weight"), _arg(n.args, n.kwargs, 1, "weight"))
    if eff.transposed:
        raise Unsupported("transposed embedding table")
    return _embedding(L, _module_of(L, n) or n.name, al[0], eff, out)


def _constant_lookup(L: Lowerer, base: str, eff: EffectiveWeight, out) -> Feat:
    """A table read at constant indices (learned position / token-type embeddings looked up
    with ``arange`` or a constant buffer): a learned tensor whose units are the embedding
    dimension, like a class token.  Permuting those units permutes the table's columns."""
    if eff.key is None or eff.mask is not None or eff.offset is not None or eff.transposed:
        raise Unsupported("constant lookup into a frozen or masked table")
    dim = eff.shape[1]
    cdim = out.dim() - 1
    name = L.add_node(base, "param", [], dim, out, cdim, bias="trainable")
    L.record(eff.key, (None, name))
    for k in eff.buffers:
        L.record(k, (None, name), constant=True)
    return Feat(name, cdim)
