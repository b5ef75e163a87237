"""What a sweep keeps of its runs besides the records: one CSV row per run, and the summary rows
per (activation, impl) with the paired test against the baseline, the difference it could detect and
whether the host was busy."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from .. import hostload, stats

RUN_CSV_FIELDS = ("id", "status", "activation", "act_label", "impl", "seed", "dataset", "model", "epochs",
                  "test_acc", "test_loss", "f1_macro", "precision_macro", "recall_macro", "best_val_acc",
                  "train_images_per_s", "step_time_ms", "train_s", "wall_s", "peak_bytes", "saved_bytes", "device", "backend",
                  "load_average_max", "threads", "cpu_count")
"""The last three let a report read from runs.csv alone still say whether the host was busy
(:func:`actkit.hostload.busy_run`)."""


def run_row(record: Mapping) -> dict:
    c, f, t = record["config"], record["final"], record["timing"]
    loads = [v for v in t.get("load_average") or () if v is not None]
    return {"id": record["id"], "status": record["status"], "activation": c["activation"],
            "act_label": c["act_label"], "impl": c["impl"], "seed": c["seed"], "dataset": c["dataset"],
            "model": c["model"], "epochs": len(record["history"]["epoch"]), "test_acc": f["test_acc"],
            "test_loss": f["test_loss"], "f1_macro": f["f1_macro"], "precision_macro": f["precision_macro"],
            "recall_macro": f["recall_macro"], "best_val_acc": f["best_val_acc"],
            "train_images_per_s": t["train_images_per_s"], "step_time_ms": t["step_time_ms"],
            "train_s": t["train_s"], "wall_s": t["wall_s"], "peak_bytes": record["memory"]["peak_bytes"],
            "saved_bytes": record["memory"].get("saved_bytes"), "device": record["env"]["device"],
            "backend": record["backend"], "load_average_max": max(loads, default=None),
            "threads": t.get("threads"), "cpu_count": t.get("cpu_count")}


def _mean_of(records: Sequence[Mapping], fn) -> float | None:
    values = [fn(r) for r in records if fn(r) is not None]
    return sum(values) / len(values) if values else None


def _summary_row(label: str, impl: str, by_seed: Mapping[int, Mapping], baseline: str, confidence: float) -> dict:
    """Test accuracy mean ± CI over the seeds of one (activation label, impl), and the means of the rest."""
    seeds = sorted(by_seed)
    accs = [by_seed[s]["final"]["test_acc"] for s in seeds]
    ci = stats.mean_ci(accs, confidence)
    best = max(seeds, key=lambda s: by_seed[s]["final"]["test_acc"])
    worst = min(seeds, key=lambda s: by_seed[s]["final"]["test_acc"])
    rs = [by_seed[s] for s in seeds]
    peaks = [r["memory"]["peak_bytes"] for r in rs if r["memory"]["peak_bytes"] is not None]
    saved = [r["memory"]["saved_bytes"] for r in rs if r["memory"].get("saved_bytes") is not None]
    return {"act_label": label, "activation": rs[0]["config"]["activation"], "impl": impl, "n": len(seeds),
            "seeds": seeds, "test_acc_mean": ci.mean, "test_acc_ci": ci.half_width, "test_acc_std": ci.std,
            "best_seed": best, "best_acc": by_seed[best]["final"]["test_acc"], "worst_seed": worst,
            "worst_acc": by_seed[worst]["final"]["test_acc"],
            "test_loss_mean": _mean_of(rs, lambda r: r["final"]["test_loss"]),
            "f1_macro_mean": _mean_of(rs, lambda r: r["final"]["f1_macro"]),
            "precision_macro_mean": _mean_of(rs, lambda r: r["final"]["precision_macro"]),
            "recall_macro_mean": _mean_of(rs, lambda r: r["final"]["recall_macro"]),
            "train_images_per_s": _mean_of(rs, lambda r: r["timing"]["train_images_per_s"]),
            "step_time_ms": _mean_of(rs, lambda r: r["timing"]["step_time_ms"]),
            "peak_bytes": max(peaks) if peaks else None,
            "saved_bytes": max(saved) if saved else None,
            "diverged": sum(r["status"] == "diverged" for r in rs),
            "baseline": baseline, "diff": None, "diff_ci": None, "p_value": None, "p_holm": None,
            "significant": None, "paired_n": 0, "diff_sd": None, "detectable_diff": None,
            "detectable_note": None, **hostload.group_load(rs)}


def summarise(records: Sequence[Mapping], baseline: str, confidence: float = 0.95, alpha: float = 0.05) -> list[dict]:
    """One row per (activation label, impl): test accuracy mean ± CI over seeds, best/worst seed, means of
    loss, macro-F1, throughput and step time, peak memory, and the paired test against ``baseline`` (same
    impl, seeds present in both). ``p_holm`` adjusts the p-values of all rows for multiple comparisons;
    ``significant`` is ``p_holm < alpha`` (``None`` where no test was possible). ``diff_sd`` is the SD of the
    per-seed differences and ``detectable_diff`` the smallest difference the test detects with 80% power at
    ``alpha`` (:func:`actkit.stats.detectable_for_pairs`; None with ``detectable_note`` saying why);
    ``busy_load``, ``load_average_max`` and ``load_recorded`` say whether the host was busy while the
    throughput was measured (:func:`actkit.hostload.group_load`)."""
    groups: dict[tuple[str, str], dict[int, Mapping]] = {}
    for r in records:
        c = r["config"]
        groups.setdefault((c["act_label"], c["impl"]), {})[c["seed"]] = r
    rows = []
    for (label, impl), by_seed in groups.items():
        row = _summary_row(label, impl, by_seed, baseline, confidence)
        base = groups.get((baseline, impl))
        if base is not None and label != baseline:
            common = [s for s in row["seeds"] if s in base]
            if common:
                ours = [by_seed[s]["final"]["test_acc"] for s in common]
                theirs = [base[s]["final"]["test_acc"] for s in common]
                test = stats.paired_test(ours, theirs, confidence)
                row.update(diff=test.mean_diff, diff_ci=test.ci_half_width, p_value=test.p_value,
                           paired_n=test.n)
                power = stats.detectable_for_pairs(ours, theirs, alpha)  # the smallest difference this test sees
                row.update(diff_sd=power.sd, detectable_diff=power.effect, detectable_note=power.reason)
        rows.append(row)
    tested = [i for i, r in enumerate(rows) if r["p_value"] is not None and not math.isnan(r["p_value"])]
    adjusted = stats.holm([rows[i]["p_value"] for i in tested])
    for i, p in zip(tested, adjusted):
        rows[i]["p_holm"] = p
        rows[i]["significant"] = stats.is_significant(p, alpha)
    for r in rows:  # JSON has no NaN: store "not computable" as null
        for key in ("test_acc_ci", "test_acc_std", "diff_ci", "p_value"):
            if isinstance(r[key], float) and math.isnan(r[key]):
                r[key] = None
    return rows
