"""Shared test helpers: devices, the per-dtype tolerance table, reference evaluation, and the
error bound of a sum (for every tolerance that covers a reduction)."""
from __future__ import annotations

import contextlib
import math

import torch

import actkit
from actkit import kinds

# Where the Triton kernels run: compiled on a GPU, else through Triton's interpreter on CPU
# (the root conftest.py sets TRITON_INTERPRET=1 when there is no GPU).
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Tolerance of a result stored in `dtype` against float64 math on the same (rounded) input.
# KERNEL: actkit's Triton kernels, fp32 math rounded once to the storage dtype: a few fp32
# ulp (absolute near zero crossings), or half an ulp of fp16 (2^-11) / bf16 (2^-8) plus that.
KERNEL_TOLERANCE = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
}
# TORCH: the PyTorch fallback is torch's own ops, whose composite formulas (x * sigmoid(1.702x),
# x - tanh(x), autograd of x / (1 + |x|)) round every intermediate in the storage dtype; the
# fallback is held exactly to torch (below) and only loosely to float64 math.
TORCH_TOLERANCE = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=4e-3),
    torch.bfloat16: dict(rtol=6e-2, atol=3e-2),
}
# The fallback against torch itself in the same dtype.
EXACT = dict(rtol=0, atol=0)

# Points where activations change branch or formula, large magnitudes, and non-finite values.
SPECIAL_VALUES = [0.0, -0.0, 1e-7, -1e-7, 0.05, -0.05, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 6.0, -6.0,
                  20.0, -20.0, 20.5, 88.0, -88.0, 1e4, -1e4, float("inf"), float("-inf"), float("nan")]

# Non-default parameters, to check that parameters reach the kernels.
OTHER_PARAMS = {
    "leaky_relu": dict(negative_slope=0.2),
    "elu": dict(alpha=0.5),
    "celu": dict(alpha=2.0),
    "softplus": dict(beta=2.0, threshold=5.0),
    "hardtanh": dict(min_val=-2.0, max_val=0.5),
}
# Parameters that make an activation save x where its defaults save y (f' no longer readable from
# y: a negative slope or alpha); softplus's threshold of 5 above already does.
SAVES_X_PARAMS = {
    "leaky_relu": dict(negative_slope=-0.1),
    "elu": dict(alpha=-0.5),
    "celu": dict(alpha=-2.0),
}
PARAM_CASES = [(name, params) for table in (OTHER_PARAMS, SAVES_X_PARAMS) for name, params in table.items()]


@contextlib.contextmanager
def backend(name: str):
    previous = actkit.backend._override
    actkit.set_backend(name)
    try:
        yield
    finally:
        actkit.set_backend(previous)


def elementwise_specs():
    return [s for s in actkit.registry.REGISTRY.values() if s.kind is kinds.ELEMENTWISE]


def kind_inputs(spec, device, dtype=torch.float32):
    """(args for functional.apply after the name, the tensors to differentiate) for an activation of any
    kind: x and a parameter of one entry per channel (learnable), x and dim 1 (row-wise), else x alone
    (64 elements: a GLU's two halves, or any kind added later that takes one tensor)."""
    g = torch.Generator().manual_seed(0)
    if spec.kind.learnable:
        x = torch.randn(2, 3, 4, generator=g, dtype=dtype).to(device).requires_grad_(True)
        weight = torch.rand(3, generator=g, dtype=dtype).to(device).requires_grad_(True)
        return (x, weight), (x, weight)
    if spec.kind.normalises:
        x = (torch.randn(3, 5, generator=g, dtype=dtype) * 3).to(device).requires_grad_(True)
        return (x, 1), (x,)
    x = (torch.randn(64, generator=g, dtype=dtype) * 4).to(device).requires_grad_(True)
    return (x,), (x,)


def run_actkit(spec, x: torch.Tensor, dy: torch.Tensor, params: dict, saves: str = "torch"):
    """Forward and (for differentiable specs) input gradient through actkit.functional, under a save policy."""
    x = x.detach().clone().requires_grad_(True)
    y = actkit.functional.apply(spec.name, x, **params, **({} if saves == "torch" else {"saves": saves}))
    dx = torch.autograd.grad(y, x, dy)[0] if spec.differentiable else None
    return y.detach(), dx


def run_reference(spec, x: torch.Tensor, dy: torch.Tensor, params: dict, dtype=None, y_saved=None,
                  saves: str = "torch"):
    """The PyTorch reference and its autograd gradient on CPU, computed in ``dtype``.

    ``x`` and ``dy`` come in their storage dtype; ``dtype`` (default: the same) is the
    precision of the reference math, float64 for "float64 math". Where actkit saves the output
    (under save policy ``saves``), the gradient is torch's own formula applied to ``y_saved``, the
    output actkit stored (checked against the reference separately), so that one rounding step of
    y in fp16/bf16 is not mistaken for an error of the backward kernel.
    """
    dtype = dtype or x.dtype
    xc = x.detach().cpu().to(dtype).requires_grad_(True)
    y = spec.reference(xc, **params)
    if not spec.differentiable:
        return y.detach(), None
    dyc = dy.detach().cpu().to(dtype)
    if spec.saves_under(saves, params) == "y":
        return y.detach(), spec.torch_backward_y(dyc, y_saved.detach().cpu().to(dtype), **params)
    return y.detach(), torch.autograd.grad(y, xc, dyc)[0]


def assert_matches(ours: torch.Tensor, same_dtype: torch.Tensor, float64: torch.Tensor, x: torch.Tensor,
                   what: str, tolerance=KERNEL_TOLERANCE):
    """``ours`` against torch in the same dtype and against float64 math, elementwise over x.

    * Where the float64 result is finite and within the dtype's range, and the input is finite (or
      torch in the same dtype agrees with float64 anyway), ``ours`` must be within ``tolerance`` of
      float64 math.
    * Everywhere else (NaN or +-inf in the input or in the result) ``ours`` must be exactly
      what torch gives, in the same dtype or in float64: torch's CPU kernels are not always
      consistent between the two (its vectorised float32 GELU gives NaN at +inf where float64
      gives inf; its vectorised and scalar hardtanh gradients differ at NaN).
    """
    tol = tolerance[ours.dtype]
    o = ours.detach().cpu().double().flatten()
    s = same_dtype.detach().cpu().double().flatten()
    r = float64.detach().cpu().double().flatten()
    xs = x.detach().cpu().double().flatten()
    assert o.shape == r.shape, f"{what}: shape {tuple(o.shape)} != {tuple(r.shape)}"
    # Regular: a finite float64 result the storage dtype can hold (alpha = -2 CELU at x = -88 is
    # -2.6e19, beyond fp16's 65504: torch too gives -inf there, checked below).
    representable = r.abs() <= torch.finfo(ours.dtype).max
    regular = torch.isfinite(r) & representable & (torch.isfinite(xs) | torch.isclose(s, r, **tol))
    if regular.any():
        torch.testing.assert_close(o[regular], r[regular], **tol,
                                   msg=lambda m: f"{what}: against float64 math\n{m}")

    def same(a, b):
        return (a == b) | (torch.isnan(a) & torch.isnan(b))

    bad = ~regular & ~(same(o, s) | same(o, r))
    assert not bad.any(), f"{what}: non-finite behaviour differs from torch at " + ", ".join(
        f"x={xs[i].item()}: actkit {o[i].item()}, torch {s[i].item()}, torch float64 {r[i].item()}"
        for i in bad.nonzero().flatten().tolist()[:8])


# -- reductions ---------------------------------------------------------------------------------------
# A reduction's rounding error grows with its number of terms and their magnitude, and its order of
# additions (vector width, threads, block size) differs between CPUs, GPUs and Triton's interpreter.
# So a tolerance on anything that sums is a bound computed from the data, never a constant tuned on
# one machine.
#
# Worst case (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 4.2): any order
# of the n - 1 additions of a sum of n terms gives |fl(sum) - sum| <= gamma_{n-1} * sum |terms|, with
# gamma_k = k u / (1 - k u) and u the unit roundoff of the accumulation (2^-24 for fp32). That bound
# assumes every rounding error has its largest size and the same sign, so it is far above what long
# sums do (70 000 fp32 terms: gamma = 4e-3). Modelling the rounding errors as independent and of mean
# zero (Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput.
# 41(5), 2019), k u becomes lam * sqrt(k) * u: |fl(sum) - sum| <= (exp(lam sqrt(k) u + k u^2 / (1 - u))
# - 1) * sum |terms| with probability at least 1 - 2 n exp(-lam^2 (1 - u)^2 / 2). (Their proof bounds,
# for each term, the product of the at most k = n - 1 rounding factors (1 + delta) it passes through,
# so it holds for any order of additions.) lam = 8 puts that failure probability below 1e-8 for sums
# of up to 10^5 terms. The bound used is the smaller of the two.
SUM_LAMBDA = 8.0


def sum_error_bound(terms: torch.Tensor, dim=None, keepdim: bool = False,
                    accumulate: torch.dtype = torch.float32) -> torch.Tensor:
    """A bound on |computed - exact| of ``terms.sum(dim)`` accumulated in ``accumulate``, in any order
    of additions (float64, shaped as the sum). ``terms`` are the summands as exactly as the caller knows
    them (float64 math on the inputs); the error of computing each term is the caller's to add."""
    magnitude = terms.detach().double().abs()
    total = magnitude.sum() if dim is None else magnitude.sum(dim, keepdim=keepdim)
    k = max(magnitude.numel() // max(total.numel(), 1) - 1, 0)  # additions per sum
    u = torch.finfo(accumulate).eps / 2
    worst = k * u / (1 - k * u) if k * u < 1 else math.inf
    probable = math.expm1(SUM_LAMBDA * math.sqrt(k) * u + k * u * u / (1 - u))
    return min(worst, probable) * total


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound, what: str) -> None:
    """``|actual - expected| <= bound`` elementwise (``bound`` broadcasts); where ``expected`` is not
    finite (NaN, +-inf), ``actual`` must be the same value."""
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    b = torch.as_tensor(bound, dtype=torch.float64).cpu().expand_as(e)
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    error = (a - e).abs()
    bad = ~same & ~(torch.isfinite(e) & (error <= b))
    if bad.any():
        worst = int(torch.where(bad, (error / b).nan_to_num(math.inf), -1.0).flatten().argmax())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.numel()} elements outside the bound; worst at flat index {worst}: "
            f"got {a.flatten()[worst].item()!r}, expected {e.flatten()[worst].item()!r}, "
            f"|difference| {error.flatten()[worst].item():.3g} > bound {b.flatten()[worst].item():.3g}")
