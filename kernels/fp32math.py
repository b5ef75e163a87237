"""Elementary functions built from Triton's core math, evaluated in fp32.

``triton.language.extra.libdevice`` does not run under ``TRITON_INTERPRET=1``, so the
kernels avoid it: every function here uses only ``tl.exp``/``tl.log``/``tl.sigmoid`` and
arithmetic, which compile on GPUs and interpret on CPU alike. Each one guards the range
where the textbook formula loses precision (cancellation near 0, overflow at large |x|).
"""
import triton
import triton.language as tl


@triton.jit
def tanh(x):
    # Odd Taylor series below 0.1 (1 - exp(-2|x|) cancels there); above it
    # (1 - t) / (1 + t) with t = exp(-2|x|) <= 1, which cannot overflow.
    a = tl.abs(x)
    t = tl.exp(-2.0 * a)
    big = (1.0 - t) / (1.0 + t)
    x2 = x * x
    small = x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * (-0.05396825396825397))))
    return tl.where(a < 0.1, small, tl.where(x < 0.0, -big, big))


@triton.jit
def expm1(x):
    # Taylor series up to x^8/8! for |x| < 0.5 (exp(x) - 1 cancels there); relative
    # error of the truncation is below 1e-8 on that interval.
    p = 1.0 + x * (0.5 + x * (0.16666666666666666 + x * (0.041666666666666664 + x * (
        0.008333333333333333 + x * (0.001388888888888889 + x * (0.0001984126984126984 + x * 2.48015873015873e-05))))))
    return tl.where(tl.abs(x) < 0.5, x * p, tl.exp(x) - 1.0)


@triton.jit
def log1p(u):
    # Kahan's trick: log(w) * u / (w - 1) with w = 1 + u cancels the rounding of w.
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * u / (w - 1.0))


@triton.jit
def softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): exp never overflows. The
    # max is a `where` so that NaN propagates through log1p(exp(NaN)).
    return tl.where(x > 0.0, x, 0.0) + log1p(tl.exp(-tl.abs(x)))


@triton.jit
def sech2(x):
    # 1 - tanh(x)^2 without the cancellation of that form near |tanh| = 1:
    # 4t / (1 + t)^2 with t = exp(-2|x|) <= 1.
    t = tl.exp(-2.0 * tl.abs(x))
    return 4.0 * t / ((1.0 + t) * (1.0 + t))
