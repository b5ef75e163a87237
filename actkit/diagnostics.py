"""Training diagnostics: dead units and gradient flow, measured rather than described.

Dead units
    :func:`dead_units` runs a fixed probe batch through the model (eval mode, no
    gradients for the parameters) with forward hooks on every activation layer. A *unit*
    is a channel for conv-shaped outputs (N, C, ...) and a feature for (N, F) outputs.
    A unit is dead when, on every probe example and every spatial position, its output is
    exactly zero or the activation's derivative there is near zero (|f'(x)| < 1e-3).
    For ReLU the two criteria agree (f'(x) = 0 exactly where the output is 0); for a
    saturating activation (sigmoid, tanh in deep nets) the derivative criterion catches
    units stuck on a flat part. The derivative is not a hand formula: it is autograd
    through the activation module itself on the input the hook saw, so on CUDA it is the
    Triton backward kernel and on CPU the PyTorch fallback. The derivative criterion is
    only used for elementwise activations (a diagonal Jacobian); for anything else
    (softmax, unknown modules) only the exact-zero criterion applies.

Gradient flow
    :class:`GradientFlow` accumulates, per parameterised layer (a module that owns
    parameters directly: Linear, Conv, BatchNorm, learnable activations ...), the L2 norm
    of the gradient of all its own parameters, once per optimisation step, and reports the
    mean over the steps since the last :meth:`GradientFlow.summary`. Call
    :meth:`GradientFlow.update` after ``loss.backward()`` and before ``zero_grad()``.

Both return plain dicts of floats, ready for a run's JSON record.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from .train.callbacks import Callback, RunContext

DERIVATIVE_THRESHOLD = 1e-3

# torch.nn activation modules that act elementwise (a diagonal Jacobian).
_TORCH_ELEMENTWISE = tuple(getattr(nn, n) for n in (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh",
    "Softplus", "Softsign", "Hardswish", "Hardsigmoid", "Hardtanh", "LogSigmoid", "Tanhshrink", "Hardshrink",
    "Softshrink", "Threshold", "RReLU") if hasattr(nn, n))


def is_activation(module: nn.Module) -> bool:
    """An actkit activation module or a torch.nn activation module."""
    from .nn import Activation

    return isinstance(module, Activation) or isinstance(module, _TORCH_ELEMENTWISE) or \
        isinstance(module, (nn.Softmax, nn.LogSoftmax))


def is_elementwise(module: nn.Module) -> bool:
    """True when the module's Jacobian is diagonal, so d(sum f(x))/dx is f'(x) per element."""
    spec = getattr(module, "spec", None)
    if spec is not None:
        return spec.kind.pointwise
    return isinstance(module, _TORCH_ELEMENTWISE)


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` for each activation layer, in forward-definition order.

    Uses ``model.activation_layers()`` when the model provides it (a list of modules or of
    (name, module) pairs), otherwise every activation module found by :func:`is_activation`.
    """
    names = {id(m): n for n, m in model.named_modules()}
    provided = getattr(model, "activation_layers", None)
    if callable(provided):
        layers = []
        for i, item in enumerate(provided()):
            if isinstance(item, tuple):
                layers.append((str(item[0]), item[1]))
            else:
                layers.append((names.get(id(item), f"act{i}"), item))
        return layers
    return [(n, m) for n, m in model.named_modules() if n and is_activation(m)]


def _unit_reduce(t: torch.Tensor) -> torch.Tensor:
    """Reduce a boolean (N, C, ...) or (N, F) tensor to per-unit 'true everywhere' (all over dims != 1)."""
    if t.dim() == 0:
        return t.reshape(1)
    if t.dim() == 1:  # a single unit axis without batch: treat each element as a unit
        return t
    return t.transpose(0, 1).reshape(t.shape[1], -1).all(dim=1)


def _derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Elementwise f'(x) through autograd of the module itself (Triton backward on CUDA)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        y = module(leaf)
        (grad,) = torch.autograd.grad(y, leaf, grad_outputs=torch.ones_like(y), allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


class _DeadCounter:
    def __init__(self, module: nn.Module, threshold: float):
        self.module = module
        self.threshold = threshold
        self.elementwise = is_elementwise(module)
        self.dead: torch.Tensor | None = None  # per-unit bool, AND over probe chunks
        self.shape: tuple[int, ...] | None = None
        self._busy = False

    def hook(self, module, inputs, output):
        if self._busy or not isinstance(output, torch.Tensor):
            return
        zero = _unit_reduce(output.detach() == 0)
        if self.elementwise and inputs and isinstance(inputs[0], torch.Tensor) and \
                inputs[0].shape == output.shape and inputs[0].is_floating_point():
            self._busy = True  # the derivative call runs the module again; do not count it
            try:
                flat = _unit_reduce(_derivative(module, inputs[0]).abs() < self.threshold)
            finally:
                self._busy = False
            dead = zero | flat
        else:
            dead = zero
        dead = dead.cpu()
        self.shape = tuple(output.shape)
        self.dead = dead if self.dead is None or self.dead.shape != dead.shape else (self.dead & dead)


def dead_units(model: nn.Module, probe: torch.Tensor | Iterable[torch.Tensor], *,
               threshold: float = DERIVATIVE_THRESHOLD,
               layers: Iterable[tuple[str, nn.Module]] | None = None) -> dict[str, dict]:
    """Per activation layer, the units dead on every example of ``probe``.

    ``probe`` is one input batch or an iterable of batches (all of them form the probe set).
    Returns ``{layer name: {"units", "dead", "fraction", "unit", "criterion"}}`` where
    ``unit`` is ``"channel"`` (conv outputs) or ``"feature"``. The model's train/eval mode
    is restored afterwards; parameters and BatchNorm statistics are not changed.
    """
    layers = list(layers) if layers is not None else activation_layers(model)
    counters = {name: _DeadCounter(module, threshold) for name, module in layers}
    handles = [module.register_forward_hook(counters[name].hook) for name, module in layers]
    was_training = model.training
    batches = [probe] if isinstance(probe, torch.Tensor) else list(probe)
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for name, c in counters.items():
        if c.dead is None:  # the layer did not run on the probe
            continue
        units = int(c.dead.numel())
        dead = int(c.dead.sum())
        out[name] = {
            "units": units,
            "dead": dead,
            "fraction": dead / units if units else 0.0,
            "unit": "channel" if c.shape is not None and len(c.shape) > 2 else "feature",
            "criterion": f"output == 0 or |f'(x)| < {threshold:g}" if c.elementwise else "output == 0",
        }
    return out


def dead_fraction(result: Mapping[str, Mapping]) -> float:
    """All dead units over all units, across the layers of a :func:`dead_units` result."""
    units = sum(r["units"] for r in result.values())
    return sum(r["dead"] for r in result.values()) / units if units else 0.0


# -- gradient flow ----------------------------------------------------------------------------------
def parameterised_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Modules that own trainable parameters directly, in definition order."""
    for name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            yield name or type(module).__name__, module


def _layer_params(model: nn.Module) -> list[tuple[str, list[torch.nn.Parameter]]]:
    return [(name, [p for p in module.parameters(recurse=False) if p.requires_grad])
            for name, module in parameterised_layers(model)]


class GradientFlow:
    """Mean per-layer gradient L2 norm over the steps since the last summary.

    >>> flow = GradientFlow()
    >>> for batch in loader:
    ...     loss.backward(); flow.update(model); opt.step(); opt.zero_grad()
    >>> flow.summary()   # {"features.0": 0.12, ..., "classifier": 0.5}; resets the running mean

    :meth:`update` stays on the device (one fused ``_foreach_norm`` over all gradients and an
    ``index_add`` per step, no host synchronisation), so it costs little in a training loop;
    :meth:`summary` brings the means to the host.
    """

    def __init__(self) -> None:
        self._model_id: int | None = None
        self._names: list[str] = []
        self._params: list[torch.nn.Parameter] = []
        self._index: list[int] = []  # layer index of each parameter
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._index_tensors: dict[tuple, torch.Tensor] = {}

    def _bind(self, model: nn.Module) -> None:
        self._model_id = id(model)
        self._names, self._params, self._index = [], [], []
        for i, (name, params) in enumerate(_layer_params(model)):
            self._names.append(name)
            self._params += params
            self._index += [i] * len(params)
        self._sums = self._counts = None
        self._index_tensors.clear()

    def update(self, model: nn.Module) -> None:
        if self._model_id != id(model):
            if self._sums is not None:
                raise ValueError("GradientFlow is accumulating for another model; call summary() first")
            self._bind(model)
        present = [(p.grad, i) for p, i in zip(self._params, self._index) if p.grad is not None]
        if not present:
            return
        grads = [g.detach() for g, _ in present]
        device = grads[0].device
        key = (device, tuple(i for _, i in present))
        index = self._index_tensors.get(key)
        if index is None:
            index = self._index_tensors[key] = torch.tensor(key[1], device=device)
        try:
            norms = torch._foreach_norm(grads)
        except (AttributeError, RuntimeError):  # private API moved or mixed devices: one norm per tensor
            norms = [torch.linalg.vector_norm(g) for g in grads]
        squares = torch.stack([n.to(device=device, dtype=torch.float32) for n in norms]).square()
        layers = len(self._names)
        per_layer = torch.zeros(layers, device=device).index_add_(0, index, squares)
        had_grad = torch.zeros(layers, device=device).index_add_(0, index, torch.ones_like(squares)) > 0
        if self._sums is None:
            self._sums = torch.zeros(layers, dtype=torch.float64, device=device)
            self._counts = torch.zeros(layers, dtype=torch.float64, device=device)
        finite = had_grad & torch.isfinite(per_layer)
        self._sums += torch.where(finite, per_layer.sqrt(), 0.0).double()
        self._counts += finite.double()

    @property
    def steps(self) -> int:
        return 0 if self._counts is None else int(self._counts.max())

    def summary(self, reset: bool = True) -> dict[str, float]:
        """``{layer: mean gradient L2 norm}`` over the steps since the last summary."""
        if self._sums is None:
            return {}
        sums, counts = self._sums.cpu().tolist(), self._counts.cpu().tolist()
        means = {name: s / c for name, s, c in zip(self._names, sums, counts) if c > 0}
        if reset:
            self._sums = self._counts = None
        return means


# -- training callbacks ---------------------------------------------------------------------------
class DeadUnitsCallback(Callback):
    """Dead units on the run's fixed probe batch at the start, middle and end of training.

    Events (under ``diagnostics["dead_units"]`` in the run record): ``phase`` (``start``,
    ``middle``, ``end``), ``fraction`` (all layers together), ``threshold`` and ``layers``
    (per activation layer: ``units``, ``dead``, ``fraction``, ``unit``, ``criterion``).
    ``every_epoch=True`` measures after every epoch instead of only the middle one.
    """

    name = "dead_units"

    def __init__(self, epochs: int, *, threshold: float = DERIVATIVE_THRESHOLD, every_epoch: bool = False):
        self.epochs = int(epochs)
        self.threshold = threshold
        self.every_epoch = every_epoch
        self.middle = self.epochs // 2 if self.epochs >= 2 else None

    def _measure(self, ctx: RunContext, phase: str) -> dict:
        result = dead_units(ctx.model, ctx.probe[0], threshold=self.threshold)
        return {"phase": phase, "fraction": dead_fraction(result), "threshold": self.threshold,
                "probe_size": int(ctx.probe[0].shape[0]), "layers": result}

    def on_train_start(self, ctx: RunContext) -> dict | None:
        return self._measure(ctx, "start")

    def on_epoch_end(self, ctx: RunContext) -> dict | None:
        if ctx.epoch >= self.epochs:
            return None  # the end measurement follows
        if self.every_epoch or ctx.epoch == self.middle:
            return self._measure(ctx, "middle" if ctx.epoch == self.middle else "epoch")
        return None

    def on_train_end(self, ctx: RunContext) -> dict | None:
        return self._measure(ctx, "end")


class GradientFlowCallback(Callback):
    """Per-layer gradient L2 norm, mean over each epoch's steps.

    Events (under ``diagnostics["gradient_flow"]``): one per epoch with ``steps`` and
    ``layers`` (``{layer: mean norm}``, layers in definition order: input side first).
    """

    name = "gradient_flow"

    def __init__(self) -> None:
        self.flow = GradientFlow()

    def on_step(self, ctx: RunContext) -> None:
        self.flow.update(ctx.model)

    def on_epoch_end(self, ctx: RunContext) -> dict | None:
        steps = self.flow.steps
        return {"steps": steps, "layers": self.flow.summary()} if steps else None


def training_callbacks(config) -> list[Callback]:
    """Fresh diagnostics callbacks for one run (the factory :func:`actkit.train.run_sweep` takes)."""
    return [DeadUnitsCallback(config.epochs), GradientFlowCallback()]
