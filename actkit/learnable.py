"""Activations with a learnable parameter (kind ``"learnable"``): PReLU and Swish-beta.

``y = f(x, a)`` where ``a`` is one shared parameter or one per channel (dim 1, as
``torch.nn.PReLU``). Two opaque ``torch.library`` custom ops, as in :mod:`actkit.ops`:

* ``actkit::learnable(x, weight, name, backend) -> y``
* ``actkit::learnable_backward(x, weight, grad, name, backend, weight_grad) -> (dx, dweight)``

Autograd saves x and the (tiny) parameter and recomputes f' in backward. On the Triton
backend the parameter gradient is a deterministic two-stage reduction (per-tile partial
sums, then a fixed-order column sum; see :mod:`actkit.kernels.parametric`), skipped when
the parameter needs no gradient (a number, a frozen parameter). On the
PyTorch backend both gradients are a vector-Jacobian product of the registry reference,
so they are PyTorch's own, NaN and inf behaviour included.

The output has the input's dtype; the parameter keeps its own dtype (an fp32 parameter
with a bf16 input is fine) and its gradient comes back in that dtype.
"""
from __future__ import annotations

import inspect
import numbers

import torch
from torch import nn

from . import registry
from .backend import TORCH, TRITON, TRITON_DTYPES, backend_for
from .eager import EagerFunction2, Implementation, cached_op, check_tensor, is_compiling, op_cache, same_device
from .ops import like_fake


class LearnableImpl(Implementation):
    """One backend's implementation of a learnable activation: ``forward(x, weight)`` and
    ``input_grads(x, weight, grad, weight_grad) -> (dx, dweight)``."""

    __slots__ = ("backend", "forward", "input_grads")

    def __init__(self, backend: str, forward, input_grads):
        self.backend, self.forward, self.input_grads = backend, forward, input_grads

    def save(self, ctx, inputs, y: torch.Tensor) -> None:
        x, weight = inputs
        ctx.weight_grad = bool(weight.requires_grad)
        ctx.save_for_backward(x, weight)

    def backward(self, ctx, grad: torch.Tensor, input_grads=None):
        x, weight = ctx.saved_tensors
        dx, dweight = (input_grads or self.input_grads)(x, weight, grad, ctx.weight_grad)
        return dx, dweight if ctx.weight_grad else None


class LearnableOp:
    """A learnable activation resolved once; ``op(x, weight)`` applies it (weight already checked)."""

    __slots__ = ("spec", "name", "torch", "_triton")

    def __init__(self, spec: registry.ActivationSpec):
        self.spec, self.name = spec, spec.name
        self.torch = LearnableImpl(TORCH, self.reference, self._torch_grads)
        self._triton = None  # made on first Triton use (imports Triton)

    def __reduce__(self):
        return cached_op, (__name__, self.name)

    def triton(self) -> LearnableImpl:
        if self._triton is None:
            from actkit.kernels import parametric

            prefix = self.spec.kernel or self.name
            fwd, bwd = getattr(parametric, f"{prefix}_fwd"), getattr(parametric, f"{prefix}_bwd")
            self._triton = LearnableImpl(
                TRITON, lambda x, weight: parametric.forward(x, weight, fwd),
                lambda x, weight, grad, weight_grad: parametric.backward(x, weight, grad, bwd, weight_grad))
        return self._triton

    def impl(self, backend: str) -> LearnableImpl:
        return self.torch if backend == TORCH else self._triton or self.triton()

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        backend = backend_for(x) if weight.dtype in TRITON_DTYPES else TORCH
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (actkit.eager)
            impl = self.torch if backend == TORCH else self._triton or self.triton()
            if (x.requires_grad or weight.requires_grad) and torch.is_grad_enabled():
                return EagerFunction2.apply(impl, x, weight)
            return impl.forward(x, weight)
        return torch.ops.actkit.learnable(x, weight, self.name, backend)

    def reference(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.spec.reference(x, weight if weight.dtype == x.dtype else weight.to(x.dtype))

    def _torch_grads(self, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor,
                     weight_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(dx, dweight) as vector-Jacobian products of the reference; dweight is zeros when
        ``weight_grad`` is False."""
        if not weight_grad:
            _, vjp = torch.func.vjp(lambda t: self.reference(t, weight), x)
            return vjp(grad)[0], torch.zeros_like(weight, memory_format=torch.contiguous_format)
        _, vjp = torch.func.vjp(self.reference, x, weight)
        dx, dweight = vjp(grad)
        return dx, dweight.contiguous()


op_for = op_cache(LearnableOp)


# -- the traced route: torch.library custom ops ----------------------------------------------------
@torch.library.custom_op("actkit::learnable", mutates_args=())
def learnable(x: torch.Tensor, weight: torch.Tensor, name: str, backend: str) -> torch.Tensor:
    return like_fake(op_for(name).impl(backend).forward(x, weight), x)


@learnable.register_fake
def _learnable_fake(x, weight, name, backend):
    return torch.empty_like(x)


@torch.library.custom_op("actkit::learnable_backward", mutates_args=())
def learnable_backward(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, name: str,
                       backend: str, weight_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dweight = op_for(name).impl(backend).input_grads(x, weight, grad, weight_grad)
    return like_fake(dx, x), dweight


@learnable_backward.register_fake
def _learnable_backward_fake(x, weight, grad, name, backend, weight_grad):
    return torch.empty_like(x), torch.empty_like(weight, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, weight, name, backend = inputs
    ctx.name, ctx.backend = name, backend
    op_for(name).impl(backend).save(ctx, (x, weight), output)


def _backward(ctx, grad):
    dx, dweight = op_for(ctx.name).impl(ctx.backend).backward(ctx, grad, input_grads=(
        lambda x, weight, dy, weight_grad: learnable_backward(x, weight, dy, ctx.name, ctx.backend, weight_grad)))
    return dx, dweight, None, None


learnable.register_autograd(_backward, setup_context=_setup_context)


# -- argument checks ---------------------------------------------------------------------------
def channels(x: torch.Tensor) -> int:
    """Channels of x as torch.nn.PReLU counts them: size of dim 1, or 1 below two dims."""
    return x.shape[1] if x.dim() >= 2 else 1


def check_parameter(spec: registry.ActivationSpec, x: torch.Tensor, weight: torch.Tensor) -> None:
    if not weight.is_floating_point():
        raise TypeError(f"{spec.name}: {spec.params[0].name} must be a floating-point tensor, got {weight.dtype}")
    if weight.dim() > 1:
        raise ValueError(f"{spec.name}: {spec.params[0].name} must be a scalar or a 1-D tensor (one entry per "
                         f"channel), got shape {tuple(weight.shape)}")
    if not same_device(weight, x):
        raise ValueError(f"{spec.name}: {spec.params[0].name} is on {weight.device} but the input is on {x.device}; "
                         f"move the module or tensor to one device")
    n = weight.numel()
    if n == 1:
        return
    pname = spec.params[0].name
    if x.dim() == 0:
        raise ValueError(f"{spec.name}: a 0-d input has no channel dimension; {pname} has {n} entries, "
                         f"only a single shared {pname} (num_parameters=1) is allowed")
    c = channels(x)
    if n != c:
        where = (f"dim 1 of shape {tuple(x.shape)}" if x.dim() >= 2
                 else f"a {x.dim()}-d input of shape {tuple(x.shape)} has no channel dim, so 1")
        raise ValueError(f"{spec.name}: {pname} has {n} entries but the input has {c} channel(s) ({where}); "
                         f"use num_parameters=1 (one shared {pname}) or num_parameters={c}")


def _weight(spec: registry.ActivationSpec, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """The parameter of a functional call: a tensor (1 or C entries, gradients flow) or a number
    (shared, constant), checked against x."""
    if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):  # the usual call: f(x, weight)
        check_parameter(spec, x, args[0])
        return args[0]
    pname, default = spec.params[0].name, spec.params[0].default
    if len(args) > 1:
        raise TypeError(f"{spec.name}(x, {pname}) takes one parameter, got {len(args)} positional")
    unknown = set(kwargs) - {pname}
    if unknown:
        raise TypeError(f"{spec.name} has no parameter {sorted(unknown)[0]!r}; its parameters: {pname}")
    if args and pname in kwargs:
        raise TypeError(f"{spec.name}: parameter {pname!r} given both positionally and by keyword")
    weight = args[0] if args else kwargs.get(pname, default)
    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        weight = torch.full((), float(weight), dtype=x.dtype if x.is_floating_point() else torch.float32,
                            device=x.device)
    elif not isinstance(weight, torch.Tensor):
        raise TypeError(f"{spec.name}: {pname} must be a tensor or a real number, got {type(weight).__name__}")
    check_parameter(spec, x, weight)
    return weight


def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``f(x, a)``; ``a`` is a tensor (1 or C entries, gradients flow) or a number (shared, constant)."""
    check_tensor(spec.name, x)
    return op_for(spec.name)(x, _weight(spec, x, args, kwargs))


def functional(spec: registry.ActivationSpec):
    return lambda x, *args, **kwargs: apply(spec, x, *args, **kwargs)


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    p = spec.params[0]
    return [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default,
                              annotation="torch.Tensor | float")]


# -- module support (actkit.nn.PReLU, actkit.nn.SwishBeta, actkit.nn.Activation("prelu")) ----------
def init_module(module: nn.Module, num_parameters: int = 1, init: float | None = None,
                device=None, dtype=None) -> None:
    spec = module.spec
    pname = spec.params[0].name
    if isinstance(num_parameters, bool) or not isinstance(num_parameters, int) or num_parameters < 1:
        raise ValueError(f"{spec.name}: num_parameters must be a positive integer (1 for one shared {pname}, "
                         f"or the number of channels, dim 1 of the input), got {num_parameters!r}")
    init = spec.params[0].default if init is None else init
    if not isinstance(init, numbers.Real) or isinstance(init, bool):
        raise TypeError(f"{spec.name}: init must be a real number, got {init!r}")
    module.num_parameters = num_parameters
    module.init = float(init)
    module._op = op_for(spec.name)
    setattr(module, pname, nn.Parameter(torch.full((num_parameters,), float(init), device=device, dtype=dtype)))


def parameter(module: nn.Module) -> torch.Tensor:
    return getattr(module, module.spec.params[0].name)


def module_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    op = module._op
    weight = getattr(module, op.spec.params[0].name)
    check_tensor(op.name, x)
    check_parameter(op.spec, x, weight)
    return op(x, weight)


def module_repr(module: nn.Module) -> str:
    return f"num_parameters={module.num_parameters}"

