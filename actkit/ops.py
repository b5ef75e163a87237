"""The elementwise kind: bound activations, their eager autograd and the custom ops for tracing.

:class:`ElementwiseOp` is one activation with its parameters resolved once: the PyTorch
reference and backward with the parameters bound, the scalar kernel arguments, and (on first
Triton use) the device functions. Calling it is the whole eager path (see :mod:`actkit.eager`):
check the input, pick the backend, run the kernel or the torch op, save one tensor.

For ``torch.compile`` and tensor subclasses the same op runs behind two opaque
``torch.library`` custom ops, generic over the registry:

* ``actkit::activation(x, name, p0, p1, backend) -> y``
* ``actkit::activation_backward(saved, grad, name, p0, p1, backend) -> dx``

Custom ops (rather than ``triton_op``) because they compile with ``torch.compile(fullgraph=True)``
on CPU too: Inductor treats them as opaque calls and never tries to compile the Triton kernel for
the CPU. ``backend`` is decided in Python before the call, so it is a constant in a traced graph.

Autograd saves exactly one tensor: y wherever f' can be read from it with these parameters
(``spec.saves_for(params)``: the ReLU family, ELU with alpha > 0, sigmoid, tanh, ...), since
the next layer usually keeps y anyway; else x; nothing for identity, whose derivative is 1.
The backward recomputes f' rather than storing intermediates: in the Triton kernel
(``<name>_bwd`` of x or ``<name>_bwd_y`` of y), or on the PyTorch path with PyTorch's own
backward op (``spec.torch_backward``, ``spec.torch_backward_y``) or, for composite references,
a vector-Jacobian product of the reference; so the fallback's gradients are PyTorch's own,
NaN and inf behaviour included.
"""
from __future__ import annotations

import functools
import inspect
from types import MappingProxyType

import torch

from . import registry
from .backend import TORCH, TRITON, backend_for
from .eager import EagerFunction, Implementation, check_tensor, is_compiling


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def like_fake(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in the layout the fake implementations promise (``torch.empty_like(like)``).

    Shared by every kind's custom op. Elementwise torch ops keep a dense input's strides, which
    is what empty_like gives, so they return at once; others (torch.softmax on a channels_last
    input returns a contiguous tensor) or inputs with gaps pay one copy. A mismatch would break
    torch.compile's stride assumptions.
    """
    if out.stride() == like.stride():
        return out
    target = torch.empty_like(like)
    return out if out.stride() == target.stride() else target.copy_(out)


class ElementwiseImpl(Implementation):
    """One backend's implementation of a bound elementwise activation.

    ``forward(x)`` and ``input_grad(grad, saved)`` (ATen's argument order) are plain callables
    set when the op is bound: on the PyTorch backend the reference and its backward op
    themselves, with the parameters already applied, so a call adds no Python frame of ours.
    """

    __slots__ = ("backend", "forward", "input_grad", "saves", "differentiable")

    def __init__(self, backend: str, forward, input_grad, saves: str, differentiable: bool):
        self.backend, self.forward, self.input_grad = backend, forward, input_grad
        self.saves, self.differentiable = saves, differentiable

    def save(self, ctx, inputs, y: torch.Tensor) -> None:
        if self.saves == "y":
            ctx.save_for_backward(y)
        elif self.saves == "x":
            ctx.save_for_backward(inputs[0])

    def forward_and_save(self, ctx, x: torch.Tensor) -> torch.Tensor:  # save() inlined: the hot path
        y = self.forward(x)
        if self.saves == "y":
            ctx.save_for_backward(y)
        elif self.saves == "x":
            ctx.save_for_backward(x)
        return y

    def backward(self, ctx, grad: torch.Tensor, input_grad=None) -> tuple[torch.Tensor]:
        """(dx,): zeros for a forward-only activation, dy itself where f' = 1, else ``input_grad``
        (default: this implementation's) of dy and the saved tensor."""
        if not self.differentiable:
            return (torch.zeros_like(grad),)
        if self.saves == "none":
            return (grad,)
        (saved,) = ctx.saved_tensors
        return ((input_grad or self.input_grad)(grad, saved),)


class ElementwiseOp:
    """An elementwise activation bound to its (validated) parameters; ``op(x)`` applies it."""

    __slots__ = ("spec", "name", "params", "p0", "p1", "saves", "torch", "_triton")

    def __init__(self, spec: registry.ActivationSpec, params: dict[str, float]):
        self.spec, self.name = spec, spec.name
        self.params = MappingProxyType(dict(params))
        self.p0, self.p1 = spec.kernel_args(params)
        self.saves = spec.saves_for(params)
        bound = dict(params)
        reference = functools.partial(spec.reference, **bound) if bound else spec.reference
        backward = spec.torch_backward_y if self.saves == "y" else spec.torch_backward
        if backward is None:
            input_grad = functools.partial(_vjp_grad, reference)
        else:
            input_grad = functools.partial(backward, **bound) if bound else backward
        self.torch = self._impl(TORCH, reference, input_grad)
        self._triton = None  # made on first Triton use (imports Triton)

    def _impl(self, backend: str, forward, input_grad) -> ElementwiseImpl:
        return ElementwiseImpl(backend, forward, input_grad, self.saves, self.spec.differentiable)

    def triton(self) -> ElementwiseImpl:
        if self._triton is None:
            from actkit.kernels import elementwise

            fwd = self.spec.triton_functions[0]
            dfn = self.spec.triton_derivative(self.saves) if self.saves != "none" else None
            p0, p1 = self.p0, self.p1
            # Looked up on the module at each call, so that tests can watch the launchers.
            self._triton = self._impl(TRITON, lambda x: elementwise.forward(x, fwd, p0, p1),
                                      lambda grad, saved: elementwise.backward(saved, grad, dfn, p0, p1))
        return self._triton

    def impl(self, backend: str) -> ElementwiseImpl:
        return self.torch if backend == TORCH else self._triton or self.triton()

    def __reduce__(self):  # picklable (modules hold one): rebuilt from the name and parameters
        return bind_by_name, (self.name, tuple(self.params.items()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"ElementwiseOp({self.name}{', ' + shown if shown else ''})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (actkit.eager)
            impl = self.torch if backend_for(x) == TORCH else self._triton or self.triton()
            if x.requires_grad and torch.is_grad_enabled():
                return EagerFunction.apply(impl, x)
            return impl.forward(x)
        check_tensor(self.name, x)
        return self.traced(x)

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        """The call as torch.compile and tensor subclasses see it: the custom op."""
        return torch.ops.actkit.activation(x, self.name, self.p0, self.p1, backend_for(x))


def _vjp_grad(reference, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx of a composite reference (no backward op in torch): a vector-Jacobian product."""
    _, vjp = torch.func.vjp(reference, x)
    dx = vjp(grad)[0]
    return dx.clone() if _shares_storage(dx, grad) else dx  # an op may not return its input


def bind_by_name(name: str, params=(), saved_bits: int | None = None) -> ElementwiseOp:
    return bind(registry.get(name), (), {**dict(params), "saved_bits": saved_bits})


_BY_CALL: dict[tuple, ElementwiseOp] = {}    # (name, args, kwargs) as written -> op
_BY_VALUES: dict[tuple, ElementwiseOp] = {}  # (name, parameter values, saved bits) -> the one op for them
_CACHE_LIMIT = 4096  # parameter combinations kept; beyond that, ops are bound afresh per call


def bind(spec: registry.ActivationSpec, args: tuple = (), kwargs: dict | None = None) -> ElementwiseOp:
    """The op for ``spec`` with these parameters: validated once, then looked up by how the call
    spelled them; every spelling of the same values shares one op. ``saved_bits=k`` (1..8) among
    the keywords gives the few-bit op (:mod:`actkit.fewbit`); None or 0, the exact one."""
    values = (*args, *(kwargs or {}).values())
    cacheable = all(type(v) in (float, int) or v is None for v in values)  # a tensor could change later
    key = (spec.name, args, tuple(sorted(kwargs.items())) if kwargs else ()) if cacheable else None
    op = _BY_CALL.get(key) if cacheable else None
    if op is None:
        scalars = dict(kwargs or {})
        bits = scalars.pop("saved_bits", None)
        params = spec.bind(args, scalars)
        if bits is None or (type(bits) is int and bits == 0):
            bits = None
        else:
            from . import fewbit  # imports scipy: only when few-bit is asked for

            bits = fewbit.check_bits(bits)  # before the lookup: True == 1 would find the 1-bit op
        canonical = (spec.name, tuple(params.values()), bits)
        op = _BY_VALUES.get(canonical)
        if op is None:
            if bits is None:
                op = ElementwiseOp(spec, params)
            else:
                op = fewbit.FewBitOp(spec, params, bits)
            if len(_BY_VALUES) < _CACHE_LIMIT:
                _BY_VALUES[canonical] = op
        if cacheable and len(_BY_CALL) < _CACHE_LIMIT:
            _BY_CALL[key] = op
    return op


# -- the traced route: torch.library custom ops ----------------------------------------------------
def _impl(name: str, p0: float, p1: float, backend: str) -> ElementwiseImpl:
    spec = registry.get(name)
    return bind(spec, (), spec.params_from_kernel_args(p0, p1)).impl(backend)


@torch.library.custom_op("actkit::activation", mutates_args=())
def activation(x: torch.Tensor, name: str, p0: float, p1: float, backend: str) -> torch.Tensor:
    return like_fake(_impl(name, p0, p1, backend).forward(x), x)


@activation.register_fake
def _activation_fake(x, name, p0, p1, backend):
    return torch.empty_like(x)


@torch.library.custom_op("actkit::activation_backward", mutates_args=())
def activation_backward(saved: torch.Tensor, grad: torch.Tensor, name: str, p0: float, p1: float,
                        backend: str) -> torch.Tensor:
    return like_fake(_impl(name, p0, p1, backend).input_grad(grad, saved), saved)


@activation_backward.register_fake
def _activation_backward_fake(saved, grad, name, p0, p1, backend):
    return torch.empty_like(saved)


def _setup_context(ctx, inputs, output):
    x, name, p0, p1, backend = inputs
    ctx.name, ctx.p0, ctx.p1, ctx.backend = name, p0, p1, backend
    _impl(name, p0, p1, backend).save(ctx, (x,), output)


def _backward(ctx, grad):
    (dx,) = _impl(ctx.name, ctx.p0, ctx.p1, ctx.backend).backward(ctx, grad, input_grad=(
        lambda dy, saved: activation_backward(saved, dy, ctx.name, ctx.p0, ctx.p1, ctx.backend)))
    return dx, None, None, None, None


activation.register_autograd(_backward, setup_context=_setup_context)


# -- the "elementwise" kind's handler (see actkit.kinds): functional call and module hooks --------
def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return bind(spec, args, kwargs)(x)


def functional(spec: registry.ActivationSpec):
    """``f(x, *params)`` for actkit.functional: the defaults are bound once, other values cached."""
    default = ElementwiseOp(spec, spec.defaults)

    def call(x, *args, **kwargs):
        return (bind(spec, args, kwargs) if args or kwargs else default)(x)

    return call


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    scalars = [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=float)
               for p in spec.params]
    if spec.differentiable:
        scalars.append(inspect.Parameter("saved_bits", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation="int | None"))
    return scalars


def init_module(module, *args, **kwargs) -> None:
    module._op = bind(module.spec, args, kwargs)
    module._params = dict(module._op.params)
    module.saved_bits = getattr(module._op, "bits", None)
    # The op is the module's forward: nn.Module.__call__ (hooks included) calls it directly,
    # without a Python frame of ours in between.
    module.forward = module._op


def module_forward(module, x: torch.Tensor) -> torch.Tensor:
    return module._op(x)


def module_repr(module) -> str:
    shown = [f"{k}={v:g}" for k, v in module.params.items()]
    if module.saved_bits:
        shown.append(f"saved_bits={module.saved_bits}")
    return ", ".join(shown)
