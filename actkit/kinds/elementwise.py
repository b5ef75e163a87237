"""The elementwise kind: f(x) with up to two scalar parameters, bound once.

:class:`ElementwiseOp` is one activation with its parameters resolved: the PyTorch reference and
backward with the parameters bound, the scalar kernel arguments, and (on first Triton use) the device
functions. For tracing, the custom ops (see :func:`.base.define_ops`) are

* ``actkit::activation(x, name, p0, p1, backend) -> y``
* ``actkit::activation_backward(saved, grad, name, p0, p1, backend) -> dx``

Autograd saves exactly one tensor: y wherever f' can be read from it with these parameters
(``spec.saves_for(params)``: the ReLU family, ELU with alpha > 0, sigmoid, tanh, ...), since the next
layer usually keeps y anyway; else x; nothing for identity, whose derivative is 1. The backward
recomputes f' rather than storing intermediates: in the Triton kernel (``<name>_bwd`` of x or
``<name>_bwd_y`` of y), or on the PyTorch path with PyTorch's own backward op (``spec.torch_backward``,
``spec.torch_backward_y``) or, for composite references, a vector-Jacobian product of the reference;
so the fallback's gradients are PyTorch's own, NaN and inf behaviour included. ``saved_bits=k`` gives
the few-bit variant (:mod:`.fewbit`), which saves k-bit codes instead of x.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .. import registry
from ..backend import TORCH, TRITON, backend_for
from .base import Implementation, ScalarBoundOp, define_ops, shown_params


class ElementwiseImpl(Implementation):
    """One backend's implementation: ``forward(x)`` and ``dx(grad, saved)`` (ATen's argument order),
    plain callables set when the op is bound: on the PyTorch backend the reference and its backward op
    themselves, with the parameters applied, so a call adds no Python frame of ours."""

    __slots__ = ("forward", "dx", "saves", "differentiable")

    def __init__(self, backend: str, forward, dx, saves: str, differentiable: bool):
        self.backend, self.forward, self.dx = backend, forward, dx
        self.saves, self.differentiable = saves, differentiable

    def to_save(self, inputs, y):
        return {"y": (y,), "x": inputs[:1]}.get(self.saves, ()), ()

    def forward_and_save(self, ctx, x: torch.Tensor) -> torch.Tensor:  # save() inlined: the hot path
        y = self.forward(x)
        if self.saves == "y":
            ctx.save_for_backward(y)
        elif self.saves == "x":
            ctx.save_for_backward(x)
        return y

    def input_grads(self, saved, grad: torch.Tensor, state=()) -> tuple[torch.Tensor]:
        return (self.dx(grad, saved[0]),)

    def backward(self, ctx, grad: torch.Tensor, input_grads=None) -> tuple[torch.Tensor]:
        """(dx,): zeros for a forward-only activation, dy itself where f' = 1, else f' from the saved tensor."""
        if not self.differentiable:
            return (torch.zeros_like(grad),)
        if self.saves == "none":
            return (grad,)
        if input_grads is None:
            return (self.dx(grad, ctx.saved_tensors[0]),)
        return input_grads(ctx.saved_tensors, grad, ())


class YBelowFloat64Impl(ElementwiseImpl):
    """The PyTorch path of an activation whose f' read from y is exact below float64 only
    (``SavesRule.exact_in_float64``, softplus): y is kept for fp32/fp16/bf16 inputs, x for float64 ones,
    and backward tells them apart by the saved tensor's dtype (on both routes: no state to carry)."""

    __slots__ = ("dx_of_x",)

    def __init__(self, backend: str, forward, dx, dx_of_x, differentiable: bool):
        super().__init__(backend, forward, dx, "y", differentiable)
        self.dx_of_x = dx_of_x

    def to_save(self, inputs, y):
        return (inputs[0] if y.dtype == torch.float64 else y,), ()

    def forward_and_save(self, ctx, x: torch.Tensor) -> torch.Tensor:
        y = self.forward(x)
        ctx.save_for_backward(x if x.dtype == torch.float64 else y)
        return y

    def input_grads(self, saved, grad: torch.Tensor, state=()) -> tuple[torch.Tensor]:
        s = saved[0]
        return ((self.dx_of_x if s.dtype == torch.float64 else self.dx)(grad, s),)

    def backward(self, ctx, grad: torch.Tensor, input_grads=None) -> tuple[torch.Tensor]:
        return (input_grads or self.input_grads)(ctx.saved_tensors, grad, ())


class ElementwiseOp(ScalarBoundOp):
    """An elementwise activation bound to its (validated) parameters; ``op(x)`` applies it."""

    __slots__ = ()

    def __init__(self, spec: registry.ActivationSpec, params: dict[str, float]):
        super().__init__(spec, params)
        backward = spec.torch_backward_y if self.saves == "y" else spec.torch_backward
        if backward is None:
            dx = functools.partial(_vjp_grad, self.reference)
        else:
            dx = functools.partial(backward, **params) if params else backward
        if self.saves == "y" and spec.saves_y_if is not None and not spec.saves_y_if.exact_in_float64:
            self.torch = YBelowFloat64Impl(TORCH, self.reference, dx, functools.partial(spec.torch_backward, **params),
                                           spec.differentiable)
        else:
            self.torch = ElementwiseImpl(TORCH, self.reference, dx, self.saves, spec.differentiable)

    def make_triton(self) -> ElementwiseImpl:
        from actkit.kernels import elementwise

        fwd = self.spec.triton_functions[0]
        dfn = self.spec.triton_derivative(self.saves) if self.saves != "none" else None
        p0, p1 = self.p0, self.p1
        # Looked up on the module at each call, so that tests can watch the launchers.
        return ElementwiseImpl(TRITON, lambda x: elementwise.forward(x, fwd, p0, p1),
                               lambda grad, saved: elementwise.backward(saved, grad, dfn, p0, p1),
                               self.saves, self.spec.differentiable)

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        """The call as torch.compile and tensor subclasses see it: the custom op."""
        return torch.ops.actkit.activation(x, self.name, self.p0, self.p1, backend_for(x))


def _vjp_grad(reference, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx of a composite reference (no backward op in torch): a vector-Jacobian product."""
    _, vjp = torch.func.vjp(reference, x)
    dx = vjp(grad)[0]
    return dx.clone() if dx.untyped_storage().data_ptr() == grad.untyped_storage().data_ptr() else dx  # not its input


# -- binding: one op per activation, parameter values and saved bits ---------------------------------
_BY_CALL: dict[tuple, ElementwiseOp] = {}    # (name, args, kwargs) as written -> op
_BY_VALUES: dict[tuple, ElementwiseOp] = {}  # (name, parameter values, saved bits) -> the one op for them
_CACHE_LIMIT = 4096  # parameter combinations kept; beyond that, ops are bound afresh per call


def bind(spec: registry.ActivationSpec, args: tuple = (), kwargs: dict | None = None) -> ElementwiseOp:
    """The op for ``spec`` with these parameters: validated once, then looked up by how the call
    spelled them; every spelling of the same values shares one op. ``saved_bits=k`` (1..8) among
    the keywords gives the few-bit op (:mod:`.fewbit`); None or 0, the exact one."""
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
                op = fewbit.resolve(spec.name, *spec.kernel_args(params), bits)
            if len(_BY_VALUES) < _CACHE_LIMIT:
                _BY_VALUES[canonical] = op
        if cacheable and len(_BY_CALL) < _CACHE_LIMIT:
            _BY_CALL[key] = op
    return op


def op_for(spec: registry.ActivationSpec, *args, **kwargs) -> ElementwiseOp:
    """The bound op of ``spec`` with these parameters (``saved_bits=`` among them for few-bit)."""
    return bind(spec, args, kwargs)


def resolve(name: str, p0: float, p1: float) -> ElementwiseOp:
    spec = registry.get(name)
    return bind(spec, (), spec.params_from_kernel_args(p0, p1))


define_ops("activation", "(Tensor x, str name, float p0, float p1, str backend) -> Tensor",
           "(Tensor saved, Tensor grad, str name, float p0, float p1, str backend) -> Tensor",
           key=("name", "p0", "p1"), inputs=("x",), resolve=resolve,
           fake=lambda x, *consts: torch.empty_like(x), backward_fake=lambda saved, *rest: torch.empty_like(saved))


# -- functional call and module hooks (see actkit.kinds) ---------------------------------------------
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


def module_kwargs(module) -> dict:
    """The constructor arguments that make the same module again."""
    bits = getattr(module, "saved_bits", None)
    return {**module.params, **({"saved_bits": bits} if bits else {})}


def init_reference(module, *args, **kwargs) -> None:
    module.params = module.spec.bind(args, kwargs)


def reference_forward(module, x: torch.Tensor) -> torch.Tensor:
    return module.spec.reference(x, **module.params)
