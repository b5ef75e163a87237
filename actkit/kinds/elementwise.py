"""The elementwise kind: f(x) with up to two scalar parameters, bound once.

:class:`ElementwiseOp` is one activation with its parameters resolved: the PyTorch reference and
backward with the parameters bound, the scalar kernel arguments, and (on first Triton use) the device
functions. For tracing, the custom ops (see :func:`.base.define_ops`) are

* ``actkit::activation(x, name, p0, p1, saves, backend) -> y``
* ``actkit::activation_backward(saved, grad, name, p0, p1, saves, backend) -> dx``

Autograd saves exactly one tensor, x or y, as the call's save policy says (``saves=``, see
``registry.SAVE_POLICIES``; ``spec.saves_under(policy, params)``): by default what torch's own op
saves (y for relu, sigmoid and tanh, x for the others), so that code which modifies the output in
place trains as it does with torch; with ``saves="y"``, y wherever f' can be read from it with these
parameters (the ReLU family, ELU with alpha > 0, softplus, ...), since the next layer usually keeps
y anyway. Nothing for identity, whose derivative is 1. The backward
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
from ..registry import DEFAULT_SAVE_POLICY
from .base import Implementation, ScalarBoundOp, define_ops
from .sharding import POINTWISE, ready


class ElementwiseImpl(Implementation):
    """One backend's implementation: ``forward(x)`` and ``dx(grad, saved)`` (ATen's argument order),
    plain callables set when the op is bound: on the PyTorch backend the reference and its backward op
    themselves, with the parameters applied, so a call adds no Python frame of ours."""

    __slots__ = ("forward", "dx", "saves", "differentiable", "inplace_hint", "twice")

    def __init__(self, backend: str, forward, dx, saves: str, differentiable: bool, inplace_hint: str | None = None,
                 twice=None):
        super().__init__(backend)
        self.forward, self.dx = forward, dx
        self.saves, self.differentiable = saves, differentiable
        self.inplace_hint = inplace_hint
        self.native = self.native and differentiable  # step's gradient is ours (zero), not torch's
        self.twice = twice  # the reference in ops with a double backward, where its own has none

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return (self.twice or self.forward)(x)

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
        """(dx,): zeros for a forward-only activation, dy itself where f' = 1, else f' from the saved
        tensor (by differentiable torch ops when grad mode is on: see :meth:`differentiable_grads`)."""
        if not self.differentiable:
            return (torch.zeros_like(grad),)
        if self.saves == "none":
            return (grad,)
        try:
            saved = ctx.saved_tensors
        except RuntimeError as exc:  # y modified in place after the forward, where torch would have kept x?
            if self.inplace_hint is None or "modified by an inplace operation" not in str(exc):
                raise
            raise RuntimeError(f"{self.inplace_hint}\n{exc}") from None
        if torch.is_grad_enabled():
            return self.exact.differentiable_grads(saved, grad, ())
        if input_grads is None:
            return (self.dx(grad, saved[0]),)
        return input_grads(saved, grad, ())

    def differentiable_grads(self, saved, grad: torch.Tensor, state=()) -> tuple[torch.Tensor]:
        """From x: a vector-Jacobian product of the reference, which is what autograd of the torch op
        computes with create_graph (torch's differentiable formulas, e.g. for mish and silu, whose
        ATen backward ops have no derivative). From y: the spec's ``torch_backward_y``, ATen ops
        with derivatives (sigmoid_backward, threshold_backward, elu_backward, ...) or torch formulas."""
        if self.saves == "y":
            return (self.dx(grad, saved[0]),)
        return self.reference_vjp(saved, grad)

    def reference_vjp(self, inputs, grad):
        return super().reference_vjp(inputs, grad) if self.differentiable else (torch.zeros_like(grad),)

    def reference_jvp(self, inputs, tangents):
        return super().reference_jvp(inputs, tangents) if self.differentiable else torch.zeros_like(inputs[0])


class YBelowFloat64Impl(ElementwiseImpl):
    """The PyTorch path of an activation whose f' read from y is exact below float64 only
    (``SavesRule.exact_in_float64``, softplus): y is kept for fp32/fp16/bf16 inputs, x for float64 ones,
    and backward tells them apart by the saved tensor's dtype (on both routes: no state to carry)."""

    __slots__ = ("dx_of_x",)

    def __init__(self, backend: str, forward, dx, dx_of_x, differentiable: bool, inplace_hint: str | None = None):
        super().__init__(backend, forward, dx, "y", differentiable, inplace_hint)
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
        # The base reads the saved tensor (with its in-place hint); the saved tensor's dtype picks dx.
        return super().backward(ctx, grad, input_grads or self.input_grads)

    def differentiable_grads(self, saved, grad: torch.Tensor, state=()) -> tuple[torch.Tensor]:
        """By the saved tensor's dtype, as :meth:`input_grads`: x (float64) by a vector-Jacobian
        product of the reference, y by ``dx`` (torch ops with derivatives)."""
        if saved[0].dtype == torch.float64:
            return self.reference_vjp(saved, grad)
        return super().differentiable_grads(saved, grad, state)


class ElementwiseOp(ScalarBoundOp):
    """An elementwise activation bound to its (validated) parameters and to the tensor autograd keeps,
    ``saves`` ("x", "y" or "none": a policy's choice, ``spec.saves_under``); ``op(x)`` applies it."""

    __slots__ = ("inplace_hint",)

    def __init__(self, spec: registry.ActivationSpec, params: dict[str, float], saves: str):
        super().__init__(spec, params, (saves,))
        possible = spec.saves_for(params)
        if saves != possible and (possible, saves) != ("y", "x"):  # x is kept only in place of y
            raise ValueError(f"{spec.name} cannot keep {saves!r} for backward with {dict(params)}")
        self.saves = saves
        # Where torch keeps x, saving y makes an in-place change of the output fail in backward
        # (autograd's version check); the error then says why and what to do.
        self.inplace_hint = None if saves != "y" or spec.torch_saves == "y" else (
            f"actkit's {spec.name} kept its output y for backward (saves='y'), and y was modified in place "
            f"afterwards; torch's {spec.name} keeps its input: make it with saves='torch' (the default) or "
            "avoid the in-place change.")
        backward = spec.torch_backward_y if saves == "y" else spec.torch_backward
        if backward is None:
            dx = functools.partial(_vjp_grad, self.reference)
        else:
            dx = functools.partial(backward, **params) if params else backward
        if self.saves == "y" and spec.saves_y_if is not None and not spec.saves_y_if.exact_in_float64:
            self.torch = YBelowFloat64Impl(TORCH, self.reference, dx, functools.partial(spec.torch_backward, **params),
                                           spec.differentiable, self.inplace_hint)
        else:
            twice = spec.twice_differentiable
            twice = functools.partial(twice, **params) if twice is not None and params else twice
            self.torch = ElementwiseImpl(TORCH, self.reference, dx, self.saves, spec.differentiable, self.inplace_hint,
                                         twice)

    def make_triton(self) -> ElementwiseImpl:
        from actkit.kernels import elementwise

        fwd, q0, q1 = self.spec.triton_forward(self.p0, self.p1)
        dfn = self.spec.triton_derivative(self.saves) if self.saves != "none" else None
        p0, p1 = self.p0, self.p1
        # Looked up on the module at each call, so that tests can watch the launchers.
        return ElementwiseImpl(TRITON, lambda x: elementwise.forward(x, fwd, q0, q1),
                               lambda grad, saved: elementwise.backward(saved, grad, dfn, p0, p1),
                               self.saves, self.spec.differentiable, self.inplace_hint)

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        """The call as torch.compile and tensor subclasses see it: the custom op."""
        ready()
        return torch.ops.actkit.activation(x, self.name, self.p0, self.p1, self.saves, backend_for(x))


def _vjp_grad(reference, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx of a composite reference (no backward op in torch): a vector-Jacobian product."""
    _, vjp = torch.func.vjp(reference, x)
    dx = vjp(grad)[0]
    return dx.clone() if dx.untyped_storage().data_ptr() == grad.untyped_storage().data_ptr() else dx  # not its input


# -- binding: one op per activation, parameter values and saved bits ---------------------------------
_BY_CALL: dict[tuple, ElementwiseOp] = {}    # (name, args, kwargs) as written -> op
_BY_VALUES: dict[tuple, ElementwiseOp] = {}  # (name, parameter values, saved bits, saved) -> the one op for them
_CACHE_LIMIT = 4096  # parameter combinations kept; beyond that, ops are bound afresh per call


def bind(spec: registry.ActivationSpec, args: tuple = (), kwargs: dict | None = None) -> ElementwiseOp:
    """The op for ``spec`` with these parameters: validated once, then looked up by how the call
    spelled them; every spelling of the same values shares one op. Among the keywords, ``saves=``
    is the save policy (``registry.SAVE_POLICIES``, default "torch") and ``saved_bits=k`` (1..8)
    gives the few-bit op (:mod:`.fewbit`), which keeps codes instead; None or 0, the exact one."""
    values = (*args, *(kwargs or {}).values())
    cacheable = all(type(v) in (float, int, str) or v is None for v in values)  # a tensor could change later
    key = (spec.name, args, tuple(sorted(kwargs.items())) if kwargs else ()) if cacheable else None
    op = _BY_CALL.get(key) if cacheable else None
    if op is None:
        scalars = dict(kwargs or {})
        bits = scalars.pop("saved_bits", None)
        policy = scalars.pop("saves", DEFAULT_SAVE_POLICY)
        params = spec.bind(args, scalars)
        registry.check_save_policy(policy, spec.name)
        if bits is None or (type(bits) is int and bits == 0):
            op = _by_values(spec, params, None, spec.saves_under(policy, params))
        else:
            from . import fewbit  # imports scipy: only when few-bit is asked for

            bits = fewbit.check_bits(bits)  # before the lookup: True == 1 would find the 1-bit op
            if policy != DEFAULT_SAVE_POLICY:
                raise ValueError(f"{spec.name}: saves={policy!r} does not go with saved_bits={bits}: the few-bit "
                                 "backward keeps k-bit codes, neither x nor y; give one of the two")
            op = _by_values(spec, params, bits, "codes")
        if cacheable and len(_BY_CALL) < _CACHE_LIMIT:
            _BY_CALL[key] = op
    return op


def _by_values(spec: registry.ActivationSpec, params: dict, bits: int | None, saves: str):
    """The one op for these parameter values, bits and saved tensor, made on first use."""
    canonical = (spec.name, tuple(params.values()), bits, saves)
    op = _BY_VALUES.get(canonical)
    if op is None:
        if bits is None:
            op = ElementwiseOp(spec, params, saves)
        else:
            from . import fewbit

            op = fewbit.resolve(spec.name, *spec.kernel_args(params), bits)
        if len(_BY_VALUES) < _CACHE_LIMIT:
            _BY_VALUES[canonical] = op
    return op


def op_for(spec: registry.ActivationSpec, *args, **kwargs) -> ElementwiseOp:
    """The bound op of ``spec`` with these parameters (``saves=`` and ``saved_bits=`` among them)."""
    return bind(spec, args, kwargs)


def resolve(name: str, p0: float, p1: float, saves: str | None = None) -> ElementwiseOp:
    """The op for the constants the custom ops carry: the kernel arguments and the saved tensor (None,
    from a module pickled before there were save policies: the default policy's choice)."""
    spec = registry.get(name)
    params = spec.bind((), spec.params_from_kernel_args(p0, p1))
    return _by_values(spec, params, None, spec.saves_under(DEFAULT_SAVE_POLICY, params) if saves is None else saves)


define_ops("activation", "(Tensor x, str name, float p0, float p1, str saves, str backend) -> Tensor",
           "(Tensor saved, Tensor grad, str name, float p0, float p1, str saves, str backend) -> Tensor",
           key=("name", "p0", "p1", "saves"), inputs=("x",), resolve=resolve, sharding=POINTWISE,
           fake=lambda x, *consts: torch.empty_like(x), backward_fake=lambda saved, *rest: torch.empty_like(saved))


# -- functional call and module hooks (see actkit.kinds) ---------------------------------------------
def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return bind(spec, args, kwargs)(x)


def functional(spec: registry.ActivationSpec):
    """``f(x, *params)`` for actkit.functional: the defaults are bound once, other values cached."""
    default = bind(spec)

    def call(x, *args, **kwargs):
        return (bind(spec, args, kwargs) if args or kwargs else default)(x)

    return call


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    scalars = [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=float)
               for p in spec.params]
    if spec.differentiable:
        scalars.append(inspect.Parameter("saves", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_SAVE_POLICY,
                                         annotation="str"))
        scalars.append(inspect.Parameter("saved_bits", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation="int | None"))
    return scalars


def init_module(module, *args, **kwargs) -> None:
    module._op = bind(module.spec, args, kwargs)
    module._params = dict(module._op.params)
    module.saved_bits = getattr(module._op, "bits", None)
    module.saves = kwargs.get("saves", DEFAULT_SAVE_POLICY)  # the policy as asked for (bind checked it)
    # The op is the module's forward: nn.Module.__call__ (hooks included) calls it directly,
    # without a Python frame of ours in between.
    module.forward = module._op


def module_kwargs(module) -> dict:
    """The constructor arguments that make the same module again."""
    bits, policy = getattr(module, "saved_bits", None), getattr(module, "saves", DEFAULT_SAVE_POLICY)
    return {**module.params, **({"saves": policy} if policy != DEFAULT_SAVE_POLICY else {}),
            **({"saved_bits": bits} if bits else {})}


def init_reference(module, *args, **kwargs) -> None:
    module.params = module.spec.bind(args, kwargs)


def reference_forward(module, x: torch.Tensor) -> torch.Tensor:
    return module.spec.reference(x, **module.params)
