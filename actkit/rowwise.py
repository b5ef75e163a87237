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
import operator

import torch
from torch import nn

from . import registry
from .ops import like_fake
from .backend import TORCH, backend_for

_LOG = {"softmax": False, "log_softmax": True}
_TORCH_BACKWARD = {
    "softmax": torch.ops.aten._softmax_backward_data,
    "log_softmax": torch.ops.aten._log_softmax_backward_data,
}


@torch.library.custom_op("actkit::rowwise", mutates_args=())
def rowwise(x: torch.Tensor, name: str, dim: int, backend: str) -> torch.Tensor:
    if backend == TORCH:
        return like_fake(registry.get(name).reference(x, dim=dim), x)
    from actkit.kernels import softmax

    return softmax.forward(x, dim, _LOG[name])


@rowwise.register_fake
def _rowwise_fake(x, name, dim, backend):
    return torch.empty_like(x)


@torch.library.custom_op("actkit::rowwise_backward", mutates_args=())
def rowwise_backward(y: torch.Tensor, grad: torch.Tensor, name: str, dim: int, backend: str) -> torch.Tensor:
    if backend == TORCH:
        return like_fake(_TORCH_BACKWARD[name](grad, y, dim, y.dtype), y)
    from actkit.kernels import softmax

    return softmax.backward(y, grad, dim, _LOG[name])


@rowwise_backward.register_fake
def _rowwise_backward_fake(y, grad, name, dim, backend):
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    _, name, dim, backend = inputs
    ctx.name, ctx.dim, ctx.backend = name, dim, backend
    ctx.save_for_backward(output)


def _backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return rowwise_backward(y, grad, ctx.name, ctx.dim, ctx.backend), None, None, None


rowwise.register_autograd(_backward, setup_context=_setup_context)


# -- argument checks ---------------------------------------------------------------------------
def _as_int(name: str, dim) -> int:
    if not isinstance(dim, bool):
        try:
            return operator.index(dim)
        except TypeError:
            pass
    raise TypeError(f"{name}: dim must be an integer, got {dim!r}")


def wrap_dim(name: str, dim, ndim: int) -> int:
    """``dim`` as an index in ``[0, max(ndim, 1))``; IndexError naming the valid range otherwise."""
    dim = _as_int(name, dim)
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
    if len(args) > 1:
        raise TypeError(f"{spec.name}(x, dim) takes one positional parameter, got {len(args)}")
    unknown = set(kwargs) - {"dim", "dtype"}
    if unknown:
        raise TypeError(f"{spec.name} has no parameter {sorted(unknown)[0]!r}; its parameters: dim, dtype")
    if args and "dim" in kwargs:
        raise TypeError(f"{spec.name}: parameter 'dim' given both positionally and by keyword")
    dim = args[0] if args else kwargs.get("dim", spec.params[0].default)
    dtype = kwargs.get("dtype")
    if dtype is not None:
        x = x.to(dtype)
    if not x.is_floating_point():
        raise TypeError(f"{spec.name} needs a floating-point tensor, got {x.dtype} (pass dtype=torch.float32)")
    return torch.ops.actkit.rowwise(x, spec.name, wrap_dim(spec.name, dim, x.dim()), backend_for(x))


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter("dim", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec.params[0].default,
                              annotation=int),
            inspect.Parameter("dtype", kw, default=None, annotation="torch.dtype | None")]


# -- module support (actkit.nn.Softmax, actkit.nn.LogSoftmax, actkit.nn.Activation("softmax")) ------
def init_module(module: nn.Module, dim: int | None = None) -> None:
    module.dim = None if dim is None else _as_int(module.spec.name, dim)  # range checked per input


def module_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dim = implicit_dim(x.dim()) if module.dim is None else module.dim
    return apply(module.spec, x, dim)


def module_repr(module: nn.Module) -> str:
    return f"dim={module.dim}"
