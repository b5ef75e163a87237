"""Elementary functions for the activation kernels, evaluated in fp32 at a cost a GPU can afford.

Every function here costs instructions on every element, and a 16-bit forward kernel has about 18
issue slots per element before it stops running at memory speed with headroom 1.5 (H200; see
actkit.bench.roofline), so each one is written for its SASS, not only for its value:

* ``tl.exp2`` is one ``MUFU.EX2`` (``ex2.approx.ftz.f32``); ``tl.exp`` adds the scaling and
  subnormal handling (~5); ``tl.log`` is libdevice's software ``logf`` (~24) and is not used;
  fp32 ``/`` is ``div.full.f32`` (~7), so quotients use :func:`rcp` (one ``MUFU.RCP``).
* ``tl.where`` computes both sides, so a guard costs as much as the branch it guards: ranges
  are handled by clamps (``tl.minimum``/``tl.maximum``, one instruction each) and by formulas
  that stay accurate over the whole line, and a series branch is kept only where a formula
  cancels.

``ACC`` (a ``tl.constexpr``, True for fp32 outputs) selects the precision. fp32 results get an
``exp`` corrected for the rounding of its argument (:func:`exp`), or, in the sigmoid family
(sigmoid, softplus, logsigmoid, silu, mish, gelu_sigmoid, gelu_tanh), :func:`exp_scaled`: a
polynomial on the FMA pipe with no ``ex2`` (whose 2 ulp, with the reciprocal's and the
roundings, took those past 4 ulp at p99.9), returned times 2^32 so that x e^x, subnormal below
x = -87, rounds once. fp16/bf16 results, which keep 11 or 8 bits, take the cheaper forms, whose
error (a few fp32 ulp near the saturation tails) is far below their rounding.

16-bit forward kernels store through ``F2FP``, which shares the 16-per-clock XU with MUFU: an exp,
a reciprocal and the store (2.5 XU slots per element) would cap them at headroom 1.34 on an H200.
``PAIRED`` (tanh, sigmoid, log1p and erfc's pieces; :func:`rcp_fast`) shares one ``MUFU.RCP``
between neighbouring elements (:func:`rcp_pairs`); backward kernels, with XU to spare and issue
slots to save, pass False. bf16 is widened two at a time by ``shl``/``and`` (:func:`to_fp32`),
tanh's sign is a ``LOP3`` (:func:`copysign`), and forwards of the form x s(x) with f(x) > x / 2
break fp32's subnormal ties the way the exact value does (:func:`times_half_and_more`).
benchmarks/accuracy.py measures both against exact references, with each approximate
instruction's documented PTX error bound applied.

Hardware approximations used, with their PTX ISA bounds: ``ex2.approx.ftz.f32`` (2 ulp,
subnormal results flushed to zero: :func:`exp` squares a half-range ``ex2`` so that no flushed
value is ever reached), ``ex2.approx.f32`` behind ``tl.exp`` (2 ulp; fp32 results of
:func:`exp` correct its argument's rounding, not this), ``rcp.approx.ftz.f32`` (1 ulp; its
operands here are never subnormal; fp32 results take a Newton step, :func:`rcp_acc`, except the
forwards of silu, gelu_sigmoid, gelu_tanh and mish, whose few-bit fp32 kernels have no issue
slots for it and which stay within 3.3 ulp at p99.9 without; :func:`rcp_pairs` adds two
roundings, about 3 ulp, for 16-bit results only). :func:`exp_scaled` uses none (0.8 ulp at most).
``rcp`` and :func:`to_fp32` are inline PTX on GPUs; the interpreter (which cannot run inline
assembly) divides exactly and shifts the bits instead.

Constants are ``tl.constexpr``: module-level floats compile under the interpreter but not for a
GPU. Write them after a tensor operand (``x * K``), which the interpreter requires.
"""
import os

import triton
import triton.language as tl

INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))

LOG2E = tl.constexpr(1.4426950408889634)
HALF_LOG2E = tl.constexpr(0.7213475204444817)
NEG_LOG2E = tl.constexpr(-1.4426950408889634)
QUARTER_LOG2E = tl.constexpr(-0.36067376022224085)  # -log2(e) / 4
# log2(e) - fp32(log2(e)): the part of log2(e) an fp32 product x * LOG2E leaves out.
LOG2E_LO = tl.constexpr(1.925963033500123e-08)
LN2 = tl.constexpr(0.6931471805599453)
# exp(x) is 0 below EXP_MIN and inf above EXP_MAX in fp32; the argument correction in exp()
# is computed on x clamped to that range, so that it stays finite where exp(x) does not.
EXP_MIN = tl.constexpr(-104.0)
EXP_MAX = tl.constexpr(89.0)
SIGN_BIT = tl.constexpr(-0x80000000)  # an fp32's sign bit, as int32
# exp_scaled: 1.5 2^23 + 159, whose fp32 ulp is 1, so that fma(x, log2(e), EXP_SHIFT) rounds
# x log2(e) to an integer n and holds n + 159 in its low bits.
EXP_SHIFT = tl.constexpr(12583071.0)
LN2X2 = tl.constexpr(1.3862943649291992)  # fp32(2 ln 2)
LN2X2_LO = tl.constexpr(-3.809308424251867e-09)  # 2 ln 2 - LN2X2
LN2_HI = tl.constexpr(0.6931471824645996)  # fp32(ln 2)
LN2_LO = tl.constexpr(-1.9046542121259336e-09)  # ln 2 - LN2_HI
TWO_M32 = tl.constexpr(2.3283064365386963e-10)  # 2^-32: exp_scaled's scale
TWO_P32 = tl.constexpr(4294967296.0)
PAIR_MAX = tl.constexpr(2.0 ** 60)  # rcp_pairs: the product of two such stays a normal fp32 number, and 1 / it


@triton.jit
def to_fp32(v):
    """v (a loaded block of any float dtype) in fp32. bf16 is the high half of an fp32, and a 32-bit
    register holds two: ``shl`` and ``and`` widen a pair in two instructions, where ptxas's own
    conversion spends three (a ``PRMT`` to move the high one down, then a shift for each). Inline
    PTX on GPUs. The interpreter runs no assembly, and its own bf16 conversion flushes subnormals
    (a GPU's is exact): there, the same shift of the bits."""
    if v.dtype != tl.bfloat16:
        return v.to(tl.float32)
    elif INTERPRET:
        return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return tl.inline_asm_elementwise("{ shl.b32 $0, $2, 16; and.b32 $1, $2, 0xffff0000; }", "=r,=r,r", [v],
                                         dtype=tl.float32, is_pure=True, pack=2)


@triton.jit
def opaque(x):
    """x, which LLVM cannot see through (a ``mov`` that ptxas then removes): for a select of a
    loaded 16-bit value, which LLVM would otherwise move past the rounding of the other operand
    and make between packed 16-bit halves."""
    if INTERPRET:
        return x
    else:
        return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def rcp(x):
    """1 / x, ``rcp.approx.ftz.f32`` (1 ulp) on GPUs; an exact division in the interpreter."""
    if INTERPRET:
        return tl.math.div_rn(tl.full(x.shape, 1.0, tl.float32), x)
    else:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def rcp_acc(x, ACC: tl.constexpr):
    """1 / x; for ACC one Newton step on :func:`rcp` takes its 1 ulp error to about half an ulp."""
    r = rcp(x)
    if ACC:
        r = tl.fma(r, tl.fma(-x, r, 1.0), r)
    return r


@triton.jit
def rcp_pairs(d):
    """1 / d with one ``MUFU.RCP`` per two elements: the block is taken as pairs (a, b) of
    neighbours, which sit in one thread, and 1 / a = b / (a b), 1 / b = a / (a b). The product
    must stay normal: callers pass d in [1, PAIR_MAX], and a result for NaN d that is not NaN. Relative error about
    3 fp32 ulp (two roundings more than :func:`rcp`): for fp16/bf16 results only."""
    shape: tl.constexpr = d.shape
    # A NaN d would make its partner's result NaN too: the clamp (min.f32 drops NaN) turns it into
    # PAIR_MAX, so a NaN element's own result is finite and meaningless: callers carry its NaN
    # through another factor (z, x), as every caller here does. One ALU instruction per element.
    return rcp_pairs_nan_free(tl.minimum(d, PAIR_MAX))


@triton.jit
def rcp_pairs_nan_free(d):
    """:func:`rcp_pairs` without its clamp, for d in [1, PAIR_MAX] that is never NaN (made so by
    :func:`square_unit`, whose saturation costs no instruction, or by a clamp the caller has anyway):
    one ALU instruction per element less."""
    shape: tl.constexpr = d.shape
    a, b = tl.split(tl.reshape(d, [d.numel // 2, 2]))
    r = rcp(a * b)
    return tl.reshape(tl.join(b * r, a * r), shape)


@triton.jit
def square_unit(h):
    """h^2 for h in [0, 1] (an exp of a non-positive argument), NaN taken to 0: ``mul.sat.f32``,
    the product's own instruction, so that what follows is NaN-free (a paired reciprocal needs no
    clamp); the caller carries x's NaN another way."""
    if INTERPRET:
        p = h * h
        return tl.where(p == p, tl.minimum(p, 1.0), 0.0)
    else:
        return tl.inline_asm_elementwise("mul.sat.f32 $0, $1, $1;", "=r,r", [h], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def rcp_fast(d, ACC: tl.constexpr, PAIRED: tl.constexpr):
    """1 / d at the result's precision: ACC, :func:`rcp_acc`; fp16/bf16, one ``MUFU.RCP`` per element,
    or, with PAIRED, per two (:func:`rcp_pairs`; d must then keep its pair's product normal). A 16-bit
    forward kernel stores through ``F2FP`` on the same 16-per-clock unit as MUFU, so an exp and a
    reciprocal per element (2.5 of that unit's slots with the store) would bind it at headroom 1.34
    on an H200 (actkit.bench.roofline); paired, 2.0 slots. Backward kernels have that unit to spare
    and issue slots to save: they pass PAIRED False."""
    if ACC:
        return rcp_acc(d, ACC)
    else:
        if PAIRED:
            return rcp_pairs(d)
        else:
            return rcp(d)


@triton.jit
def exp_corrected(x, xc):
    """e^x as ``tl.exp(x)`` (1 + r ln 2), r = x log2(e) - fp32(x * log2(e)) computed on ``xc``:
    x itself where it is finite and its exp neither 0 nor inf, else x clamped to that range."""
    t = xc * LOG2E
    r = tl.fma(xc, LOG2E, -t)
    r = tl.fma(xc, LOG2E_LO, r)
    e = tl.exp(x)
    return tl.fma(e, r * LN2, e)


@triton.jit
def exp_scaled(x):
    """e^x 2^32 for x <= 65 (larger x: any value), NaN for NaN, to about 1 fp32 ulp, on the FMA pipe
    (no ``MUFU.EX2``, whose 2 ulp alone would take the sigmoid forms past 4 ulp).

    e^x = 2^n e^f, n = round(x log2(e)), f = x - n ln 2 in [-ln(2) / 2, ln(2) / 2] (n ln 2 in two
    parts, each FMA exact or nearly), e^f = 1 + f (1 + f P(f)), P of degree 4 (relative error
    2^-25.8, fitted by benchmarks/fit_coefficients.py), and 2^(n + 32) from n's bits (one shift).
    The 2^32 keeps results normal down to x = -110, where e^x is far below fp32's smallest normal:
    a caller multiplies by :data:`TWO_M32` last (x e^x, z / (1 + z)), so that a subnormal result
    rounds once, not once as e^x and again as the product. x is clamped at -110 (propagating NaN),
    which keeps f finite down to -inf and gives n = -159 there, whose scale bits are 0: e^x is 0
    from x = -110 down, where e^x and x e^x are below 2^-150 and round to 0 anyway. Above, n + 159
    must stay below 255 (an exponent field), hence x <= 65."""
    xc = tl.maximum(x, -110.0, propagate_nan=tl.PropagateNan.ALL)
    j = tl.fma(xc, LOG2E, EXP_SHIFT)
    n = j - EXP_SHIFT
    f = tl.fma(n, -LN2_LO, tl.fma(n, -LN2_HI, xc))
    p = 0.4999999701976776 + f * (0.1666654348373413 + f * (0.04166720062494278 + f * (
        0.00836651399731636 + f * 0.0013882520142942667)))
    scale = (j.to(tl.int32, bitcast=True) << 23).to(tl.float32, bitcast=True)  # 2^(n + 32), or 0
    return tl.fma(f, tl.fma(f, p, 1.0), 1.0) * scale


@triton.jit
def exp_low(x, ACC: tl.constexpr):
    """e^x for x <= 65: ACC, :func:`exp_scaled`, scaled back; else :func:`exp`'s fast form."""
    if ACC:
        return exp_scaled(x) * TWO_M32
    else:
        return exp(x, ACC)


@triton.jit
def exp(x, ACC: tl.constexpr):
    """e^x with subnormal results kept.

    Fast form: (2^(x log2(e) / 2))^2, three instructions; halving the exponent keeps the ftz
    ``ex2`` away from subnormal results, and the fp32 square rounds them correctly. The
    rounding of x * log2(e) costs |x| * 2^-24 relative (about 2^-17 at |x| = 88), below a
    16-bit result's rounding.

    ACC form: ``tl.exp`` times 1 + r ln 2, r the part of x log2(e) that its fp32 product
    dropped (an exact FMA residual plus x times log2(e)'s own rounding), so the result is
    within a few ulp of e^x over the whole range.
    """
    if ACC:
        return exp_corrected(x, tl.minimum(tl.maximum(x, EXP_MIN), EXP_MAX))
    else:
        h = tl.exp2(x * HALF_LOG2E)
        return h * h


@triton.jit
def tanh_parts(x, ACC: tl.constexpr, PAIRED: tl.constexpr):
    """(z, r): z = e^(-2|x|) in (0, 1] and r = 1 / (1 + z), from which tanh |x| = (1 - z) r and
    sech^2 x = 4 z r^2, with no overflow at any x (1 + z in [1, 2]: pairs allowed, :func:`rcp_fast`)."""
    if ACC:
        z = exp(tl.abs(x) * -2.0, ACC)
    else:
        # exp's fast form with the -2 folded into its constant: -2 |x| is exact, so
        # |x| (-2 log2(e) / 2) rounds as (-2 |x|) (log2(e) / 2) does, one multiplication fewer.
        h = tl.exp2(tl.abs(x) * NEG_LOG2E)
        z = h * h
    return z, rcp_fast(1.0 + z, ACC, PAIRED)


@triton.jit
def exp_neg_flushed(x):
    """e^x for x <= 0 (or NaN) to :func:`exp`'s ACC accuracy where e^x >= 2^-126, 0 below: for tanh's
    1 +- e^(-2|x|), which no longer see it there. No upper clamp (x <= 0) and ``tl.exp2``, whose
    ftz flush is that 0, instead of ``tl.exp``'s range fix-ups: 7 instructions, not 11."""
    xc = tl.maximum(x, EXP_MIN)  # drops NaN, so that the correction stays finite; e carries the NaN
    t = xc * LOG2E
    r = tl.fma(xc, LOG2E_LO, tl.fma(xc, LOG2E, -t))
    e = tl.exp2(x * LOG2E)
    return tl.fma(e, r * LN2, e)


@triton.jit
def tanh_small(x, ACC: tl.constexpr):
    """tanh x near 0: x + x^3 P(x^2), relative error 2^-24.6 for |x| <= 0.55 (ACC) and 2^-21
    for |x| <= 0.25 (fitted by benchmarks/fit_coefficients.py)."""
    x2 = x * x
    if ACC:
        p = x2 * (-0.3333294689655304 + x2 * (0.13320724666118622 + x2 * (-0.05267181620001793
                                                                          + x2 * 0.016437586396932602)))
    else:
        p = x2 * (-0.33324572443962097 + x2 * 0.12876421213150024)
    return tl.fma(x, p, x)


@triton.jit
def tanh_abs(x, ACC: tl.constexpr, PAIRED: tl.constexpr):
    """tanh |x|. Beyond the series range (1 - z) / (1 + z), z = e^(-2|x|): the subtraction
    loses at most a bit there. fp16/bf16 take a shorter series over a shorter range."""
    a = tl.abs(x)
    if ACC:  # tanh alone: z below 2^-126 may flush (sech^2 = 4 z r^2 keeps tanh_parts' full exp)
        z = exp_neg_flushed(a * -2.0)
        return tanh_abs_of_parts(a, z, rcp_acc(1.0 + z, ACC), ACC)
    else:
        z, r = tanh_parts(x, ACC, PAIRED)
        return tanh_abs_of_parts(a, z, r, ACC)


@triton.jit
def tanh_abs_of_parts(a, z, r, ACC: tl.constexpr):
    """tanh a for a = |x| from :func:`tanh_parts`' z and r (for kernels that need those anyway)."""
    if ACC:
        return tl.where(a < 0.55, tanh_small(a, ACC), (1.0 - z) * r)
    else:
        return tl.where(a < 0.25, tanh_small(a, ACC), (1.0 - z) * r)


@triton.jit
def tanh(x, ACC: tl.constexpr, PAIRED: tl.constexpr):
    return copysign(tanh_abs(x, ACC, PAIRED), x)


@triton.jit
def copysign(magnitude, x):
    """magnitude (>= 0 or NaN) with x's sign: one ``LOP3`` on the bits, where ``where(x < 0, -m, m)``
    is a compare and a select (and keeps -0's sign, as torch does)."""
    sign = x.to(tl.int32, bitcast=True) & SIGN_BIT
    return (magnitude.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def sigmoid_parts(x, ACC: tl.constexpr, PAIRED: tl.constexpr):
    """(z, r): z = e^(-|x|) and r = 1 / (1 + z). sigmoid(|x|) = r, sigmoid(-|x|) = z r, and
    sigmoid(x) sigmoid(-x) = z r^2: every form from one exp and one reciprocal, none overflowing
    (1 + z in [1, 2]: pairs allowed, :func:`rcp_fast`). ACC: from :func:`sigmoid_parts_scaled`."""
    if ACC:
        m, r = sigmoid_parts_scaled(x, True)
        return m * TWO_M32, r
    else:
        z = exp(-tl.abs(x), ACC)
        return z, rcp_fast(1.0 + z, ACC, PAIRED)


@triton.jit
def sigmoid_parts_scaled(x, NEWTON: tl.constexpr):
    """fp32 results: (m, r), m = e^-|x| 2^32 (:func:`exp_scaled`) and r = 1 / (1 + e^-|x|), so that a
    product with e^-|x| can round once where e^-|x| is subnormal (x < -87): (y m) 2^-32. r is
    ``rcp.approx`` (1 ulp), or with NEWTON :func:`rcp_acc` (two FMAs more): sigmoid's own 1 ulp and
    the exp's keep x s(x) within 3.3 ulp at p99.9 without it (the few-bit fp32 forwards have no
    issue slots for it), f' = s + x s (1 - s) needs it near its root."""
    m = exp_scaled(-tl.abs(x))
    return m, rcp_acc(tl.fma(m, TWO_M32, 1.0), NEWTON)


@triton.jit
def sigmoid(x, ACC: tl.constexpr, PAIRED: tl.constexpr):
    if ACC:
        m, r = sigmoid_parts_scaled(x, True)
        return tl.where(x >= 0.0, r, (m * r) * TWO_M32)  # NaN x: m is NaN
    else:
        z, r = sigmoid_parts(x, ACC, PAIRED)
        return tl.where(x >= 0.0, r, z * r)  # NaN x takes z r, which is NaN (r need not be: rcp_pairs)


@triton.jit
def sigmoid_times_x(h, v):
    """sigmoid(v) from h = e^(-|v| / 2) (the caller's exp, constants folded), for 16-bit forwards
    x sigmoid(v) with v of x's sign: z = h^2 through :func:`square_unit` and a reciprocal paired
    without its clamp. NaN v gives a finite value (z = 0): the product with x carries the NaN."""
    z = square_unit(h)
    r = rcp_pairs_nan_free(1.0 + z)
    return tl.where(v >= 0.0, r, z * r)


@triton.jit
def horner4(p, a, c3, c2, c1, c0):
    """p a^4 + c3 a^3 + c2 a^2 + c1 a + c0 by Horner's rule, four FMAs: a long polynomial in steps,
    each FMA rounding once as on the GPU (the interpreter too: no contraction left to the compiler)."""
    return tl.fma(tl.fma(tl.fma(tl.fma(p, a, c3), a, c2), a, c1), a, c0)


@triton.jit
def times_half_and_more(x, s, ACC: tl.constexpr):
    """x s for s = sigmoid(c x), c > 0: f(x) = x / 2 + c x^2 / 4 + ..., which lies above x / 2 at
    every x. Where x / 2 is subnormal, fp32 holds s as exactly 1/2 and x s as exactly x / 2, which
    for a 16-bit result can be a tie that round-to-nearest-even sends the wrong way (bf16 keeps
    fp32's exponent range, so its subnormal inputs meet this). For 16-bit results the product is
    fused with the smallest subnormal, 2^-149, standing for the part above x / 2: it breaks such a
    tie the right way, and changes no result of normal size (far below their fp32 ulp). One FFMA,
    as the product alone."""
    if ACC:
        return x * s
    else:
        # 2^-149 from its bits: a subnormal Python float would make the constant (and the FMA) fp64.
        return tl.fma(x, s, tl.full(x.shape, 1, tl.int32).to(tl.float32, bitcast=True))


@triton.jit
def log1p_unit(z, ACC: tl.constexpr, PAIRED: tl.constexpr):
    """log(1 + z) for z in [0, 1]: 2 atanh(s) with s = z / (2 + z) in [0, 1/3], an odd
    polynomial in s (no rounding of 1 + z, no cancellation at small z); relative error of the
    polynomial 2^-27.5 (ACC) and 2^-22.3 (fitted by benchmarks/fit_coefficients.py)."""
    if ACC:
        s = z * rcp_fast(2.0 + z, ACC, PAIRED)
        s2 = s * s
        p = s2 * (0.666664183139801 + s2 * (0.4002152681350708 + s2 * (0.2800181210041046
                                                                        + s2 * 0.2801195979118347)))
        return tl.fma(s, p, s + s)
    else:
        s, s2 = log1p_unit_parts(z, PAIRED, False)
        return s * log1p_unit_poly(s2, 1.0)


@triton.jit
def log1p_unit_parts(z, PAIRED: tl.constexpr, NAN_FREE: tl.constexpr):
    """(s, s^2) of :func:`log1p_unit`'s fast form: log(1 + z) = s P(s^2). NAN_FREE: z is never NaN
    (:func:`square_unit`), so a paired reciprocal needs no clamp."""
    if NAN_FREE:
        s = z * rcp_pairs_nan_free(2.0 + z)
    else:
        s = z * rcp_fast(2.0 + z, False, PAIRED)  # 2 + z in [2, 3]: pairs allowed
    return s, s * s


@triton.jit
def log1p_unit_poly(s2, scale):
    """:func:`log1p_unit`'s fast polynomial P(s^2) times ``scale``, a scalar folded into its
    coefficients (once per program: a caller's 1 / beta costs no multiply per element)."""
    return 2.0 * scale + s2 * (0.6667348146438599 * scale + s2 * (0.39635974168777466 * scale + s2 * (
        0.3398353159427643 * scale)))


@triton.jit
def expm1_neg(x, ACC: tl.constexpr):
    """e^x - 1 for x <= 0 (other x: any value; callers select them away). A polynomial
    x + x^2 P(x) near 0, where e^x - 1 cancels (relative error 2^-26 on [-0.7, 0] for ACC,
    2^-21.7 on [-0.25, 0] otherwise), e^x - 1 below."""
    e = exp(x, ACC)
    if ACC:
        p = x * (0.4999999701976776 + x * (0.16666612029075623 + x * (0.04166162386536598 + x * (
            0.008311904966831207 + x * (0.0013421891489997506 + x * 0.000146801772643812)))))
        return tl.where(x > -0.7, tl.fma(x, p, x), e - 1.0)
    else:
        p = x * (0.4999774694442749 + x * (0.16612118482589722 + x * 0.037862107157707214))
        return tl.where(x > -0.25, tl.fma(x, p, x), e - 1.0)


@triton.jit
def erfc_parts(x, ACC: tl.constexpr, PAIRED: tl.constexpr, SCALE: tl.constexpr, SHIFT: tl.constexpr):
    """(t, p): erfc(|x| / sqrt 2) = t e^(p - x^2 / 2) for every x (ACC), or
    erfc(|x| / sqrt 2) / 2 = t (2^(p - x^2 log2(e) / 4))^2 (fast: the constants of the exp folded
    into p's coefficients), t = 1 / (1 + k |x|) and p a polynomial in t; relative error of the
    fit 2^-23.7 (ACC) and 2^-18.7 (fitted by benchmarks/fit_coefficients.py in a = |x| / sqrt 2,
    so k = 0.5 / sqrt 2 or 0.4 / sqrt 2). p comes as p + SHIFT (ACC) or SCALE p + SHIFT (fast),
    folded into its coefficients at compile time (a caller's own exponent, free); PAIRED: see :func:`rcp_fast`
    (1 + k |x| is clamped there; beyond the clamp erfc is 0 in fp32 anyway)."""
    if ACC:
        t = rcp(tl.abs(x) * 0.35355339059327373 + 1.0)
        p = (-1.2654414176940918 + SHIFT) + t * (0.9984925389289856 + t * (0.3878994286060333 + t * (
            0.028358561918139458 + t * (0.020191535353660583 + t * (-0.11677888035774231 + t * (
                -0.651259183883667 + t * (1.1224092245101929 + t * (-0.6660666465759277
                                                                   + t * 0.14219491183757782))))))))
    else:
        # Held as (P(t) - ln 2) log2(e) / 2, for an ex2 squared (see gelu's _gelu_parts).
        t = rcp_fast(tl.abs(x) * 0.28284271247461906 + 1.0, ACC, PAIRED)
        p = (-1.5737038850784302 * SCALE + SHIFT) + t * (0.7176278829574585 * SCALE + t * (
            0.33858197927474976 * SCALE + t * (-0.038478560745716095 * SCALE + t * (
                0.41380366683006287 * SCALE + t * (-0.5261754989624023 * SCALE + t * (0.1683461219072342 * SCALE))))))
    return t, p


@triton.jit
def phi_lower(x):
    """Phi(-|x|) = erfc(|x| / sqrt 2) / 2, the standard normal CDF's lower tail, to full fp32 relative
    precision down to its underflow (no 1 - erf cancellation)."""
    t, p = erfc_parts(x, True, False, 1.0, -LN2)  # the / 2 in p: Phi(-|x|) = t e^(p - x^2 / 2)
    # x^2 / 2 exactly enough: its rounding would cost |x|^2 2^-25 relative. |x| is clamped
    # where the result is 0 anyway, so that x = +-inf gives 0, not inf - inf.
    xa = tl.minimum(tl.abs(x), 30.0)
    x2 = xa * xa
    x2_lo = tl.fma(xa, xa, -x2)
    # The sum p - x^2/2 rounds (2^-18 of the result at |x| = 11, ~100 fp32 ulp, where
    # PyTorch's 1 + erf has lost every digit); splitting it costs a third MUFU and the
    # H200 headroom (benchmarks/accuracy.py, static roofline).
    arg = tl.fma(x2, -0.5, p) - x2_lo * 0.5  # finite, >= -452: no clamp needed
    # e^arg = h^2 e^d, h = 2^u, u = fp32(arg log2(e) / 2), d = arg - 2 u ln 2 (two FMAs, Cody and
    # Waite: d is the exact rest, |d| < 2^-15, so e^d = 1 + d). h by ex2.approx.ftz, squared: h is
    # normal down to arg = -174.7, below which Phi(-|x|) < 2^-251 and GELU's x Phi is 0 anyway. 7
    # instructions; tl.exp's range fix-up (a compare, two multiplies), its exponent's correction
    # and the * 0.5 took 11.
    u = arg * HALF_LOG2E
    d = tl.fma(-u, LN2X2_LO, tl.fma(-u, LN2X2, arg))
    h = tl.exp2(u)
    th2 = t * h * h
    return tl.fma(th2, d, th2)


@triton.jit
def expm1(x, ACC: tl.constexpr):
    """e^x - 1 for any x: :func:`expm1_neg`'s scheme with a polynomial fitted on both sides of
    0 (relative error 2^-27 on |x| <= 0.7 for ACC, 2^-21.4 on |x| <= 0.125 otherwise)."""
    e = exp(x, ACC)
    if ACC:
        p = x * (0.5 + x * (0.16666673123836517 + x * (0.04166661947965622 + x * (0.008332601748406887 + x * (
            0.0013890485279262066 + x * (0.00020100566325709224 + x * 2.4780769308563322e-05))))))
        return tl.where(tl.abs(x) < 0.7, tl.fma(x, p, x), e - 1.0)
    else:
        # The series only up to 0.125, one coefficient fewer: e - 1 beyond it is within 2^-19 of the
        # value (e's error over e - 1 >= 0.125), far below a 16-bit result's rounding.
        p = x * (0.5000002980232239 + x * (0.16677454113960266 + x * 0.04165922850370407))
        return tl.where(tl.abs(x) < 0.125, tl.fma(x, p, x), e - 1.0)
