"""The autograd-aware custom ops behind every elementwise activation.

Two opaque ``torch.library`` custom ops, generic over the registry:

* ``actkit::activation(x, name, p0, p1, backend) -> y``
* ``actkit::activation_backward(saved, grad, name, p0, p1, backend) -> dx``

Custom ops (rather than ``triton_op``) because they compile with
``torch.compile(fullgraph=True)`` on CPU too: Inductor treats them as opaque calls and
never tries to compile the Triton kernel for the CPU. ``backend`` is decided in Python
before the call, so it is a constant in a traced graph.

Autograd saves exactly one tensor: x, or y for specs with ``saves="y"`` (none for identity,
whose derivative is 1). The backward recomputes f' rather than storing intermediates: in the
Triton kernel, or on the PyTorch path with PyTorch's own backward op (``spec.torch_backward``)
or, for composite references, a vector-Jacobian product of the reference; so the fallback's
gradients are PyTorch's own, NaN and inf behaviour included.
"""
from __future__ import annotations

import inspect

import torch

from . import registry
from .backend import TORCH, backend_for


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def like_fake(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in the layout the fake implementations promise (``torch.empty_like(like)``).

    Shared by every kind's PyTorch path. Elementwise torch ops keep a dense input's strides,
    which is what empty_like gives, so they return at once; others (torch.softmax on a
    channels_last input returns a contiguous tensor) or inputs with gaps pay one copy. A
    mismatch would break torch.compile's stride assumptions.
    """
    if out.stride() == like.stride():
        return out
    target = torch.empty_like(like)
    return out if out.stride() == target.stride() else target.copy_(out)


def _params(spec: registry.ActivationSpec, p0: float, p1: float) -> dict[str, float]:
    return spec.params_from_kernel_args(p0, p1)


@torch.library.custom_op("actkit::activation", mutates_args=())
def activation(x: torch.Tensor, name: str, p0: float, p1: float, backend: str) -> torch.Tensor:
    spec = registry.get(name)
    if backend == TORCH:
        return like_fake(spec.reference(x, **_params(spec, p0, p1)), x)
    from actkit.kernels import elementwise

    fwd, _ = spec.triton_functions
    return elementwise.forward(x, fwd, p0, p1)


@activation.register_fake
def _activation_fake(x, name, p0, p1, backend):
    return torch.empty_like(x)


@torch.library.custom_op("actkit::activation_backward", mutates_args=())
def activation_backward(saved: torch.Tensor, grad: torch.Tensor, name: str, p0: float, p1: float,
                        backend: str) -> torch.Tensor:
    spec = registry.get(name)
    if backend == TORCH:
        params = _params(spec, p0, p1)
        if spec.torch_backward is not None:
            return like_fake(spec.torch_backward(grad, saved, **params), saved)
        _, vjp = torch.func.vjp(lambda t: spec.reference(t, **params), saved)
        dx = vjp(grad)[0]
        return like_fake(dx.clone() if _shares_storage(dx, grad) else dx, saved)
    from actkit.kernels import elementwise

    _, dfn = spec.triton_functions
    return elementwise.backward(saved, grad, dfn, p0, p1)


@activation_backward.register_fake
def _activation_backward_fake(saved, grad, name, p0, p1, backend):
    return torch.empty_like(saved)


def _setup_context(ctx, inputs, output):
    x, name, p0, p1, backend = inputs
    spec = registry.get(name)
    ctx.name, ctx.p0, ctx.p1, ctx.backend = name, p0, p1, backend
    ctx.differentiable, ctx.saves = spec.differentiable, spec.saves
    if spec.differentiable and spec.saves != "none":
        ctx.save_for_backward(output if spec.saves == "y" else x)


def _backward(ctx, grad):
    if not ctx.differentiable:
        dx = torch.zeros_like(grad)
    elif ctx.saves == "none":  # f' = 1: nothing to compute or read
        dx = grad
    else:
        (saved,) = ctx.saved_tensors
        dx = activation_backward(saved, grad, ctx.name, ctx.p0, ctx.p1, ctx.backend)
    return dx, None, None, None, None


activation.register_autograd(_backward, setup_context=_setup_context)


# -- the "elementwise" kind's handler (see actkit.kinds): functional call and module hooks --------
def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    p0, p1 = spec.kernel_args(spec.bind(args, kwargs))
    return torch.ops.actkit.activation(x, spec.name, p0, p1, backend_for(x))


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    return [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=float)
            for p in spec.params]


def init_module(module, *args, **kwargs) -> None:
    module.params = module.spec.bind(args, kwargs)


def module_forward(module, x: torch.Tensor) -> torch.Tensor:
    return apply(module.spec, x, **module.params)


def module_repr(module) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in module.params.items())
