"""Which module implements each kind of activation.

Each handler module provides ``apply(spec, x, *args, **kwargs)`` (the functional call),
``parameters(spec)`` (the functional signature after ``x``), and the module hooks
``init_module``, ``module_forward`` and ``module_repr`` that :class:`actkit.nn.Activation`
delegates to.
"""
from __future__ import annotations

from . import glu, learnable, ops, rowwise

HANDLERS = {"elementwise": ops, "learnable": learnable, "rowwise": rowwise, "glu": glu}


def handler(kind: str):
    try:
        return HANDLERS[kind]
    except KeyError:
        raise ValueError(f"no handler for activation kind {kind!r}; known: {', '.join(HANDLERS)}") from None
