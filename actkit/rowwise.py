"""Row-wise activations (kind ``"rowwise"``): softmax and log_softmax over a chosen dim.

Two opaque ``torch.library`` custom ops, as in :mod:`actkit.ops`:

* ``actkit::rowwise(x, name, dim, backend) -> y``
* ``actkit::rowwise_backward(y, grad, name, dim, backend) -> dx``

Autograd saves only the output y: both gradients are cheapest in y
(softmax ``dx = y * (dy - sum(dy * y))``, log_softmax ``dx = dy - exp(y) * sum(dy)``), and
the next layer usually keeps y anyway. ``dim`` is wrapped to ``0 <= dim < x.dim()`` in
Python before the call. On the Triton backend the kernels reduce over ``dim`` in place,
whatever the dense layout (see :mod:`actkit.kernels.softmax`); on the PyTorch backend the
ops are ``torch.softmax``/``torch.log_softmax`` and ATen's own backward formulas.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from . import registry
from .backend import TORCH, TRITON, backend_for
from .eager import EagerFunction2, Implementation, as_int, cached_op, check_tensor, is_compiling, op_cache
from .ops import like_fake

_LOG = {"softmax": False, "log_softmax": True}
_TORCH_BACKWARD = {
    "softmax": torch.ops.aten._softmax_backward_data,
    "log_softmax": torch.ops.aten._log_softmax_backward_data,
}


class RowwiseImpl(Implementation):
    """One backend's implementation of softmax or log_softmax: ``forward(x, dim)`` and
    ``input_grad(y, grad, dim)``; autograd saves only y (both gradients are cheapest in y, and
    the next layer keeps it anyway)."""

    __slots__ = ("backend", "forward", "input_grad")

    def __init__(self, backend: str, forward, input_grad):
        self.backend, self.forward, self.input_grad = backend, forward, input_grad

    def save(self, ctx, inputs, y: torch.Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(y)

    def backward(self, ctx, grad: torch.Tensor, input_grad=None):
        (y,) = ctx.saved_tensors
        return (input_grad or self.input_grad)(y, grad, ctx.dim), None


class RowwiseOp:
    """softmax or log_softmax resolved once; ``op(x, dim)`` applies it (x floating, dim wrapped)."""

    __slots__ = ("spec", "name", "log", "torch", "_triton")

    def __init__(self, spec: registry.ActivationSpec):
        self.spec, self.name, self.log = spec, spec.name, _LOG[spec.name]
        reference, backward = spec.reference, _TORCH_BACKWARD[spec.name]

        # torch.softmax returns a channels_last input contiguous: keep x's layout, as the kernels
        # do (a contiguous input needs no check: its result is contiguous too).
        def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
            y = reference(x, dim)
            return y if x.is_contiguous() and y.is_contiguous() else like_fake(y, x)

        def input_grad(y: torch.Tensor, grad: torch.Tensor, dim: int) -> torch.Tensor:
            dx = backward(grad, y, dim, y.dtype)
            return dx if y.is_contiguous() and dx.is_contiguous() else like_fake(dx, y)

        self.torch = RowwiseImpl(TORCH, forward, input_grad)
        self._triton = None  # made on first Triton use (imports Triton)

    def __reduce__(self):
        return cached_op, (__name__, self.name)

    def triton(self) -> RowwiseImpl:
        if self._triton is None:
            from actkit.kernels import softmax

            log = self.log
            self._triton = RowwiseImpl(TRITON, lambda x, dim: softmax.forward(x, dim, log),
                                       lambda y, grad, dim: softmax.backward(y, grad, dim, log))
        return self._triton

    def impl(self, backend: str) -> RowwiseImpl:
        return self.torch if backend == TORCH else self._triton or self.triton()

    def __call__(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (actkit.eager)
            impl = self.torch if backend_for(x) == TORCH else self._triton or self.triton()
            if x.requires_grad and torch.is_grad_enabled():
                return EagerFunction2.apply(impl, x, dim)
            return impl.forward(x, dim)
        return torch.ops.actkit.rowwise(x, self.name, dim, backend_for(x))


op_for = op_cache(RowwiseOp)


# -- the traced route: torch.library custom ops ----------------------------------------------------
@torch.library.custom_op("actkit::rowwise", mutates_args=())
def rowwise(x: torch.Tensor, name: str, dim: int, backend: str) -> torch.Tensor:
    return like_fake(op_for(name).impl(backend).forward(x, dim), x)


@rowwise.register_fake
def _rowwise_fake(x, name, dim, backend):
    return torch.empty_like(x)


@torch.library.custom_op("actkit::rowwise_backward", mutates_args=())
def rowwise_backward(y: torch.Tensor, grad: torch.Tensor, name: str, dim: int, backend: str) -> torch.Tensor:
    return like_fake(op_for(name).impl(backend).input_grad(y, grad, dim), y)


@rowwise_backward.register_fake
def _rowwise_backward_fake(y, grad, name, dim, backend):
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    x, name, dim, backend = inputs
    ctx.name, ctx.backend = name, backend
    op_for(name).impl(backend).save(ctx, (x, dim), output)


def _backward(ctx, grad):
    dx, _ = op_for(ctx.name).impl(ctx.backend).backward(ctx, grad, input_grad=(
        lambda y, dy, dim: rowwise_backward(y, dy, ctx.name, dim, ctx.backend)))
    return dx, None, None, None


rowwise.register_autograd(_backward, setup_context=_setup_context)


# -- argument checks ---------------------------------------------------------------------------
def wrap_dim(name: str, dim, ndim: int) -> int:
    """``dim`` as an index in ``[0, max(ndim, 1))``; IndexError naming the valid range otherwise."""
    dim = as_int(name, dim)
    size = max(ndim, 1)  # a 0-d tensor is normalised over its one element, dim 0 or -1 (as torch)
    if not -size <= dim < size:
        raise IndexError(f"{name}: dim {dim} is out of range for a {ndim}-d tensor; "
                         f"valid dims are {-size} to {size - 1}")
    return dim % size


def implicit_dim(ndim: int) -> int:
    """torch.nn.Softmax's rule when no dim is given (deprecated there): 0 for 0-, 1- and 3-d input, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """softmax / log_softmax of x over ``dim`` (default -1); ``dtype`` casts x first, as torch.softmax."""
    if len(args) == 1 and not kwargs:  # the usual call: f(x, dim)
        return _call(op_for(spec.name), x, args[0])
    if len(args) > 1:
        raise TypeError(f"{spec.name}(x, dim) takes one positional parameter, got {len(args)}")
    unknown = set(kwargs) - {"dim", "dtype"}
    if unknown:
        raise TypeError(f"{spec.name} has no parameter {sorted(unknown)[0]!r}; its parameters: dim, dtype")
    if args and "dim" in kwargs:
        raise TypeError(f"{spec.name}: parameter 'dim' given both positionally and by keyword")
    dim = args[0] if args else kwargs.get("dim", spec.params[0].default)
    return _call(op_for(spec.name), x, dim, kwargs.get("dtype"))


def _call(op: RowwiseOp, x: torch.Tensor, dim, dtype=None) -> torch.Tensor:
    check_tensor(op.name, x)
    if dtype is not None:
        x = x.to(dtype)
    if not x.is_floating_point():
        raise TypeError(f"{op.name} needs a floating-point tensor, got {x.dtype} (pass dtype=torch.float32)")
    ndim = x.dim()
    if type(dim) is int and -ndim <= dim < ndim:  # the usual case, checked and wrapped inline
        return op(x, dim % ndim)
    return op(x, wrap_dim(op.name, dim, ndim))


def functional(spec: registry.ActivationSpec):
    op = op_for(spec.name)

    def call(x, *args, **kwargs):
        if len(args) == 1 and not kwargs:  # the usual calls: f(x, dim) and f(x, dim=dim)
            return _call(op, x, args[0])
        if not args and len(kwargs) == 1 and "dim" in kwargs:
            return _call(op, x, kwargs["dim"])
        return apply(spec, x, *args, **kwargs)

    return call


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter("dim", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec.params[0].default,
                              annotation=int),
            inspect.Parameter("dtype", kw, default=None, annotation="torch.dtype | None")]


# -- module support (actkit.nn.Softmax, actkit.nn.LogSoftmax, actkit.nn.Activation("softmax")) ------
def init_module(module: nn.Module, dim: int | None = None) -> None:
    module.dim = None if dim is None else as_int(module.spec.name, dim)  # range checked per input
    module._op = op_for(module.spec.name)


def module_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    op = module._op
    check_tensor(op.name, x)
    return _call(op, x, implicit_dim(x.dim()) if module.dim is None else module.dim)


def module_repr(module: nn.Module) -> str:
    return f"dim={module.dim}"
