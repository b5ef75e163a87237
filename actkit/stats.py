"""Statistics for comparing activations over seeds: mean ± confidence interval, paired tests.

Accuracy comparisons in actkit use several seeds, and the seeds are *paired*: seed ``s`` gives
every activation the same initial weights, data order and dropout stream (see
:mod:`actkit.train`). So the difference between two activations is tested per seed with a
paired t-test (:func:`scipy.stats.ttest_rel`), which removes the seed-to-seed variance both
share. All distributions come from scipy; nothing here approximates them by hand.

With several activations compared against one baseline, :func:`holm` adjusts the p-values for
multiple comparisons (Holm-Bonferroni, which controls the family-wise error rate without
assuming independence); a difference is called significant when its adjusted p-value is below
``alpha``.

Every paired comparison also says how small a difference it could have seen:
:func:`detectable_effect` is the minimum detectable effect at a given power (80% by default) of
the two-sided paired t-test, from the observed standard deviation of the per-pair differences
and the number of pairs, and :func:`pairs_needed` is the number of pairs (seeds) a chosen effect
would need. Both come from the noncentral t distribution (:data:`scipy.stats.nct`): under a true
mean difference ``delta`` the paired t statistic follows a noncentral t with ``n - 1`` degrees of
freedom and noncentrality ``delta / sd * sqrt(n)``. The observed SD stands in for the true one,
so with few seeds these are estimates, as every power analysis from pilot data is.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import optimize as _opt
from scipy import stats as _st


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with a two-sided Student-t confidence interval."""

    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof=1); NaN for a single value."""
    half_width: float
    """Half-width of the interval; NaN when n < 2 (one value says nothing about spread)."""
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def as_dict(self) -> dict:
        return {**asdict(self), "low": self.low, "high": self.high}


def _values(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} needs a non-empty sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} got a non-finite value: {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and ``confidence`` interval of the mean: ``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)``."""
    _check_confidence(confidence)
    array = _values(values, "mean_ci")
    n = array.size
    mean = float(array.mean())
    if n < 2:
        return MeanCI(n, mean, math.nan, math.nan, confidence)
    std = float(array.std(ddof=1))
    half = float(_st.t.ppf((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n))
    return MeanCI(n, mean, std, half, confidence)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``a`` against ``b`` (``a - b`` per pair)."""

    n: int
    mean_diff: float
    ci_half_width: float
    """Half-width of the ``confidence`` interval of the mean difference (NaN when n < 2)."""
    statistic: float
    p_value: float
    """Two-sided p-value of the paired t-test; NaN when n < 2; 1.0 when every pair is identical."""
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    """Paired two-sided t-test of ``a`` vs ``b`` (:func:`scipy.stats.ttest_rel`) with the CI of the difference.

    Edge cases, made explicit rather than left as scipy's NaNs and warnings: fewer than two pairs
    gives NaN statistics (no test is possible); pairs that are all exactly equal give p = 1 (there is
    no difference to detect); a constant non-zero difference gives an infinite t and p = 0, as scipy does.
    """
    _check_confidence(confidence)
    x = _values(a, "paired_test")
    y = _values(b, "paired_test")
    if x.size != y.size:
        raise ValueError(f"paired_test needs pairs: got {x.size} and {y.size} values")
    diff = x - y
    n = diff.size
    mean_diff = float(diff.mean())
    if n < 2:
        return PairedTest(n, mean_diff, math.nan, math.nan, math.nan, confidence)
    if np.all(diff == 0):
        return PairedTest(n, 0.0, 0.0, 0.0, 1.0, confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on near-constant differences
        result = _st.ttest_rel(x, y)
    std = float(diff.std(ddof=1))
    half = float(_st.t.ppf((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n))
    return PairedTest(n, mean_diff, half, float(result.statistic), float(result.pvalue), confidence)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order. NaNs stay NaN and are not counted."""
    p = [float(v) for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(finite)
    adjusted = [math.nan] * len(p)
    running = 0.0
    for rank, (value, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        adjusted[index] = running
    return adjusted


def is_significant(p_value: float, alpha: float = 0.05) -> bool | None:
    """``p_value < alpha``; ``None`` when no test was possible (NaN)."""
    if p_value is None or math.isnan(p_value):
        return None
    return p_value < alpha


POWER = 0.8
"""The power at which actkit reports the detectable effect: the conventional 80%."""


def _check_power(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not alpha < power < 1.0:
        raise ValueError(f"power must be between alpha ({alpha}) and 1, got {power}")


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at ``alpha`` with ``n`` pairs when the true mean difference is
    ``effect`` and the differences have standard deviation ``sd``: P(|T| > t_crit) under the noncentral t."""
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    if not sd > 0:
        raise ValueError(f"the standard deviation of the differences must be positive, got {sd}")
    df = n - 1
    noncentrality = abs(effect) / sd * math.sqrt(n)  # the test is symmetric in the sign of the effect
    critical = _st.t.isf(alpha / 2.0, df)
    # The far tail P(T < -t_crit) is written as the upper tail of the mirrored distribution: scipy's nct.cdf
    # returns NaN there for large noncentralities at few degrees of freedom, while nct.sf does not.
    return float(_st.nct.sf(critical, df, noncentrality) + _st.nct.sf(critical, df, -noncentrality))


def _standardised_effect(n: int, alpha: float, power: float) -> float:
    """The effect in units of the SD (Cohen's d of the differences) that reaches ``power`` with ``n`` pairs."""
    def shortfall(d: float) -> float:
        return paired_power(d, 1.0, n, alpha) - power

    high = 1.0
    while shortfall(high) < 0:  # power grows with the effect: widen until the root is bracketed
        high *= 2.0
    return float(_opt.brentq(shortfall, 0.0, high, xtol=1e-12, rtol=1e-12))


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference the two-sided paired t-test at ``alpha`` detects with probability
    ``power``, given ``n`` pairs whose differences have standard deviation ``sd`` (same units as ``sd``)."""
    _check_power(alpha, power)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    if not sd > 0:
        raise ValueError(f"the standard deviation of the differences must be positive, got {sd}")
    return _standardised_effect(n, alpha, power) * sd


PAIRS_LIMIT = 1_000_000
""":func:`pairs_needed` gives up beyond this many pairs (no sweep would run them)."""


def pairs_needed(effect: float, sd: float, alpha: float = 0.05, power: float = POWER,
                 limit: int = PAIRS_LIMIT) -> int | None:
    """The fewest pairs (seeds) with which the two-sided paired t-test at ``alpha`` detects a true mean
    difference ``effect`` with probability ``power``, when the differences have standard deviation ``sd``;
    at least 2 (a t-test needs two). ``None`` when more than ``limit`` would be needed."""
    _check_power(alpha, power)
    if not effect > 0:
        raise ValueError(f"the effect to detect must be positive, got {effect}")
    if not sd > 0:
        raise ValueError(f"the standard deviation of the differences must be positive, got {sd}")

    def enough(n: int) -> bool:
        return paired_power(effect, sd, n, alpha) >= power

    low, high = 1, 2  # invariant once bracketed: enough(high), and low == 1 or not enough(low)
    while not enough(high):
        if high >= limit:
            return None
        low, high = high, min(2 * high, limit)
    while high - low > 1:  # power grows with n: bisect for the first n that is enough
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class Detectable:
    """How small a paired difference a comparison could see: ``effect`` at ``power`` (``None`` with ``reason``
    when it cannot be computed)."""

    n: int
    sd: float | None
    """Standard deviation (ddof=1) of the per-pair differences; None with fewer than two pairs."""
    alpha: float
    power: float
    effect: float | None
    reason: str | None = None
    """Why ``effect`` is None: too few pairs, or differences without spread."""

    def as_dict(self) -> dict:
        return asdict(self)


def paired_spread(a: Sequence[float], b: Sequence[float]) -> tuple[int, float | None, str | None]:
    """``(n, sd of a - b, reason)``: ``sd`` is None with a ``reason`` when no power analysis is possible."""
    x = _values(a, "paired_spread")
    y = _values(b, "paired_spread")
    if x.size != y.size:
        raise ValueError(f"paired_spread needs pairs: got {x.size} and {y.size} values")
    n = int(x.size)
    if n < 2:
        return n, None, f"{n} pair: a paired t-test needs at least 2"
    sd = float((x - y).std(ddof=1))
    # Differences that are equal up to float64 rounding (0.9 - 0.8 vs 0.8 - 0.7) have no real spread.
    rounding = 8 * np.finfo(np.float64).eps * float(max(np.abs(x).max(), np.abs(y).max()))
    if sd <= rounding:
        sd = 0.0
    if sd == 0:
        return n, 0.0, f"the {n} paired differences are all equal (zero SD), so the t-test has no spread to scale by"
    return n, sd, None


def detectable_for_pairs(a: Sequence[float], b: Sequence[float], alpha: float = 0.05,
                         power: float = POWER) -> Detectable:
    """:func:`detectable_effect` from observed pairs; never raises for too few pairs or zero spread."""
    n, sd, reason = paired_spread(a, b)
    if reason is not None:
        return Detectable(n, sd, alpha, power, None, reason)
    return Detectable(n, sd, alpha, power, detectable_effect(sd, n, alpha, power))


def classification_metrics(confusion: Sequence[Sequence[int]]) -> dict:
    """Accuracy and per-class / macro precision, recall and F1 from a confusion matrix.

    ``confusion[t][p]`` counts examples of true class ``t`` predicted as ``p``. A class that is
    never predicted has precision 0 (and one that never occurs has recall 0), the convention of
    scikit-learn's ``zero_division=0``; macro averages are plain means over all classes.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square and non-empty, got shape {cm.shape}")
    total = cm.sum()
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_per_class": precision.tolist(),
        "recall_per_class": recall.tolist(),
        "f1_per_class": f1.tolist(),
    }
