"""The metanetwork registry: one decorator, ``@register_metanet("name")``.

A metanetwork maps the (trainable, flattened) weights of a network to a scalar prediction.  Every
registered class is built as ``cls(layout, **options)`` where ``layout`` is the
:class:`~asymspec.metanet.inputs.ParamLayout` of the networks it reads (input size, per-tensor
segments), so a user's own metanetwork needs no change to the runner: register it and name it in
``metanet.models``.

Class attributes a metanetwork declares:

* ``permutation_invariant`` — True when the prediction cannot change under *any* neuron
  permutation of the input network (DeepSets, StatNN).  The runner skips the NodeSort and
  permutation-augmentation rows for such models: they would equal the plain row by construction.
* ``featurize(flat, layout)`` (optional static method) — a fixed, parameter-free map applied to
  the flat vectors once before training (StatNN's statistics); the default is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from asymspec.errors import UserError

_METANETS: dict[str, type[nn.Module]] = {}


def register_metanet(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a metanetwork under ``name`` (lower case, no spaces)."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if not name or name != name.strip().lower() or " " in name:
            raise ValueError(f"metanetwork name {name!r} must be lower case without spaces")
        cls.metanet_name = name
        _METANETS[name] = cls
        return cls

    return deco


def available_metanets() -> list[str]:
    """Names of every registered metanetwork."""
    return sorted(_METANETS)


def get_metanet(name: str) -> type[nn.Module]:
    """The class registered as ``name``; a :class:`UserError` naming the known ones otherwise."""
    if name not in _METANETS:
        raise UserError(f"unknown metanetwork {name!r}; registered: "
                        f"{', '.join(available_metanets())} (add one with "
                        "@asymspec.metanet.register_metanet)")
    return _METANETS[name]
