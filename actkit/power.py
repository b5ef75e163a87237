"""How small a difference a sweep's paired comparisons could see, and how many seeds a chosen one needs.

Each activation is compared with the sweep's baseline by a paired t-test over the shared seeds
(:func:`actkit.train.summarise`). Not finding a difference means little unless the test could have
found one of the size that matters: :func:`rows` gives each comparison's minimum detectable effect at
80% power (:func:`actkit.stats.detectable_effect`, from the observed SD of the per-seed differences)
and, for an effect the user names (``actkit report --detect 0.2``, in percentage points of accuracy),
the number of seeds that would detect it (:func:`actkit.stats.pairs_needed`). Both rest on the SD seen in
this sweep, so with few seeds they are estimates.
"""
from __future__ import annotations

import math
from typing import Sequence

from . import stats


def check_detect(text: str) -> float:
    """``--detect`` as percentage points: a positive, finite number; ValueError saying what is allowed."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--detect must be a difference in percentage points, a positive number such as 0.2; "
                         f"got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--detect must be a positive number of percentage points (e.g. 0.2), got {text}")
    if value >= 100:
        raise ValueError(f"--detect is a difference of accuracies in percentage points, below 100; got {text}")
    return value


def rows(rs, alpha: float = 0.05, detect_pp: float | None = None) -> list[dict]:
    """One row per paired comparison with the baseline: ``label``, ``impl``, ``n`` (paired seeds), ``diff``,
    ``sd`` (of the per-seed differences), ``detectable`` (accuracy as a fraction, or None with ``note``), and
    with ``detect_pp``: ``seeds_needed`` (None with ``note`` when it cannot be computed or exceeds the limit)."""
    out = []
    for s in rs.summary(alpha=alpha):
        if s["act_label"] == rs.baseline or not s["paired_n"]:
            continue
        row = {"label": s["act_label"], "impl": s["impl"], "n": s["paired_n"], "diff": s["diff"],
               "sd": s.get("diff_sd"), "detectable": s.get("detectable_diff"), "note": s.get("detectable_note"),
               "seeds_needed": None, "needed_note": None}
        if detect_pp is not None:
            if row["sd"] is None or row["sd"] == 0:
                row["needed_note"] = row["note"]
            else:
                row["seeds_needed"] = stats.pairs_needed(detect_pp / 100, row["sd"], alpha)
                if row["seeds_needed"] is None:
                    row["needed_note"] = f"more than {stats.PAIRS_LIMIT:,}"
        out.append(row)
    return out


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def detectable_text(row: dict) -> str:
    return _pp(row["detectable"]) if row["detectable"] is not None else f"n/a ({row['note']})"


def needed_text(row: dict) -> str:
    return str(row["seeds_needed"]) if row["seeds_needed"] is not None else f"n/a ({row['needed_note']})"


def detect_lines(power_rows: Sequence[dict], baseline: str, detect_pp: float, alpha: float = 0.05) -> list[str]:
    """Plain sentences for the console: how many seeds each comparison needs for ``detect_pp``."""
    lines = []
    for r in power_rows:
        what = f"{r['label']} vs {baseline}" + (f" ({r['impl']})" if r["impl"] != "actkit" else "")
        if r["seeds_needed"] is None:
            lines.append(f"{what}: n/a, {r['needed_note']}")
        else:
            lines.append(f"{what}: {r['seeds_needed']} seeds to detect {detect_pp:g} pp with 80% power (alpha "
                         f"{alpha:g}, SD of the per-seed differences {100 * r['sd']:.2f} pp over {r['n']} seeds; "
                         f"now: {r['n']})")
    return lines


def section(rs, alpha: float = 0.05, detect_pp: float | None = None) -> list[str]:
    """The report's Markdown section on power (empty without paired comparisons)."""
    power_rows = rows(rs, alpha, detect_pp)
    if not power_rows:
        return []
    impls = {r["impl"] for r in power_rows}
    header = ["activation", *(["impl"] if len(impls) > 1 else []), "paired seeds", f"Δ vs {rs.baseline} (pp)",
              "SD of Δ (pp)", "detectable at 80% power (pp)"]
    if detect_pp is not None:
        header.append(f"seeds to detect {detect_pp:g} pp")
    table = []
    for r in power_rows:
        cells = [r["label"], *([r["impl"]] if len(impls) > 1 else []), str(r["n"]), f"{100 * r['diff']:+.2f}",
                 _pp(r["sd"]), detectable_text(r)]
        if detect_pp is not None:
            cells.append(needed_text(r))
        table.append(cells)
    lines = ["## Power\n",
             f"How small a difference each comparison with {rs.baseline} could see: the detectable effect is the "
             f"smallest true difference in accuracy that the paired t-test (two-sided, alpha {alpha:g}, before the "
             "Holm adjustment, which only raises it) finds with 80% probability with this many seeds, given the SD "
             "of the per-seed differences observed here. A comparison that is not significant makes a true "
             "difference of that size or larger unlikely (it would have been found 4 times in 5) and says nothing "
             "about smaller ones."
             + (f" The last column is the number of seeds the same test would need to detect a true difference of "
                f"{detect_pp:g} pp with 80% power, at the SD seen here." if detect_pp is not None else "") + "\n",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * (1 + (len(impls) > 1)) + ["---:"] * (len(header) - 1 - (len(impls) > 1))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
    return lines + [""]
