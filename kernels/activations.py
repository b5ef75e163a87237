"""Per-activation Triton device functions: the value f and the derivative f'.

Every function takes ``(v, p0, p1)``: ``v`` is an fp32 block, ``p0``/``p1`` are the
activation's scalar parameters in registry order (unused ones are 0). ``<name>_fwd`` is f(x),
``<name>_bwd`` is f'(x), and ``<name>_bwd_y`` is f' read from the output y, for activations
whose registry spec can save y instead of x. The generic kernels in :mod:`elementwise` receive
these functions as ``tl.constexpr`` arguments.

Comparisons are written so that NaN takes the same branch as in PyTorch's own kernels
(e.g. ``where(x < 0, 0, x)`` for ReLU keeps NaN, as ``clamp_min`` does), because the
tests hold the kernels to torch's NaN/inf behaviour, forward and backward.
"""
import triton
import triton.language as tl

from .fp32math import expm1, log1p, sech2, softplus as _softplus, tanh as _tanh

# Module-level numbers used inside @triton.jit code must be tl.constexpr: a plain float runs
# under the interpreter but real compilation refuses it ("Cannot access global variable").
# Write them after a tensor operand (x * K, not K * x): the interpreter cannot multiply a
# constexpr on the left by a tensor. tests/test_gpu_compile.py and the interpreter tests
# between them catch either mistake.
SQRT1_2 = tl.constexpr(0.7071067811865476)        # 1 / sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)    # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi)
GELU_TANH_K = tl.constexpr(0.044715)
GELU_SIGMOID_K = tl.constexpr(1.702)
SELU_ALPHA = tl.constexpr(1.6732632423543772)
SELU_SCALE = tl.constexpr(1.0507009873554805)


@triton.jit
def identity_fwd(x, p0, p1):
    return x


@triton.jit
def identity_bwd(x, p0, p1):
    return tl.zeros_like(x) + 1.0


@triton.jit
def step_fwd(x, p0, p1):
    # Heaviside with H(0) = 1; NaN maps to 0, as torch.heaviside does.
    return tl.where(x >= 0.0, 1.0, 0.0)


@triton.jit
def step_bwd(x, p0, p1):
    return tl.zeros_like(x)


@triton.jit
def sigmoid_fwd(x, p0, p1):
    return tl.sigmoid(x)


@triton.jit
def sigmoid_bwd(x, p0, p1):
    # s (1 - s) with 1 - s = sigmoid(-x): no cancellation where s is close to 1.
    return tl.sigmoid(x) * tl.sigmoid(-x)


@triton.jit
def sigmoid_bwd_y(y, p0, p1):
    return y * (1.0 - y)


@triton.jit
def tanh_fwd(x, p0, p1):
    return _tanh(x)


@triton.jit
def tanh_bwd(x, p0, p1):
    return sech2(x)


@triton.jit
def tanh_bwd_y(y, p0, p1):
    return 1.0 - y * y


@triton.jit
def relu_fwd(x, p0, p1):
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def relu_bwd(x, p0, p1):
    return tl.where(x <= 0.0, 0.0, 1.0)


relu_bwd_y = relu_bwd  # y > 0 exactly where x > 0 (NaN stays NaN)


@triton.jit
def hardtanh_fwd(x, p0, p1):
    # p0 = min_val, p1 = max_val
    return tl.where(x < p0, p0, tl.where(x > p1, p1, x))


@triton.jit
def hardtanh_bwd(x, p0, p1):
    # Zero at the clamp points themselves; NaN passes the gradient through, as torch's
    # CUDA kernel and scalar CPU code do.
    return tl.where((x <= p0) | (x >= p1), 0.0, 1.0)


hardtanh_bwd_y = hardtanh_bwd  # y sits on a bound exactly where x is at or beyond it


@triton.jit
def relu6_fwd(x, p0, p1):
    return hardtanh_fwd(x, 0.0, 6.0)


@triton.jit
def relu6_bwd(x, p0, p1):
    return hardtanh_bwd(x, 0.0, 6.0)


relu6_bwd_y = relu6_bwd


@triton.jit
def leaky_relu_fwd(x, p0, p1):
    # p0 = negative_slope
    return tl.where(x > 0.0, x, x * p0)


@triton.jit
def leaky_relu_bwd(x, p0, p1):
    return tl.where(x > 0.0, 1.0, p0)


leaky_relu_bwd_y = leaky_relu_bwd  # with a slope >= 0 (the registry's rule), y > 0 exactly where x > 0


@triton.jit
def elu_fwd(x, p0, p1):
    # p0 = alpha
    return tl.where(x <= 0.0, p0 * expm1(x), x)


@triton.jit
def elu_bwd(x, p0, p1):
    return tl.where(x <= 0.0, p0 * tl.exp(x), 1.0)


@triton.jit
def elu_bwd_y(y, p0, p1):
    # alpha > 0: y <= 0 exactly where x <= 0, and there alpha exp(x) = y + alpha (ATen's is_result form).
    return tl.where(y <= 0.0, y + p0, 1.0)


@triton.jit
def celu_fwd(x, p0, p1):
    # p0 = alpha: alpha * (exp(x / alpha) - 1) below zero
    return tl.where(x <= 0.0, p0 * expm1(x / p0), x)


@triton.jit
def celu_bwd(x, p0, p1):
    return tl.where(x <= 0.0, tl.exp(x / p0), 1.0)


@triton.jit
def celu_bwd_y(y, p0, p1):
    # alpha > 0: exp(x / alpha) = (y + alpha) / alpha where y <= 0.
    return tl.where(y <= 0.0, (y + p0) * (1.0 / p0), 1.0)


@triton.jit
def selu_fwd(x, p0, p1):
    return tl.where(x <= 0.0, expm1(x) * SELU_ALPHA, x) * SELU_SCALE


@triton.jit
def selu_bwd(x, p0, p1):
    return tl.where(x <= 0.0, tl.exp(x) * SELU_ALPHA, 1.0) * SELU_SCALE


@triton.jit
def selu_bwd_y(y, p0, p1):
    # scale alpha exp(x) = y + scale alpha where y <= 0.
    return tl.where(y <= 0.0, y + SELU_ALPHA * SELU_SCALE, SELU_SCALE)


@triton.jit
def gelu_fwd(x, p0, p1):
    return 0.5 * x * (1.0 + tl.math.erf(x * SQRT1_2))


@triton.jit
def gelu_bwd(x, p0, p1):
    cdf = 0.5 * (1.0 + tl.math.erf(x * SQRT1_2))
    return cdf + x * INV_SQRT_2PI * tl.exp(-0.5 * x * x)


@triton.jit
def gelu_tanh_fwd(x, p0, p1):
    t = _tanh((x + x * x * x * GELU_TANH_K) * SQRT_2_OVER_PI)
    return 0.5 * x * (1.0 + t)


@triton.jit
def gelu_tanh_bwd(x, p0, p1):
    u = (x + x * x * x * GELU_TANH_K) * SQRT_2_OVER_PI
    inner_grad = (1.0 + x * x * (3.0 * GELU_TANH_K)) * SQRT_2_OVER_PI
    return 0.5 * (1.0 + _tanh(u)) + 0.5 * x * sech2(u) * inner_grad


@triton.jit
def gelu_sigmoid_fwd(x, p0, p1):
    return x * tl.sigmoid(x * GELU_SIGMOID_K)


@triton.jit
def gelu_sigmoid_bwd(x, p0, p1):
    s = tl.sigmoid(x * GELU_SIGMOID_K)
    return s + x * GELU_SIGMOID_K * s * (1.0 - s)


@triton.jit
def silu_fwd(x, p0, p1):
    return x * tl.sigmoid(x)


@triton.jit
def silu_bwd(x, p0, p1):
    s = tl.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@triton.jit
def mish_fwd(x, p0, p1):
    return x * _tanh(_softplus(x))


@triton.jit
def mish_bwd(x, p0, p1):
    sp = _softplus(x)
    return _tanh(sp) + x * tl.sigmoid(x) * sech2(sp)


@triton.jit
def lisht_fwd(x, p0, p1):
    return x * _tanh(x)


@triton.jit
def lisht_bwd(x, p0, p1):
    return _tanh(x) + x * sech2(x)


@triton.jit
def softplus_fwd(x, p0, p1):
    # p0 = beta, p1 = threshold: linear once beta * x exceeds the threshold, as torch.
    bx = x * p0
    return tl.where(bx > p1, x, _softplus(bx) / p0)


@triton.jit
def softplus_bwd(x, p0, p1):
    bx = x * p0
    return tl.where(bx > p1, 1.0, tl.sigmoid(bx))


@triton.jit
def softplus_bwd_y(y, p0, p1):
    # sigmoid(beta x) = 1 - exp(-beta y); the registry saves y only for thresholds where the
    # linear branch's test on beta y agrees with the one on beta x to fp32 rounding.
    by = y * p0
    return tl.where(by > p1, 1.0, -expm1(-by))


@triton.jit
def softsign_fwd(x, p0, p1):
    return x / (1.0 + tl.abs(x))


@triton.jit
def softsign_bwd(x, p0, p1):
    a = tl.abs(x)
    d = 1.0 + a
    # The limit at +-inf is 0, but torch's autograd of x / (1 + |x|) gives inf/inf = NaN
    # there; the kernel matches torch rather than the limit.
    return tl.where(a == float("inf"), float("nan"), 1.0 / (d * d))


@triton.jit
def softsign_bwd_y(y, p0, p1):
    d = 1.0 - tl.abs(y)  # 1 / (1 + |x|); y is NaN at x = +-inf, so the gradient is NaN there as in torch
    return d * d


@triton.jit
def hardswish_fwd(x, p0, p1):
    return x * hardtanh_fwd(x + 3.0, 0.0, 6.0) / 6.0


@triton.jit
def hardswish_bwd(x, p0, p1):
    # torch's one-sided choice at the kinks: 0 at x = -3, 1 at x = 3.
    return tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, x / 3.0 + 0.5, 1.0))


@triton.jit
def hardsigmoid_fwd(x, p0, p1):
    return hardtanh_fwd(x + 3.0, 0.0, 6.0) / 6.0


@triton.jit
def hardsigmoid_bwd(x, p0, p1):
    return tl.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0)


@triton.jit
def hardsigmoid_bwd_y(y, p0, p1):
    return tl.where((y > 0.0) & (y < 1.0), 1.0 / 6.0, 0.0)  # y is 0 or 1 exactly where |x| >= 3


@triton.jit
def logsigmoid_fwd(x, p0, p1):
    # min(x, 0) - log1p(exp(-|x|)) = -softplus(-x), with no overflow.
    return tl.where(x < 0.0, x, 0.0) - log1p(tl.exp(-tl.abs(x)))


@triton.jit
def logsigmoid_bwd(x, p0, p1):
    return tl.sigmoid(-x)


@triton.jit
def logsigmoid_bwd_y(y, p0, p1):
    return -expm1(y)  # sigmoid(-x) = 1 - sigmoid(x) = 1 - exp(y)


@triton.jit
def tanhshrink_fwd(x, p0, p1):
    # x - tanh(x) cancels for small |x|: use its series x^3/3 - 2x^5/15 + 17x^7/315 - 62x^9/2835.
    x2 = x * x
    series = x * x2 * (0.3333333333333333 + x2 * (-0.13333333333333333 + x2 * (0.05396825396825397 + x2 * (-0.021869488536155203))))
    return tl.where(tl.abs(x) < 0.1, series, x - _tanh(x))


@triton.jit
def tanhshrink_bwd(x, p0, p1):
    t = _tanh(x)
    return t * t
