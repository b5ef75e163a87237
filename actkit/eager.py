"""The eager call path shared by every kind: one ``torch.autograd.Function`` around a bound op.

Each kind (:mod:`actkit.ops`, :mod:`actkit.learnable`, :mod:`actkit.rowwise`, :mod:`actkit.glu`) binds an
activation and its parameters once, into a *bound op*: an object that already holds the
reference function, the Triton device functions and the scalar kernel arguments. A call then only
checks the input, picks the backend and runs, so that its host cost is close to the op it wraps.

Two routes lead to the same implementation:

* **Eager** (plain tensors, not tracing): the op's implementation is called directly, inside
  :class:`EagerFunction` when autograd is recording. A ``torch.library`` custom op costs about
  10 us per call in the dispatcher and its registered autograd about 25 us per fwd+bwd, which
  is several times the whole activation on a GPU.
* **Traced** (``torch.compile``, or tensor subclasses such as FakeTensor): the opaque
  ``torch.library`` custom ops, whose implementations call the same bound op. Inductor sees one
  op and never tries to compile the Triton kernel for a CPU (see the design notes).

A bound op holds one *implementation* per backend (the PyTorch reference, the Triton kernels),
each with ``forward(*inputs)``, ``save(ctx, inputs, output)`` and ``backward(ctx, *grads)``
(gradients for every input, ``None`` where there is none). Choosing the implementation object
once per call, rather than passing a backend name down, keeps string handling off the hot path.
"""
from __future__ import annotations

import importlib
import operator

import torch

from . import registry

# Dynamo treats this function as the constant True while tracing. A call takes the eager route
# when ``type(x) is torch.Tensor and not is_compiling()``, written out in each op's __call__
# (a helper function would be one more Python frame on every activation call).
is_compiling = torch.compiler.is_compiling


def op_cache(make):
    """``op_for(name)``: one bound op per activation, ``make(spec)`` on first use (for kinds whose
    ops have no parameters to bind)."""
    ops: dict = {}

    def op_for(name: str):
        op = ops.get(name)
        if op is None:
            op = ops[name] = make(registry.get(name))
        return op

    return op_for


def cached_op(module: str, name: str):
    """What unpickling a cached op calls (the closure ``op_for`` cannot be pickled itself):
    the op of ``name`` from the cache of the kind module ``module``."""
    return importlib.import_module(module).op_for(name)


def check_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")


def as_int(name: str, dim) -> int:
    """``dim`` as a Python int (anything with ``__index__``, not bool); TypeError naming ``name`` otherwise."""
    if type(dim) is int:
        return dim
    if not isinstance(dim, bool):
        try:
            return operator.index(dim)
        except TypeError:
            pass
    raise TypeError(f"{name}: dim must be an integer, got {dim!r}")


def same_device(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors are on one device (comparing torch.device objects costs a microsecond per
    call; the flags settle CPU and CUDA)."""
    if a.is_cpu:
        return b.is_cpu
    if a.is_cuda:
        return b.is_cuda and a.get_device() == b.get_device()
    return a.device == b.device


class Implementation:
    """Base of every per-backend implementation: ``forward``, ``save`` and ``backward`` come from
    the kind; ``forward_and_save`` is what autograd's forward runs (few-bit implementations
    override it, their forward makes the saved codes along with y)."""

    __slots__ = ()

    def forward_and_save(self, ctx, *inputs):
        output = self.forward(*inputs)
        self.save(ctx, inputs, output)
        return output


class EagerFunction(torch.autograd.Function):
    """Autograd for one implementation of a bound op on the eager route: ``apply(impl, x)``.

    The classic ``forward(ctx, ...)`` form on purpose: with a separate ``setup_context``,
    ``Function.apply`` rebinds its arguments through ``inspect.signature`` on every call,
    which costs more than the rest of the call together. Fixed arguments rather than
    ``*inputs`` for the same reason (packing and unpacking them costs about 2 us a call here):
    :class:`EagerFunction2` is the same for ops of two inputs.
    """

    @staticmethod
    def forward(ctx, impl, x):
        ctx.impl = impl
        return impl.forward_and_save(ctx, x)

    @staticmethod
    def backward(ctx, grad):
        return (None, *ctx.impl.backward(ctx, grad))


class EagerFunction2(torch.autograd.Function):
    """:class:`EagerFunction` for ops of two inputs: x and a parameter tensor, x and a dim, or a GLU's
    a and b."""

    @staticmethod
    def forward(ctx, impl, x, other):
        ctx.impl = impl
        return impl.forward_and_save(ctx, x, other)

    @staticmethod
    def backward(ctx, grad):
        return (None, *ctx.impl.backward(ctx, grad))
