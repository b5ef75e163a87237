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
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
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
