"""Functional API: ``actkit.functional.<name>(x, **params)`` and ``apply(name, x, **params)``.

One function per registered activation (and per alias) is generated from the registry,
with the activation's parameters as keyword arguments and its formula as the docstring (on first
use, for one registered after this module was imported). Each
kind makes its own function (``spec.kind.ops.functional(spec)``), with the default parameters bound
once, so that a call goes straight to the kind's bound op.
"""
from __future__ import annotations

import inspect

import torch

from . import registry


def apply(name: str, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Apply activation ``name`` to ``x``; parameters by position (registry order) or keyword."""
    spec = registry.get(name)
    return spec.kind.ops.apply(spec, x, *args, **kwargs)


def _make(spec: registry.ActivationSpec):
    kind = spec.kind.ops
    fn = kind.functional(spec)
    fn.__name__ = fn.__qualname__ = spec.name
    fn.__doc__ = f"{spec.formula}\n\nRange {spec.output_range}. {spec.notes}".strip()
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter("x", inspect.Parameter.POSITIONAL_ONLY, annotation=torch.Tensor)]
        + kind.parameters(spec),
        return_annotation=torch.Tensor)
    return fn


def _install() -> list[str]:
    names = []
    for spec in registry.REGISTRY.values():
        fn = _make(spec)
        for label in (spec.name, *spec.aliases):
            globals()[label] = fn
            names.append(label)
    return names


__all__ = ["apply", *_install()]
_LATE: dict[str, tuple] = {}  # name -> (spec, function) for activations registered after the import


def __getattr__(name: str):
    """``actkit.functional.<name>`` of an activation registered after this module was imported (PEP 562)."""
    spec = None
    if not name.startswith("_"):
        try:
            spec = registry.get(name)
        except ValueError:
            pass
    if spec is None or name not in (spec.name, *spec.aliases):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = _LATE.get(name)
    if made is None or made[0] is not spec:
        made = _LATE[name] = (spec, _make(spec))
    return made[1]
