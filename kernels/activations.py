"""Per-activation Triton device functions: the value f and the derivative f'.

Every function takes ``(v, p0, p1, ACC)``: ``v`` is an fp32 block, ``p0``/``p1`` are the
activation's scalar parameters in registry order (unused ones are 0), and ``ACC`` (a
``tl.constexpr``) is True where the result is stored in fp32 and must be accurate to a few fp32
ulp; fp16/bf16 results take cheaper forms of the same math (see :mod:`fp32math`). ``<name>_fwd`` is f(x),
``<name>_bwd`` is f'(x), and ``<name>_bwd_y`` is f' read from the output y, for activations
whose registry spec can save y instead of x. The generic kernels in :mod:`elementwise` receive
these functions as ``tl.constexpr`` arguments.

Comparisons are written so that NaN takes the same branch as in PyTorch's own kernels
(e.g. ``where(x < 0, 0, x)`` for ReLU keeps NaN, as ``clamp_min`` does), because the
tests hold the kernels to torch's NaN/inf behaviour, forward and backward.

Where ATen's backward *selects* 0 rather than multiplying dy by a derivative of 0 (the clamp
family: ``threshold_backward`` is ``x <= 0 ? 0 : dy``), dy = NaN or +-inf gives 0, not
``dy * 0`` = NaN. ``<name>_zero`` (and ``<name>_zero_y`` of y) is that set, as a mask; the backward
kernels write 0 there (:func:`zero_where`). Activations without one multiply everywhere, as ATen's
smooth backward ops (``silu_backward``, ``elu_backward``, ``sigmoid_backward``) do.

The math is written for a GPU's issue slots (see :mod:`fp32math`): derivatives reuse the
pieces their forward formula computes (sigmoid's e^-|x| and 1 / (1 + e^-|x|), tanh's and
mish's ratio), no function divides (``rcp`` and multiplications by constant reciprocals), and
guards are clamps where a ``where`` would compute a second branch.
"""
from typing import Callable, NamedTuple

import numpy as np
import triton
import triton.language as tl

from . import fp32math as fm

# Module-level numbers used inside @triton.jit code must be tl.constexpr: a plain float runs
# under the interpreter but real compilation refuses it ("Cannot access global variable").
# Write them after a tensor operand (x * K, not K * x): the interpreter cannot multiply a
# constexpr on the left by a tensor. tests/test_gpu_compile.py and the interpreter tests
# between them catch either mistake.
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)    # 1 / sqrt(2 pi)
LOG2_INV_SQRT_2PI = tl.constexpr(-1.3257480647361593)  # log2(1 / sqrt(2 pi))
GELU_SIGMOID_K = tl.constexpr(1.702)
SELU_ALPHA = tl.constexpr(1.6732632423543772)
SELU_SCALE = tl.constexpr(1.0507009873554805)
SELU_ALPHA_SCALE = tl.constexpr(1.6732632423543772 * 1.0507009873554805)
GELU_TANH_C1 = tl.constexpr(2 * 0.7978845608028654)               # 2 sqrt(2 / pi)
GELU_TANH_C3 = tl.constexpr(2 * 0.7978845608028654 * 0.044715)     # 2 sqrt(2 / pi) 0.044715
GELU_TANH_K1 = tl.constexpr(-0.7978845608028654 * 1.4426950408889634)  # -C1 log2(e) / 2
GELU_TANH_K3 = tl.constexpr(-0.7978845608028654 * 0.044715 * 1.4426950408889634)  # -C3 log2(e) / 2
GELU_TANH_D3 = tl.constexpr(3 * 2 * 0.7978845608028654 * 0.044715)
# mish's ratio n / (n + 2) is 1 in fp32 from x = 9 on; clamping the exponent at 20 keeps
# n = e^x (e^x + 2) finite without changing any result.
MISH_CLAMP = tl.constexpr(20.0)
# GELU's 16-bit backward (gelu_bwd): fp32 of its minimum's |x|, a0 = 0.75179..., and D(A0) there
# (benchmarks/fit_coefficients.py, gelu_slope_ratio).
GELU_A0 = tl.constexpr(0.7517915368080139)
GELU_D_A0 = tl.constexpr(-1.738192718040505e-08)


@triton.jit
def identity_fwd(x, p0, p1, ACC: tl.constexpr):
    return x


@triton.jit
def identity_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.zeros_like(x) + 1.0


@triton.jit
def step_fwd(x, p0, p1, ACC: tl.constexpr):
    # Heaviside with H(0) = 1; NaN maps to 0, as torch.heaviside does.
    return tl.where(x >= 0.0, 1.0, 0.0)


@triton.jit
def step_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.zeros_like(x)


@triton.jit
def sigmoid_fwd(x, p0, p1, ACC: tl.constexpr):
    return fm.sigmoid(x, ACC, True)


@triton.jit
def sigmoid_bwd(x, p0, p1, ACC: tl.constexpr):
    # s (1 - s) = z / (1 + z)^2 with z = e^-|x|: no cancellation, no overflow, either sign.
    z, r = fm.sigmoid_parts(x, ACC, False)
    return z * r * r


@triton.jit
def sigmoid_bwd_y(y, p0, p1, ACC: tl.constexpr):
    return y * (1.0 - y)


@triton.jit
def tanh_fwd(x, p0, p1, ACC: tl.constexpr):
    return fm.tanh(x, ACC, True)


@triton.jit
def tanh_bwd(x, p0, p1, ACC: tl.constexpr):
    # sech^2 x = 4 z / (1 + z)^2 with z = e^(-2|x|): no cancellation where |tanh x| is near 1.
    z, r = fm.tanh_parts(x, ACC, False)
    return z * r * r * 4.0


@triton.jit
def tanh_bwd_y(y, p0, p1, ACC: tl.constexpr):
    return tl.fma(-y, y, 1.0)  # one rounding: 1 - y^2 cancels where |y| is near 1


@triton.jit
def relu_fwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def relu_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x <= 0.0, 0.0, 1.0)


@triton.jit
def hardtanh_fwd(x, p0, p1, ACC: tl.constexpr):
    # p0 = min_val, p1 = max_val
    return tl.where(x < p0, p0, tl.where(x > p1, p1, x))


@triton.jit
def hardtanh_bwd(x, p0, p1, ACC: tl.constexpr):
    # Zero at the clamp points themselves; NaN passes the gradient through, as torch's
    # CUDA kernel and scalar CPU code do.
    return tl.where((x <= p0) | (x >= p1), 0.0, 1.0)


@triton.jit
def relu6_fwd(x, p0, p1, ACC: tl.constexpr):
    return hardtanh_fwd(x, 0.0, 6.0, ACC)


@triton.jit
def relu6_bwd(x, p0, p1, ACC: tl.constexpr):
    return hardtanh_bwd(x, 0.0, 6.0, ACC)


@triton.jit
def relu_zero(x, p0, p1):
    return x <= 0.0  # threshold_backward: x <= 0 ? 0 : dy (NaN x passes dy)


@triton.jit
def hardtanh_zero(x, p0, p1):
    # hardtanh_backward: (x <= min || x >= max) ? 0 : dy; the same in y (see TABLE).
    return (x <= p0) | (x >= p1)


@triton.jit
def relu6_zero(x, p0, p1):
    return hardtanh_zero(x, 0.0, 6.0)


@triton.jit
def leaky_relu_fwd(x, p0, p1, ACC: tl.constexpr):
    # p0 = negative_slope
    return tl.where(x > 0.0, fm.opaque(x), x * p0)  # opaque: see fp32math.opaque


@triton.jit
def leaky_relu_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x > 0.0, 1.0, p0)


@triton.jit
def elu_fwd(x, p0, p1, ACC: tl.constexpr):
    # p0 = alpha
    return tl.where(x <= 0.0, fm.expm1_neg(x, ACC) * p0, fm.opaque(x))  # opaque: see fp32math.opaque


@triton.jit
def elu_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x <= 0.0, fm.exp(x, ACC) * p0, 1.0)


@triton.jit
def elu_bwd_y(y, p0, p1, ACC: tl.constexpr):
    # alpha > 0: y <= 0 exactly where x <= 0, and there alpha exp(x) = y + alpha (ATen's is_result form).
    return tl.where(y <= 0.0, y + p0, 1.0)


@triton.jit
def celu_fwd(x, p0, p1, ACC: tl.constexpr):
    # p0 = alpha: alpha * (exp(x / alpha) - 1) below zero. 1 / alpha is a scalar, computed once
    # per program, so the per-element quotient is a product (one rounding more than x / alpha).
    return tl.where(x <= 0.0, fm.expm1(x * (1.0 / p0), ACC) * p0, fm.opaque(x))


@triton.jit
def celu_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x <= 0.0, fm.exp(x * (1.0 / p0), ACC), 1.0)


@triton.jit
def celu_bwd_y(y, p0, p1, ACC: tl.constexpr):
    # alpha > 0: exp(x / alpha) = (y + alpha) / alpha where y <= 0.
    return tl.where(y <= 0.0, (y + p0) * (1.0 / p0), 1.0)


@triton.jit
def selu_fwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x <= 0.0, fm.expm1_neg(x, ACC) * SELU_ALPHA_SCALE, x * SELU_SCALE)


@triton.jit
def selu_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x <= 0.0, fm.exp(x, ACC) * SELU_ALPHA_SCALE, SELU_SCALE)


@triton.jit
def selu_bwd_y(y, p0, p1, ACC: tl.constexpr):
    # scale alpha exp(x) = y + scale alpha where y <= 0.
    return tl.where(y <= 0.0, y + SELU_ALPHA * SELU_SCALE, SELU_SCALE)


@triton.jit
def gelu_fwd(x, p0, p1, ACC: tl.constexpr):
    # x Phi(x) with Phi(x) = q or 1 - q, q = Phi(-|x|): 1 + erf(x / sqrt 2) cancels for x < 0, so the
    # lower tail is computed directly. x = -inf gives -inf * 0 = NaN, as torch's x Phi(x) does.
    if ACC:
        q = fm.phi_lower(x)
    else:
        # 16-bit results (bf16's form; fp16 launches gelu_fwd_fp16): q = 2^E(|x|), E a polynomial of
        # degree 8 in |x| itself, fitted on |x| <= 13.6, where bf16's GELU is still nonzero, its error
        # weighted as densely as bf16's inputs lie: relative error 2^-12.1, 99.98% of bf16 inputs
        # rounded correctly (benchmarks/fit_coefficients.py, gelu_tail_exponent). No reciprocal: one
        # MUFU per element with the store's F2FP, 1.5 XU slots. ex2 of E / 2, squared: ex2.approx.ftz
        # would flush q below 2^-126 (|x| > 12.95). The leading coefficient is positive: Horner's
        # partial s after the top six, negative on [0, 13.7], enters as -|s| (an operand modifier, no
        # instruction), so past 13.6 the exponent falls without bound (q is 0 at |x| = inf).
        a = tl.abs(x)
        s = tl.fma(a, 1.4282717231139941e-08, -9.123406812250323e-07)
        s = fm.horner4(s, a, 2.5003047994687222e-05, -0.00038825199590064585, 0.0038298070430755615,
                       -0.025882761925458908)
        e = tl.fma(tl.fma(tl.fma(-tl.abs(s), a, -0.2304399460554123), a, -0.5752438902854919), a,
                   -0.5000035762786865)
        h = tl.exp2(e)
        q = h * h
    return x * tl.where(x < 0.0, q, 1.0 - q)


@triton.jit
def gelu_fwd_fp16(x, p0, p1, ACC: tl.constexpr):
    # GELU for fp16 results (DeviceFunctions.fwd_fp16): fp16's GELU is -0 below x = -5.9 and fp16 keeps
    # 11 bits, so E is fitted on |x| <= 5.9 only, to 2^-18.2 with degree 8 and E(0) = -1 exactly (a
    # subnormal x / 2 is a tie that only the x^2 term breaks: fit_coefficients.py); q >= 2^-30, so one
    # ex2 of E itself. The polynomial past 5.9 falls as bf16's does. Other dtypes: gelu_fwd.
    if ACC:
        return gelu_fwd(x, p0, p1, ACC)
    else:
        a = tl.abs(x)
        e = tl.fma(a, -6.674184049870746e-08, -3.208118926067982e-07)
        e = fm.horner4(e, a, 4.76689929200802e-05, -0.0008638019789941609, 0.008330248296260834,
                       -0.053700342774391174)
        e = tl.fma(tl.fma(e, a, -0.45865678787231445), a, -1.1511913537979126)
        q = tl.exp2(tl.fma(e, a, -1.0))
        return x * tl.where(x < 0.0, q, 1.0 - q)


@triton.jit
def gelu_bwd(x, p0, p1, ACC: tl.constexpr):
    if ACC:
        phi_cdf, phi_pdf = _gelu_parts(x, ACC)
        return phi_cdf + x * phi_pdf
    else:
        # With a = |x|: f' = Phi(x) + x phi(x) = phi(a) D(a) for x < 0 and 1 - phi(a) D(a) for x >= 0,
        # D(a) = M(a) - a, M(a) = Phi(-a) / phi(a) (the Mills ratio). Phi + x phi cancels near GELU's
        # minimum, x = -a0 = -0.752 (the root of D): computed as above, fp16 results there were off by
        # up to 6 ulp. Held as D = (A0 - a) S(t) + D(A0), A0 - a exact and S a smooth positive
        # polynomial in t = 1 / (1 + 0.36 a) (relative error 2^-21.9 for a <= 6, where fp16's f' is
        # nonzero; 2^-19 to a = 13.5 for bf16), the root is kept to S's relative precision. One exp and
        # one reciprocal (the sum of two Phi and phi exps before); phi = h^2 taken as (h D) h, so that
        # a subnormal f' rounds once.
        t = fm.rcp(tl.abs(x) * 0.36 + 1.0)
        s = 1.0002870559692383 + t * (0.2659711241722107 + t * (0.2447481006383896 + t * (
            0.03952435776591301 + t * (0.2619377374649048 + t * (-0.18037445843219757 + t * 0.03500896319746971)))))
        d = tl.fma(tl.abs(x) - GELU_A0, -s, GELU_D_A0)
        h = tl.exp2(tl.fma(x * x, fm.QUARTER_LOG2E, LOG2_INV_SQRT_2PI * 0.5))
        p = (h * d) * h
        return tl.where(x < 0.0, p, 1.0 - p)


@triton.jit
def gelu_fwd_bwd(x, p0, p1, ACC: tl.constexpr):
    phi_cdf, phi_pdf = _gelu_parts(x, ACC)
    return x * phi_cdf, phi_cdf + x * phi_pdf


@triton.jit
def _gelu_parts(x, ACC: tl.constexpr):
    # (Phi(x), phi(x)), phi(x) = e^(-x^2 / 2) / sqrt(2 pi); Phi from the erfc pieces
    # (see fp32math.erfc_parts), the Gaussian factor shared: f' = Phi + x phi.
    if ACC:
        t, p = fm.erfc_parts(x, ACC, False, 1.0, 0.0)
        g = fm.exp(x * x * -0.5, ACC)
        q = t * g * tl.exp2(p * fm.LOG2E) * 0.5
        return tl.where(x < 0.0, q, 1.0 - q), g * INV_SQRT_2PI
    else:
        # phi = h^2, h = 2^(-x^2 log2(e) / 4 + log2(1 / sqrt(2 pi)) / 2): the constant rides in the
        # exponent, and h is never subnormal before the square. Phi's lower tail is then
        # t e^(-x^2/2) 2^(2p) = (t phi) 2^(2p - log2(1 / sqrt(2 pi))), that exponent folded into p's
        # coefficients (erfc_parts' SCALE, SHIFT). Paired reciprocal: three MUFU per element (two
        # ex2, the store's F2FP) would bind an H200's XU.
        t, p2 = fm.erfc_parts(x, ACC, True, 2.0, -LOG2_INV_SQRT_2PI)
        h = tl.exp2(tl.fma(x * x, fm.QUARTER_LOG2E, LOG2_INV_SQRT_2PI * 0.5))
        phi = h * h
        q = (t * phi) * tl.exp2(p2)
        return tl.where(x < 0.0, q, 1.0 - q), phi


@triton.jit
def gelu_tanh_fwd(x, p0, p1, ACC: tl.constexpr):
    # x (1 + tanh u) / 2 = x sigmoid(2u), u = sqrt(2 / pi) (x + 0.044715 x^3): no cancellation
    # of 1 + tanh u for x < 0, one exp and one reciprocal.
    if ACC:
        return times_sigmoid_32(x, x * (GELU_TANH_C1 + x * x * GELU_TANH_C3))
    else:
        # fp32math.sigmoid's fast form with exp's -log2(e) / 2 folded into v's constants and |x| for
        # |v| (v has x's sign): h = e^(-|v| / 2) in three instructions, not four.
        h = tl.exp2(tl.abs(x) * (GELU_TANH_K1 + x * x * GELU_TANH_K3))
        return fm.times_half_and_more(x, fm.sigmoid_times_x(h, x), ACC)


@triton.jit
def gelu_tanh_bwd(x, p0, p1, ACC: tl.constexpr):
    s, ds = _gelu_tanh_parts(x, ACC)
    return s + ds + (x - x)  # x - x: NaN at +-inf, as torch's formula (inf * 0) gives there


@triton.jit
def gelu_tanh_fwd_bwd(x, p0, p1, ACC: tl.constexpr):
    # f = x s(v) from the clamped x's v: beyond |x| = 20, s(v) is already exactly 0 or 1 in fp32.
    s, ds = _gelu_tanh_parts(x, ACC)
    return x * s, s + ds + (x - x)


@triton.jit
def _gelu_tanh_parts(x, ACC: tl.constexpr):
    # (s(v), x s(v) s(-v) v'), v = 2u: d/dx x s(v) is their sum. Beyond |x| = 20 f' is 0 or 1 in
    # fp32; the (NaN-propagating) clamp keeps x^3 and v' finite, where x s(-v) v' would be 0 * inf.
    xc = tl.minimum(tl.maximum(x, -20.0, propagate_nan=tl.PropagateNan.ALL), 20.0,
                    propagate_nan=tl.PropagateNan.ALL)
    x2 = xc * xc
    v = xc * (GELU_TANH_C1 + x2 * GELU_TANH_C3)
    z, r = fm.sigmoid_parts(v, ACC, False)
    return tl.where(v < 0.0, z * r, r), xc * (z * r * r) * (GELU_TANH_C1 + x2 * GELU_TANH_D3)


@triton.jit
def times_sigmoid_32(x, v):
    """fp32 results: x sigmoid(v), v = c x with c > 0, rounded once where it is subnormal (v < 0:
    x e^v / (1 + e^v), e^v scaled by 2^32, the scale taken off last)."""
    m, r = fm.sigmoid_parts_scaled(v, False)
    return tl.where(x < 0.0, (x * (m * r)) * fm.TWO_M32, x * r)


@triton.jit
def sigmoid_slope_32(x, v):
    """fp32 results: s(v) + x s(v) s(-v) (silu's f' for v = x, gelu_sigmoid's for x = v = c x),
    s(v) s(-v) = e^-|v| r^2; summed in units of 2^-32 and scaled last, so that it rounds once where
    it is subnormal (v < -87). NaN or +-inf v: m is NaN or 0, and x * that NaN, as torch's inf * 0."""
    m, r = fm.sigmoid_parts_scaled(v, True)
    mr = m * r
    return tl.fma(x, mr * r, tl.where(v < 0.0, mr, r * fm.TWO_P32)) * fm.TWO_M32


@triton.jit
def gelu_sigmoid_fwd(x, p0, p1, ACC: tl.constexpr):
    if ACC:
        return times_sigmoid_32(x, x * GELU_SIGMOID_K)
    else:
        h = tl.exp2(tl.abs(x) * (-GELU_SIGMOID_K * fm.HALF_LOG2E))
        return fm.times_half_and_more(x, fm.sigmoid_times_x(h, x), ACC)


@triton.jit
def gelu_sigmoid_bwd(x, p0, p1, ACC: tl.constexpr):
    # f' is 0 or 1 in fp32 beyond |v| = 200; the clamp keeps v * z finite (1.702 x overflows).
    v = tl.minimum(tl.maximum(x * GELU_SIGMOID_K, -200.0, propagate_nan=tl.PropagateNan.ALL), 200.0,
                   propagate_nan=tl.PropagateNan.ALL)
    if ACC:
        return sigmoid_slope_32(v, v) + (x - x)
    z, r = fm.sigmoid_parts(v, ACC, False)
    s = tl.where(v < 0.0, z * r, r)
    return s + v * (z * r * r) + (x - x)  # NaN at +-inf, as torch's inf * 0


@triton.jit
def silu_fwd(x, p0, p1, ACC: tl.constexpr):
    if ACC:
        return times_sigmoid_32(x, x)
    else:
        return fm.times_half_and_more(x, fm.sigmoid_times_x(tl.exp2(tl.abs(x) * -fm.HALF_LOG2E), x), ACC)


@triton.jit
def silu_bwd(x, p0, p1, ACC: tl.constexpr):
    # s + x s (1 - s), s (1 - s) = z r^2 from the same exp and reciprocal as s.
    if ACC:
        return sigmoid_slope_32(x, x)
    z, r = fm.sigmoid_parts(x, ACC, False)
    s = tl.where(x < 0.0, z * r, r)
    return s + x * (z * r * r)


@triton.jit
def silu_fwd_bwd(x, p0, p1, ACC: tl.constexpr):
    # The GLU backward's f and f' (swiglu) from silu_bwd's exp and reciprocal: silu_fwd's 16-bit
    # pieces are its own (NaN-free, paired), and two sets cost about one instruction per element more.
    if ACC:
        return silu_fwd(x, p0, p1, ACC), silu_bwd(x, p0, p1, ACC)
    z, r = fm.sigmoid_parts(x, ACC, False)
    s = tl.where(x < 0.0, z * r, r)
    return fm.times_half_and_more(x, s, ACC), s + x * (z * r * r)


@triton.jit
def mish_fwd(x, p0, p1, ACC: tl.constexpr):
    # tanh(softplus x) = n / (n + 2) with n = e^x (e^x + 2): one exp, one reciprocal, no log.
    # The NaN-propagating clamp keeps n finite (the ratio is 1 long before) and NaN NaN.
    if ACC:
        # n and e^x scaled by 2^32 (fp32math.exp_scaled), the scale taken off last, so that x n /
        # (n + 2), subnormal below x = -87, rounds once; beyond the clamp the ratio is 1 and f = x
        # (x 2^32 would overflow). rcp.approx without a Newton step: 3.3 ulp at p99.9 (the few-bit
        # fp32 forward has no issue slots for it).
        xc = tl.minimum(x, MISH_CLAMP, propagate_nan=tl.PropagateNan.ALL)
        m = fm.exp_scaled(xc)
        n = m * tl.fma(m, fm.TWO_M32, 2.0)
        t = n * fm.rcp(tl.fma(n, fm.TWO_M32, 2.0))
        return tl.where(x > MISH_CLAMP, x, (xc * t) * fm.TWO_M32)
    # 16-bit: the clamp drops NaN (x carries it), so n + 2 is never NaN and the pair needs no clamp.
    e = fm.exp(tl.minimum(x, MISH_CLAMP), ACC)
    n = e * (e + 2.0)
    return x * (n * fm.rcp_pairs_nan_free(n + 2.0))  # n + 2 in [2, 2.4e17]: the pair's product stays normal


@triton.jit
def mish_bwd(x, p0, p1, ACC: tl.constexpr):
    # f' = tanh(sp) + x sigmoid(x) sech^2(sp); with e = e^x, n = e (e + 2), q = 1 / (n + 2):
    # tanh(sp) = n q, sech^2(sp) = 4 (n + 1) q^2 = 4 (1 + e)^2 q^2, sigmoid(x) = e / (1 + e), so
    # f' = q (n + 4 x e (1 + e) q). x - x is NaN at +-inf, where torch's formula gives inf * 0.
    xc = tl.minimum(x, MISH_CLAMP, propagate_nan=tl.PropagateNan.ALL)
    if ACC:
        # As mish_fwd: n and e (1 + e) scaled by 2^32, the scale taken off last (f' <= 1.1).
        m = fm.exp_scaled(xc)
        e = m * fm.TWO_M32
        n = m * (e + 2.0)
        q = fm.rcp_acc(tl.fma(n, fm.TWO_M32, 2.0), ACC)
        return (q * (n + xc * (tl.fma(m, e, m) * 4.0 * q))) * fm.TWO_M32 + (x - x)
    e = fm.exp(xc, ACC)
    n = e * (e + 2.0)
    q = fm.rcp_acc(n + 2.0, ACC)
    return q * (n + xc * ((e + e * e) * 4.0 * q)) + (x - x)


@triton.jit
def lisht_fwd(x, p0, p1, ACC: tl.constexpr):
    return tl.abs(x) * fm.tanh_abs(x, ACC, True)


@triton.jit
def lisht_bwd(x, p0, p1, ACC: tl.constexpr):
    # tanh x + x sech^2 x, both from tanh's z = e^(-2|x|) and r = 1 / (1 + z).
    z, r = fm.tanh_parts(x, ACC, False)
    return fm.copysign(fm.tanh_abs_of_parts(tl.abs(x), z, r, ACC), x) + x * (z * r * r * 4.0)


@triton.jit
def softplus_fwd(x, p0, p1, ACC: tl.constexpr):
    # p0 = beta, p1 = threshold: linear once beta * x exceeds the threshold, as torch. The form for
    # the raw parameters, which the GLU kernels pass to f and f' alike; the elementwise forward
    # takes a cheaper one (softplus_forward_plan). 1 / beta is a scalar (once per program).
    bx = x * p0
    if ACC:
        return tl.where(bx > p1, x, _softplus_32(x, p0))
    else:
        sp = _softplus_16(bx, 1.0, 1)  # softplus(beta x), divided by beta below
        # x hidden from LLVM (fp32math.opaque): picking x itself, it selects between 16-bit halves
        # after rounding (PRMTs, predicate registers: 2 instructions per element more in fp16).
        return tl.where(bx > p1, fm.opaque(x), sp * (1.0 / p0))


# From this threshold (and beta > 0) softplus's linear branch changes no result: where beta x > t,
# log1p(e^(-beta x)) / beta is below x e^(-t) / t < x 2^-25.5, under half an fp32 ulp of x, so
# x + it rounds to x itself in fp32, fp16 and bf16. torch's default is 20. The same fact lets the
# registry save y from this threshold (actkit.registry.SOFTPLUS_Y_MIN_THRESHOLD; tests hold them equal).
SOFTPLUS_INERT_THRESHOLD = 15.0


def softplus_forward_plan(beta: float, threshold: float):
    """(device function, p0, p1) of softplus's elementwise forward for the kernel arguments (beta,
    threshold). beta > 0 with a threshold of 15 or more: :func:`softplus_plain_fwd`, no test at all.
    Otherwise torch's linear branch, ``beta * x > threshold`` in fp32, is a test of x alone against
    p1 = :func:`linear_boundary`: x > p1 for beta > 0 (:func:`softplus_above_fwd`), x <= p1 for
    beta < 0 (:func:`softplus_below_fwd`), to the bit; the product costs no instruction."""
    if beta > 0 and threshold >= SOFTPLUS_INERT_THRESHOLD:
        return softplus_plain_fwd, beta, threshold
    return (softplus_above_fwd if beta > 0 else softplus_below_fwd), beta, linear_boundary(beta, threshold)


def linear_boundary(beta: float, threshold: float) -> float:
    """The largest fp32 x at which ``fp32(x * beta) > threshold`` (all in fp32, as torch's kernels
    compute softplus's test) is false for beta > 0, true for beta < 0: the product rounds
    monotonically in x, so the test is ``x > boundary`` or its negation. A bisection over the fp32
    values in order (their int32 keys), 32 steps, once per parameter set."""
    b, t = np.float32(beta), np.float32(threshold)
    side = b > 0  # for beta > 0 the test is false below the boundary, for beta < 0 true below it

    def value(key: int) -> np.float32:  # the fp32 value of an ordered key (negative keys: -0 is -1)
        return np.array([key if key >= 0 else -(key + 1) | -(1 << 31)], dtype=np.int32).view(np.float32)[0]

    def below(key: int) -> bool:  # does the x of this ordered key still sit on the lower side?
        with np.errstate(over="ignore"):
            return bool((value(key) * b > t) != side)

    lo, hi = -(1 << 31) + (1 << 23), (1 << 31) - (1 << 23) - 1  # the keys of -max and +max finite
    if not below(lo):
        return float("-inf")  # the lower side is empty: every finite x is above
    while lo < hi:  # invariant: below(lo)
        mid = (lo + hi + 1) // 2
        if below(mid):
            lo = mid
        else:
            hi = mid - 1
    return float(value(lo))


@triton.jit
def softplus_plain_fwd(x, p0, p1, ACC: tl.constexpr):
    # softplus for beta > 0 and a threshold that changes no result (softplus_forward_plan): no test,
    # and 1 / beta folded into log1p's coefficients (scalars, once per program), so that
    # max(x, 0) + log1p(e^(-beta |x|)) / beta is log1p_unit's last FMA: 16.4 instructions per
    # element in 16-bit. fp32: the general form.
    if ACC:
        return softplus_fwd(x, p0, p1, ACC)
    else:
        return _softplus_16(x, p0, 1)


@triton.jit
def softplus_above_fwd(x, p0, p1, ACC: tl.constexpr):
    # beta > 0, p1 = linear_boundary: torch's linear branch (beta x > threshold) is x > p1.
    if ACC:
        return tl.where(x > p1, x, _softplus_32(x, p0))
    else:
        return tl.where(x > p1, fm.opaque(x), _softplus_16(x, p0, 1))


@triton.jit
def softplus_below_fwd(x, p0, p1, ACC: tl.constexpr):
    # beta < 0, p1 = linear_boundary: the linear branch is x <= p1, and NaN x (NaN, as torch) takes it.
    if ACC:
        return tl.where(x > p1, _softplus_32(x, p0), x)
    else:
        return tl.where(x > p1, _softplus_16(x, p0, -1), fm.opaque(x))


@triton.jit
def _softplus_32(x, p0):
    # (max(beta x, 0) + log1p(e^(-|beta x|))) / beta: the max propagates no NaN but the log1p does.
    bx = x * p0
    return (tl.maximum(bx, 0.0) + fm.log1p_unit(fm.exp_low(-tl.abs(bx), True), True, True)) * (1.0 / p0)


@triton.jit
def _softplus_16(x, p0, SIGN: tl.constexpr):
    # SIGN = sign of beta: max(beta x, 0) / beta is max(x, 0) or min(x, 0), exact, and 1 / beta rides
    # in log1p's coefficients. e^(-|beta x|) = h^2 as fp32math.exp, its NaN taken to 0 (square_unit):
    # x's NaN comes through the max or min. fp32 x (picked by the callers' selects) is hidden from
    # LLVM (fp32math.opaque), which would otherwise select between 16-bit halves after rounding.
    h = tl.exp2(tl.abs(x) * (p0 * (-SIGN * fm.HALF_LOG2E)))
    s, s2 = fm.log1p_unit_parts(fm.square_unit(h), True, True)
    if SIGN > 0:
        m = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    else:
        m = tl.minimum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    return tl.fma(s, fm.log1p_unit_poly(s2, 1.0 / p0), m)


@triton.jit
def softplus_bwd(x, p0, p1, ACC: tl.constexpr):
    bx = x * p0
    return tl.where(bx > p1, 1.0, fm.sigmoid(bx, ACC, False))


@triton.jit
def softplus_bwd_y(y, p0, p1, ACC: tl.constexpr):
    # sigmoid(beta x) = 1 - exp(-beta y); the registry saves y only for thresholds where the
    # linear branch's test on beta y agrees with the one on beta x to fp32 rounding.
    by = y * p0
    return tl.where(by > p1, 1.0, -fm.expm1_neg(-by, ACC))


@triton.jit
def softsign_fwd(x, p0, p1, ACC: tl.constexpr):
    return x * fm.rcp_acc(1.0 + tl.abs(x), ACC)


@triton.jit
def softsign_bwd(x, p0, p1, ACC: tl.constexpr):
    a = tl.abs(x)
    r = fm.rcp_acc(1.0 + a, ACC)
    # The limit at +-inf is 0, but torch's autograd of x / (1 + |x|) gives inf/inf = NaN
    # there; the kernel matches torch rather than the limit.
    return tl.where(a == float("inf"), float("nan"), r * r)


@triton.jit
def softsign_bwd_y(y, p0, p1, ACC: tl.constexpr):
    d = 1.0 - tl.abs(y)  # 1 / (1 + |x|); y is NaN at x = +-inf, so the gradient is NaN there as in torch
    return d * d


@triton.jit
def hardswish_fwd(x, p0, p1, ACC: tl.constexpr):
    # relu6(x + 3) / 6 <= 1 first, so x * it cannot overflow where x does not.
    return x * (hardtanh_fwd(x + 3.0, 0.0, 6.0, ACC) * (1.0 / 6.0))


@triton.jit
def hardswish_bwd(x, p0, p1, ACC: tl.constexpr):
    # torch's one-sided choice at the kinks: 0 at x = -3, 1 at x = 3.
    # x / 3 + 1/2 = (x + 1.5) / 3: the sum is exact where the first form cancels (x near -1.5).
    return tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, (x + 1.5) * (1.0 / 3.0), 1.0))


@triton.jit
def hardswish_zero(x, p0, p1):
    return x <= -3.0  # hardswish_backward's first branch (x = 3 and above pass dy through)


@triton.jit
def hardsigmoid_fwd(x, p0, p1, ACC: tl.constexpr):
    return hardtanh_fwd(x + 3.0, 0.0, 6.0, ACC) * (1.0 / 6.0)


@triton.jit
def hardsigmoid_bwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0)


@triton.jit
def hardsigmoid_bwd_y(y, p0, p1, ACC: tl.constexpr):
    return tl.where((y > 0.0) & (y < 1.0), 1.0 / 6.0, 0.0)  # y is 0 or 1 exactly where |x| >= 3


@triton.jit
def hardsigmoid_zero(x, p0, p1):
    return ~((x > -3.0) & (x < 3.0))  # hardsigmoid_backward: (-3 < x < 3) ? dy / 6 : 0, NaN x included


@triton.jit
def hardsigmoid_zero_y(y, p0, p1):
    return ~((y > 0.0) & (y < 1.0))


@triton.jit
def logsigmoid_fwd(x, p0, p1, ACC: tl.constexpr):
    # min(x, 0) - log1p(exp(-|x|)) = -softplus(-x), with no overflow.
    if ACC:  # the min propagates no NaN but the log1p does
        return tl.minimum(x, 0.0) - fm.log1p_unit(fm.exp_low(-tl.abs(x), ACC), ACC, True)
    else:  # softplus with beta = -1 (its 16-bit form): min(x, 0) - log1p(e^(-|x|)), x's NaN through the min
        return _softplus_16(x, -1.0, -1)


@triton.jit
def logsigmoid_bwd(x, p0, p1, ACC: tl.constexpr):
    # sigmoid(-x) from sigmoid's pieces: r for x < 0, z r above.
    z, r = fm.sigmoid_parts(x, ACC, False)
    return tl.where(x < 0.0, r, z * r)


@triton.jit
def logsigmoid_bwd_y(y, p0, p1, ACC: tl.constexpr):
    return -fm.expm1_neg(y, ACC)  # sigmoid(-x) = 1 - sigmoid(x) = 1 - exp(y)


@triton.jit
def tanhshrink_fwd(x, p0, p1, ACC: tl.constexpr):
    a = tl.abs(x)
    x2 = x * x
    if ACC:
        # x - tanh(x) cancels for small |x|: its series x^3/3 - 2x^5/15 + 17x^7/315 - 62x^9/2835
        # there. tanh itself: the fp32 polynomial up to 0.55 where its relative error, magnified by
        # the cancellation, matters most; beyond it the cheap exp, whose error x - tanh x no longer
        # magnifies much.
        series = x * x2 * (0.3333333333333333 + x2 * (-0.13333333333333333 + x2 * (0.05396825396825397 + x2 * (
            -0.021869488536155203))))
        z, r = fm.tanh_parts(x, False, False)
        t = tl.where(a < 0.55, fm.tanh_small(a, True), (1.0 - z) * r)
        return tl.where(a < 0.1, series, x - fm.copysign(t, x))
    else:
        # 16-bit results: x - tanh x itself as x^3 P(x^2) for |x| < 0.5 (relative error 2^-20.5,
        # benchmarks/fit_coefficients.py), one polynomial for what the series and tanh's took two;
        # beyond, (x - 1) + 2 / (1 + e^(2x)) for either sign (no |x|, no copysign), where the
        # cancellation magnifies the exp form's few ulp by at most 38 (at x = -0.5; 14 at +0.5).
        # 2 / (1 + e^(2x)) = 1 / (e^(2x - ln 2) + 1/2): the ex2's argument and the reciprocal take
        # the constants. rcp_pairs' clamp keeps e^(2x) = inf (x > 44) and NaN out of the pair's
        # other element; x carries a NaN.
        p = x2 * x * (0.3333331048488617 + x2 * (-0.13330480456352234 + x2 * (0.05338740348815918 + x2 * (
            -0.01798945665359497))))
        r2 = fm.rcp_pairs(tl.exp2(x * (2.0 * fm.LOG2E) - 1.0) + 0.5)
        return tl.where(a < 0.5, p, (x - 1.0) + r2)


@triton.jit
def tanhshrink_bwd(x, p0, p1, ACC: tl.constexpr):
    t = fm.tanh(x, ACC, False)
    return t * t


class DeviceFunctions(NamedTuple):
    """One activation's device functions: f, f' of x and, where the spec can save the output, f' of y;
    for activations whose ATen backward selects 0 somewhere, where it does, in x and in y; and, where
    f and f' share their costly pieces, both at once (f, f'), for kernels that need both of x (the GLU
    backward), which would otherwise compute those pieces twice."""
    fwd: triton.JITFunction
    bwd: triton.JITFunction
    bwd_y: triton.JITFunction | None = None
    zero: triton.JITFunction | None = None
    zero_y: triton.JITFunction | None = None
    fwd_bwd: triton.JITFunction | None = None
    fwd_plan: Callable[[float, float], tuple[triton.JITFunction, float, float]] | None = None
    """For the elementwise and few-bit forwards: the kernel arguments (p0, p1) -> a cheaper f and the
    arguments it takes (softplus: three forms, see :func:`softplus_forward_plan`); ``fwd`` serves
    every argument as it is (the GLU kernels pass the same ones to f and f')."""
    fwd_plan_cases: tuple[tuple[str, float, float], ...] = ()
    """(what, p0, p1): kernel arguments that reach each form the plan has besides the default
    parameters' (the static roofline compiles every one)."""
    fwd_fp16: triton.JITFunction | None = None
    """f for fp16 results where a cheaper form suffices there (gelu: fp16's GELU is 0 below x = -5.9,
    so its polynomial covers a third of bf16's range); the forward launchers choose it by the output's
    dtype (:func:`form_for`), and ``fwd`` serves bf16 and fp32."""


# The table the registry points to: ``ActivationSpec.kernel`` (default: its name) is a key here.
# Written out rather than looked up by name, so that grep finds every device function's user;
# tests/test_registry.py checks that each entry serves a spec and each spec has an entry.
TABLE: dict[str, DeviceFunctions] = {
    "identity": DeviceFunctions(identity_fwd, identity_bwd),
    "step": DeviceFunctions(step_fwd, step_bwd),
    "sigmoid": DeviceFunctions(sigmoid_fwd, sigmoid_bwd, sigmoid_bwd_y),
    "tanh": DeviceFunctions(tanh_fwd, tanh_bwd, tanh_bwd_y),
    # f' of y is f' of x: y > 0 exactly where x > 0 (NaN stays NaN).
    "relu": DeviceFunctions(relu_fwd, relu_bwd, relu_bwd, relu_zero, relu_zero),
    # f' of y is f' of x: y sits on a bound exactly where x is at or beyond it.
    "hardtanh": DeviceFunctions(hardtanh_fwd, hardtanh_bwd, hardtanh_bwd, hardtanh_zero, hardtanh_zero),
    # f' of y is f' of x: y sits on 0 or 6 exactly where x is at or beyond it.
    "relu6": DeviceFunctions(relu6_fwd, relu6_bwd, relu6_bwd, relu6_zero, relu6_zero),
    # f' of y is f' of x: with a slope >= 0 (the registry's rule), y > 0 exactly where x > 0.
    "leaky_relu": DeviceFunctions(leaky_relu_fwd, leaky_relu_bwd, leaky_relu_bwd),
    "elu": DeviceFunctions(elu_fwd, elu_bwd, elu_bwd_y),
    "celu": DeviceFunctions(celu_fwd, celu_bwd, celu_bwd_y),
    "selu": DeviceFunctions(selu_fwd, selu_bwd, selu_bwd_y),
    "gelu": DeviceFunctions(gelu_fwd, gelu_bwd, fwd_bwd=gelu_fwd_bwd, fwd_fp16=gelu_fwd_fp16),
    "gelu_tanh": DeviceFunctions(gelu_tanh_fwd, gelu_tanh_bwd, fwd_bwd=gelu_tanh_fwd_bwd),
    "gelu_sigmoid": DeviceFunctions(gelu_sigmoid_fwd, gelu_sigmoid_bwd),
    "silu": DeviceFunctions(silu_fwd, silu_bwd, fwd_bwd=silu_fwd_bwd),
    "mish": DeviceFunctions(mish_fwd, mish_bwd),
    "lisht": DeviceFunctions(lisht_fwd, lisht_bwd),
    "softplus": DeviceFunctions(softplus_fwd, softplus_bwd, softplus_bwd_y, fwd_plan=softplus_forward_plan,
                                fwd_plan_cases=(("threshold below 15", 1.0, 5.0), ("beta below 0", -1.0, 20.0))),
    "softsign": DeviceFunctions(softsign_fwd, softsign_bwd, softsign_bwd_y),
    "hardswish": DeviceFunctions(hardswish_fwd, hardswish_bwd, zero=hardswish_zero),
    "hardsigmoid": DeviceFunctions(hardsigmoid_fwd, hardsigmoid_bwd, hardsigmoid_bwd_y, hardsigmoid_zero,
                                   hardsigmoid_zero_y),
    "logsigmoid": DeviceFunctions(logsigmoid_fwd, logsigmoid_bwd, logsigmoid_bwd_y),
    "tanhshrink": DeviceFunctions(tanhshrink_fwd, tanhshrink_bwd),
}


def form_for(fn: triton.JITFunction, fp16: bool) -> triton.JITFunction:
    """The device function a forward launched with f = ``fn`` runs: ``fn``, or for fp16 results its
    table entry's ``fwd_fp16`` where it has one: a length check and a dict lookup (the elementwise
    launcher, the hot path, asks once per kernel it builds; GLU and few-bit, which key their kernels
    per call anyway, per call)."""
    return _maps()[2].get(id(fn), fn) if fp16 else fn


def _by_derivative() -> tuple[dict[int, triton.JITFunction], dict[int, triton.JITFunction],
                              dict[int, triton.JITFunction]]:
    """(zero masks, fused f-and-f' functions, each by the id of the derivative of x or y it goes with;
    fp16 forms, by the id of f)."""
    masks: dict[int, triton.JITFunction] = {}
    fused: dict[int, triton.JITFunction] = {}
    fp16: dict[int, triton.JITFunction] = {}
    for entry in TABLE.values():
        for derivative, zero in ((entry.bwd, entry.zero), (entry.bwd_y, entry.zero_y)):
            if derivative is not None and zero is not None:
                if masks.setdefault(id(derivative), zero) is not zero:
                    raise ValueError(f"{derivative.fn.__name__} is given two different zero masks")
        if entry.fwd_bwd is not None:
            fused[id(entry.bwd)] = entry.fwd_bwd
        if entry.fwd_fp16 is not None:
            fp16[id(entry.fwd)] = entry.fwd_fp16
    return masks, fused, fp16


# By the device function's id: a JITFunction hashes its source on every dict lookup; the device
# functions are module globals, so their ids stay theirs while the process runs. Rebuilt when the
# table changes size: an activation added at run time (see README, "Extending actkit") brings its own.
_MAPS = _by_derivative()
_MAPPED_ENTRIES = len(TABLE)


def _maps() -> tuple[dict, dict, dict]:
    global _MAPS, _MAPPED_ENTRIES
    if _MAPPED_ENTRIES != len(TABLE):
        _MAPS, _MAPPED_ENTRIES = _by_derivative(), len(TABLE)
    return _MAPS


def zero_where(derivative: triton.JITFunction) -> triton.JITFunction | None:
    """The mask of where ATen's backward selects 0 for the activation whose f' is ``derivative``
    (``<name>_bwd`` or ``<name>_bwd_y``), or None where it multiplies dy by f' everywhere."""
    return _maps()[0].get(id(derivative))


def fused_with(derivative: triton.JITFunction) -> triton.JITFunction | None:
    """The device function giving (f, f') of x at once for the activation whose f' of x is
    ``derivative``, or None where f and f' share nothing worth fusing."""
    return _maps()[1].get(id(derivative))
