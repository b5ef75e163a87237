"""Gated linear units (kind ``"glu"``): swiglu, geglu, geglu_tanh, reglu and the generic glu(act).

``y = act(a) * b``. The activation goes on **a, the first half** (the gate) and multiplies **b,
the second**: a and b are the two halves of x along ``dim`` (default -1, the dim ``F.glu`` splits),
or two tensors of one shape. This is the convention of fused gate/up projections (``silu(gate) *
up``); ``F.glu`` gates the other half, ``a * sigmoid(b)``, so ``F.glu(x)`` equals
``actkit.functional.glu(torch.cat([b, a], dim))``. The output has half of x's ``dim``.

One Triton kernel forward (reads a and b, writes y) and one backward (reads a, b and dy, writes
da and db in the same pass; for one tensor x, into the two halves of one dx), see
:mod:`actkit.kernels.glu`. Autograd saves a and b only (x itself for the one-tensor form, one
storage) and recomputes act(a) and act'(a) in backward: two tensors of the half's size where the
eager composite ``F.silu(a) * b`` keeps three (a for silu's backward, silu(a) and b for the
product). On the PyTorch path the forward is that composite, and the backward recomputes act(a)
once and calls the activation's own ATen backward (``aten.silu_backward``, ...; a vector-Jacobian
product for composite gates), so its gradients are autograd's own.

The bound op (:class:`GluOp`) follows :mod:`.base`: plain tensors take the eager route
(:class:`~.base.EagerFunction2` of x and the split dim, or of a and b); tensor subclasses
and tracing take two opaque ``torch.library`` custom ops,

* ``actkit::glu(x, y, act, p0, p1, dim, backend) -> out`` (``y`` None: split x along ``dim``)
* ``actkit::glu_backward(x, y, grad, act, p0, p1, dim, backend) -> [dx] or [da, db]``

**Under torch.compile** the op emits the composite ``act(a) * b`` by default
(:data:`COMPILE_PATHS`, :func:`set_compile_path`, ``$ACTKIT_GLU_COMPILE``): Inductor fuses it with
its neighbours (the residual add, casts, a bias) into generated kernels, and its partitioner
recomputes act(a) in backward, so the compiled composite keeps two tensors as well. An opaque custom
op is a wall Inductor cannot fuse across (linkedin/Liger-Kernel#1330: a compiled model with Liger's
SwiGLU ran 3.1x slower than ``torch.compile`` of ``F.silu(a) * b``). ``"kernel"`` puts actkit's
custom op (its Triton kernels on CUDA) in compiled graphs instead. The README has the measurements
(``actkit bench-glu-block``).
"""
from __future__ import annotations

import functools
import inspect
import os

import torch

from .. import registry
from ..backend import TORCH, TRITON, backend_for
from .base import (BoundOp, Implementation, as_int, check_tensor, define_ops, eager2, is_compiling, same_device,
                   shown_params, traced)
from .elementwise import ElementwiseOp, bind, resolve as resolve_gate
from .sharding import Rule, ready

# -- what torch.compile traces ---------------------------------------------------------------------
COMPILE_PATHS = ("composite", "kernel")
"""``composite``: under torch.compile a GLU is ``act(a) * b`` in torch ops, which Inductor fuses
with its neighbours (the default). ``kernel``: actkit's opaque custom op, as tensor subclasses get."""
COMPILE_ENV_VAR = "ACTKIT_GLU_COMPILE"


def _valid_path(path, source: str) -> str:
    choice = str(path).strip().lower()
    if choice not in COMPILE_PATHS:
        raise ValueError(f"unknown GLU compile path {path!r} from {source}; choose one of: {', '.join(COMPILE_PATHS)}")
    return choice


def _path_from_env() -> str:
    return _valid_path(os.environ.get(COMPILE_ENV_VAR, COMPILE_PATHS[0]), f"${COMPILE_ENV_VAR}")


# Traced code reads this global, so Dynamo guards on it: changing it recompiles rather than
# replaying a graph made with the other path.
_compile_path = _path_from_env()


def set_compile_path(path: str | None) -> None:
    """What a GLU becomes under ``torch.compile``: ``"composite"`` (default; Inductor fuses it),
    ``"kernel"`` (actkit's opaque custom op), or ``None`` to go back to ``$ACTKIT_GLU_COMPILE``."""
    global _compile_path
    _compile_path = _path_from_env() if path is None else _valid_path(path, "set_compile_path()")


def get_compile_path() -> str:
    return _compile_path


# -- implementations ---------------------------------------------------------------------------------
def _contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


class GluImpl(Implementation):
    """One backend's implementation. ``forward(x, other)`` takes the split dim (an int: a and b are
    x's halves) or b (a tensor: x is a); ``glu(x, y, dim)`` and ``grads(x, y, grad, dim)`` take y None
    for the one-tensor form. Gradients are ``(dx,)`` or ``(da, db)``; every output is contiguous, as the
    fake implementations say. Autograd saves x, or a and b, and the dim: nothing else."""

    __slots__ = ("glu", "grads")

    def __init__(self, backend: str, glu, grads):
        super().__init__(backend)
        self.glu, self.grads = glu, grads

    def forward(self, x: torch.Tensor, other) -> torch.Tensor:
        if type(other) is int:
            return self.glu(x, None, other)
        return self.glu(x, other, -1)

    def to_save(self, inputs, out):
        x, other = inputs
        return ((x, None), (other,)) if type(other) is int else ((x, other), (-1,))

    def input_grads(self, saved, grad: torch.Tensor, state):
        return self.grads(*saved, grad, state[0])

    def differentiable_grads(self, saved, grad: torch.Tensor, state):
        """A vector-Jacobian product of the composite ``act(a) * b`` (what autograd of it gives)."""
        x, y = saved
        return self.reference_vjp((x, state[0]) if y is None else (x, y), grad)


def _gate_value_and_grad(gate: ElementwiseOp):
    """``(a, g) -> (act(a), g * act'(a))`` in torch ops, act(a) computed once, with the backward
    autograd of ``act(a) * b`` runs: the activation's ATen backward op, of a where torch has one
    (silu_backward, gelu_backward), else of act(a) (sigmoid_backward, tanh_backward), else a
    vector-Jacobian product (composite gates). So the PyTorch path's gradients are autograd's own."""
    f, params = gate.torch.forward, dict(gate.params)
    if gate.saves == "none":  # identity: the bilinear GLU
        return lambda a, g: (f(a), g)
    found = gate.spec.aten_backward()
    if found is None:
        def by_vjp(a, g):
            fa, vjp = torch.func.vjp(f, a)
            return fa, vjp(g)[0]
        return by_vjp
    backward, from_y = functools.partial(found[0], **params), found[1] == "y"

    def by_aten(a, g):
        fa = f(a)
        return fa, backward(g, fa if from_y else a)
    return by_aten


def _torch_impl(gate: ElementwiseOp) -> GluImpl:
    f, value_and_grad = gate.torch.forward, _gate_value_and_grad(gate)

    def glu(x, y, dim):
        a, b = registry.glu_halves(x, y, dim)
        return _contiguous(f(a) * b)

    def grads(x, y, grad, dim):
        a, b = registry.glu_halves(x, y, dim)
        fa, da = value_and_grad(a, grad * b)  # the products in autograd's order: (dy * b) * f'(a)
        db = grad * fa
        if y is None:
            return (torch.cat((da, db), dim),)
        return _contiguous(da), _contiguous(db)

    return GluImpl(TORCH, glu, grads)


class GluOp(BoundOp):
    """A GLU bound to its gate (an elementwise activation with its parameters); ``op(x)`` splits x
    along dim -1, ``op(x, dim=d)`` along d, ``op(a, b)`` takes two tensors of one shape."""

    __slots__ = ("spec_name", "gate", "act", "p0", "p1")

    def __init__(self, gate: ElementwiseOp, spec_name: str | None = None):
        super().__init__(registry.get(spec_name or "glu"), gate.key[:3])  # (act, p0, p1): not what the gate saves
        self.gate, self.act, self.p0, self.p1 = gate, gate.name, gate.p0, gate.p1
        self.spec_name = spec_name  # a named GLU (swiglu), or None for the generic glu(act=...)
        self.name = spec_name or f"glu(act={gate.name!r}{shown_params(gate.params)})"
        self.torch = _torch_impl(gate)

    def make_triton(self) -> GluImpl:
        from actkit.kernels import glu as kernels

        spec = self.gate.spec
        fwd = spec.triton_functions[0]
        # f' as autograd of the composite gets it: of act(a) where torch's backward op reads the output
        # (sigmoid, tanh: the kernel recomputes act(a) anyway, for db), else of a. Autograd saves a, b only.
        aten = spec.aten_backward()
        of_y = aten is not None and aten[1] == "y"
        dfn = spec.triton_derivative("y" if of_y else "x")
        p0, p1 = self.p0, self.p1

        def grads(x, y, grad, dim):
            out = kernels.backward(x, y, grad, dim, fwd, dfn, p0, p1, of_y)
            return out[:1] if y is None else out

        return GluImpl(TRITON, lambda x, y, dim: kernels.forward(x, y, dim, fwd, p0, p1), grads)

    def __reduce__(self):  # picklable (modules hold one): rebuilt from names and parameters
        return _rebuild, (self.spec_name, self.act, tuple(self.gate.params.items()))

    def composite(self, x: torch.Tensor, y: torch.Tensor | None, dim: int) -> torch.Tensor:
        """``act(a) * b`` in torch ops: what torch.compile traces on the "composite" path."""
        a, b = registry.glu_halves(x, y, dim)
        return self.gate.torch.forward(a) * b

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
        if y is None:
            if type(x) is torch.Tensor and type(dim) is int and -x.dim() <= dim < x.dim() and not x.shape[dim] % 2:
                dim %= x.dim()  # the usual call, checked inline
            else:
                dim = self._split_dim(x, dim)
            other = dim
        else:
            self._check_pair(x, y)
            other = y
        if type(x) is torch.Tensor and type(y) in (torch.Tensor, type(None)) and not is_compiling():
            impl = self.torch if backend_for(x) == TORCH else self._triton or self.triton()  # the eager route
            grad = (x.requires_grad or (y is not None and y.requires_grad)) and torch.is_grad_enabled()
            return eager2(self, impl, grad, x, other)
        if _compile_path == "composite" and is_compiling():
            return self.composite(x, y, dim)
        return traced(self, x, other)

    def traced(self, x: torch.Tensor, other) -> torch.Tensor:
        """The custom op (tensor subclasses, dispatch modes, and torch.compile on the "kernel" path) of
        x and the split dim, or of a and b."""
        y, dim = (None, other) if type(other) is int else (other, -1)
        ready()
        return torch.ops.actkit.glu(x, y, self.act, self.p0, self.p1, dim, backend_for(x))

    # -- argument checks (the unusual calls) ------------------------------------------------------
    def _split_dim(self, x, dim) -> int:
        check_tensor(self.name, x)
        dim = as_int(self.name, dim)
        ndim = x.dim()
        if ndim == 0:
            raise ValueError(f"{self.name}: a 0-d tensor has no dim to split into halves; pass a tensor with at "
                             "least one dim, or the two halves as two tensors")
        if not -ndim <= dim < ndim:
            raise IndexError(f"{self.name}: dim {dim} is out of range for a {ndim}-d tensor; valid dims are "
                             f"{-ndim} to {ndim - 1}")
        if x.shape[dim] % 2:
            raise ValueError(f"{self.name}: dim {dim} of x has odd size {x.shape[dim]}; the one-tensor form splits "
                             f"it into two equal halves, a (gated) then b")
        return dim % ndim

    def _check_pair(self, x, y) -> None:
        check_tensor(self.name, x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{self.name}: y must be a tensor (b, the ungated half) or None, got {type(y).__name__}; "
                            f"pass dim by keyword: {self.spec_name or 'glu'}(x, dim=...)")
        if x.shape != y.shape:
            raise ValueError(f"{self.name}: a and b must have the same shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)} (no broadcasting); {self.spec_name or 'glu'}(x) splits one tensor")
        if x.dtype != y.dtype:
            raise TypeError(f"{self.name}: a and b must have the same dtype, got {x.dtype} and {y.dtype}")
        if not same_device(x, y):
            raise ValueError(f"{self.name}: a is on {x.device} but b is on {y.device}; move them to one device")


# -- binding: one op per (GLU, gate with its parameter values) -------------------------------------------
_OPS: dict[tuple, GluOp] = {}


def _op(gate: ElementwiseOp, spec_name: str | None = None) -> GluOp:
    # elementwise.bind gives one gate object per activation and parameter values, so the pair is a key.
    key = (spec_name, gate)
    op = _OPS.get(key)
    if op is None:
        op = _OPS[key] = GluOp(gate, spec_name)
    return op


def gate_op(owner: str, act, params: dict) -> ElementwiseOp:
    """The bound elementwise activation a GLU gates with; clear errors for what cannot be a gate."""
    if not isinstance(act, str):
        raise TypeError(f"{owner}: act must be an activation name such as 'silu', got {type(act).__name__}")
    spec = registry.get(act)  # ValueError with suggestions for unknown names
    unfit = (f"is a {spec.kind} activation; the gate must be an elementwise one (silu, gelu, relu, sigmoid, ...: "
             "actkit list shows the kinds)" if not spec.kind.scalar_params
             else None if spec.differentiable else "has no gradient, so it cannot gate a trainable GLU")
    if unfit:
        raise ValueError(f"{owner}: act={act!r} {unfit}")
    if "saved_bits" in params or "saves" in params:
        raise TypeError(f"{owner}: {'saved_bits' if 'saved_bits' in params else 'saves'} is not available for GLUs "
                        "(autograd keeps a and b exactly)")
    return bind(spec, (), params)


def named_op(spec: registry.ActivationSpec) -> GluOp:
    return _op(gate_op(spec.name, spec.gate, {}), spec.name)


def generic_op(act=registry.GLU_DEFAULT_ACT, params: dict | None = None) -> GluOp:
    return _op(gate_op("glu", act, params or {}))


def op_for(spec: registry.ActivationSpec, act=None, **params) -> GluOp:
    """A named GLU's op, or the generic glu's for ``act`` (default sigmoid) and its parameters."""
    if spec.gate is not None:
        return named_op(spec)
    return generic_op(registry.GLU_DEFAULT_ACT if act is None else act, params)


def _rebuild(spec_name: str | None, act: str, params: tuple) -> GluOp:
    return named_op(registry.get(spec_name)) if spec_name else generic_op(act, dict(params))


def resolve(act: str, p0: float, p1: float) -> GluOp:
    """The generic op for a gate's kernel arguments (what the custom ops carry)."""
    return _op(resolve_gate(act, p0, p1))


# -- the traced route: torch.library custom ops -------------------------------------------------------
def _inputs(args):
    x, y, act, p0, p1, dim = args
    return x, dim if y is None else y  # the split dim or the second tensor, as GluImpl takes them


def _fake(x, y, act, p0, p1, dim, backend):
    shape = list(x.shape)
    if y is None:
        shape[dim] //= 2
    return x.new_empty(shape)


define_ops("glu", "(Tensor x, Tensor? y, str act, float p0, float p1, SymInt dim, str backend) -> Tensor",
           "(Tensor x, Tensor? y, Tensor grad, str act, float p0, float p1, SymInt dim, str backend) -> Tensor[]",
           key=("act", "p0", "p1"), inputs=_inputs, resolve=resolve, conform=False, fake=_fake,
           sharding=Rule(lambda args: args["dim"] if args["y"] is None else None),  # the split dim (one tensor)
           backward_fake=lambda x, y, *rest: [x.new_empty(x.shape)] + ([] if y is None else [y.new_empty(y.shape)]))


# -- the "glu" kind's handler (see actkit.kinds): functional call and module hooks --------------------
def _signature_hint(spec: registry.ActivationSpec) -> str:
    extra = f", act='{registry.GLU_DEFAULT_ACT}', **act_params" if spec.gate is None else ""
    return f"{spec.name}(x, y=None, *, dim=-1{extra})"


def apply(spec: registry.ActivationSpec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``act(a) * b``: ``f(x, dim=-1)`` splits x; ``f(a, b)`` takes two tensors; the generic glu
    also takes ``act=`` and the gate's parameters as keywords."""
    if len(args) > 1:
        raise TypeError(f"{_signature_hint(spec)} takes at most one tensor after x, got {len(args)} positional "
                        "arguments; pass dim (and act) by keyword")
    if args and "y" in kwargs:
        raise TypeError(f"{spec.name}: y given both positionally and by keyword")
    y = args[0] if args else kwargs.pop("y", None)
    if y is not None and "dim" in kwargs:
        raise TypeError(f"{spec.name}: dim applies to the one-tensor form only; two tensors are used as given")
    dim = kwargs.pop("dim", -1)
    if spec.gate is None:
        op = generic_op(kwargs.pop("act", registry.GLU_DEFAULT_ACT), kwargs)
    elif kwargs:
        raise TypeError(f"{spec.name} has no parameter {sorted(kwargs)[0]!r}; its parameters: y, dim")
    else:
        op = named_op(spec)
    return op(x, y, dim)


def functional(spec: registry.ActivationSpec):
    """``f(x, y=None, *, dim=-1, ...)`` for actkit.functional: the usual calls go straight to the op."""
    default = op_for(spec)

    def call(x, y=None, *args, **kwargs):
        if args or kwargs:
            return apply(spec, x, *(() if y is None else (y,)), *args, **kwargs)
        return default(x, y)

    return call


def parameters(spec: registry.ActivationSpec) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    out = [inspect.Parameter("y", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation="torch.Tensor | None"),
           inspect.Parameter("dim", kw, default=-1, annotation=int)]
    if spec.gate is None:
        out += [inspect.Parameter("act", kw, default=registry.GLU_DEFAULT_ACT, annotation=str),
                inspect.Parameter("act_params", inspect.Parameter.VAR_KEYWORD, annotation=float)]
    return out


# -- module support (actkit.nn.SwiGLU, actkit.nn.GLU(act=...), actkit.nn.Activation("geglu")) -----------
def _configure(module, args: tuple, kwargs: dict) -> GluOp:
    """Named GLUs: ``(dim=-1)``; the generic glu: ``(act='sigmoid', dim=-1, **act_params)``."""
    spec = module.spec
    names = ("dim",) if spec.gate is not None else ("act", "dim")
    if len(args) > len(names):
        raise TypeError(f"{spec.class_name}({', '.join(names)}) takes {len(names)} positional argument(s), "
                        f"got {len(args)}")
    given = dict(zip(names, args))
    for key in kwargs:
        if key in given:
            raise TypeError(f"{spec.class_name}: {key!r} given both positionally and by keyword")
    given.update(kwargs)
    dim = as_int(spec.name, given.pop("dim", -1))  # range and evenness are checked per input
    if spec.gate is None:
        op = generic_op(given.pop("act", registry.GLU_DEFAULT_ACT), given)
        module._params = dict(op.gate.params)
    elif given:
        raise TypeError(f"{spec.class_name} has no parameter {sorted(given)[0]!r}; its parameters: dim")
    else:
        op = named_op(spec)
    module.dim, module.act, module._op = dim, op.act, op
    return op


def init_module(module, *args, **kwargs) -> None:
    """See :func:`_configure`. The module is called as ``module(x)`` (split along dim) or ``module(a, b)``."""
    op = _configure(module, args, kwargs)
    # The bound op is the module's forward, ``module(x)`` or ``module(a, b)``: nn.Module.__call__
    # calls it with no Python frame of ours in between (as the elementwise modules call their op).
    module.forward = functools.partial(op, dim=module.dim)


def module_kwargs(module) -> dict:
    """The constructor arguments that make the same module again."""
    if module.spec.gate is not None:
        return {"dim": module.dim}
    return {"act": module.act, **module.params, "dim": module.dim}


def init_reference(module, *args, **kwargs) -> None:
    module.params = dict(_configure(module, args, kwargs).gate.params)


def reference_forward(module, x: torch.Tensor) -> torch.Tensor:
    """``act(a) * b`` in torch ops, of x's halves along the module's dim."""
    return module._op.composite(x, None, module.dim)
