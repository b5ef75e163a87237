"""Fit the polynomial coefficients in kernels/fp32math.py (run: python benchmarks/fit_coefficients.py).

Each fit is near-minimax in the *relative* error of the function the kernel returns: a weighted
least-squares fit on Chebyshev nodes, reweighted (Lawson's iteration) towards the points of largest
error. Coefficients are rounded to fp32, as the kernel holds them, and the error printed is that of
the rounded coefficients in float64 arithmetic against mpmath-checked float64 references (scipy's
erfcx, numpy's tanh and log1p are accurate to a few float64 ulp, far below the fits' 2^-17..2^-25).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erfc, erfcx, log_ndtr


def _lawson(basis: np.ndarray, target: np.ndarray, scale: np.ndarray, iterations: int = 60) -> np.ndarray:
    """Coefficients c minimising max |(basis @ c - target) / scale| (approximately)."""
    w = np.ones(len(target)) / len(target)
    a, b = basis / scale[:, None], target / scale
    best, best_err = None, np.inf
    for _ in range(iterations):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        err = np.abs(a @ c - b)
        if err.max() < best_err:
            best, best_err = c, err.max()
        w = w * err
        w /= w.sum()
    return best


def _nodes(lo: float, hi: float, n: int = 6000) -> np.ndarray:
    k = np.arange(n)
    return lo + (hi - lo) * 0.5 * (1 - np.cos(np.pi * (k + 0.5) / n))


def tanh_small(x0: float, degree: int):
    """tanh x = x + x * u * P(u), u = x^2, |x| <= x0: coefficients of P (degree - 1)."""
    x = _nodes(1e-6, x0)
    u = x * x
    basis = np.stack([x * u ** (k + 1) for k in range(degree)], 1)
    c = _lawson(basis, np.tanh(x) - x, np.tanh(x)).astype(np.float32)
    xs = np.linspace(1e-6, x0, 200001)
    us = xs * xs
    approx = xs + xs * sum(float(ck) * us ** (k + 1) for k, ck in enumerate(c))
    return c, np.abs(approx / np.tanh(xs) - 1).max()


def tanhshrink_small(x0: float, degree: int):
    """x - tanh x = x^3 P(x^2), |x| <= x0: coefficients of P (degree - 1). The reference is mpmath's
    (float64's x - tanh x cancels)."""
    import mpmath as mp

    mp.mp.dps = 40

    def exact(values):
        return np.array([float(mp.mpf(v) - mp.tanh(mp.mpf(v))) for v in values])

    x = _nodes(1e-3, x0, 2000)
    basis = np.stack([x ** 3 * (x * x) ** k for k in range(degree)], 1)
    target = exact(x)
    c = _lawson(basis, target, target).astype(np.float32)
    xs = np.linspace(1e-3, x0, 4001)
    approx = xs ** 3 * sum(float(ck) * (xs * xs) ** k for k, ck in enumerate(c))
    return c, np.abs(approx / exact(xs) - 1).max()


def log1p_atanh(degree: int):
    """log1p(z) = 2 s + s * P(s^2), s = z / (2 + z) in [0, 1/3]: coefficients of P."""
    s = _nodes(1e-6, 1 / 3)
    u = s * s
    exact = np.log1p(2 * s / (1 - s))  # z = 2 s / (1 - s)
    basis = np.stack([s * u ** (k + 1) for k in range(degree)], 1)
    c = _lawson(basis, exact - 2 * s, exact).astype(np.float32)
    ss = np.linspace(1e-6, 1 / 3, 200001)
    approx = 2 * ss + ss * sum(float(ck) * (ss * ss) ** (k + 1) for k, ck in enumerate(c))
    return c, np.abs(approx / np.log1p(2 * ss / (1 - ss)) - 1).max()


def erfc_tail(degree: int, p: float = 0.5, amax: float = 10.0):
    """erfc(a) = t exp(-a^2 + P(t)), t = 1 / (1 + p a), 0 <= a <= amax: coefficients of P."""
    t = _nodes(1 / (1 + p * amax), 1.0)
    a = (1 / t - 1) / p
    h = np.log(erfcx(a) / t)
    basis = np.stack([t ** k for k in range(degree + 1)], 1)
    c = _lawson(basis, h, np.ones_like(h)).astype(np.float32)
    aa = np.linspace(0, amax, 400001)
    tt = 1 / (1 + p * aa)
    approx = tt * np.exp(-aa * aa + sum(float(ck) * tt ** k for k, ck in enumerate(c)))
    return c, np.abs(approx / erfc(aa) - 1).max()


def expm1_small(c: float, degree: int, hi: float = 0.0):
    """expm1(x) = x + x^2 P(x), -c <= x <= hi: coefficients of P."""
    x = _nodes(-c, hi)
    x = x[np.abs(x) > 1e-7]
    basis = np.stack([x ** (k + 2) for k in range(degree)], 1)
    co = _lawson(basis, np.expm1(x) - x, np.abs(np.expm1(x))).astype(np.float32)
    xs = np.linspace(-c, hi, 200001)
    xs = xs[np.abs(xs) > 1e-7]
    approx = xs + sum(float(ck) * xs ** (k + 2) for k, ck in enumerate(co))
    return co, np.abs(approx / np.expm1(xs) - 1).max()


def erfc_tail_log2(degree: int, p: float = 0.4):
    """The fast erfc's coefficients as the kernel holds them: (P(t) - ln 2) log2(e) / 2, so that
    erfc(a) / 2 = t ex2(x^2 (-log2(e) / 4) + P~(t))^2 with x = a sqrt 2 (fitted in float64, scaled,
    then rounded to fp32)."""
    c, _ = erfc_tail(degree, p)
    t = _nodes(1 / (1 + p * 10.0), 1.0)
    a = (1 / t - 1) / p
    h = (np.log(erfcx(a) / t) - np.log(2)) * np.log2(np.e) / 2
    basis = np.stack([t ** k for k in range(degree + 1)], 1)
    c = _lawson(basis, h, np.ones_like(h)).astype(np.float32)
    aa = np.linspace(0, 10.0, 400001)
    tt = 1 / (1 + p * aa)
    x2 = 2 * aa * aa
    h = np.exp2(x2 * (-np.log2(np.e) / 4) + sum(float(ck) * tt ** k for k, ck in enumerate(c)))
    return c, np.abs(tt * h * h / (erfc(aa) / 2) - 1).max()


def gelu_slope_ratio(degree: int = 6, k: float = 0.36, amax: float = 13.5, split: float = 6.0):
    """GELU's fast 16-bit backward: f'(x) = phi(a) D(a) for x < 0 and 1 - phi(a) D(a) for x >= 0, a = |x|,
    D(a) = M(a) - a with M the Mills ratio Phi(-a) / phi(a) = sqrt(pi / 2) erfcx(a / sqrt 2). D has a
    root at a0 = 0.75179 (GELU's minimum), where a float evaluation of M - a cancels; it is held as
    D(a) = (A0 - a) S(t) + D(A0), A0 = fp32(a0), so that A0 - a is exact and S smooth and positive:
    coefficients of S, a polynomial in t = 1 / (1 + k a), and (A0, D(A0)). The references are mpmath's
    (float64 itself cancels near a0). Weighted: fp16's results need a <= 6 (f' underflows beyond) to
    about 2^-21; bf16's reach a = 13.5 with 8 bits, so the tail counts an 8th as much."""
    import mpmath as mp

    mp.mp.dps = 40

    def d_of(a):
        return mp.sqrt(mp.pi / 2) * mp.erfc(a / mp.sqrt(2)) * mp.exp(a * a / 2) - a

    a0 = float(np.float32(float(mp.findroot(d_of, 0.75))))
    d0 = d_of(mp.mpf(a0))

    def s_of(a):
        return float((d_of(mp.mpf(a)) - d0) / (mp.mpf(a0) - mp.mpf(a)))

    t = _nodes(1 / (1 + k * amax), 1.0, 600)
    a = (1 / t - 1) / k
    target = np.array([s_of(v) for v in a])
    basis = np.stack([t ** j for j in range(degree + 1)], 1)
    c = _lawson(basis, target, target * np.where(a <= split, 1.0, 8.0)).astype(np.float32)
    aa = np.linspace(0, amax, 3001)
    approx = sum(float(cj) * (1 / (1 + k * aa)) ** j for j, cj in enumerate(c))
    exact = np.array([s_of(v) for v in aa])
    return np.append(c, [a0, float(d0)]), np.abs(approx / exact - 1)[aa <= split].max()


# log2 of half the smallest subnormal: a 16-bit GELU below it in magnitude rounds to -0
HALF_TINY_LOG2 = {"bf16": -134, "fp16": -25}


def gelu_tail_exponent(degree: int, amax: float, half: bool, dtype: str, exact_at_0: bool = False,
                       density_weighted: bool = False):
    """GELU's 16-bit forward: log2 Phi(-a) (half of it where ``half``: the kernel squares ex2 of it,
    whose results would flush below 2^-126) as a polynomial in a = |x| on [0, amax], where the
    output dtype's GELU is still nonzero (fp16: 5.9, bf16: 13.6). No reciprocal: one ex2 per
    element. Fitted in the Chebyshev basis (the monomial one is ill-conditioned on [0, 13.6]),
    converted to monomials and rounded to fp32; the error is the relative error of Phi(-a), with the
    rounded coefficients, in float64.

    Past amax the exponent must fall without bound, so that |x| = inf gives Phi(-a) = 0 and GELU
    keeps torch's inf and NaN: the leading coefficient negative, or else (returned as ``flip``) the
    index k of a Horner partial s_k (the top k + 1 coefficients) that is negative on [0, amax + 0.1]
    and that the kernel takes as -|s_k|: no change there, and beyond, E falls like -|s_k| a^(degree - k).
    Checked here (:func:`_falls`): E, evaluated as the kernel does, stays below the exponent at which
    ``dtype``'s x Phi(-a) rounds to 0, from amax + 0.1 out to fp32's largest |x|.

    ``exact_at_0``: the constant term held at log2(1/2), so that Phi(-a) is 1/2 to the ex2's own
    error near 0, where GELU(x) = x/2 + x^2/sqrt(2 pi) and a subnormal x/2 is a tie that only the
    x^2 term breaks (fp16 with degree 8: 99.77% of inputs rounded correctly with the constant
    fitted, 99.93% held). ``density_weighted``: the error weighted by 1 + 1/(a + 0.02), which
    follows how densely the 16-bit inputs lie (as 1/a, all binades holding as many): bf16 at degree
    8 then rounds as many inputs correctly as degree 9 unweighted (99.98%; 99.91% unweighted)."""
    a = _nodes(0.0, amax)
    scale = 0.5 if half else 1.0
    target = log_ndtr(-a) / np.log(2) * scale
    c0 = -scale if exact_at_0 else 0.0
    basis = np.polynomial.chebyshev.chebvander(2 * a / amax - 1, degree - exact_at_0)
    if exact_at_0:
        basis = basis * a[:, None]  # E(a) = c0 + a R(a)
    weight = 1 + 1 / (a + 0.02) if density_weighted else np.ones_like(a)
    cheb = np.polynomial.Chebyshev(_lawson(basis, target - c0, 1 / weight, 100), domain=[0.0, amax])
    c = cheb.convert(kind=np.polynomial.Polynomial).coef
    c = (np.concatenate([[c0], c]) if exact_at_0 else c).astype(np.float32)
    beyond = np.concatenate([np.linspace(amax + 0.1, 100.0, 100001), np.geomspace(100.0, 3.4e38, 10001)])
    limit = (HALF_TINY_LOG2[dtype] - np.log2(beyond)) * scale
    if c[-1] < 0:
        flip = None
        assert _falls(c, None, beyond, limit), "the exponent must fall below the dtype's last GELU value"
    else:
        partials = _horner_partials(c, np.linspace(0.0, amax + 0.1, 100001))
        flip = next((k for k in range(degree - 1, 0, -1)
                     if partials[k].max() < 0 and _falls(c, k, beyond, limit)), None)
        assert flip is not None, "no Horner partial makes the exponent fall past amax"
    aa = np.linspace(0.0, amax, 400001)
    approx = np.polynomial.polynomial.polyval(aa, c.astype(np.float64)) / scale
    err = np.abs(np.expm1((approx - log_ndtr(-aa) / np.log(2)) * np.log(2))).max()
    return (c, err) if flip is None else (c, err, flip)


def _horner_partials(c: np.ndarray, a: np.ndarray) -> list[np.ndarray]:
    """s_0 = c[-1], s_k = s_(k-1) a + c[-1 - k]: Horner's partial values, in float64."""
    s = [np.full_like(a, float(c[-1]))]
    for ci in c[-2::-1]:
        s.append(s[-1] * a + float(ci))
    return s


def _falls(c: np.ndarray, flip: int | None, a: np.ndarray, limit: np.ndarray) -> bool:
    """Whether E, by Horner in fp32 as the kernel computes it (one rounding per FMA, -|s_flip| where
    flip is set), is below ``limit`` at every ``a``: there the kernel's x q rounds to -0 for finite
    x < 0 and is NaN at x = -inf (an E below -126 flushes the ex2 to 0). No NaN on the way."""
    a = a.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.full_like(a, c[-1])
        for k, ci in enumerate(c[-2::-1]):
            if k == flip:
                e = -np.abs(e)
            e = (e.astype(np.float64) * a + float(ci)).astype(np.float32)
    return not np.isnan(e).any() and bool((e < limit).all())


def main() -> None:
    for name, c_err in {
        "tanh_small ACC (|x| <= 0.55)": tanh_small(0.55, 4),
        "tanh_small fast (|x| <= 0.25)": tanh_small(0.25, 2),
        "log1p_unit ACC": log1p_atanh(4),
        "log1p_unit fast": log1p_atanh(3),
        "expm1_neg ACC (-0.7 <= x <= 0)": expm1_small(0.7, 6),
        "expm1_neg fast (-0.25 <= x <= 0)": expm1_small(0.25, 3),
        "expm1 ACC (|x| <= 0.7)": expm1_small(0.7, 7, 0.7),
        "expm1 fast (|x| <= 0.125)": expm1_small(0.125, 3, 0.125),
        # fp32math.exp_scaled: e^f = 1 + f + f^2 P(f) on the reduced range |f| <= ln(2) / 2.
        "exp_scaled (|f| <= ln(2) / 2)": expm1_small(np.log(2) / 2, 5, np.log(2) / 2),
        "erfc ACC (p = 0.5)": erfc_tail(9),
        "erfc fast (p = 0.4), scaled for ex2": erfc_tail_log2(6, 0.4),
        "tanhshrink fast, x - tanh x (|x| <= 0.5)": tanhshrink_small(0.5, 4),
        "GELU fp16 forward: log2 Phi(-a), a <= 5.9": gelu_tail_exponent(8, 5.9, False, "fp16", exact_at_0=True),
        "GELU bf16 forward: log2 Phi(-a) / 2, a <= 13.6, -|s_k| at k": gelu_tail_exponent(8, 13.6, True, "bf16",
                                                                                      density_weighted=True),
        "GELU 16-bit backward: S(t) (k = 0.36), then A0, D(A0); error on a <= 6": gelu_slope_ratio(),
    }.items():
        c, err, *flip = c_err
        print(f"{name}: max relative error 2^{np.log2(err):.1f}{f', k = {flip[0]}' if flip else ''}\n"
              f"    {', '.join(repr(float(v)) for v in c)}")


if __name__ == "__main__":
    main()
