"""Figures as PNG files (matplotlib, Agg backend: no display needed).

One function per figure; each takes the output path and an optional pixel size
``(width, height)`` and returns the :class:`~pathlib.Path` it wrote. Nothing here shows a
window, so the functions work on headless machines and in tests.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from . import registry  # noqa: E402
from .backend import backend_for  # noqa: E402
from .functional import apply  # noqa: E402

DPI = 100
Size = tuple[int, int]


def _figure(size: Size | None, default: Size, nrows: int = 1, ncols: int = 1, **kwargs):
    width, height = size or default
    if width < 50 or height < 50:
        raise ValueError(f"figure size must be at least 50x50 pixels, got {width}x{height}")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False,
                             layout="constrained", **kwargs)
    return fig, axes


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        plt.close(fig)
        raise ValueError(f"figures are written as PNG; give a path ending in .png, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def colours(names: Sequence[str]) -> dict[str, tuple]:
    """One stable colour per name (tab10, then tab20), in the order given."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


# -- activation curves ---------------------------------------------------------------------------------
def activation_curve(name: str, lo: float = -5.0, hi: float = 5.0, points: int = 1001,
                     device: str | torch.device = "cpu", **params) -> dict:
    """``x``, ``f(x)`` and ``f'(x)`` for one activation, f' from actkit's own backward.

    The derivative is autograd through :func:`actkit.functional.apply`: the Triton backward
    kernel on CUDA, the PyTorch fallback's backward on CPU. No hand-written formula.
    """
    spec = registry.get(name)
    reason = registry.why_not_pointwise(spec)
    if reason is not None:
        raise ValueError(f"{spec.name} is {reason}, so it has no curve f(x) of one input; curves are drawn for "
                         "elementwise and learnable activations")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"range must be two finite numbers with low < high, got {lo:g} {hi:g}")
    if points < 2:
        raise ValueError(f"need at least 2 points, got {points}")
    x = torch.linspace(lo, hi, points, device=device, dtype=torch.float32).requires_grad_(True)
    y = apply(spec.name, x, **params)
    if spec.differentiable:
        (dy,) = torch.autograd.grad(y, x, torch.ones_like(y))
    else:
        dy = torch.zeros_like(x)
    return {"name": spec.name, "x": x.detach().cpu().numpy(), "y": y.detach().cpu().numpy(),
            "dy": dy.detach().cpu().numpy(), "backend": backend_for(x), "formula": spec.formula,
            "differentiable": spec.differentiable}


def curves(activations: Sequence[str], out: str | os.PathLike = "curves.png", *, lo: float = -5.0,
           hi: float = 5.0, points: int = 1001, device: str | torch.device = "cpu",
           size: Size | None = None) -> Path:
    """A grid of panel pairs: f(x) left, f'(x) right, per activation (two activations per row)."""
    if not activations:
        raise ValueError("no activations given")
    data = [activation_curve(a, lo, hi, points, device) for a in activations]
    per_row = 1 if len(data) == 1 else 2
    rows = math.ceil(len(data) / per_row)
    fig, axes = _figure(size, (560 * per_row, 250 * rows + 60), rows, 2 * per_row)
    palette = colours([d["name"] for d in data])
    for i, d in enumerate(data):
        ax_f, ax_d = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        c = palette[d["name"]]
        ax_f.plot(d["x"], d["y"], color=c, lw=2)
        ax_f.set_title(f"{d['name']}: f(x)", fontsize=10)
        ax_d.plot(d["x"], d["dy"], color=c, lw=2, ls="--")
        ax_d.set_title(f"{d['name']}: f'(x)" + ("" if d["differentiable"] else " (no gradient)"), fontsize=10)
        for ax in (ax_f, ax_d):
            ax.axhline(0, color="0.6", lw=0.8)
            ax.axvline(0, color="0.6", lw=0.8)
            ax.grid(alpha=0.3)
            ax.set_xlim(lo, hi)
    for j in range(len(data), rows * per_row):  # an odd count leaves one pair empty
        axes[j // per_row, 2 * (j % per_row)].set_visible(False)
        axes[j // per_row, 2 * (j % per_row) + 1].set_visible(False)
    backends = ", ".join(sorted({d["backend"] for d in data}))
    fig.suptitle(f"Activations and their derivatives (f' from actkit's backward, backend: {backends})",
                 fontsize=11)
    return _save(fig, out)


# -- decision boundaries -------------------------------------------------------------------------------
def boundaries(results: Sequence, x: torch.Tensor, y: torch.Tensor, out: str | os.PathLike = "boundary.png", *,
               dataset: str = "", resolution: int = 200, size: Size | None = None) -> Path:
    """Decision regions of trained 2-D classifiers side by side, training points on top.

    ``results`` are :class:`actkit.toy.ToyResult` (anything with ``activation``, ``model``,
    ``train_accuracy`` and ``test_accuracy``).
    """
    if not results:
        raise ValueError("no trained models given")
    n = len(results)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = _figure(size, (330 * cols, 330 * rows + 50), rows, cols)
    xn = x.detach().cpu().numpy()
    yn = y.detach().cpu().numpy()
    pad = 0.3
    (x0, y0), (x1, y1) = xn.min(0) - pad, xn.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    levels = np.linspace(0, 1, 21)
    for i, r in enumerate(results):
        ax = axes[i // cols, i % cols]
        model = r.model
        param = next(model.parameters(), None)
        with torch.no_grad():
            logits = model(grid.to(param.device if param is not None else "cpu")).float().cpu()
        prob = torch.softmax(logits, 1)[:, 1].numpy().reshape(gx.shape)
        ax.contourf(gx, gy, prob, levels=levels, cmap="RdBu_r", alpha=0.45, vmin=0, vmax=1)
        ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.2)
        ax.scatter(xn[:, 0], xn[:, 1], c=yn, cmap="RdBu_r", vmin=0, vmax=1, s=10, edgecolors="w", linewidths=0.4)
        ax.set_title(f"{r.activation}\ntrain {100 * r.train_accuracy:.1f}%  test {100 * r.test_accuracy:.1f}%",
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="box")
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].set_visible(False)
    fig.suptitle(f"Decision regions on {dataset or 'the toy problem'} (P(class 1), black line = 0.5)", fontsize=11)
    return _save(fig, out)


# -- training runs -------------------------------------------------------------------------------------
_IMPL_STYLES = {"actkit": "-", "torch": "--", "compile": ":"}
_SERIES_TITLES = {"train_loss": "train loss", "val_loss": "validation loss", "train_acc": "train accuracy",
                  "val_acc": "validation accuracy"}


def _run_title(rs) -> str:
    d = rs.describe()
    depth = f" depth {d['depth']}" if d.get("depth") else ""
    seeds = len(d["seeds"])
    device = d.get("device") or "?"
    if d.get("device_name") and d["device_name"] != device:
        device += f" ({d['device_name']})"
    return f"{d['dataset']}, {d['model']}{depth}, {d['epochs']} epochs, {seeds} seed{'s' * (seeds != 1)}, {device}"


def learning_curves(rs, out: str | os.PathLike, *, size: Size | None = None) -> Path:
    """Train/val loss and accuracy per epoch: mean over seeds with a 95% CI band, one colour per activation."""
    fig, axes = _figure(size, (1100, 760), 2, 2)
    palette = colours(rs.labels)
    impls = rs.impls
    for ax, series in zip(axes.ravel(), ("train_loss", "val_loss", "train_acc", "val_acc")):
        for label in rs.labels:
            for impl in impls:
                c = rs.curves(label, impl, series)
                if not c["epoch"]:
                    continue
                scale = 100.0 if series.endswith("acc") else 1.0
                name = label if len(impls) == 1 else f"{label} ({impl})"
                ax.plot(c["epoch"], [scale * v for v in c["mean"]], color=palette[label],
                        ls=_IMPL_STYLES.get(impl, "-"), lw=1.8, marker="o", ms=3, label=name)
                if max(c["n"]) > 1:
                    low, high = c["low"], c["high"]
                    if series.endswith("acc"):  # an accuracy interval cannot leave [0, 1]
                        low, high = [max(0.0, v) for v in low], [min(1.0, v) for v in high]
                    else:
                        low = [max(0.0, v) for v in low]
                    ax.fill_between(c["epoch"], [scale * v for v in low], [scale * v for v in high],
                                    color=palette[label], alpha=0.18, lw=0)
        ax.set_title(_SERIES_TITLES[series], fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if series.endswith("acc") else "cross-entropy")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0, 0].get_legend_handles_labels()
    axes[0, 1].legend(handles, names, fontsize=8, loc="upper right", ncol=1 + len(names) // 8)
    fig.suptitle(f"Learning curves: mean over seeds, band = 95% CI. {_run_title(rs)}", fontsize=10)
    return _save(fig, out)


def _grouped_bars(ax, rs, values: dict, scale: float = 1.0, upper: float | None = None):
    """Bars per activation (x), one bar per impl in each group, with CI error bars; returns the bar tops.

    Error bars are clipped to the quantity's range: never below 0, never above ``upper``.
    """
    labels, impls = rs.labels, rs.impls
    palette = colours(labels)
    width = 0.8 / len(impls)
    hatches = {"actkit": "", "torch": "//", "compile": ".."}
    tops = []
    for j, impl in enumerate(impls):
        for i, label in enumerate(labels):
            ci = values.get((label, impl))
            if ci is None:
                continue
            err = 0.0 if math.isnan(ci.half_width) else scale * ci.half_width
            mean = scale * ci.mean
            down = min(err, max(mean, 0.0))
            up = err if upper is None else min(err, max(upper - mean, 0.0))
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, mean, width * 0.92, color=palette[label], edgecolor="k", lw=0.6,
                   hatch=hatches.get(impl, ""), yerr=[[down], [up]] if err else None, capsize=4 if err else 0,
                   label=impl if i == 0 else None)
            tops.append((mean - down, mean + up))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.grid(axis="y", alpha=0.3)
    if len(impls) > 1:
        ax.legend(fontsize=8, title="implementation", title_fontsize=8)
    return tops


def accuracy_bars(rs, out: str | os.PathLike, *, size: Size | None = None) -> Path:
    """Test accuracy per activation (and implementation): mean over seeds with 95% CI error bars."""
    fig, axes = _figure(size, (max(560, 120 * len(rs.labels) * len(rs.impls) + 200), 460))
    ax = axes[0, 0]
    values = {(l, i): rs.accuracy(l, i) for l in rs.labels for i in rs.impls}
    tops = _grouped_bars(ax, rs, values, 100.0, upper=100.0)
    if tops:
        lo = min(t[0] for t in tops)
        hi = max(t[1] for t in tops)
        pad = max(0.5, 0.15 * (hi - lo))
        bottom = max(0.0, lo - pad)
        ax.set_ylim(bottom, min(100.0, hi + pad))
        ax.set_ylabel("test accuracy (%)" + (" - axis does not start at 0" if bottom > 0 else ""))
    n = len(rs.seeds)
    ax.set_title(f"Test accuracy, mean ± 95% CI over {n} seed{'s' * (n != 1)}\n{_run_title(rs)}", fontsize=10)
    return _save(fig, out)


def throughput_bars(rs, out: str | os.PathLike, *, size: Size | None = None) -> Path:
    """Training throughput (images/s, steady state) per activation and implementation, 95% CI over seeds."""
    fig, axes = _figure(size, (max(560, 120 * len(rs.labels) * len(rs.impls) + 200), 460))
    ax = axes[0, 0]
    values = {(l, i): rs.throughput(l, i) for l in rs.labels for i in rs.impls}
    _grouped_bars(ax, rs, values)
    ax.set_ylabel("training images / s")
    ax.set_title(f"Training throughput (steady state), mean ± 95% CI\n{_run_title(rs)}", fontsize=10)
    return _save(fig, out)


def gradient_flow(rs, out: str | os.PathLike, *, size: Size | None = None) -> Path:
    """Per-layer gradient L2 norm (mean over the epoch and the seeds), first and last epoch, log scale."""
    fig, axes = _figure(size, (900, 480))
    ax = axes[0, 0]
    palette = colours(rs.labels)
    layers: list[str] = []
    for label in rs.labels:
        for layer in rs.gradient_flow(label, epoch="last"):
            if layer not in layers:
                layers.append(layer)
    if not layers:
        plt.close(fig)
        raise ValueError("the runs recorded no gradient-flow diagnostics (train with --diagnostics)")
    epochs = rs.describe()["epochs"]
    for label in rs.labels:
        for which, style, alpha in (("first", "--", 0.55), ("last", "-", 1.0)):
            flow = rs.gradient_flow(label, epoch=which)
            xs = [i for i, layer in enumerate(layers) if flow.get(layer, 0) > 0]
            if not xs:
                continue
            ax.plot(xs, [flow[layers[i]] for i in xs], color=palette[label], ls=style, alpha=alpha, marker="o",
                    ms=4, label=f"{label}" if which == "last" else None)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("layer (input side left)")
    ax.set_ylabel("gradient L2 norm (mean over steps)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title=f"solid: epoch {epochs}, dashed: epoch 1", title_fontsize=8)
    ax.set_title(f"Gradient flow per layer ({rs.primary_impl})\n{_run_title(rs)}", fontsize=10)
    return _save(fig, out)


def dead_units(rs, out: str | os.PathLike, *, size: Size | None = None) -> Path:
    """Fraction of dead units per activation layer at the start, middle and end of training."""
    data = {label: rs.dead_units(label) for label in rs.labels}
    phases = [p for p in ("start", "middle", "end") if any(p in d for d in data.values())]
    if not phases:
        raise ValueError("the runs recorded no dead-unit diagnostics (train with --diagnostics)")
    layers: list[str] = []
    for d in data.values():
        for phase in d.values():
            for layer in phase["layers"]:
                if layer not in layers:
                    layers.append(layer)
    fig, axes = _figure(size, (360 * len(phases) + 120, 440), 1, len(phases), sharey=True)
    palette = colours(rs.labels)
    width = 0.8 / len(rs.labels)
    for ax, phase in zip(axes[0], phases):
        epoch = None
        for j, label in enumerate(rs.labels):
            p = data[label].get(phase)
            if p is None:
                continue
            epoch = p["epoch"]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(layers))]
            ax.bar(xs, [100 * p["layers"].get(layer, 0.0) for layer in layers], width * 0.92, color=palette[label],
                   label=f"{label} ({100 * p['fraction']:.0f}% overall)")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{phase} (after epoch {epoch})" if phase != "start" else "start (initial weights)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("dead units (%)")
    axes[0, 0].set_ylim(0, 100)
    fig.suptitle("Dead units per activation layer: zero output or |f'(x)| < 1e-3 on every probe example "
                 f"(mean over seeds). {_run_title(rs)}", fontsize=9)
    return _save(fig, out)


RUN_FIGURES = {
    "learning_curves": learning_curves,
    "accuracy": accuracy_bars,
    "throughput": throughput_bars,
    "gradient_flow": gradient_flow,
    "dead_units": dead_units,
}


def run_figures(rs, out_dir: str | os.PathLike, *, size: Size | None = None) -> dict[str, Path]:
    """Every runs figure the records support, as ``<out_dir>/<name>.png``; returns ``{name: path}``.

    Gradient flow and dead units are drawn only when the runs recorded those diagnostics;
    throughput only when the records carry it.
    """
    out_dir = Path(out_dir)
    made = {}
    for name, fn in RUN_FIGURES.items():
        if name == "learning_curves" and not rs.has_history:  # records rebuilt from runs.csv have none
            continue
        if name == "gradient_flow" and not rs.has_gradient_flow:
            continue
        if name == "dead_units" and not rs.has_dead_units:
            continue
        if name == "throughput" and not any(rs.throughput(l, i) for l in rs.labels for i in rs.impls):
            continue
        made[name] = fn(rs, out_dir / f"{name}.png", size=size)
    return made


# -- benchmarks ----------------------------------------------------------------------------------------
_PROVIDER_COLOURS = {"actkit": "tab:blue", "eager": "tab:orange", "compile": "tab:green"}
MAX_BENCH_PANELS = 60


def bench_panels(payload: dict, *, activations: Sequence[str] | None = None, modes: Sequence[str] | None = None,
                 dtypes: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """The (activation, dtype, mode) panels a bench payload holds, in file order, after the filters."""
    panels = []
    for r in payload.get("records", []):
        key = (r["activation"], r["dtype"], r["mode"])
        if activations is not None and r["activation"] not in activations:
            continue
        if modes is not None and r["mode"] not in modes:
            continue
        if dtypes is not None and r["dtype"] not in dtypes:
            continue
        if key not in panels:
            panels.append(key)
    mode_order = {"fwd": 0, "bwd": 1, "fwd+bwd": 2}
    acts = list(dict.fromkeys(p[0] for p in panels))
    dts = list(dict.fromkeys(p[1] for p in panels))
    return sorted(panels, key=lambda p: (acts.index(p[0]), dts.index(p[1]), mode_order.get(p[2], 9)))


def bench(payload: dict, out: str | os.PathLike, *, activations: Sequence[str] | None = None,
          modes: Sequence[str] | None = None, dtypes: Sequence[str] | None = None, size: Size | None = None) -> Path:
    """GB/s against tensor size per provider, with the copy kernel of the same run as the roofline.

    One panel per activation x dtype (rows) and mode (columns). Bands span the p20-p80 times.
    ``payload`` is an ``actkit bench`` result (schema ``actkit.bench/1``).
    """
    panels = bench_panels(payload, activations=activations, modes=modes, dtypes=dtypes)
    if not panels:
        raise ValueError("the benchmark file holds no records for the chosen activations/modes/dtypes")
    if len(panels) > MAX_BENCH_PANELS:
        raise ValueError(f"{len(panels)} panels is too many for one figure (at most {MAX_BENCH_PANELS}); "
                         "choose some with --act, --mode or --dtype")
    row_keys = list(dict.fromkeys((a, d) for a, d, _ in panels))
    col_keys = list(dict.fromkeys(m for _, _, m in panels))
    fig, axes = _figure(size, (380 * len(col_keys) + 80, 300 * len(row_keys) + 90), len(row_keys), len(col_keys))
    records = payload["records"]
    providers = list(dict.fromkeys(r["provider"] for r in records))
    for (act, dtype), row in zip(row_keys, axes):
        for mode, ax in zip(col_keys, row):
            if (act, dtype, mode) not in panels:
                ax.set_visible(False)
                continue
            rs = [r for r in records if r["activation"] == act and r["dtype"] == dtype and r["mode"] == mode]
            copy = sorted({(r["numel"], r["copy_gbps"]) for r in rs if r.get("copy_gbps")})
            if copy:  # one copy timing per size; several providers carry the same value
                by_size: dict[int, list[float]] = {}
                for n, g in copy:
                    by_size.setdefault(n, []).append(g)
                xs = sorted(by_size)
                ax.plot(xs, [sum(by_size[n]) / len(by_size[n]) for n in xs], color="k", ls="--", lw=1.4,
                        label="copy (roofline)")
            for provider in providers:
                pr = sorted((r for r in rs if r["provider"] == provider), key=lambda r: r["numel"])
                if not pr:
                    continue
                xs = [r["numel"] for r in pr]
                colour = _PROVIDER_COLOURS.get(provider)
                ax.plot(xs, [r["gbps"] for r in pr], marker="o", ms=4, lw=1.6, color=colour,
                        label=f"{provider} ({pr[0].get('backend', '?')})")
                if all(r.get("p20_ms") and r.get("p80_ms") for r in pr):
                    low = [r["gbps"] * r["median_ms"] / r["p80_ms"] for r in pr]
                    high = [r["gbps"] * r["median_ms"] / r["p20_ms"] for r in pr]
                    ax.fill_between(xs, low, high, color=colour, alpha=0.15, lw=0)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{act} {mode} {dtype}", fontsize=10)
            ax.set_xlabel("elements")
            ax.set_ylabel("GB/s")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3, which="both")
            if not any(a.get_legend() for a in axes.ravel()):  # one legend, in the first panel
                ax.legend(fontsize=7)
    env = payload.get("environment", {})
    fig.suptitle(f"Effective bandwidth (bytes that must move / median time; band: p20-p80) on "
                 f"{env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}", fontsize=10)
    return _save(fig, out)
