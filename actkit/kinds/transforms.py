"""torch.func support for every kind: :class:`TransformFunction` and its vmap rule (:func:`batched`).

functorch accepts an autograd.Function only in the ``forward`` + ``setup_context`` form, which costs
every call an ``inspect.signature`` bind in ``Function.apply``; so the eager route keeps its classic
Functions (:mod:`.base`) and only a call made under a transform comes here (``base.aside``).
This module knows implementations by their protocol (``forward``, ``exact.reference_vjp``,
``exact.reference_jvp``, ``exact.reference``, ``batch_layout``) and imports nothing of actkit.
"""
from __future__ import annotations

import functools

import torch


def tensor_args(fn, inputs: tuple):
    """(the tensors among ``inputs``, ``call(*tensors)`` = ``fn`` of the inputs with those tensors)."""
    at = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor)]

    def call(*tensors):
        args = list(inputs)
        for i, value in zip(at, tensors):
            args[i] = value
        return fn(*args)

    return tuple(inputs[i] for i in at), call


class TransformFunction(torch.autograd.Function):
    """Autograd for one implementation under torch.func transforms: ``apply(impl, *inputs)``.

    The forward runs the implementation (the Triton kernels or the PyTorch reference) on plain
    tensors: functorch unwraps them level by level, and :meth:`vmap` hands the batched tensor to
    the kernel (:func:`batched`). It saves the tensor inputs (not y or few-bit codes: those are
    laid out for the unbatched tensor, and functorch's wrapped tensors are not), and its backward
    and jvp differentiate the PyTorch reference of them (``Implementation.reference_vjp`` in :mod:`.base`), so
    that they compose with any outer transform: grad of grad, jacfwd of jacrev, vmap of grad.
    """

    @staticmethod
    def forward(impl, *inputs):
        return impl.forward(*inputs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        impl, *args = inputs
        ctx.impl = impl
        ctx.constants = tuple(None if isinstance(a, torch.Tensor) else a for a in args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _inputs(ctx) -> tuple:
        tensors = iter(ctx.saved_tensors)
        return tuple(next(tensors) if c is None else c for c in ctx.constants)

    @staticmethod
    def backward(ctx, grad):
        inputs = TransformFunction._inputs(ctx)
        grads = iter(ctx.impl.exact.reference_vjp(inputs, grad))
        return (None, *(next(grads) if isinstance(a, torch.Tensor) else None for a in inputs))

    @staticmethod
    def jvp(ctx, _impl_tangent, *tangents):
        return ctx.impl.exact.reference_jvp(TransformFunction._inputs(ctx), tangents)

    @staticmethod
    def vmap(info, in_dims, impl, *inputs):
        return batched(impl, info, in_dims[1:], inputs)


def batched(impl, info, in_dims: tuple, inputs: tuple):
    """The vmap rule of every kind: ``(output, out_dim)`` of ``impl`` on batched physical tensors.

    * One tensor (elementwise, few-bit): the op is pointwise, so it runs on the batched tensor as
      it lies (any batch dim), and the output keeps that batch dim.
    * Tensors of one shape and dims (GLU's a and b, or x and its split dim; softmax's x and dim):
      the batch dim moves to the front (an unbatched tensor is expanded to it) and every dim shifts
      by one.
    * ``"channel"`` (PReLU, Swish-beta): a shared parameter is pointwise; one per channel (dim 1 of
      the logical x) sees the batch folded into dim 0, which keeps the channels at dim 1.
    * Where the kernels cannot take the batched layout, the PyTorch reference runs under
      torch.vmap: a batched parameter (per-sample weights), or a dim of a 0-d tensor.
    """
    apply = functools.partial(TransformFunction.apply, impl)
    tensors = [(value, bdim) for value, bdim in zip(inputs, in_dims) if isinstance(value, torch.Tensor)]
    if impl.batch_layout == "channel":
        (x, bx), (weight, bw) = tensors
        if bx is None or bw is not None:
            return _reference_vmap(impl, info, in_dims, inputs)
        if weight.numel() == 1:
            return apply(x, weight), bx
        front = x.movedim(bx, 0)
        return apply(front.flatten(0, 1), weight).unflatten(0, front.shape[:2]), 0
    if len(inputs) == 1:
        return apply(*inputs), in_dims[0]
    ndim = next(value.dim() for value, bdim in tensors if bdim is not None)  # the logical ndim + 1
    moved = []
    for value, bdim in zip(inputs, in_dims):
        if not isinstance(value, torch.Tensor):
            if value + 1 >= ndim:  # a dim of a 0-d tensor: no batched layout to shift it into
                return _reference_vmap(impl, info, in_dims, inputs)
            moved.append(value + 1)
        elif bdim is None:
            moved.append(value.expand(info.batch_size, *value.shape))
        else:
            moved.append(value.movedim(bdim, 0))
    return apply(*moved), 0


def _reference_vmap(impl, info, in_dims: tuple, inputs: tuple):
    """The PyTorch reference under torch.vmap: ``(output, 0)``. Unbatched tensors are expanded to
    the batch (torch's prelu batching rule warns about resizing an output otherwise)."""
    batched_inputs = tuple(value.expand(info.batch_size, *value.shape)
                           if isinstance(value, torch.Tensor) and d is None else value
                           for value, d in zip(inputs, in_dims))
    tensors, call = tensor_args(impl.exact.reference, batched_inputs)
    dims = tuple(0 if d is None else d for value, d in zip(inputs, in_dims) if isinstance(value, torch.Tensor))
    return torch.vmap(call, in_dims=dims, randomness=info.randomness)(*tensors), 0
