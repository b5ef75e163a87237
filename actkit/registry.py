"""The activation registry: one spec per activation, everything else is derived from it.

A spec names the activation, its aliases and parameters, the Triton device functions that
compute it (a key of the table in :mod:`actkit.kernels.activations`, resolved lazily so
that the registry imports without Triton), the PyTorch reference (the native op where one exists)
and the properties shown by ``actkit list``.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from .kinds import ELEMENTWISE, GLU, LEARNABLE, ROWWISE, Kind, get as get_kind

# Saved-tensor choices: "x" saves the input; "y" saves the output, wherever f' can be read from
# it (sigmoid, tanh, the ReLU family, ELU with alpha > 0, ...): the next layer usually keeps y
# anyway (a convolution or linear layer saves its input), so saving y costs no memory at all, but
# code that then modifies y in place (y += r) breaks backward; "none" saves nothing, for a
# derivative that is 1 everywhere (identity): dx = dy. Which one a call saves is its save policy's
# choice (SAVE_POLICIES, ActivationSpec.saves_under).
SAVES = ("x", "y", "none")

# Save policies: which of x and y an elementwise activation keeps, where both would do.
SAVE_POLICIES = {
    "torch": "what torch's own op keeps: y for relu, sigmoid and tanh, x for the others, so that code that "
             "modifies the output in place trains exactly as it does with torch",
    "y": "y wherever f' can be read from it, else x: less memory, since the next layer usually keeps y anyway, "
         "but modifying y in place afterwards (y += r) then breaks backward",
    "x": "always x",
}
DEFAULT_SAVE_POLICY = "torch"


@dataclass(frozen=True)
class Param:
    """One scalar parameter of an activation, as ``actkit list`` and the signatures show it."""
    name: str
    default: float
    doc: str


@dataclass(frozen=True)
class SavesRule:
    """For specs whose saved tensor depends on the parameters: y when ``test(params)`` holds, else x."""
    test: Callable[[Mapping[str, float]], bool]
    words: str
    """The rule for ``actkit list``: "y if negative_slope >= 0, else x"."""
    exact_in_float64: bool = True
    """Whether f' read from y is torch's to the bit in float64 too; False (softplus): the PyTorch path
    keeps x for float64 inputs (the Triton kernels take no float64)."""


@dataclass(frozen=True)
class ActivationSpec:
    name: str
    formula: str
    reference: Callable[..., torch.Tensor]
    """PyTorch reference ``reference(x, **params)``: the native op where torch has one."""
    class_name: str
    output_range: str
    monotonic: bool
    smooth: bool
    """Continuously differentiable everywhere (C1) at the default parameters."""
    zero_centred: bool
    saturating: bool
    """f'(x) -> 0 as |x| -> inf on both sides."""
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    native: bool = True
    """The reference is a single native torch op (False: a composite formula)."""
    kernel: str | None = None
    """Key of the spec's device functions in its kind's table (``kernels.activations.TABLE``: f, f'
    of x and, for specs that can save y, f' read from y); defaults to ``name``."""
    saves: str = "x"
    """What actkit can keep at the default parameters, at the least memory: "x", "y" or "none" (see SAVES);
    what it does keep is the save policy's choice (:meth:`saves_under`)."""
    saves_y_if: SavesRule | None = None
    """For specs whose choice depends on the parameters (leaky_relu saves y only with a slope >= 0,
    where y > 0 exactly when x > 0)."""
    torch_saves: str = "x"
    """What torch's own op keeps for backward: "x" (its inputs), "y" (its output: relu, sigmoid, tanh,
    softmax), or "none". Where it is "y", modifying the output in place breaks backward in torch too,
    so actkit may save y under every policy; tests/test_save_policy.py checks it against torch."""
    torch_backward: Callable[..., torch.Tensor] | None = None
    """``torch_backward(grad, x, **params) -> dx``: PyTorch's own backward op, used by the
    PyTorch backend so that the fallback's backward costs what ATen's does. ``None``: a
    vector-Jacobian product of the reference (recomputes the forward; composites only)."""
    torch_backward_y: Callable[..., torch.Tensor] | None = None
    """``torch_backward_y(grad, y, **params) -> dx`` for specs that can save y: PyTorch's op
    that reads the output where it has one (sigmoid_backward, threshold_backward, elu_backward
    with is_result), else the same formula as the ``_bwd_y`` device function in torch ops."""
    differentiable: bool = True
    twice_differentiable: Callable[..., torch.Tensor] | None = None
    """The reference in torch ops that have a derivative of their own, where the reference's backward
    op has none (``F.hardsigmoid``: "derivative for aten::hardsigmoid_backward is not implemented"):
    what a backward with grad mode on (double backward, torch.func) differentiates. Its first
    derivative is the reference's to the bit."""
    validate: Callable[[Mapping[str, float]], None] | None = None
    notes: str = ""
    kind: Kind = ELEMENTWISE
    """What kind of activation (see :mod:`actkit.kinds`; its name is accepted too). Elementwise: the
    generic kernels and custom ops; the other kinds (learnable, row-wise, glu) bring their own."""
    gate: str | None = None
    """Glu kind: the elementwise activation applied to the gated half ("silu" for swiglu); None
    for the generic glu, whose gate is named per call (``act=``)."""

    def __post_init__(self):
        object.__setattr__(self, "kind", get_kind(self.kind))
        if self.saves not in SAVES or self.torch_saves not in SAVES:
            raise ValueError(f"{self.name}: saves and torch_saves must be one of {SAVES}")
        if not self.kind.scalar_params:
            if self.gate is not None and not self.kind.gated:
                raise ValueError(f"{self.name}: only the glu kind has a gate")
            return  # the other kinds bring their own ops (see actkit.kinds)
        if self.saves_y_if is not None and self.saves_for(self.defaults) != self.saves:
            raise ValueError(f"{self.name}: saves={self.saves!r} but saves_y_if says otherwise at the defaults")
        if (self.saves == "y" or self.saves_y_if is not None) and self.torch_backward_y is None:
            raise ValueError(f"{self.name}: a spec that can save the output needs torch_backward_y")
        if self.torch_saves == "y" and (self.saves != "y" or self.saves_y_if is not None):
            raise ValueError(f"{self.name}: torch_saves='y' needs an f' that reads y at every parameter value")
        if len(self.params) > 2:
            raise ValueError(f"{self.name}: the elementwise kernels take at most two scalar parameters")

    # -- parameters -------------------------------------------------------------------
    @property
    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def signature(self) -> str:
        inner = ", ".join(f"{p.name}={p.default:g}" for p in self.params)
        return f"{self.name}({inner})"

    def bind(self, args: tuple = (), kwargs: Mapping[str, object] | None = None) -> dict[str, float]:
        """Resolve positional and keyword parameters against the spec, with clear errors."""
        kwargs = dict(kwargs or {})
        if len(args) > len(self.params):
            raise TypeError(f"{self.signature()} takes {len(self.params)} parameter(s), got {len(args)} positional")
        values = self.defaults
        for p, v in zip(self.params, args):
            if p.name in kwargs:
                raise TypeError(f"{self.name}: parameter {p.name!r} given both positionally and by keyword")
            kwargs[p.name] = v
        for key, value in kwargs.items():
            if key not in values:
                allowed = ", ".join(p.name for p in self.params) or "none"
                raise TypeError(f"{self.name} has no parameter {key!r}; its parameters: {allowed}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"{self.name}: parameter {key!r} must be a real number, got {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"{self.name}: parameter {key!r} must be finite, got {value!r}")
            values[key] = number
        if self.validate is not None:
            self.validate(values)
        return values

    def kernel_args(self, params: Mapping[str, float]) -> tuple[float, float]:
        """The (p0, p1) scalars passed to the device functions, in parameter order."""
        scalars = [float(params[p.name]) for p in self.params]
        return tuple(scalars + [0.0] * (2 - len(scalars)))  # type: ignore[return-value]

    def params_from_kernel_args(self, p0: float, p1: float) -> dict[str, float]:
        return {p.name: v for p, v in zip(self.params, (p0, p1))}

    def aten_backward(self):
        """(backward op, "x" or "y"): what a hand-written autograd.Function for this activation would
        call, PyTorch's own backward op, in x where torch has one, else in y (sigmoid, tanh);
        None for composite references."""
        if self.torch_backward is not None:
            return self.torch_backward, "x"
        if self.torch_backward_y is not None and isinstance(self.torch_backward_y, torch._ops.OpOverloadPacket):
            return self.torch_backward_y, "y"
        return None

    def saves_for(self, params: Mapping[str, float]) -> str:
        """What autograd can keep with these parameters at the least memory (what the "y" policy keeps):
        "x", "y" or "none" (nothing to differentiate, or a derivative of 1)."""
        if not self.differentiable or self.saves == "none":
            return "none"
        if self.saves_y_if is not None:
            return "y" if self.saves_y_if.test(params) else "x"
        return self.saves

    def saves_under(self, policy: str, params: Mapping[str, float]) -> str:
        """What autograd keeps with these parameters under a save policy (:data:`SAVE_POLICIES`): "x", "y"
        or "none". "y" only where f' can be read from y (``saves_for``), and under "torch" only where
        torch's op keeps y as well."""
        check_save_policy(policy)
        possible = self.saves_for(params)
        if possible != "y":
            return possible
        return "y" if policy == "y" or (policy == "torch" and self.torch_saves == "y") else "x"

    @property
    def saves_rule(self) -> str:
        """How the saved tensor depends on the parameters, in words ("" where it does not)."""
        return self.saves_y_if.words if self.saves_y_if is not None else ""

    # -- Triton -----------------------------------------------------------------------
    @property
    def table_key(self) -> str:
        """This spec's entry in its kind's table of device functions (``kernels.activations.TABLE``,
        ``kernels.learnable.TABLE``)."""
        return self.kernel or self.name

    @property
    def triton_functions(self):
        """The ``@triton.jit`` device functions (f, f' of x). Imports Triton."""
        from actkit.kernels.activations import TABLE

        entry = TABLE[self.table_key]
        return entry.fwd, entry.bwd

    def triton_forward(self, p0: float, p1: float):
        """(device function of f, its two scalars) for the elementwise and few-bit forwards at these
        kernel arguments (:meth:`kernel_args`): the table's plan where it has one (softplus's cheaper
        forms), else f with the arguments as they are. Imports Triton."""
        from actkit.kernels.activations import TABLE

        entry = TABLE[self.table_key]
        return entry.fwd_plan(p0, p1) if entry.fwd_plan is not None else (entry.fwd, p0, p1)

    def triton_derivative(self, saved: str):
        """The device function of f' in terms of the saved tensor ("x" or "y"). Imports Triton."""
        from actkit.kernels.activations import TABLE

        entry = TABLE[self.table_key]
        return entry.bwd_y if saved == "y" else entry.bwd


# -- parameter checks ---------------------------------------------------------------------
def check_save_policy(policy, owner: str = "") -> str:
    """``policy`` if it is one of :data:`SAVE_POLICIES`; ValueError naming them (and ``owner``) otherwise."""
    if isinstance(policy, str) and policy in SAVE_POLICIES:
        return policy
    named = ", ".join(repr(p) for p in SAVE_POLICIES)
    raise ValueError(f"{owner + ': ' if owner else ''}saves must be one of {named} (what autograd keeps for "
                     f"backward: torch's choice, the output y where possible, or the input x), got {policy!r}")


def _nonzero(param: str) -> Callable[[Mapping[str, float]], None]:
    def check(values: Mapping[str, float]) -> None:
        if values[param] == 0:
            raise ValueError(f"{param} must be non-zero (it divides x)")
    return check


def _ordered(values: Mapping[str, float]) -> None:
    # min_val == max_val is allowed, as torch does: a constant output with a zero gradient.
    if not values["min_val"] <= values["max_val"]:
        raise ValueError(f"hardtanh needs min_val <= max_val, got min_val={values['min_val']:g}, "
                         f"max_val={values['max_val']:g}")


# -- composite references (torch has no single op) ------------------------------------------
def _step(x: torch.Tensor) -> torch.Tensor:
    return torch.heaviside(x, x.new_ones(()))


def _gelu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _lisht(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tanh(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# -- PyTorch's backward ops, for the PyTorch backend (same results as autograd of the reference) --
_aten = torch.ops.aten
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _hardtanh_grad(min_val: float, max_val: float):
    # The same in x and in y: y sits on a clamp bound exactly where x is at or beyond it.
    return lambda grad, v: _aten.hardtanh_backward(grad, v, min_val, max_val)


def _relu_grad(grad: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _aten.threshold_backward(grad, v, 0)  # the same in x and in y (y > 0 exactly where x > 0)


def _positive_alpha(params: Mapping[str, float]) -> bool:
    # ELU-like: with alpha > 0, y <= 0 exactly where x <= 0, and there f' = (y + alpha) / alpha-ish.
    return params["alpha"] > 0


# softplus reads f' = sigmoid(beta x) = -expm1(-beta y) from y. Where beta x is just at or below
# the threshold, beta y = log1p(exp(beta x)) can pass it by exp(-threshold) and take the linear
# branch (f' = 1): from a threshold of 15 that is < 3.1e-7, below fp32's rounding of a gradient, and
# y rounds to x there in fp32, fp16 and bf16, so the test on beta y is the test on beta x. Not in
# float64 (at beta x = threshold = 20 torch gives sigmoid(20) = 1 - 2e-9): float64 keeps x.
SOFTPLUS_Y_MIN_THRESHOLD = 15.0


def _softplus_grad_y(grad: torch.Tensor, y: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    by = y * beta
    return torch.where(by > threshold, grad, grad * -torch.expm1(-by))


def _hardsigmoid_grad_y(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where((y > 0) & (y < 1), grad * (1.0 / 6.0), 0.0)  # as ATen: grad times 1/6


# ATen's hardsigmoid_backward multiplies by 1/6 rounded to fp32, in float64 too.
_ONE_SIXTH_FP32 = 0.1666666716337204


def _hardsigmoid_twice(x: torch.Tensor) -> torch.Tensor:
    # hardsigmoid_backward's f': that 1/6 (a product, as ATen's) strictly inside (-3, 3), 0 elsewhere and at NaN.
    inside = (x > -3) & (x < 3)
    return torch.where(inside, x * _ONE_SIXTH_FP32 + 0.5, (x >= 3).to(x.dtype))


def _logsigmoid_grad_y(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return grad * -torch.expm1(y)  # sigmoid(-x) = 1 - exp(log sigmoid(x))


def _softsign_grad_y(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = 1 - y.abs()  # 1 / (1 + |x|)
    return grad * (d * d)


_SPECS = [
    ActivationSpec("identity", "f(x) = x", torch.clone, "Identity", "(-inf, inf)",
                   monotonic=True, smooth=True, zero_centred=True, saturating=False, aliases=("linear",),
                   saves="none", torch_saves="none",
                   notes="The reference is torch.clone: an op may not return its input."),
    ActivationSpec("step", "f(x) = 1 if x >= 0 else 0 (NaN -> 0)", _step, "Step", "{0, 1}",
                   monotonic=True, smooth=False, zero_centred=False, saturating=True,
                   aliases=("binary_step", "heaviside"), native=False, differentiable=False, torch_saves="none",
                   notes="Forward only: its gradient is defined as zero everywhere (the true derivative is 0 "
                         "almost everywhere and undefined at 0)."),
    ActivationSpec("sigmoid", "f(x) = 1 / (1 + exp(-x))", torch.sigmoid, "Sigmoid", "(0, 1)",
                   monotonic=True, smooth=True, zero_centred=False, saturating=True, aliases=("logistic",),
                   saves="y", torch_saves="y", torch_backward_y=_aten.sigmoid_backward),
    ActivationSpec("tanh", "f(x) = tanh(x)", torch.tanh, "Tanh", "(-1, 1)",
                   monotonic=True, smooth=True, zero_centred=True, saturating=True,
                   saves="y", torch_saves="y", torch_backward_y=_aten.tanh_backward),
    ActivationSpec("relu", "f(x) = max(0, x)", F.relu, "ReLU", "[0, inf)",
                   monotonic=True, smooth=False, zero_centred=False, saturating=False,
                   saves="y", torch_saves="y", torch_backward=_relu_grad, torch_backward_y=_relu_grad),
    ActivationSpec("relu6", "f(x) = min(max(0, x), 6)", F.relu6, "ReLU6", "[0, 6]",
                   monotonic=True, smooth=False, zero_centred=False, saturating=True,
                   saves="y", torch_backward=_hardtanh_grad(0.0, 6.0), torch_backward_y=_hardtanh_grad(0.0, 6.0)),
    ActivationSpec("leaky_relu", "f(x) = x if x > 0 else negative_slope * x", F.leaky_relu, "LeakyReLU",
                   "(-inf, inf)", monotonic=True, smooth=False, zero_centred=False, saturating=False,
                   params=(Param("negative_slope", 0.01, "slope for x < 0"),), aliases=("lrelu", "leakyrelu"),
                   saves="y", saves_y_if=SavesRule(lambda p: p["negative_slope"] >= 0,
                                                   "y if negative_slope >= 0, else x"),
                   torch_backward=lambda grad, x, negative_slope: _aten.leaky_relu_backward(
                       grad, x, negative_slope, False),
                   torch_backward_y=lambda grad, y, negative_slope: _aten.leaky_relu_backward(
                       grad, y, negative_slope, True)),
    ActivationSpec("elu", "f(x) = x if x > 0 else alpha * (exp(x) - 1)", F.elu, "ELU", "(-alpha, inf)",
                   monotonic=True, smooth=False, zero_centred=False, saturating=False,
                   params=(Param("alpha", 1.0, "value approached as x -> -inf is -alpha"),),
                   saves="y", saves_y_if=SavesRule(_positive_alpha, "y if alpha > 0, else x"),
                   torch_backward=lambda grad, x, alpha: _aten.elu_backward(grad, alpha, 1.0, 1.0, False, x),
                   torch_backward_y=lambda grad, y, alpha: _aten.elu_backward(grad, alpha, 1.0, 1.0, True, y)),
    ActivationSpec("celu", "f(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))", F.celu, "CELU",
                   "(-alpha, inf)", monotonic=True, smooth=True, zero_centred=False, saturating=False,
                   params=(Param("alpha", 1.0, "scale of the negative part (non-zero)"),),
                   validate=_nonzero("alpha"), saves="y",
                   saves_y_if=SavesRule(_positive_alpha, "y if alpha > 0, else x"),
                   torch_backward=lambda grad, x, alpha: _aten.elu_backward(grad, alpha, 1.0, 1.0 / alpha, False, x),
                   torch_backward_y=lambda grad, y, alpha: _aten.elu_backward(grad, alpha, 1.0, 1.0 / alpha, True, y)),
    ActivationSpec("selu", "f(x) = scale * (x if x > 0 else alpha * (exp(x) - 1)), "
                           "alpha = 1.6733, scale = 1.0507", F.selu, "SELU", "(-1.7581, inf)",
                   monotonic=True, smooth=False, zero_centred=False, saturating=False,
                   saves="y",
                   torch_backward=lambda grad, x: _aten.elu_backward(grad, _SELU_ALPHA, _SELU_SCALE, 1.0, False, x),
                   torch_backward_y=lambda grad, y: _aten.elu_backward(grad, _SELU_ALPHA, _SELU_SCALE, 1.0, True, y)),
    ActivationSpec("gelu", "f(x) = x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))", F.gelu, "GELU",
                   "[-0.17, inf)", monotonic=False, smooth=True, zero_centred=False, saturating=False,
                   torch_backward=_aten.gelu_backward),
    ActivationSpec("gelu_tanh", "f(x) = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))", _gelu_tanh,
                   "GELUTanh", "[-0.17, inf)", monotonic=False, smooth=True, zero_centred=False,
                   saturating=False, aliases=("gelu_approx",),
                   torch_backward=lambda grad, x: _aten.gelu_backward(grad, x, approximate="tanh")),
    ActivationSpec("gelu_sigmoid", "f(x) = x * sigmoid(1.702 x)", _gelu_sigmoid, "GELUSigmoid", "[-0.16, inf)",
                   monotonic=False, smooth=True, zero_centred=False, saturating=False, native=False,
                   aliases=("quick_gelu",)),
    ActivationSpec("silu", "f(x) = x * sigmoid(x)", F.silu, "SiLU", "[-0.28, inf)",
                   monotonic=False, smooth=True, zero_centred=False, saturating=False, aliases=("swish",),
                   torch_backward=_aten.silu_backward),
    ActivationSpec("mish", "f(x) = x * tanh(softplus(x))", F.mish, "Mish", "[-0.31, inf)",
                   monotonic=False, smooth=True, zero_centred=False, saturating=False,
                   torch_backward=_aten.mish_backward),
    ActivationSpec("lisht", "f(x) = x * tanh(x)", _lisht, "LiSHT", "[0, inf)",
                   monotonic=False, smooth=True, zero_centred=False, saturating=False, native=False),
    ActivationSpec("softplus", "f(x) = log(1 + exp(beta x)) / beta, x where beta x > threshold", F.softplus,
                   "Softplus", "(0, inf)", monotonic=True, smooth=True, zero_centred=False, saturating=False,
                   params=(Param("beta", 1.0, "sharpness (non-zero)"),
                           Param("threshold", 20.0, "above beta * x > threshold the output is x")),
                   validate=_nonzero("beta"), torch_backward=_aten.softplus_backward,
                   saves="y", saves_y_if=SavesRule(lambda p: p["threshold"] >= SOFTPLUS_Y_MIN_THRESHOLD,
                                                   f"y if threshold >= {SOFTPLUS_Y_MIN_THRESHOLD:g}, else x "
                                                   "(float64: x)", exact_in_float64=False),
                   torch_backward_y=_softplus_grad_y),
    ActivationSpec("softsign", "f(x) = x / (1 + |x|)", F.softsign, "Softsign", "(-1, 1)",
                   monotonic=True, smooth=True, zero_centred=True, saturating=True, native=False,
                   saves="y", torch_backward_y=_softsign_grad_y),
    ActivationSpec("hardswish", "f(x) = x * relu6(x + 3) / 6", F.hardswish, "Hardswish", "[-0.375, inf)",
                   monotonic=False, smooth=False, zero_centred=False, saturating=False, aliases=("hard_swish",),
                   torch_backward=_aten.hardswish_backward),
    ActivationSpec("hardsigmoid", "f(x) = relu6(x + 3) / 6", F.hardsigmoid, "Hardsigmoid", "[0, 1]",
                   monotonic=True, smooth=False, zero_centred=False, saturating=True, aliases=("hard_sigmoid",),
                   torch_backward=_aten.hardsigmoid_backward, saves="y", torch_backward_y=_hardsigmoid_grad_y,
                   twice_differentiable=_hardsigmoid_twice),
    ActivationSpec("hardtanh", "f(x) = clamp(x, min_val, max_val)", F.hardtanh, "Hardtanh", "[min_val, max_val]",
                   monotonic=True, smooth=False, zero_centred=True, saturating=True,
                   params=(Param("min_val", -1.0, "lower clamp"), Param("max_val", 1.0, "upper clamp")),
                   validate=_ordered, aliases=("hard_tanh",), saves="y", torch_backward=_aten.hardtanh_backward,
                   torch_backward_y=_aten.hardtanh_backward),
    ActivationSpec("logsigmoid", "f(x) = log(sigmoid(x)) = -softplus(-x)", F.logsigmoid, "LogSigmoid",
                   "(-inf, 0)", monotonic=True, smooth=True, zero_centred=False, saturating=False,
                   aliases=("log_sigmoid",), saves="y", torch_backward_y=_logsigmoid_grad_y),
    ActivationSpec("tanhshrink", "f(x) = x - tanh(x)", F.tanhshrink, "Tanhshrink", "(-inf, inf)",
                   monotonic=True, smooth=True, zero_centred=True, saturating=False, native=False),
]

REGISTRY: dict[str, ActivationSpec] = {}
_LOOKUP: dict[str, ActivationSpec] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(spec: ActivationSpec) -> ActivationSpec:
    """Add a spec; its name and aliases must be new (case-insensitive, '-' == '_')."""
    for label in (spec.name, *spec.aliases):
        if _key(label) in _LOOKUP:
            raise ValueError(f"activation name {label!r} is already registered")
    REGISTRY[spec.name] = spec
    for label in (spec.name, *spec.aliases):
        _LOOKUP[_key(label)] = spec
    return spec


for _spec in _SPECS:
    register(_spec)


# -- learnable and row-wise kinds (their ops: actkit/kinds/learnable.py, actkit/kinds/rowwise.py) --
def per_channel(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A shared (1 entry) or per-channel (C entries, channel dim 1) parameter, broadcastable to x."""
    if param.numel() == 1:
        return param.reshape(())
    return param.reshape((-1,) + (1,) * (x.dim() - 2))


def _swish_beta(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(per_channel(beta, x) * x)


_OTHER_KINDS = [
    ActivationSpec("prelu", "f(x) = x if x > 0 else a_c * x; a learnable: one shared, or one per channel (dim 1)",
                   F.prelu, "PReLU", "(-inf, inf)", monotonic=True, smooth=False, zero_centred=False,
                   saturating=False, kind=LEARNABLE,
                   params=(Param("weight", 0.25, "learnable slope for x < 0 (initial value)"),),
                   notes="Monotonic while the slopes stay >= 0. Module: PReLU(num_parameters=1 or C, init=0.25)."),
    ActivationSpec("swish_beta", "f(x) = x * sigmoid(beta_c * x); beta learnable: shared, or one per channel (dim 1)",
                   _swish_beta, "SwishBeta", "[-0.28 / beta, inf)", monotonic=False, smooth=True,
                   zero_centred=False, saturating=False, native=False, kind=LEARNABLE,
                   params=(Param("beta", 1.0, "learnable sharpness (initial value); beta = 1 is SiLU"),),
                   aliases=("learnable_swish",),
                   notes="Module: SwishBeta(num_parameters=1 or C, init=1.0)."),
    ActivationSpec("softmax", "f(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x)) over dim",
                   torch.softmax, "Softmax", "[0, 1], sums to 1 over dim", monotonic=False, smooth=True,
                   zero_centred=False, saturating=True, kind=ROWWISE, saves="y", torch_saves="y",
                   params=(Param("dim", -1, "dimension normalised over"),),
                   notes="Row-wise over dim: not an elementwise function. Backward uses the saved output."),
    ActivationSpec("log_softmax", "f(x)_i = x_i - max(x) - log(sum_j exp(x_j - max(x))) over dim",
                   torch.log_softmax, "LogSoftmax", "(-inf, 0]", monotonic=False, smooth=True,
                   zero_centred=False, saturating=False, kind=ROWWISE, saves="y", torch_saves="y",
                   params=(Param("dim", -1, "dimension normalised over"),), aliases=("logsoftmax",),
                   notes="Row-wise over dim: not an elementwise function. Backward uses the saved output."),
]

for _spec in _OTHER_KINDS:
    register(_spec)


# -- gated linear units (kind "glu"; their ops: actkit/kinds/glu.py) --------------------------------
# The references are the composites a model would write, act(a) * b with the activation on the first
# half a (the gate): what the PyTorch fallback computes, the benchmarks' eager provider runs and
# torch.compile traces by default (see actkit/kinds/glu.py).
def glu_halves(x: torch.Tensor, y: torch.Tensor | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b): the halves of x along ``dim`` (a first), or x and y as given."""
    return x.chunk(2, dim) if y is None else (x, y)


def _composite(name: str, act: Callable[[torch.Tensor], torch.Tensor]):
    """``<name>_composite(x, y=None, dim=-1)``: ``act(a) * b`` in torch ops, named for the bench's call labels."""
    def composite(x: torch.Tensor, y: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
        a, b = glu_halves(x, y, dim)
        return act(a) * b

    composite.__name__ = composite.__qualname__ = f"{name}_composite"
    return composite


GLU_DEFAULT_ACT = "sigmoid"
"""The generic glu's gate when none is named (Dauphin et al.'s GLU gates with a sigmoid)."""


def glu_composite(x: torch.Tensor, y: torch.Tensor | None = None, dim: int = -1, act: str = GLU_DEFAULT_ACT,
                  **params) -> torch.Tensor:
    a, b = glu_halves(x, y, dim)
    return get(act).reference(a, **params) * b


_GLU_SPLIT = Param("dim", -1, "dimension split into the halves a (gated, first) and b (one-tensor form)")
_GLU_NOTE = ("a is the first half of x along dim (or the first of two tensors), b the second; torch's F.glu "
             "gates the other half, a * sigmoid(b). The output has half of x's dim. Autograd saves a and b only.")


def _glu_spec(name: str, gate: str | None, reference, class_name: str, formula: str, smooth: bool = True,
              aliases: tuple[str, ...] = (), notes: str = "") -> ActivationSpec:
    return ActivationSpec(name, f"f(x) = {formula}; a, b = the halves of x along dim (a first), or f(a, b)", reference,
                          class_name, "(-inf, inf)", monotonic=False, smooth=smooth, zero_centred=False,
                          saturating=False, native=False, kind=GLU, gate=gate, params=(_GLU_SPLIT,),
                          aliases=aliases, notes=" ".join((_GLU_NOTE, notes)).strip())


_GLU_KIND = [
    _glu_spec("swiglu", "silu", _composite("swiglu", F.silu), "SwiGLU", "silu(a) * b"),
    _glu_spec("geglu", "gelu", _composite("geglu", F.gelu), "GEGLU", "gelu(a) * b (erf GELU)"),
    _glu_spec("geglu_tanh", "gelu_tanh", _composite("geglu_tanh", _gelu_tanh), "GEGLUTanh", "gelu_tanh(a) * b",
              aliases=("geglu_approx",)),
    _glu_spec("reglu", "relu", _composite("reglu", F.relu), "ReGLU", "relu(a) * b", smooth=False),
    _glu_spec("glu", None, glu_composite, "GLU", "act(a) * b, act any differentiable elementwise activation "
              f"(default {GLU_DEFAULT_ACT})",
              notes="act= names the gate and its parameters follow as keywords: glu(x, act='leaky_relu', "
                    "negative_slope=0.1); act='identity' is the bilinear GLU."),
]

for _spec in _GLU_KIND:
    register(_spec)


def available() -> list[str]:
    """Canonical names of every registered activation, in registry order."""
    return list(REGISTRY)


def get(name: str | ActivationSpec) -> ActivationSpec:
    """The spec for ``name`` (aliases accepted, case-insensitive); ValueError with suggestions otherwise."""
    if isinstance(name, ActivationSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a string, got {type(name).__name__}")
    spec = _LOOKUP.get(_key(name))
    if spec is not None:
        return spec
    close = difflib.get_close_matches(_key(name), list(_LOOKUP), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(_LOOKUP[c].name for c in close))
    hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise ValueError(f"unknown activation {name!r}.{hint} Valid names: {', '.join(available())}")
