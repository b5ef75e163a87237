"""Reference CNNs whose every activation slot takes any registry activation.

* ``simple``: the seed tutorials' CNN: conv 32 3x3 -> act -> max-pool 2x2 -> conv 64 3x3 -> act ->
  max-pool 2x2 -> dense 128 -> act -> dense 10 (unpadded convolutions, as in the tutorials).
* ``convnet`` (default): three blocks ``conv 3x3 (32/64/128, padded) -> BatchNorm -> max-pool 2x2 ->
  act -> dropout 0.15``, then dense 128 -> act -> dense 10.

Both adapt the input channels and the flatten size to the dataset's image shape. ``depth``
adds that many extra blocks ``conv 3x3 -> BatchNorm -> act`` (``simple``: no BatchNorm) at
constant resolution and width after the last pooling block, to study gradient flow in deeper
stacks.

Every slot takes any elementwise registry activation, and the learnable ones (``prelu``,
``swish_beta``, with one parameter per channel). Three implementations of the slots (``impl``):

* ``actkit``: :class:`actkit.nn.Activation` (its named subclass, e.g. ``actkit.nn.GELU``; Triton kernels on CUDA, the PyTorch fallback on CPU);
* ``torch``: :class:`actkit.nn.ReferenceActivation`, the registry's eager PyTorch reference;
* ``compile``: the ``torch`` model, to be wrapped in ``torch.compile`` by the caller
  (:func:`maybe_compile`), so the eager model stays available for hooks and checkpoints.

The models list their activation modules in forward order with :meth:`activation_layers`, so
diagnostics can attach forward hooks to them.

A model is a subclass of :class:`ActivationModel` whose constructor takes ``(act, impl, params, in_shape,
num_classes, depth)`` (``depth`` checked by :func:`check_depth`) and fills each activation slot with
:func:`make_activation`, added to :data:`MODELS` by the :func:`register_model` decorator; ``actkit train
--model`` and :func:`build_model` take it by that name (the names ``--help`` lists, without importing
torch, are :data:`actkit.names.MODELS`).
"""
from __future__ import annotations

import functools
from typing import Mapping

import torch
from torch import nn

from . import registry
from .names import IMPLS
from .nn import Activation, ReferenceActivation, class_for


def check_impl(impl: str) -> str:
    key = impl.strip().lower()
    if key not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; choose one of: {', '.join(IMPLS)}")
    return key


def check_model(name: str) -> str:
    """The registered model's key for ``name`` (case and spaces ignored); ValueError listing them otherwise."""
    key = name.strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return key


def make_activation(name: str, impl: str = "actkit", params: Mapping[str, float] | None = None,
                    channels: int = 1) -> nn.Module:
    """One activation slot: actkit's module (``impl="actkit"``) or the eager reference (``torch``/``compile``).

    Learnable activations (``prelu``, ``swish_beta``) get one parameter per channel (``channels``: the
    conv width, or the features of a dense layer), initialised to their parameter's value (default or
    given, e.g. ``prelu:weight=0.1``); the initial value is a constant, so adding them does not shift the
    random initialisation of the other layers. ``saved_bits`` in ``params`` gives actkit's few-bit
    backward, ``saves`` a save policy (elementwise activations, ``impl="actkit"`` only).
    """
    impl = check_impl(impl)
    spec = registry.get(name)
    kind = spec.kind
    if not kind.pointwise:
        raise ValueError(f"activation {spec.name!r} is a {kind} function, not a pointwise activation; the "
                         "training models take elementwise and learnable activations")
    if not spec.differentiable:
        raise ValueError(f"activation {spec.name!r} has no gradient, so a network using it cannot be trained")
    params = dict(params or {})
    bits, policy = params.pop("saved_bits", None), params.pop("saves", None)
    params = spec.bind((), params)
    if impl != "actkit":
        if bits:
            raise ValueError(f"saved_bits={bits}: the few-bit backward is actkit's; impl {impl!r} runs PyTorch's op")
        if policy:
            raise ValueError(f"saves={policy!r}: a save policy is actkit's; impl {impl!r} runs PyTorch's op")
        make = functools.partial(ReferenceActivation, spec.name)
    else:
        if bits:
            if not kind.few_bit:
                raise ValueError(f"{spec.name} is a {kind} activation: it has no few-bit backward")
            params["saved_bits"] = bits
        if policy:
            if not kind.save_policy:
                raise ValueError(f"{spec.name} is a {kind} activation: it keeps what torch's op keeps (no saves=)")
            params["saves"] = policy
        make = class_for(spec)  # the named class (actkit.nn.ReLU, ...): clearer model printouts
    if kind.learnable:
        return make(num_parameters=int(channels), init=params[spec.params[0].name])
    return make(**params)


MODELS: dict[str, type[ActivationModel]] = {}
"""The models by name, in the order they were registered (:func:`register_model`)."""


def register_model(name: str):
    """Class decorator: add a model to :data:`MODELS` as ``name`` (lower case, not taken yet)."""
    def add(cls: type[ActivationModel]) -> type[ActivationModel]:
        if not name or name != name.strip().lower():
            raise ValueError(f"a model's name is lower case without surrounding spaces, got {name!r}")
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = cls
        return cls
    return add


class ActivationModel(nn.Module):
    """Base of the reference models: ``features`` then ``head``, and the activation slots in forward order."""

    def activation_layers(self) -> list[tuple[str, nn.Module]]:
        """The activation modules in forward order, as ``(qualified name, module)``."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, (Activation, ReferenceActivation))]

    @staticmethod
    def _flat_size(features: nn.Module, shape: tuple[int, int, int]) -> int:
        with torch.no_grad():
            was_training = features.training
            features.eval()
            out = features(torch.zeros(1, *shape))
            features.train(was_training)
        if out.shape[-1] < 1 or out.shape[-2] < 1:
            raise ValueError(f"input of shape {shape} is too small for this model")
        return int(out.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("convnet")
class ConvNet(ActivationModel):
    """3 x (conv 3x3 -> BatchNorm -> max-pool 2x2 -> act -> dropout) -> dense 128 -> act -> dense."""

    widths = (32, 64, 128)

    def __init__(self, act: str = "relu", impl: str = "actkit", params: Mapping[str, float] | None = None,
                 in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, depth: int = 0,
                 dropout: float = 0.15):
        super().__init__()
        check_depth(depth)
        act_ = lambda channels: make_activation(act, impl, params, channels)  # noqa: E731
        layers: list[nn.Module] = []
        channels = in_shape[0]
        for width in self.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.MaxPool2d(2),
                       act_(width), nn.Dropout(dropout)]
            channels = width
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), act_(channels)]
        self.features = nn.Sequential(*layers)
        flat = self._flat_size(self.features, in_shape)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), act_(128), nn.Linear(128, num_classes))


@register_model("simple")
class SimpleCNN(ActivationModel):
    """conv32 -> act -> pool -> conv64 -> act -> pool -> [depth x (conv64 -> act)] -> dense128 -> act -> dense."""

    def __init__(self, act: str = "relu", impl: str = "actkit", params: Mapping[str, float] | None = None,
                 in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, depth: int = 0):
        super().__init__()
        check_depth(depth)
        act_ = lambda channels: make_activation(act, impl, params, channels)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], 32, 3), act_(32), nn.MaxPool2d(2),
                                   nn.Conv2d(32, 64, 3), act_(64), nn.MaxPool2d(2)]
        for _ in range(depth):
            layers += [nn.Conv2d(64, 64, 3, padding=1), act_(64)]
        self.features = nn.Sequential(*layers)
        flat = self._flat_size(self.features, in_shape)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), act_(128), nn.Linear(128, num_classes))


def check_depth(depth: int) -> None:
    """A model's ``depth`` (extra blocks at constant width) is a non-negative integer."""
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer (extra conv blocks), got {depth!r}")


def build_model(model: str, act: str, impl: str = "actkit", params: Mapping[str, float] | None = None,
                in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, depth: int = 0) -> nn.Module:
    """The eager model for ``model`` with ``act`` in every activation slot (see the module docstring)."""
    cls = MODELS[check_model(model)]
    return cls(act, impl, params, tuple(in_shape), num_classes, depth)


def maybe_compile(model: nn.Module, impl: str) -> nn.Module:
    """``torch.compile(model)`` for ``impl="compile"``, the model itself otherwise."""
    return torch.compile(model) if check_impl(impl) == "compile" else model
