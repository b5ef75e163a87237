"""``actkit report``: one Markdown (or HTML) document from saved results.

Everything in the document is computed from the files it is given: the run records of an
``actkit train`` sweep (via :mod:`actkit.runs`) and any number of ``actkit bench`` result files.
The findings are sentences built from the statistics, not advice written in advance:

* which activations are statistically tied with the best one and which are significantly worse
  (paired t-test per seed against the best, Holm-adjusted, :meth:`actkit.runs.RunSet.versus_best`),
  and how each compares with the sweep's baseline (:func:`actkit.train.summarise`);
* the cost of each activation: training throughput and time per image relative to the fastest;
  between implementations when several were run; from the benchmarks, bandwidth against the copy
  roofline and speedups over eager PyTorch and ``torch.compile``;
* the diagnostics: dead units at the start and end of training, and how much of the last layer's
  gradient norm reaches the first layer.

Figures are written as PNG files next to the document (``<name>_figures/``) and linked from it;
the HTML version embeds them, so it is a single file.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import hostload, plots, power
from .results import atomic_write_text, format_bytes, timestamp
from .runs import RunSet

ALPHA = 0.05


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def _pp(value: float | None, digits: int = 2) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "-" if value is None else f"{100 * value:+.{digits}f}"


def _p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column: ``l`` or ``r``."""
    align = align or "l" + "r" * (len(header) - 1)
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _listing(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# -- training findings ----------------------------------------------------------------------------------
def accuracy_findings(rs: RunSet, alpha: float = ALPHA) -> list[str]:
    vb = rs.versus_best(alpha=alpha)
    impl = vb["impl"]
    if vb["best"] is None:
        return []
    rows = {r["label"]: r for r in vb["rows"]}
    best = rows[vb["best"]]
    ci = f" ± {_pct(best['ci'])}" if best["ci"] is not None else ""
    seeds = best["n"]
    out = [f"Best mean test accuracy: **{vb['best']}**, {_pct(best['mean'])}%{ci} "
           f"(mean{' ± 95% CI' if ci else ''} over {seeds} seed{'s' * (seeds != 1)}, {impl} implementation)."]
    tied = [r for r in vb["rows"] if r["verdict"] == "tied"]
    worse = [r for r in vb["rows"] if r["verdict"] == "worse"]
    better = [r for r in vb["rows"] if r["verdict"] == "better"]
    untested = [r for r in vb["rows"] if r["verdict"] == "untested"]
    if len(rows) == 1:
        out.append("Only one activation was run, so there is nothing to compare it with.")
        return out
    if untested and not (tied or worse or better):
        out.append("With one seed per activation no significance test is possible: the differences below may be "
                   "noise. Run at least 3 seeds (`actkit train --seeds 3`) to tell them apart.")
    if tied:
        few = min(r["paired_n"] for r in tied)
        out.append(f"Statistically tied with {vb['best']} (paired t-test on the same seeds, Holm-adjusted "
                   f"p ≥ {alpha:g}): " + _listing([f"{r['label']} ({_pp(r['diff'])} pp, p = {_p(r['p_holm'])})"
                                                    for r in tied]) + "."
                   + (f" With {few} paired seeds the test can only detect large differences; more seeds "
                      "would narrow the intervals." if few < 5 else "")
                   + _tie_power(tied))
    if worse:
        out.append(f"Significantly worse than {vb['best']} (Holm-adjusted p < {alpha:g}): "
                   + _listing([f"{r['label']} ({_pp(r['diff'])} pp"
                               + (f" ± {_pct(r['diff_ci'])}" if r['diff_ci'] is not None else "")
                               + f", p = {_p(r['p_holm'])})" for r in worse]) + ".")
    elif tied and not untested:
        out.append(f"No activation is significantly worse than {vb['best']} at this number of seeds.")
    if better:  # possible only when the seeds differ between activations
        out.append("Significantly better than the best mean on their shared seeds: "
                   + _listing([f"{r['label']} ({_pp(r['diff'])} pp, p = {_p(r['p_holm'])})" for r in better]) + ".")
    if untested and (tied or worse or better):
        out.append("Not tested (fewer than two seeds shared with the best): "
                   + _listing([r["label"] for r in untested]) + ".")
    # against the sweep's baseline
    summary = [r for r in rs.summary(alpha=alpha) if r["impl"] == impl and r["act_label"] != rs.baseline]
    sig_better = [r for r in summary if r["significant"] and r["diff"] > 0]
    sig_worse = [r for r in summary if r["significant"] and r["diff"] < 0]
    if rs.baseline != vb["best"] and any(r["significant"] is not None for r in summary):
        parts = []
        if sig_better:
            parts.append("significantly better: " + _listing([f"{r['act_label']} ({_pp(r['diff'])} pp)"
                                                              for r in sig_better]))
        if sig_worse:
            parts.append("significantly worse: " + _listing([f"{r['act_label']} ({_pp(r['diff'])} pp)"
                                                             for r in sig_worse]))
        if not parts:
            parts.append("no activation differs significantly")
        out.append(f"Against the baseline {rs.baseline}: " + "; ".join(parts) + ".")
    diverged = [r for r in rs.records if r.get("status") == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} run(s) diverged (non-finite training loss): "
                   + _listing([r["id"] for r in diverged]) + "; their accuracy is that of the diverged model.")
    return out


def _tie_power(tied: Sequence[Mapping]) -> str:
    """What the tied comparisons could have seen: their detectable differences at 80% power."""
    found = [r["detectable"] for r in tied if r.get("detectable") is not None]
    if not found:
        return ""
    span = f"{100 * min(found):.2f}" + (f"-{100 * max(found):.2f}" if max(found) > min(found) else "")
    return (f" At 80% power these tests detect true differences of {span} pp and larger; smaller ones may be there "
            "unseen.")


def cost_rows(rs: RunSet) -> list[dict]:
    """Per (activation, impl): throughput mean ± CI, step time, time per image relative to the fastest of that impl."""
    rows = []
    for impl in rs.impls:
        tps = {label: rs.throughput(label, impl) for label in rs.labels}
        fastest = max((t.mean for t in tps.values() if t is not None), default=None)
        for label in rs.labels:
            t = tps[label]
            if not rs.select(label, impl):
                continue
            steps = [r["timing"].get("step_time_ms") for r in rs.select(label, impl)]
            steps = [s for s in steps if s is not None]
            rows.append({"label": label, "impl": impl, "throughput": t,
                         "step_ms": sum(steps) / len(steps) if steps else None,
                         "relative_time": fastest / t.mean if t is not None and fastest else None,
                         "load": hostload.group_load(rs.select(label, impl)),
                         "peak_bytes": _largest_memory(rs.select(label, impl), "peak_bytes"),
                         "saved_bytes": _largest_memory(rs.select(label, impl), "saved_bytes")})
    return rows


def _largest_memory(records, key: str) -> int | None:
    """The largest ``memory[key]`` over the records (None where none has it: CPU peaks, older records)."""
    values = [r.get("memory", {}).get(key) for r in records]
    return max((v for v in values if v is not None), default=None)


def _throughput_test(rs: RunSet, a: str, b: str, impl: str):
    """Paired t-test of per-seed training throughput of ``a`` vs ``b``; None without two shared seeds."""
    from . import stats

    def per_seed(label):
        return {r["config"]["seed"]: r["timing"].get("train_images_per_s") for r in rs.select(label, impl)
                if r["timing"].get("train_images_per_s") is not None}

    x, y = per_seed(a), per_seed(b)
    common = sorted(set(x) & set(y))
    if len(common) < 2:
        return None
    test = stats.paired_test([x[s] for s in common], [y[s] for s in common])
    return None if math.isnan(test.p_value) else test


def cost_findings(rs: RunSet) -> list[str]:
    rows = cost_rows(rs)
    out = []
    primary = [r for r in rows if r["impl"] == rs.primary_impl and r["throughput"] is not None]
    if primary:
        fastest = max(primary, key=lambda r: r["throughput"].mean)
        slowest = max(primary, key=lambda r: r["relative_time"])
        text = (f"Training cost ({rs.primary_impl}): fastest is {fastest['label']} at "
                f"{fastest['throughput'].mean:,.0f} images/s")
        if slowest is not fastest:
            text += (f"; the slowest, {slowest['label']}, takes {slowest['relative_time']:.2f}x the time per image "
                     f"({slowest['throughput'].mean:,.0f} images/s)")
            test = _throughput_test(rs, slowest["label"], fastest["label"], rs.primary_impl)
            if test is not None:
                text += (f", a difference {'beyond' if test.p_value < ALPHA else 'within'} the run-to-run noise "
                         f"(paired t-test over seeds, p = {_p(test.p_value)})")
        text += (". Time per image relative to the fastest: "
                 + ", ".join(f"{r['label']} {r['relative_time']:.2f}x" for r in primary) + ".")
        warning = hostload.ratio_warning([r["load"] for r in primary])
        out.append(text + (f" **Warning:** {warning}." if warning else ""))
    if len(rs.impls) > 1:
        base = rs.impls[0]
        parts = []
        for other in rs.impls[1:]:
            ratios = []
            for label in rs.labels:
                a, b = rs.throughput(label, base), rs.throughput(label, other)
                if a is not None and b is not None and b.mean > 0:
                    ratios.append((label, a.mean / b.mean))
            if ratios:
                parts.append(f"{base} vs {other}: " + ", ".join(f"{lbl} {v:.2f}x" for lbl, v in ratios))
        if parts:
            out.append("Training throughput ratio between implementations (above 1: the first is faster): "
                       + "; ".join(parts) + ".")
    device = rs.describe()
    out.append(f"Throughput was measured on {device.get('device_name') or device.get('device')} "
               f"({device.get('device')}); it says what these numbers cost on that machine only.")
    return out


def diagnostics_rows(rs: RunSet) -> list[dict]:
    rows = []
    for label in rs.labels:
        dead = rs.dead_units(label)
        first = rs.gradient_flow(label, epoch="first")
        last = rs.gradient_flow(label, epoch="last")
        layers = list(last)
        ratio = None
        if len(layers) >= 2 and last[layers[-1]] > 0:
            ratio = last[layers[0]] / last[layers[-1]]
        rows.append({"label": label, "dead": {p: d["fraction"] for p, d in dead.items()},
                     "grad_first_layer": last.get(layers[0]) if layers else None,
                     "grad_last_layer": last.get(layers[-1]) if layers else None,
                     "first_layer": layers[0] if layers else None, "last_layer": layers[-1] if layers else None,
                     "ratio": ratio, "grad_first_epoch_first_layer": first.get(layers[0]) if layers else None})
    return rows


def diagnostics_findings(rs: RunSet) -> list[str]:
    out = []
    rows = diagnostics_rows(rs)
    dead = [r for r in rows if "end" in r["dead"]]
    if dead:
        worst = max(dead, key=lambda r: r["dead"]["end"])
        if worst["dead"]["end"] > 0:
            start = worst["dead"].get("start")
            out.append(f"Dead units at the end of training (zero output or |f'(x)| < 1e-3 on every probe example): "
                       f"most for {worst['label']}, {_pct(worst['dead']['end'], 1)}% of its units"
                       + (f" (at the start: {_pct(start, 1)}%)" if start is not None else "") + "; "
                       + ", ".join(f"{r['label']} {_pct(r['dead']['end'], 1)}%" for r in dead) + ".")
        else:
            out.append("No activation layer has dead units at the end of training.")
    flows = [r for r in rows if r["ratio"] is not None]
    if flows:
        weakest = min(flows, key=lambda r: r["ratio"])
        out.append(f"Gradient flow in the last epoch: the first layer ({weakest['first_layer']}) gets "
                   f"{_ratio(weakest['ratio'])} times the last layer's gradient norm with {weakest['label']}"
                   + (", the smallest share; " if len(flows) > 1 else "; ")
                   + ", ".join(f"{r['label']} {_ratio(r['ratio'])}" for r in flows) + ".")
    return out


def _ratio(value: float) -> str:
    """A ratio of gradient norms, two significant digits: 0.38, 0.083, 1.1e-05."""
    return f"{value:.2g}"


# -- benchmark findings ----------------------------------------------------------------------------------
def bench_rows(payload: Mapping) -> list[dict]:
    """actkit's record per activation x dtype x mode at the largest size measured."""
    records = payload.get("records", [])
    largest: dict[tuple, dict] = {}
    for r in records:
        if r["provider"] != "actkit":
            continue
        key = (r["activation"], r["dtype"], r["mode"])
        if key not in largest or r["numel"] > largest[key]["numel"]:
            largest[key] = r
    return list(largest.values())


def bench_findings(payload: Mapping, name: str) -> list[str]:
    rows = bench_rows(payload)
    env = payload.get("environment", {})
    if not rows:
        return [f"{name}: no actkit records to summarise."]
    out = []
    pct = [r["pct_of_copy"] for r in rows if r.get("pct_of_copy") is not None]
    where = f"{env.get('device_name')} ({env.get('device')})"
    if pct:
        best = max(rows, key=lambda r: r["pct_of_copy"])
        worst = min(rows, key=lambda r: r["pct_of_copy"])
        out.append(f"{name} on {where}, largest size per case: actkit reaches {min(pct):.0f}-{max(pct):.0f}% of "
                   f"the copy bandwidth (highest {best['activation']} {best['mode']} {best['dtype']}, lowest "
                   f"{worst['activation']} {worst['mode']} {worst['dtype']}).")
    for other in ("eager", "compile"):
        speedups = [r[f"speedup_vs_{other}"] for r in rows if r.get(f"speedup_vs_{other}") is not None]
        if speedups:
            faster = sum(s > 1.05 for s in speedups)
            slower = sum(s < 0.95 for s in speedups)
            geo = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
            out.append(f"Against {other}: actkit is faster (>5%) in {faster}, slower (>5%) in {slower} and within 5% "
                       f"in {len(speedups) - faster - slower} of {len(speedups)} cases; geometric-mean speedup "
                       f"{geo:.2f}x.")
    host = payload.get("host") or {}
    if str(env.get("device", "")).startswith("cpu"):
        text = "These are CPU timings of the PyTorch fallback, not of the Triton kernels"
        loads = [v for v in (host.get("load_average_start"), host.get("load_average_end")) if v is not None]
        if loads:
            text += f"; the host's 1-minute load average was up to {max(loads):.1f} on {host.get('cpu_count')} CPUs"
        out.append(text + ".")
    return out


# -- the document ----------------------------------------------------------------------------------------
def _figure_md(path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({Path(os.path.relpath(path, base)).as_posix()})\n"


def build(rs: RunSet | None, benches: Sequence[tuple[str, Mapping]], out: str | os.PathLike,
          figures: bool = True, alpha: float = ALPHA, detect: float | None = None) -> tuple[str, dict[str, Path]]:
    """The Markdown text and the figures written for it (under ``<out stem>_figures/``)."""
    out = Path(out)
    fig_dir = out.parent / f"{out.stem}_figures"
    made: dict[str, Path] = {}
    md: list[str] = []
    title = "actkit report"
    if rs is not None:
        d = rs.describe()
        title += f": {d['dataset']}, {d['model']}" + (f" depth {d['depth']}" if d.get("depth") else "")
    md.append(f"# {title}\n")
    sources = ([f"`{rs.source}` ({len(rs.records)} training runs)"] if rs is not None else []) + \
              [f"`{name}`" for name, _ in benches]
    md.append(f"Generated {timestamp()} by `actkit report` from {_listing(sources)}. Every number below is read "
              "from those files or computed from them.\n")

    if rs is not None and figures:
        made.update({f"runs_{k}": v for k, v in plots.run_figures(rs, fig_dir).items()})
    for i, (name, payload) in enumerate(benches):
        if figures:
            made[f"bench_{i + 1}"] = _bench_figure(payload, fig_dir / f"bench_{i + 1}.png")

    # findings
    md.append("## Findings\n")
    findings: list[str] = []
    if rs is not None:
        findings += accuracy_findings(rs, alpha) + cost_findings(rs) + diagnostics_findings(rs)
    for name, payload in benches:
        findings += bench_findings(payload, name)
    md += [f"- {f}" for f in findings]
    md.append("")

    if rs is not None:
        md += _training_sections(rs, made, out.parent, alpha, detect)
    for i, (name, payload) in enumerate(benches):
        md += _bench_section(name, payload, made.get(f"bench_{i + 1}"), out.parent)
    md.append("## Method\n")
    md.append("- Accuracy: test-set accuracy after the last epoch, mean over seeds with a Student-t 95% confidence "
              "interval. Seeds are paired (same initial weights, data order and dropout for every activation), so "
              "activations are compared per seed with a paired t-test; with several comparisons the p-values are "
              f"Holm-adjusted, and a difference is called significant when the adjusted p < {alpha:g}. \"Tied with "
              "the best\" means the data cannot tell the two apart, not that they are equal; the best is chosen after "
              "looking at the data, so a tie is the cautious reading.")
    md.append("- Throughput: training images per second in the steady state (the first steps of a process, with any "
              "compilation, are excluded).")
    md.append("- Dead units: a unit (a channel of a conv layer, a feature of a dense layer) is dead when its output "
              "is exactly zero or the activation's derivative is below 1e-3 in magnitude on every example of a fixed "
              "probe batch of validation images; the derivative comes from the activation's own backward. Gradient "
              "flow: the L2 norm of each parameterised layer's gradient, averaged over the epoch's steps.")
    return "\n".join(md) + "\n", made


def _training_sections(rs: RunSet, made: Mapping[str, Path], base: Path, alpha: float,
                       detect: float | None = None) -> list[str]:
    md: list[str] = []
    d = rs.describe()
    if rs.from_table:
        md.append(f"Note: `{rs.source}` holds no run records (runs/*.json); the tables and statistics below come "
                  "from its runs.csv (checked against summary.json). Learning curves and diagnostics were only in the "
                  "run records, so they are left out.\n")
    md.append("## Setup\n")
    md.append(_table(["", ""], [
        ["dataset", f"{d['dataset']} ({_sizes(d['data'])})"],
        ["model", f"{d['model']}" + (f", depth {d['depth']}" if d.get("depth") else "")],
        ["training", f"{d['epochs']} epochs, batch {d['batch_size']}, {d['optimizer']} lr {d['lr']:g}"
                     + (f", subset {d['subset']}" if d.get("subset") else "")],
        ["activations", ", ".join(rs.labels) + f" (baseline: {rs.baseline})"],
        ["implementations", ", ".join(rs.impls) + f"; activation backend: {', '.join(d['backends'])}"],
        ["seeds", ", ".join(map(str, d["seeds"]))],
        ["device", f"{d.get('device_name')} ({d.get('device')})"],
        ["versions", f"torch {d.get('torch')}, triton {d.get('triton')}, actkit {d.get('actkit')}"],
    ], "ll"))

    md.append("## Accuracy\n")
    vb = rs.versus_best(alpha=alpha)
    by_label = {r["label"]: r for r in vb["rows"]}
    summary = rs.summary(alpha=alpha)
    rows = []
    for s in summary:
        v = by_label.get(s["act_label"]) if s["impl"] == vb["impl"] else None
        ci = f" ± {_pct(s['test_acc_ci'])}" if s["test_acc_ci"] is not None else ""
        if s["act_label"] == rs.baseline:
            vs_base, p_base = "baseline", "-"
        else:
            vs_base = _pp(s["diff"]) if s["diff"] is not None else "-"
            p_base = _p(s["p_holm"] if s["p_holm"] is not None else s["p_value"])
        rows.append([s["act_label"], s["impl"], s["n"], _pct(s["test_acc_mean"]) + ci,
                     _pct(s["best_acc"]) + " / " + _pct(s["worst_acc"]),
                     "best" if v and v["verdict"] == "best" else (_pp(v["diff"]) if v else "-"),
                     _p(v["p_holm"]) if v else "-", v["verdict"] if v else "-", vs_base, p_base,
                     _detectable_cell(s, rs.baseline),
                     _num(s["test_loss_mean"], ".4f"), _num(s["f1_macro_mean"], ".4f")])
    md.append(_table(["activation", "impl", "seeds", "test acc % (mean ± 95% CI)", "best / worst seed %",
                      f"Δ vs best (pp, {vb['impl']})", "p (Holm)", "verdict", f"Δ vs {rs.baseline} (pp)",
                      "p (Holm)", "detectable (pp, 80% power)", "test loss", "macro-F1"], rows, "llrrrrrlrrrrr"))
    if "runs_accuracy" in made:
        md.append(_figure_md(made["runs_accuracy"], base, "test accuracy per activation"))
    if "runs_learning_curves" in made:
        md.append("### Learning curves\n")
        md.append(_figure_md(made["runs_learning_curves"], base, "learning curves"))
    md += power.section(rs, alpha, detect)

    md += _cost_section(rs, made, base)

    if rs.has_dead_units or rs.has_gradient_flow:
        md.append("## Diagnostics\n")
        drows = diagnostics_rows(rs)
        phases = [p for p in ("start", "middle", "end") if any(p in r["dead"] for r in drows)]
        header = ["activation"] + [f"dead units % ({p})" for p in phases] + [
            "grad norm, first layer", "grad norm, last layer", "first / last"]
        rows = [[r["label"]] + [_pct(r["dead"].get(p), 1) for p in phases]
                + [_num(r["grad_first_layer"], ".3g"), _num(r["grad_last_layer"], ".3g"),
                   _ratio(r["ratio"]) if r["ratio"] is not None else "-"] for r in drows]
        md.append(_table(header, rows))
        md.append(f"Gradient norms are from the last epoch ({rs.primary_impl}), mean over seeds.\n")
        for key, alt in (("runs_gradient_flow", "gradient flow per layer"), ("runs_dead_units", "dead units")):
            if key in made:
                md.append(_figure_md(made[key], base, alt))

    md.append("## Runs\n")
    rows = []
    for r in rs.records:
        f, t = r["final"], r["timing"]
        rows.append([r["id"], r["config"]["seed"], r.get("status", "?"), _pct(f["test_acc"]),
                     _num(f["test_loss"], ".4f"), _num(f.get("f1_macro"), ".4f"), _pct(f.get("best_val_acc")),
                     _num(t.get("train_images_per_s"), ",.0f") + hostload.mark(hostload.group_load([r])),
                     _num(t.get("wall_s"), ".1f"), r.get("backend", "-")])
    md.append(_table(["run", "seed", "status", "test acc %", "test loss", "macro-F1", "best val acc %",
                      "train images/s", "wall s", "backend"], rows, "lrlrrrrrrl"))
    return md


def _cost_section(rs: RunSet, made: Mapping[str, Path], base: Path) -> list[str]:
    """Throughput, step time and memory per activation, busy-host marks explained under the table."""
    md: list[str] = []
    md.append("## Cost\n")
    costs = cost_rows(rs)
    rows = [[r["label"], r["impl"],
             (f"{r['throughput'].mean:,.0f}" + (f" ± {r['throughput'].half_width:,.0f}"
                                                if not math.isnan(r["throughput"].half_width) else "")
              + hostload.mark(r["load"])) if r["throughput"] else "-",
             _num(r["step_ms"], ".1f") + (hostload.mark(r["load"]) if r["step_ms"] is not None else ""),
             _num(r["relative_time"], ".2f") + ("x" if r["relative_time"] else ""),
             format_bytes(r["saved_bytes"]), format_bytes(r["peak_bytes"])] for r in costs]
    md.append(_table(["activation", "impl", "train images/s (mean ± 95% CI)", "step ms",
                      "time per image vs fastest", "saved for backward (1 step)", "peak GPU memory"], rows,
                     "llrrrrr"))
    load_note = hostload.note([r["load"] for r in costs], [f"{r['label']} ({r['impl']})" for r in costs])
    if load_note:
        md.append(load_note + ".\n")
    if "runs_throughput" in made:
        md.append(_figure_md(made["runs_throughput"], base, "training throughput"))
    return md


def _detectable_cell(row: Mapping, baseline: str) -> str:
    """The comparison's detectable difference (pp, 80% power), or n/a with the reason."""
    if row["act_label"] == baseline or not row.get("paired_n"):
        return "-"
    if row.get("detectable_diff") is None:
        return f"n/a ({row.get('detectable_note') or 'not computed'})"
    return f"{100 * row['detectable_diff']:.2f}"


def _sizes(data: Mapping) -> str:
    keys = [k for k in ("train", "val", "test") if k in data]
    return ", ".join(f"{data[k]:,} {k}" for k in keys) if keys else "sizes not recorded"


def _bench_figure(payload: Mapping, path: Path) -> Path | None:
    """The bench figure, narrowed to stay readable: one dtype, then one mode, then the first activations."""
    panels = plots.bench_panels(dict(payload))
    if not panels:
        return None
    acts = list(dict.fromkeys(p[0] for p in panels))
    dtypes = list(dict.fromkeys(p[1] for p in panels))
    modes = list(dict.fromkeys(p[2] for p in panels))
    if len(panels) > plots.MAX_BENCH_PANELS:
        dtypes = dtypes[:1]
    if len(acts) * len(dtypes) * len(modes) > plots.MAX_BENCH_PANELS:
        modes = ["fwd+bwd"] if "fwd+bwd" in modes else modes[:1]
    acts = acts[:plots.MAX_BENCH_PANELS // (len(dtypes) * len(modes))]
    return plots.bench(dict(payload), path, activations=acts, dtypes=dtypes, modes=modes)


def _bench_section(name: str, payload: Mapping, figure: Path | None, base: Path) -> list[str]:
    env = payload.get("environment", {})
    md = [f"## Benchmark: {name}\n",
          f"Measured on {env.get('device_name')} ({env.get('device')}) with torch {env.get('torch')}, "
          f"triton {env.get('triton')}, actkit {env.get('actkit')}, {env.get('timestamp')}. One row per activation, "
          "mode and dtype at the largest size measured; GB/s counts the bytes that must move.\n"]
    rows = []
    for r in bench_rows(payload):
        rows.append([r["activation"], r["mode"], r["dtype"], r.get("size", r["numel"]), r.get("backend", "-"),
                     _num(r["median_ms"] * 1000, ",.1f"), _num(r["gbps"], ".1f"), _num(r.get("pct_of_copy"), ".0f"),
                     _num(r.get("speedup_vs_eager"), ".2f"), _num(r.get("speedup_vs_compile"), ".2f")])
    md.append(_table(["activation", "mode", "dtype", "elements", "backend", "median µs", "GB/s", "% of copy",
                      "vs eager", "vs compile"], rows, "llllrrrrrr"))
    if figure is not None:
        md.append(_figure_md(figure, base, f"bandwidth vs size, {name}"))
    return md


def to_html(markdown_text: str, base: Path, title: str = "actkit report") -> str:
    """Render the Markdown (tables included) to a standalone HTML page with the PNGs embedded."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown_text)

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        path = (base / src) if not os.path.isabs(src) else Path(src)
        if path.suffix.lower() == ".png" and path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'src="data:image/png;base64,{data}"'
        return match.group(0)

    body = re.sub(r'src="([^"]+)"', embed, body)
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;"
             "padding:3px 8px}th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}code{background:#f3f3f3;padding:0 3px}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body}</body></html>\n")


def write(rs: RunSet | None, benches: Sequence[tuple[str, Mapping]], out: str | os.PathLike, *,
          as_html: bool = False, figures: bool = True, alpha: float = ALPHA,
          detect: float | None = None) -> dict[str, Path]:
    """Write the Markdown report (and the HTML version with ``as_html``); returns every file written.

    ``detect``: a difference in percentage points; the Power section then says how many seeds each
    comparison would need to detect it with 80% power."""
    out = Path(out)
    if out.suffix.lower() not in (".md", ".markdown"):
        raise ValueError(f"the report is Markdown; give an --out path ending in .md, got {str(out)!r}")
    if rs is None and not benches:
        raise ValueError("nothing to report: give a training run directory and/or benchmark files")
    text, made = build(rs, benches, out, figures=figures, alpha=alpha, detect=detect)
    written = {"markdown": atomic_write_text(out, text)}
    if as_html:
        title = text.splitlines()[0].lstrip("# ").strip()
        written["html"] = atomic_write_text(out.with_suffix(".html"), to_html(text, out.parent, title))
    written.update(made)
    return written
