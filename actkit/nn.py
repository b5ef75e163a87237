"""``torch.nn`` modules: ``Activation(name, **params)`` and one named class per activation, and
``ReferenceActivation``, the same function in plain eager PyTorch.

The named classes (``actkit.nn.Mish``, ``actkit.nn.LeakyReLU``, ...) are generated from the
registry's ``class_name``; aliases get their own name too (``actkit.nn.Swish`` is ``SiLU``).
"""
from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from . import kinds, registry


class Activation(nn.Module):
    """Any registered activation as a module: ``Activation("leaky_relu", negative_slope=0.1)``.

    Scalar parameters are fixed when the module is made (``params`` is read-only): the module
    holds its activation already bound to them, so a forward call does no lookup or binding.
    """

    def __init__(self, name: str, *args, **kwargs):
        super().__init__()
        spec = registry.get(name)
        # The canonical name, the kind's module-level forward and a bound op: all picklable, so
        # modules work with torch.save and copy.deepcopy.
        self.activation = spec.name
        self._params: dict[str, float] = {}  # scalar parameters (elementwise kind)
        kind = kinds.handler(spec.kind)
        self._forward = kind.module_forward
        kind.init_module(self, *args, **kwargs)

    @property
    def spec(self) -> registry.ActivationSpec:
        return registry.get(self.activation)

    @property
    def _kind(self):
        return kinds.handler(self.spec.kind)

    @property
    def name(self) -> str:
        return self.activation

    @property
    def params(self) -> MappingProxyType:
        """The scalar parameters (read-only: make a new module for other values)."""
        return MappingProxyType(self._params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)

    def extra_repr(self) -> str:
        shown = self._kind.module_repr(self)
        return f"{self.spec.name!r}" + (f", {shown}" if shown else "")


class ReferenceActivation(nn.Module):
    """An activation computed by its registry reference in plain eager PyTorch (no custom op).

    The same function and parameters as :class:`Activation` (a learnable one holds its own
    ``nn.Parameter``), the implementation PyTorch itself offers: the baseline that
    ``patch(model, act, impl="torch")`` installs and that fills the training models' slots for
    ``impl="torch"`` and ``"compile"``.
    """

    def __init__(self, name: str, *args, **kwargs):
        super().__init__()
        self.spec = registry.get(name)
        if self.spec.kind == "elementwise":
            self.params = self.spec.bind(args, kwargs)
        else:
            self.params = {}
            kinds.handler(self.spec.kind).init_module(self, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.kind == "learnable":
            from . import learnable

            weight = learnable.parameter(self)
            learnable.check_parameter(spec, x, weight)
            return spec.reference(x, weight.to(x.dtype))
        if spec.kind == "rowwise":
            from . import rowwise

            dim = rowwise.implicit_dim(x.dim()) if self.dim is None else self.dim
            return spec.reference(x, dim=rowwise.wrap_dim(spec.name, dim, x.dim()))
        return spec.reference(x, **self.params)

    def extra_repr(self) -> str:
        if self.spec.kind != "elementwise":
            return f"{self.spec.name!r}, " + kinds.handler(self.spec.kind).module_repr(self)
        shown = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
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
