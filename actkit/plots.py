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
