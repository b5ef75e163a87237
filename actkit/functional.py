"""Functional API: ``actkit.functional.<name>(x, **params)`` and ``apply(name, x, **params)``.

One function per registered activation (and per alias) is generated from the registry,
with the activation's parameters as keyword arguments and its formula as the docstring. Each
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
