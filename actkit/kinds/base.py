"""What every kind shares: bound ops, their implementations, the eager autograd route and the custom ops.

Each kind binds an activation (and its parameters) once, into a *bound op* (:class:`BoundOp`): an
object that already holds the reference function, the Triton device functions and the scalar
kernel arguments. A call then only checks the input, picks the backend and runs, so that its host
cost is close to the op it wraps.

A bound op holds one :class:`Implementation` per backend (the PyTorch reference, and the Triton
kernels made on first use). A kind states only its math and what it saves, in one protocol:

* ``forward(*inputs) -> output``;
* ``to_save(inputs, output) -> (tensors, state)``: what backward needs, tensors (None allowed) for
  ``ctx.save_for_backward`` and a tuple of constants;
* ``input_grads(saved, grad, state) -> grads``: the gradients of the tensor inputs, in order.

Two routes lead to the same implementation:

* **Eager** (plain tensors, not tracing): the implementation is called directly, inside
  :class:`EagerFunction` (or :class:`EagerFunction2` for two inputs) when autograd is recording. A
  ``torch.library`` custom op costs about 10 us per call in the dispatcher and its registered
  autograd about 25 us per fwd+bwd, several times the whole activation on a GPU.
* **Traced** (``torch.compile``, or tensor subclasses such as FakeTensor): two opaque
  ``torch.library`` custom ops per kind, made by :func:`define_ops`, whose implementations call the
  same bound op. Inductor sees one op and never tries to compile the Triton kernel for a CPU (see the
  design notes: ``triton_op`` does, and fails there).

Two more cases leave the eager route's fast path, checked only where they matter (a call that
records autograd, or one that would launch a Triton kernel):

* **torch.func transforms** (``grad``, ``vmap``, ``jvp``, ``jacrev``, ...):
  :class:`.transforms.TransformFunction`, the same implementation in the ``forward`` +
  ``setup_context`` form functorch needs, with a ``vmap`` rule (:func:`.transforms.batched`) and a
  ``jvp``. Its forward runs the implementation on the unbatched tensor; its backward and jvp
  differentiate the PyTorch reference of the saved inputs. (Under torch.compile of a transform, the
  PyTorch reference itself: see :func:`traced`.)
* **a TorchDispatchMode** (selective activation checkpointing, FlopCounterMode, make_fx): the custom
  ops, so that the mode sees one actkit op (a checkpoint policy can name ``torch.ops.actkit.*``).

**Double backward** (``create_graph=True``, and every backward under torch.func): when a backward runs
with grad mode on, the input gradients are computed by differentiable PyTorch ops from the same saved
tensors (:meth:`Implementation.differentiable_grads`) instead of the fast path, on both routes.

So the autograd rules live in two places only: :class:`Implementation` (what is saved and how the
gradients are asked for, on both routes) and :func:`define_ops` (the custom ops' fake, autograd and
registration).
"""
from __future__ import annotations

import functools
import importlib
import operator
from types import MappingProxyType

import torch

from .. import registry
from ..backend import TORCH, backend_for
from .sharding import Rule, declare as declare_sharding, differentiable_inside_dispatch
from .transforms import TransformFunction, tensor_args

# Dynamo treats this function as the constant True while tracing. A call takes the eager route
# when ``type(x) is torch.Tensor and not is_compiling()``, written out in each op's __call__
# (a helper function would be one more Python frame on every activation call).
is_compiling = torch.compiler.is_compiling
# Whether torch.func transforms are active (functorch's wrapped tensors are plain torch.Tensor to
# Python), and how many TorchDispatchModes are: each a C call of about 50 ns, made only where a call
# records autograd or would launch a Triton kernel (see :func:`aside`).
transforms_active = torch._C._are_functorch_transforms_active
dispatch_modes = torch._C._len_torch_dispatch_stack


# -- argument checks shared by the kinds ---------------------------------------------------------
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


def like_fake(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in the layout the fake implementations promise (``torch.empty_like(like)``).

    Elementwise torch ops keep a dense input's strides, which is what empty_like gives, so they
    return at once; others (torch.softmax on a channels_last input returns a contiguous tensor) or
    inputs with gaps pay one copy. A mismatch would break torch.compile's stride assumptions.
    """
    if out.stride() == like.stride():
        return out
    target = torch.empty_like(like)
    return out if out.stride() == target.stride() else target.copy_(out)


def shown_params(params) -> str:
    """``", alpha=1, beta=2"``: parameters as reprs show them."""
    return "".join(f", {k}={v:g}" for k, v in params.items())


# -- implementations and bound ops ---------------------------------------------------------------
class Implementation:
    """One backend's implementation of a bound op (see the module doc for the protocol).

    ``forward_and_save`` is what autograd's forward runs and ``backward`` what its backward runs, on
    both routes; ``op_forward`` is what the forward custom op computes (few-bit returns its codes too).

    ``exact`` is the PyTorch implementation of the same bound op (itself on the PyTorch backend): its
    ``forward`` is made of differentiable torch ops, so its :meth:`differentiable_grads`,
    :meth:`reference_vjp` and :meth:`reference_jvp` serve every backend where gradients must be
    differentiable (double backward, torch.func). ``batch_layout`` tells :func:`.transforms.batched` how the
    inputs line up under vmap: ``"same"`` (tensors of one shape; an int input is a dim of x) or
    ``"channel"`` (x and a parameter of one entry or one per channel, dim 1 of x). ``native``: its
    forward is torch ops whose own derivatives are the op's (the PyTorch implementations, but for the
    forward-only step and few-bit), so that torch.func and dispatch modes may see those ops as they are.
    """

    __slots__ = ("backend", "exact", "native")
    batch_layout = "same"

    def __init__(self, backend: str):
        self.backend, self.exact = backend, self  # BoundOp.triton() points a Triton one's exact at the PyTorch one
        self.native = backend == TORCH

    def op_forward(self, *inputs):
        return self.forward(*inputs)

    def forward_and_save(self, ctx, *inputs):
        output = self.forward(*inputs)
        self.save(ctx, inputs, output)
        return output

    def save(self, ctx, inputs, output) -> None:
        tensors, ctx.state = self.to_save(inputs, output)
        ctx.save_for_backward(*tensors)

    def backward(self, ctx, grad: torch.Tensor, input_grads=None) -> tuple:
        """Gradients of the tensor inputs by ``input_grads`` (default: this implementation's own; the
        traced route passes its backward custom op); with grad mode on (``create_graph=True``, and every
        backward under torch.func) by differentiable torch ops instead, so that they can be differentiated."""
        if torch.is_grad_enabled():
            return self.exact.differentiable_grads(ctx.saved_tensors, grad, ctx.state)
        return (input_grads or self.input_grads)(ctx.saved_tensors, grad, ctx.state)

    def differentiable_grads(self, saved, grad: torch.Tensor, state) -> tuple:
        """What :meth:`input_grads` gives, from the same saved tensors, in differentiable torch ops
        (called on the PyTorch implementation: ``impl.exact``)."""
        raise NotImplementedError

    # -- torch.func: the PyTorch reference of the inputs, differentiated by torch ------------------
    def reference(self, *inputs) -> torch.Tensor:
        """The op in differentiable torch ops (called on the PyTorch implementation, whose forward it is)."""
        return self.forward(*inputs)

    def reference_vjp(self, inputs: tuple, grad: torch.Tensor) -> tuple:
        """Gradients of the tensor inputs: a vector-Jacobian product of :meth:`reference`, itself
        differentiable (torch.func composes it with outer transforms and with autograd)."""
        tensors, call = tensor_args(self.reference, inputs)
        _, vjp = torch.func.vjp(call, *tensors)
        return vjp(grad)

    def reference_jvp(self, inputs: tuple, tangents: tuple) -> torch.Tensor:
        """The output's tangent (forward-mode AD): a Jacobian-vector product of :meth:`reference` in
        the inputs that have a tangent."""
        moving = [i for i, t in enumerate(tangents) if t is not None]
        primals = tuple(inputs[i] for i in moving)

        def call(*values):
            args = list(inputs)
            for i, value in zip(moving, values):
                args[i] = value
            return self.reference(*args)

        return torch.func.jvp(call, primals, tuple(tangents[i] for i in moving))[1]


class BoundOp:
    """Base of every kind's bound op: backend choice, lazy Triton, pickling.

    A kind sets ``self.torch`` (its PyTorch implementation), ``self.key`` (the constants its custom
    ops carry, from which its module's ``resolve(*key)`` gives this op back) and writes
    ``make_triton()`` and ``__call__``.
    """

    __slots__ = ("spec", "name", "key", "torch", "_triton")

    def __init__(self, spec, key: tuple):
        self.spec, self.name, self.key = spec, spec.name, key
        self._triton = None  # made on first Triton use (imports Triton)

    def make_triton(self) -> Implementation:
        raise NotImplementedError

    def triton(self) -> Implementation:
        if self._triton is None:
            impl = self.make_triton()
            impl.exact = self.torch
            self._triton = impl
        return self._triton

    def impl(self, backend: str) -> Implementation:
        return self.torch if backend == TORCH else self._triton or self.triton()

    def __reduce__(self):  # picklable (modules hold one): rebuilt from the kind and its key
        return rebuild, (type(self).__module__, self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def rebuild(module: str, key: tuple):
    """What unpickling a bound op calls: ``resolve(*key)`` of its kind's module."""
    return importlib.import_module(module).resolve(*key)


class ScalarBoundOp(BoundOp):
    """A bound op with scalar parameters (the elementwise kind, exact or few-bit): ``params`` (read-only)
    and the ``p0, p1`` the device functions take; the PyTorch reference with them bound is ``reference``."""

    __slots__ = ("params", "p0", "p1", "saves", "reference")

    def __init__(self, spec, params, extra_key: tuple = ()):
        self.params = MappingProxyType(dict(params))
        self.p0, self.p1 = spec.kernel_args(params)
        super().__init__(spec, (spec.name, self.p0, self.p1, *extra_key))
        self.saves = spec.saves_for(params)
        self.reference = functools.partial(spec.reference, **params) if params else spec.reference

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}{shown_params(self.params)})"

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        """The call as torch.compile and tensor subclasses see it: the kind's custom op."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (see the module doc)
            impl = self.torch if backend_for(x) == TORCH else self._triton or self.triton()
            if x.requires_grad and torch.is_grad_enabled():
                if transforms_active() or dispatch_modes():
                    return aside(self, impl, x)
                return EagerFunction.apply(impl, x)
            if impl.native or not (transforms_active() or dispatch_modes()):
                return impl.forward(x)  # torch ops that transforms and modes handle themselves
            return aside(self, impl, x)
        check_tensor(self.name, x)
        return traced(self, x)


def op_cache(make):
    """``cached(key...)``: one bound op per key, ``make(*key)`` on first use."""
    ops: dict = {}

    def cached(*key):
        op = ops.get(key)
        if op is None:
            op = ops[key] = make(*key)
        return op

    return cached


def per_activation(make):
    """``(resolve, op_for)`` of a kind with one bound op per activation (its parameters come with each
    call): ``resolve(name)`` and ``op_for(spec)`` give the op ``make(spec)``, made on first use."""
    resolve = op_cache(lambda name: make(registry.get(name)))
    return resolve, lambda spec: resolve(spec.name)


# -- the eager route -----------------------------------------------------------------------------
class EagerFunction(torch.autograd.Function):
    """Autograd for one implementation of a bound op on the eager route: ``apply(impl, x)``.

    The classic ``forward(ctx, ...)`` form on purpose: with a separate ``setup_context``,
    ``Function.apply`` rebinds its arguments through ``inspect.signature`` on every call
    (torch 2.14, this project's 2-core CPU: a minimal Function's fwd+bwd 43 us, 73 us with setup_context).
    torch.func refuses this form, so calls under its transforms take :class:`TransformFunction`
    (see :func:`aside`). Fixed arguments rather than ``*inputs`` for the same reason (packing and
    unpacking them costs about 2 us a call here): :class:`EagerFunction2` is the same for ops of two
    inputs. Its backward is differentiable when run with grad mode on (``Implementation.backward``).
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
    a and b (a non-tensor second input gets no gradient)."""

    @staticmethod
    def forward(ctx, impl, x, other):
        ctx.impl = impl
        return impl.forward_and_save(ctx, x, other)

    @staticmethod
    def backward(ctx, grad):
        grads = ctx.impl.backward(ctx, grad)
        return (None, *grads) if len(grads) == 2 else (None, grads[0], None)


def aside(op, impl: Implementation, *inputs):
    """An eager-route call while torch.func transforms or a TorchDispatchMode are active.

    Under torch.func: :class:`TransformFunction` (functorch needs ``setup_context``; its vmap rule
    runs the kernels on the unbatched tensor). Under a TorchDispatchMode: the kind's custom op
    (``op.traced``), which the mode sees as one op: a selective-checkpoint policy naming
    ``torch.ops.actkit.*`` then decides whether it is saved or recomputed, as it does under
    torch.compile. (The eager Functions' kernels are invisible to a mode: it would see only the
    ATen ops inside them, or nothing for a Triton launch.)
    """
    if transforms_active():
        return TransformFunction.apply(impl, *inputs)
    return op.traced(*inputs)


def eager2(op, impl: Implementation, grad: bool, x: torch.Tensor, other):
    """The eager route of the two-input kinds (learnable: x and its weight; row-wise: x and dim; GLU: x and
    the split dim or b) once the op has picked ``impl``; ``grad``: autograd records the call. Elementwise
    calls, the hot path, inline the same choice in :meth:`ScalarBoundOp.__call__`."""
    if grad:
        if transforms_active() or dispatch_modes():
            return aside(op, impl, x, other)
        return EagerFunction2.apply(impl, x, other)
    if impl.native or not (transforms_active() or dispatch_modes()):
        return impl.forward(x, other)  # torch ops that transforms and modes handle themselves
    return aside(op, impl, x, other)


def traced(op, *inputs):
    """A call off the eager route (torch.compile, tensor subclasses): the kind's custom op (``op.traced``).

    Inside torch.func transforms (torch.compile of ``grad``, ``vmap``, ...), the PyTorch reference
    in torch ops instead: torch's custom-op autograd does not support functorch, and Dynamo traces an
    autograd.Function under a transform by differentiating its forward, not by its backward. So an op
    whose gradient is not torch's (the few-bit ops, the forward-only step) is refused there."""
    if transforms_active():
        if not op.torch.native:
            raise RuntimeError(f"{op!r} cannot run under torch.compile of a torch.func transform: its gradient is "
                               "actkit's own (quantised, or zero for step), which Dynamo would replace by "
                               "torch's; apply the transform outside torch.compile, or call it in eager mode")
        return op.torch.forward(*inputs)
    return op.traced(*inputs)


# -- the traced route: one pair of torch.library custom ops per kind --------------------------------
def _arg_names(schema: str) -> list[str]:
    arguments = schema.rpartition("->")[0].strip()[1:-1]  # "(Tensor x, str name) -> ..." -> "Tensor x, str name"
    return [arg.split()[-1] for arg in arguments.split(",")]


class _Layout:
    """Where a kind's two custom ops carry what, read from the argument names of their schemas: the
    forward op's ``key`` and ``inputs`` (backend last); the backward op's saved tensors (before ``grad``),
    ``grad``, the same ``key`` names, ``backend``, and the implementation's state (the other names)."""

    def __init__(self, schema: str, backward_schema: str, key: tuple[str, ...], inputs):
        names, back = _arg_names(schema), _arg_names(backward_schema)
        self.key_at = [names.index(k) for k in key]
        if not callable(inputs):
            taken = [names.index(i) for i in inputs]
            inputs = lambda args: tuple(args[i] for i in taken)  # noqa: E731
        self.inputs, self.size, self.n_saved = inputs, len(back), back.index("grad")
        self.backend_at, self.back_key_at = back.index("backend"), [back.index(k) for k in key]
        self.state_at = [i for i, n in enumerate(back) if i > self.n_saved and n not in key and n != "backend"]

    def split(self, args: tuple) -> tuple[tuple, tuple]:
        """(key, implementation inputs) of the forward op's arguments, backend left off."""
        return tuple(args[i] for i in self.key_at), self.inputs(args)

    def unpack(self, args: tuple):
        """(saved, grad, state, key, backend) of the backward op's arguments."""
        return (args[:self.n_saved], args[self.n_saved], tuple(args[i] for i in self.state_at),
                tuple(args[i] for i in self.back_key_at), args[self.backend_at])

    def pack(self, saved, grad, state, key, backend) -> list:
        """The backward op's arguments, in its schema's order."""
        args = [*saved, grad, *(None,) * (self.size - self.n_saved - 1)]
        for i, value in (*zip(self.state_at, state), *zip(self.back_key_at, key), (self.backend_at, backend)):
            args[i] = value
        return args


def define_ops(name: str, schema: str, backward_schema: str, *, key: tuple[str, ...], inputs, resolve, fake,
               backward_fake, conform: bool = True, sharding: Rule | None = None):
    """Define ``actkit::<name>`` and ``actkit::<name>_backward`` with fake and autograd; returns both.

    The forward op takes ``(*args, backend)``; ``key`` names the arguments that ``resolve(*key)`` turns
    into the bound op, ``inputs`` those its implementations take (or is a function of the arguments
    that gives them). The backward op takes the saved tensors, ``grad``, the key, ``backend`` and the
    state constants (see :class:`_Layout`), as the implementation's ``to_save`` gives them, and returns
    the gradients of the tensor inputs: one tensor for ``-> Tensor``, else all of them. ``conform``: the forward output
    and the first gradient are put in the layout of the first input and the first saved tensor (what
    ``empty_like`` fakes promise).

    Custom ops (rather than ``triton_op``) because they compile with ``torch.compile(fullgraph=True)``
    on CPU too: Inductor treats them as opaque calls and never compiles the Triton kernel for the CPU.
    ``backend`` is decided in Python before the call, so it is a constant in a traced graph.

    ``sharding``: the kind's rule for DTensors (its special dim, see :mod:`.sharding`), given to both
    ops; None leaves them without one (few-bit: its DTensor calls run on the local shards).
    """
    layout = _Layout(schema, backward_schema, key, inputs)

    def forward(*args):
        key, inputs = layout.split(args[:-1])
        out = resolve(*key).impl(args[-1]).op_forward(*inputs)
        return like_fake(out, inputs[0]) if conform else out

    returns = backward_schema.replace(" ", "").rpartition("->")[2]
    pack = {"Tensor": operator.itemgetter(0), "Tensor[]": list}.get(returns, tuple)

    def backward_op(*args):
        saved, grad, state, key, backend = layout.unpack(args)
        grads = resolve(*key).impl(backend).input_grads(saved, grad, state)
        if conform:
            grads = (like_fake(grads[0], saved[0]), *grads[1:])
        return pack(grads)

    op = torch.library.custom_op(f"actkit::{name}", forward, mutates_args=(), schema=schema)
    op.register_fake(fake)
    grad_op = torch.library.custom_op(f"actkit::{name}_backward", differentiable_inside_dispatch(backward_op),
                                      mutates_args=(), schema=backward_schema)
    grad_op.register_fake(backward_fake)
    n_args = len(op._opoverload._schema.arguments)

    def setup_context(ctx, inputs, output):
        key, args = layout.split(inputs[:-1])
        ctx.key, ctx.backend = key, inputs[-1]
        resolve(*key).impl(ctx.backend).save(ctx, args, output)

    def backward(ctx, grad, *_other_outputs):  # the other outputs (few-bit codes) have no gradient
        def traced_grads(saved, dy, state):
            out = grad_op(*layout.pack(saved, dy, state, ctx.key, ctx.backend))
            return (out,) if isinstance(out, torch.Tensor) else tuple(out)

        grads = resolve(*ctx.key).impl(ctx.backend).backward(ctx, grad, traced_grads)
        return (*grads, *(None,) * (n_args - len(grads)))

    op.register_autograd(backward, setup_context=setup_context)
    if sharding is not None:
        declare_sharding(name, sharding)
    return op, grad_op
