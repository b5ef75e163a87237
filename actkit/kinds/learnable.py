"""Activations with a learnable parameter (kind ``"learnable"``): PReLU and Swish-beta.

``y = f(x, a)`` where ``a`` is one shared parameter or one per channel (dim 1, as
``torch.nn.PReLU``). For tracing, the custom ops (see :func:`.base.define_ops`) are

* ``actkit::learnable(x, weight, name, backend) -> y``
* ``actkit::learnable_backward(x, weight, grad, name, backend, weight_grad) -> (dx, dweight)``

Autograd saves x and the (tiny) parameter and recomputes f' in backward. On the Triton
backend the parameter gradient is a deterministic two-stage reduction (per-tile partial
sums, then a fixed-order column sum; see :mod:`actkit.kernels.learnable`), skipped when
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

from .. import registry
from ..backend import TORCH, TRITON, TRITON_DTYPES, backend_for
from .base import (BoundOp, Implementation, check_tensor, define_ops, eager2, is_compiling, per_activation,
                   same_device, traced)
from .sharding import Rule, channel_dim, ready


class LearnableImpl(Implementation):
    """One backend's implementation of a learnable activation: ``forward(x, weight)`` and
    ``dx_dweight(x, weight, grad, weight_grad) -> (dx, dweight)``, dweight zeros when ``weight_grad``
    is False; autograd saves x and the (tiny) parameter, and whether the parameter wants a gradient."""

    __slots__ = ("forward", "dx_dweight")
    batch_layout = "channel"

    def __init__(self, backend: str, forward, dx_dweight):
        super().__init__(backend)
        self.forward, self.dx_dweight = forward, dx_dweight

    def to_save(self, inputs, y):
        x, weight = inputs
        return (x, weight), (bool(weight.requires_grad),)

    def input_grads(self, saved, grad: torch.Tensor, state):
        x, weight = saved
        return self.dx_dweight(x, weight, grad, state[0])

    def differentiable_grads(self, saved, grad: torch.Tensor, state):
        """A vector-Jacobian product of the reference in x and the parameter: what autograd of torch's op gives."""
        return self.reference_vjp(saved, grad)


class LearnableOp(BoundOp):
    """A learnable activation resolved once; ``op(x, weight)`` applies it (weight already checked)."""

    __slots__ = ()

    def __init__(self, spec: registry.ActivationSpec):
        super().__init__(spec, (spec.name,))
        self.torch = LearnableImpl(TORCH, self.reference, self._torch_grads)

    def make_triton(self) -> LearnableImpl:
        from actkit.kernels import learnable as kernels

        fwd, bwd = kernels.TABLE[self.spec.table_key]
        return LearnableImpl(TRITON, lambda x, weight: kernels.forward(x, weight, fwd),
                             lambda x, weight, grad, wants: kernels.backward(x, weight, grad, bwd, wants))

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        backend = backend_for(x) if weight.dtype in TRITON_DTYPES else TORCH
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (see .base)
            impl = self.torch if backend == TORCH else self._triton or self.triton()
            return eager2(self, impl, (x.requires_grad or weight.requires_grad) and torch.is_grad_enabled(), x, weight)
        return traced(self, x, weight)

    def traced(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The call as torch.compile, tensor subclasses and dispatch modes see it: the custom op."""
        backend = backend_for(x) if weight.dtype in TRITON_DTYPES else TORCH
        ready()
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


resolve, op_for = per_activation(LearnableOp)


define_ops("learnable", "(Tensor x, Tensor weight, str name, str backend) -> Tensor",
           "(Tensor x, Tensor weight, Tensor grad, str name, str backend, bool weight_grad) -> (Tensor, Tensor)",
           key=("name",), inputs=("x", "weight"), resolve=resolve, sharding=Rule(channel_dim, parameter="weight"),
           fake=lambda x, *rest: torch.empty_like(x),
           backward_fake=lambda x, weight, *rest: (torch.empty_like(x),
                                                   torch.empty_like(weight, memory_format=torch.contiguous_format)))


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
    return resolve(spec.name)(x, _weight(spec, x, args, kwargs))


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
    module._op = resolve(spec.name)
    setattr(module, pname, nn.Parameter(torch.full((num_parameters,), float(init), device=device, dtype=dtype)))


def parameter(module: nn.Module) -> torch.Tensor:
    return getattr(module, module.spec.params[0].name)


def module_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    op = module._op
    weight = getattr(module, op.spec.params[0].name)
    check_tensor(op.name, x)
    check_parameter(op.spec, x, weight)
    return op(x, weight)


def module_kwargs(module: nn.Module) -> dict:
    """The constructor arguments that make the same module again (with a fresh parameter)."""
    return {"num_parameters": module.num_parameters}


init_reference = init_module


def reference_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    weight = parameter(module)
    check_parameter(module.spec, x, weight)
    return module.spec.reference(x, weight.to(x.dtype))

