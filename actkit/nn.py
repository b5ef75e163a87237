"""``torch.nn`` modules: ``Activation(name, **params)`` and one named class per activation.

The named classes (``actkit.nn.Mish``, ``actkit.nn.LeakyReLU``, ...) are generated from the
registry's ``class_name``; aliases get their own name too (``actkit.nn.Swish`` is ``SiLU``).
"""
from __future__ import annotations

import torch
from torch import nn

from . import kinds, registry
from .functional import apply


class Activation(nn.Module):
    """Any registered activation as a module: ``Activation("leaky_relu", negative_slope=0.1)``."""

    def __init__(self, name: str, *args, **kwargs):
        super().__init__()
        self.spec = registry.get(name)
        if self.spec.kind != "elementwise":  # learnable (nn.Parameter) and row-wise (dim) kinds
            self.params = {}
            kinds.handler(self.spec.kind).init_module(self, *args, **kwargs)
            return
        self.params = self.spec.bind(args, kwargs)

    @property
    def name(self) -> str:
        return self.spec.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.kind != "elementwise":
            return kinds.handler(self.spec.kind).module_forward(self, x)
        return apply(self.spec.name, x, **self.params)

    def extra_repr(self) -> str:
        if self.spec.kind != "elementwise":
            return f"{self.spec.name!r}, " + kinds.handler(self.spec.kind).module_repr(self)
        shown = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.spec.name!r}" + (f", {shown}" if shown else "")


def _named_class(spec: registry.ActivationSpec) -> type[Activation]:
    def __init__(self, *args, **kwargs):
        Activation.__init__(self, spec.name, *args, **kwargs)

    def extra_repr(self) -> str:
        if spec.kind != "elementwise":
            return kinds.handler(spec.kind).module_repr(self)
        return ", ".join(f"{k}={v:g}" for k, v in self.params.items())

    return type(spec.class_name, (Activation,), {
        "__init__": __init__, "extra_repr": extra_repr, "__module__": __name__,
        "__doc__": f"{spec.formula}. " + (f"Parameters: {spec.signature()}." if spec.kind == "elementwise"
                                          else spec.notes),
    })


CLASSES: dict[str, type[Activation]] = {}
for _spec in registry.REGISTRY.values():
    CLASSES[_spec.name] = globals()[_spec.class_name] = _named_class(_spec)
Swish = CLASSES["silu"]

__all__ = ["Activation", "CLASSES", "Swish", *(s.class_name for s in registry.REGISTRY.values())]
