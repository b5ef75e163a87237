"""actkit.stats against hand-computed values and scipy."""
import math

import numpy as np
import pytest
from scipy import stats as st

from actkit import stats
from actkit.train import summarise

# Student-t quantiles from printed tables (two-sided 95%): t_{0.975, df}
T975 = {1: 12.7062047361747, 2: 4.30265272974946, 3: 3.18244630528371, 9: 2.26215716279820}


def test_mean_ci_hand_computed():
    ci = stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    s = math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3)  # sample sd of 1..4
    assert ci.n == 4 and ci.mean == 2.5
    assert ci.std == pytest.approx(s, rel=1e-12)
    assert ci.half_width == pytest.approx(T975[3] * s / 2.0, rel=1e-9)
    assert (ci.low, ci.high) == pytest.approx((2.5 - ci.half_width, 2.5 + ci.half_width))


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_ci_matches_scipy_interval(confidence):
    values = [0.871, 0.884, 0.879, 0.866, 0.890, 0.875, 0.881, 0.869, 0.886, 0.877]
    ci = stats.mean_ci(values, confidence)
    low, high = st.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_single_value_has_no_interval():
    ci = stats.mean_ci([0.9])
    assert ci.mean == 0.9 and math.isnan(ci.half_width) and math.isnan(ci.std)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_mean_ci_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        stats.mean_ci(bad)
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=1.5)


def test_paired_test_hand_computed():
    a, b = [0.90, 0.80, 0.85], [0.88, 0.79, 0.86]
    d = [0.02, 0.01, -0.01]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    result = stats.paired_test(a, b)
    assert result.n == 3
    assert result.mean_diff == pytest.approx(mean, abs=1e-15)
    assert result.statistic == pytest.approx(t, rel=1e-9)
    assert result.p_value == pytest.approx(2 * st.t.sf(abs(t), 2), rel=1e-9)
    assert result.p_value == pytest.approx(0.528595479, rel=1e-6)  # t = 0.7559 on 2 df
    assert result.ci_half_width == pytest.approx(T975[2] * sd / math.sqrt(3), rel=1e-9)


def test_paired_test_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a = rng.normal(0.88, 0.01, 10)
    b = a - rng.normal(0.003, 0.004, 10)
    ours = stats.paired_test(a, b)
    ref = st.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    low, high = ref.confidence_interval(0.95)
    assert (ours.mean_diff - ours.ci_half_width, ours.mean_diff + ours.ci_half_width) == pytest.approx((low, high))


def test_paired_test_edge_cases():
    same = stats.paired_test([0.8, 0.9], [0.8, 0.9])
    assert same.p_value == 1.0 and same.mean_diff == 0.0
    shifted = stats.paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # constant non-zero difference
    assert shifted.p_value == 0.0 and math.isinf(shifted.statistic)
    single = stats.paired_test([0.9], [0.8])
    assert single.n == 1 and math.isnan(single.p_value) and single.mean_diff == pytest.approx(0.1)
    with pytest.raises(ValueError, match="pairs"):
        stats.paired_test([1.0, 2.0], [1.0])


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(1*0.04, 0.06); NaN stays out of the family
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.02, float("nan"), 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert stats.is_significant(0.049) is True and stats.is_significant(0.05) is False
    assert stats.is_significant(float("nan")) is None


def test_classification_metrics_hand_computed():
    cm = [[5, 1, 0],   # true 0
          [2, 3, 1],   # true 1
          [0, 0, 0]]   # true 2 never occurs, never predicted correctly
    m = stats.classification_metrics(cm)
    precision = [5 / 7, 3 / 4, 0.0]
    recall = [5 / 6, 3 / 6, 0.0]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    assert m["accuracy"] == pytest.approx(8 / 12)
    assert m["precision_per_class"] == pytest.approx(precision)
    assert m["recall_per_class"] == pytest.approx(recall)
    assert m["f1_per_class"] == pytest.approx(f1)
    assert m["precision_macro"] == pytest.approx(sum(precision) / 3)
    assert m["recall_macro"] == pytest.approx(sum(recall) / 3)
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)
    with pytest.raises(ValueError, match="square"):
        stats.classification_metrics([[1, 2, 3]])


def _record(label, seed, acc, impl="actkit"):
    return {"config": {"act_label": label, "activation": label, "impl": impl, "seed": seed},
            "final": {"test_acc": acc, "test_loss": 1 - acc, "f1_macro": acc, "precision_macro": acc,
                      "recall_macro": acc},
            "timing": {"train_images_per_s": 100.0, "step_time_ms": 10.0},
            "memory": {"peak_bytes": None}, "status": "finished"}


def test_summarise_pairs_seeds_against_the_baseline():
    relu = [0.880, 0.870, 0.875]
    gelu = [0.885, 0.878, 0.879]
    mish = [0.870, 0.869, 0.877]
    records = ([_record("relu", s, a) for s, a in enumerate(relu)] + [_record("gelu", s, a) for s, a in enumerate(gelu)]
               + [_record("mish", s, a) for s, a in enumerate(mish)])
    rows = {r["act_label"]: r for r in summarise(records, "relu")}
    assert rows["relu"]["diff"] is None and rows["relu"]["p_value"] is None
    g = rows["gelu"]
    assert g["n"] == 3 and g["best_seed"] == 0 and g["worst_seed"] == 1
    assert g["test_acc_mean"] == pytest.approx(np.mean(gelu))
    assert g["test_acc_ci"] == pytest.approx(T975[2] * np.std(gelu, ddof=1) / math.sqrt(3))
    assert g["diff"] == pytest.approx(np.mean(np.subtract(gelu, relu)))
    p_gelu, p_mish = st.ttest_rel(gelu, relu).pvalue, st.ttest_rel(mish, relu).pvalue
    assert g["p_value"] == pytest.approx(p_gelu)
    assert rows["mish"]["p_value"] == pytest.approx(p_mish)
    assert [g["p_holm"], rows["mish"]["p_holm"]] == pytest.approx(stats.holm([p_gelu, p_mish]))
    assert g["significant"] == (g["p_holm"] < 0.05)


def test_summarise_pairs_only_common_seeds_and_same_impl():
    records = [_record("relu", 0, 0.80), _record("relu", 1, 0.82), _record("gelu", 1, 0.85), _record("gelu", 2, 0.9),
               _record("gelu", 1, 0.86, impl="torch")]
    rows = {(r["act_label"], r["impl"]): r for r in summarise(records, "relu")}
    assert rows[("gelu", "actkit")]["paired_n"] == 1
    assert rows[("gelu", "actkit")]["diff"] == pytest.approx(0.03)
    assert rows[("gelu", "actkit")]["p_value"] is None  # one pair: no test
    assert rows[("gelu", "actkit")]["significant"] is None
    assert rows[("gelu", "torch")]["diff"] is None  # no relu run with impl torch
