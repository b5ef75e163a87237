"""Row-wise activations (kind ``"rowwise"``): softmax and log_softmax over a chosen dim.

For tracing, the custom ops (see :func:`.base.define_ops`) are

* ``actkit::rowwise(x, name, dim, backend) -> y``
* ``actkit::rowwise_backward(y, grad, name, dim, backend) -> dx``

Autograd saves only the output y: both gradients are cheapest in y
(softmax ``dx = y * (dy - sum(dy * y))``, log_softmax ``dx = dy - exp(y) * sum(dy)``), and
the next layer usually keeps y anyway. ``dim`` is wrapped to ``0 <= dim < x.dim()`` in
Python before the call. On the Triton backend the kernels reduce over ``dim`` in place,
whatever the dense layout (see :mod:`actkit.kernels.rowwise`); on the PyTorch backend the
ops are ``torch.softmax``/``torch.log_softmax`` and ATen's own backward formulas.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import registry
from ..backend import TORCH, TRITON, backend_for
from .base import (BoundOp, Implementation, as_int, check_tensor, define_ops, eager2, is_compiling, like_fake,
                   per_activation, traced)
from .sharding import Rule, ready

_LOG = {"softmax": False, "log_softmax": True}
_TORCH_BACKWARD = {
    "softmax": torch.ops.aten._softmax_backward_data,
    "log_softmax": torch.ops.aten._log_softmax_backward_data,
}


class RowwiseImpl(Implementation):
    """One backend's implementation of softmax or log_softmax: ``forward(x, dim)`` and
    ``dx(y, grad, dim)``; autograd saves only y (both gradients are cheapest in y, and the next layer
    keeps it anyway) and the dim."""

    __slots__ = ("forward", "dx")

    def __init__(self, backend: str, forward, dx):
        super().__init__(backend)
        self.forward, self.dx = forward, dx

    def to_save(self, inputs, y):
        return (y,), (inputs[1],)

    def input_grads(self, saved, grad: torch.Tensor, state) -> tuple[torch.Tensor]:
        return (self.dx(saved[0], grad, state[0]),)

    def differentiable_grads(self, saved, grad: torch.Tensor, state) -> tuple[torch.Tensor]:
        """The PyTorch path's own: ATen's ``_softmax_backward_data`` and ``_log_softmax_backward_data``
        have derivatives in both dy and y (what autograd of torch.softmax uses)."""
        return self.input_grads(saved, grad, state)


class RowwiseOp(BoundOp):
    """softmax or log_softmax resolved once; ``op(x, dim)`` applies it (x floating, dim wrapped)."""

    __slots__ = ("log",)

    def __init__(self, spec: registry.ActivationSpec):
        super().__init__(spec, (spec.name,))
        self.log = _LOG[spec.name]
        reference, backward = spec.reference, _TORCH_BACKWARD[spec.name]

        # torch.softmax returns a channels_last input contiguous: keep x's layout, as the kernels
        # do (a contiguous input needs no check: its result is contiguous too).
        def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
            y = reference(x, dim)
            return y if x.is_contiguous() and y.is_contiguous() else like_fake(y, x)

        def dx(y: torch.Tensor, grad: torch.Tensor, dim: int) -> torch.Tensor:
            out = backward(grad, y, dim, y.dtype)
            return out if y.is_contiguous() and out.is_contiguous() else like_fake(out, y)

        self.torch = RowwiseImpl(TORCH, forward, dx)

    def make_triton(self) -> RowwiseImpl:
        from actkit.kernels import rowwise as kernels

        log = self.log
        return RowwiseImpl(TRITON, lambda x, dim: kernels.forward(x, dim, log),
                           lambda y, grad, dim: kernels.backward(y, grad, dim, log))

    def __call__(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (see .base)
            impl = self.torch if backend_for(x) == TORCH else self._triton or self.triton()
            return eager2(self, impl, x.requires_grad and torch.is_grad_enabled(), x, dim)
        return traced(self, x, dim)

    def traced(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The call as torch.compile, tensor subclasses and dispatch modes see it: the custom op."""
        ready()
        return torch.ops.actkit.rowwise(x, self.name, dim, backend_for(x))


resolve, op_for = per_activation(RowwiseOp)


define_ops("rowwise", "(Tensor x, str name, SymInt dim, str backend) -> Tensor",
           "(Tensor y, Tensor grad, str name, SymInt dim, str backend) -> Tensor",
           key=("name",), inputs=("x", "dim"), resolve=resolve, sharding=Rule(lambda args: args["dim"]),  # the reduced dim
           fake=lambda x, *rest: torch.empty_like(x), backward_fake=lambda y, *rest: torch.empty_like(y))


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
        return _call(resolve(spec.name), x, args[0])
    if len(args) > 1:
        raise TypeError(f"{spec.name}(x, dim) takes one positional parameter, got {len(args)}")
    unknown = set(kwargs) - {"dim", "dtype"}
    if unknown:
        raise TypeError(f"{spec.name} has no parameter {sorted(unknown)[0]!r}; its parameters: dim, dtype")
    if args and "dim" in kwargs:
        raise TypeError(f"{spec.name}: parameter 'dim' given both positionally and by keyword")
    dim = args[0] if args else kwargs.get("dim", spec.params[0].default)
    return _call(resolve(spec.name), x, dim, kwargs.get("dtype"))


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
    op = resolve(spec.name)

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
    module._op = resolve(module.spec.name)


def module_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    op = module._op
    check_tensor(op.name, x)
    return _call(op, x, implicit_dim(x.dim()) if module.dim is None else module.dim)


def module_kwargs(module: nn.Module) -> dict:
    """The constructor arguments that make the same module again."""
    return {"dim": module.dim}


init_reference = init_module


def reference_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dim = implicit_dim(x.dim()) if module.dim is None else module.dim
    return module.spec.reference(x, dim=wrap_dim(module.spec.name, dim, x.dim()))
