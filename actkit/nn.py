"""``torch.nn`` modules: ``Activation(name, **params)`` and one named class per activation, and
``ReferenceActivation``, the same function in plain eager PyTorch.

The named classes (``actkit.nn.Mish``, ``actkit.nn.LeakyReLU``, ...) are generated from the
registry's ``class_name``; aliases get their own name too (``actkit.nn.Swish`` is ``SiLU``).
"""
from __future__ import annotations

import inspect
from types import MappingProxyType

import torch
from torch import nn

from . import registry


def check_arguments(spec: registry.ActivationSpec, init, args: tuple, kwargs: dict) -> None:
    """A one-line TypeError where a module's arguments do not fit its kind's ``init`` (``init_module``,
    ``init_reference``), naming the arguments it takes, rather than Python's message about a function
    of ours; ``saved_bits`` for a kind without a few-bit backward says so. Kinds whose ``init`` takes
    ``*args, **kwargs`` check their arguments themselves."""
    if "saved_bits" in kwargs and not spec.kind.few_bit:
        raise TypeError(f"{spec.class_name}: saved_bits (the few-bit backward) applies to elementwise activations "
                        f"only; {spec.name} is a {spec.kind} activation, so drop saved_bits")
    signature = inspect.signature(init)
    taken = list(signature.parameters.values())[1:]  # after the module
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in taken):
        return
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        names = ", ".join(p.name for p in taken) or "none"
        raise TypeError(f"{spec.class_name}: {exc}; its arguments: {names}") from None


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
        self._forward = spec.kind.module_forward  # None where init_module installs the bound op as forward
        if "saves" in kwargs and not spec.kind.save_policy:
            raise TypeError(f"{spec.name} takes no saves=: a {spec.kind} activation keeps what torch's op keeps "
                            "(save policies apply to elementwise activations)")
        check_arguments(spec, spec.kind.ops.init_module, args, kwargs)
        spec.kind.ops.init_module(self, *args, **kwargs)

    @property
    def spec(self) -> registry.ActivationSpec:
        return registry.get(self.activation)

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
        shown = self.spec.kind.module_repr(self)
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
        self.params = {}
        check_arguments(self.spec, self.spec.kind.ops.init_reference, args, kwargs)
        self.spec.kind.ops.init_reference(self, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec.kind.ops.reference_forward(self, x)

    def extra_repr(self) -> str:
        shown = self.spec.kind.module_repr(self)
        return f"{self.spec.name!r}" + (f", {shown}" if shown else "")


def _named_class(spec: registry.ActivationSpec) -> type[Activation]:
    def __init__(self, *args, **kwargs):
        Activation.__init__(self, spec.name, *args, **kwargs)

    def extra_repr(self) -> str:
        return self.spec.kind.module_repr(self)

    return type(spec.class_name, (Activation,), {
        "__init__": __init__, "extra_repr": extra_repr, "__module__": __name__, "_registered": spec,
        "__doc__": f"{spec.formula}. " + (f"Parameters: {spec.signature()}." if spec.kind.scalar_params
                                          else spec.notes),
    })


CLASSES: dict[str, type[Activation]] = {}
"""The named class of each activation by its canonical name, made on first use (:func:`class_for`)."""


def class_for(name: str | registry.ActivationSpec) -> type[Activation]:
    """The named module class of an activation (``class_for("mish")`` is ``actkit.nn.Mish``), also for one
    registered after this module was imported."""
    spec = registry.get(name)
    cls = CLASSES.get(spec.name)
    if cls is None or cls._registered is not spec:  # re-registered under the same name: a class for the new spec
        cls = CLASSES[spec.name] = _named_class(spec)
    return cls


def __getattr__(name: str) -> type[Activation]:
    """``actkit.nn.<ClassName>`` of an activation registered after this module was imported (PEP 562)."""
    spec = next((s for s in registry.REGISTRY.values() if s.class_name == name), None)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return class_for(spec)


for _spec in registry.REGISTRY.values():
    globals()[_spec.class_name] = class_for(_spec)
Swish = CLASSES["silu"]

__all__ = ["Activation", "CLASSES", "Swish", *(s.class_name for s in registry.REGISTRY.values())]
