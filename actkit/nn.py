"""``torch.nn`` modules: ``Activation(name, **params)`` and one named class per activation.

The named classes (``actkit.nn.Mish``, ``actkit.nn.LeakyReLU``, ...) are generated from the
registry's ``class_name``; aliases get their own name too (``actkit.nn.Swish`` is ``SiLU``).
"""
from __future__ import annotations

import torch
from torch import nn

from . import kinds, registry


class Activation(nn.Module):
    """Any registered activation as a module: ``Activation("leaky_relu", negative_slope=0.1)``."""

    def __init__(self, name: str, *args, **kwargs):
        super().__init__()
        # Only the canonical name is stored (the spec holds functions): modules stay picklable
        # for torch.save and copy.deepcopy.
        self.activation = registry.get(name).name
        self.params = {}  # scalar parameters (elementwise kind); tensors are nn.Parameters
        self._kind.init_module(self, *args, **kwargs)

    @property
    def spec(self) -> registry.ActivationSpec:
        return registry.get(self.activation)

    @property
    def _kind(self):
        return kinds.handler(self.spec.kind)

    @property
    def name(self) -> str:
        return self.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._kind.module_forward(self, x)

    def extra_repr(self) -> str:
        shown = self._kind.module_repr(self)
        return f"{self.spec.name!r}" + (f", {shown}" if shown else "")


def _named_class(spec: registry.ActivationSpec) -> type[Activation]:
    def __init__(self, *args, **kwargs):
        Activation.__init__(self, spec.name, *args, **kwargs)

    def extra_repr(self) -> str:
        return self._kind.module_repr(self)

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
