"""``actkit plot curves|runs|bench`` and ``actkit boundary``: figures as PNG files.

Every command writes one PNG where ``--out`` says and prints the path it wrote. Errors
(unknown activation, missing file, bad range) are one line on stderr with exit code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.console import Console
from rich.table import Table

from .main import app

plot_app = typer.Typer(help="Draw figures (PNG): activation curves, training runs, benchmarks.",
                       no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(plot_app, name="plot")
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def wrote(path: Path, what: str) -> None:
    size = path.stat().st_size
    console.print(f"Wrote {what}: [bold]{path}[/] ({size / 1024:.1f} KiB)", soft_wrap=True, highlight=False)


def parse_activations(text: str, need=None) -> list[str]:
    """Comma-separated names -> canonical registry names (:func:`actkit.selection.activation_names`)."""
    from actkit import selection

    try:
        return selection.activation_names(text, need or selection.ANY)
    except ValueError as exc:
        fail(str(exc))


def parse_size(width: Optional[int], height: Optional[int]) -> Optional[tuple[int, int]]:
    if width is None and height is None:
        return None
    if width is None or height is None:
        fail("give both --width and --height (pixels), or neither")
    if width < 50 or height < 50 or width > 20000 or height > 20000:
        fail(f"figure size must be between 50 and 20000 pixels per side, got {width}x{height}")
    return width, height


def pick_device(device: str) -> str:
    from actkit import selection

    try:
        return selection.parse_device(device)
    except ValueError as exc:
        fail(str(exc))


def png_path(path: Path) -> Path:
    if path.suffix.lower() != ".png":
        fail(f"figures are written as PNG; give an --out path ending in .png, got {str(path)!r}")
    if path.exists() and path.is_dir():
        fail(f"--out {str(path)!r} is a directory; give a file name ending in .png")
    return path


def existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        fail(f"{what} {str(path)!r} does not exist")
    return path


WIDTH = typer.Option(None, "--width", help="Image width in pixels (with --height).", min=1)
HEIGHT = typer.Option(None, "--height", help="Image height in pixels (with --width).", min=1)


@plot_app.command("curves")
def plot_curves(
    act: str = typer.Option("relu,elu,gelu,mish", "--act", "-a", help="Activations, comma-separated."),
    range_: Tuple[float, float] = typer.Option((-5.0, 5.0), "--range", help="x range: LOW HIGH."),
    out: Path = typer.Option(Path("curves.png"), "--out", "-o", help="PNG file to write."),
    points: int = typer.Option(1001, "--points", help="Samples along x.", min=2, max=1_000_000),
    device: str = typer.Option("auto", "--device", help="auto (cuda if present), cpu or cuda."),
    width: Optional[int] = WIDTH,
    height: Optional[int] = HEIGHT,
) -> None:
    """Each activation and its derivative side by side (f' from actkit's backward, not a formula)."""
    from actkit import plots

    from actkit import selection

    names = parse_activations(act, selection.CURVE)
    png_path(out)
    lo, hi = range_
    if not lo < hi:
        fail(f"--range needs LOW < HIGH, got {lo:g} {hi:g}")
    size = parse_size(width, height)
    try:
        path = plots.curves(names, out, lo=lo, hi=hi, points=points, device=pick_device(device), size=size)
    except ValueError as exc:
        fail(str(exc))
    wrote(path, f"curves of {', '.join(names)}")


@app.command("boundary")
def boundary(
    act: str = typer.Option("relu,leaky_relu,elu", "--act", "-a", help="Activations, comma-separated."),
    dataset: str = typer.Option("moons", "--dataset", "-d", help="moons, circles or spirals (generated, seeded)."),
    out: Path = typer.Option(Path("boundary.png"), "--out", "-o", help="PNG file to write."),
    samples: int = typer.Option(400, "--samples", help="Training points (the test set has as many).",
                                min=8, max=100_000),
    noise: Optional[float] = typer.Option(None, "--noise", help="Gaussian noise (default per dataset).", min=0.0),
    hidden: int = typer.Option(32, "--hidden", help="Units per hidden layer.", min=1, max=4096),
    depth: int = typer.Option(3, "--depth", help="Hidden layers.", min=1, max=64),
    steps: int = typer.Option(600, "--steps", help="Full-batch Adam steps.", min=1, max=100_000),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate.", min=0.0),
    seed: int = typer.Option(0, "--seed", help="Seed for the data and the initial weights."),
    width: Optional[int] = WIDTH,
    height: Optional[int] = HEIGHT,
) -> None:
    """Train a small MLP per activation on a 2-D toy problem and draw the decision regions side by side."""
    from actkit import plots, selection, toy

    names = parse_activations(act, selection.TOY_MLP)  # refuse what cannot be trained before training anything
    png_path(out)
    key = dataset.strip().lower()
    if key not in toy.DATASETS:
        fail(f"unknown dataset {dataset!r}; choose one of: {', '.join(toy.DATASETS)}")
    size = parse_size(width, height)
    x, y = toy.make_dataset(key, samples, noise=noise, seed=seed)
    x_test, y_test = toy.make_dataset(key, samples, noise=noise, seed=seed + 10_000)
    results = []
    with console.status("training") as status:
        for name in names:
            status.update(f"training {name} on {key} ({steps} steps)")
            results.append(toy.train_toy(name, x, y, x_test, y_test, steps=steps, lr=lr, hidden=hidden,
                                         depth=depth, seed=seed))
    table = Table(title=f"{key}: MLP {depth}x{hidden}, {steps} Adam steps, seed {seed}", header_style="bold")
    for column in ("activation", "train acc", "test acc", "final loss", "seconds"):
        table.add_column(column, justify="left" if column == "activation" else "right")
    for r in results:
        table.add_row(r.activation, f"{100 * r.train_accuracy:.1f}%", f"{100 * r.test_accuracy:.1f}%",
                      f"{r.final_loss:.4f}", f"{r.seconds:.2f}")
    console.print(table)
    try:
        path = plots.boundaries(results, x, y, out, dataset=key, size=size)
    except ValueError as exc:
        fail(str(exc))
    wrote(path, "decision regions")


@plot_app.command("runs")
def plot_runs(
    run_dir: Path = typer.Argument(..., help="The directory actkit train wrote (--out), or one run JSON file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for the PNGs \\[default: RUN_DIR/figures]."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline activation \\[default: the sweep's]."),
    width: Optional[int] = WIDTH,
    height: Optional[int] = HEIGHT,
) -> None:
    """Learning curves (mean ± 95% CI band over seeds), accuracy and throughput bars, gradient flow, dead units."""
    from actkit import plots, runs

    size = parse_size(width, height)
    try:
        rs = runs.load(run_dir, baseline)
    except runs.RunsError as exc:
        fail(str(exc))
    if out is None:
        out = (run_dir if run_dir.is_dir() else run_dir.parent) / "figures"
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} is a file; give a directory for the figures")
    try:
        made = plots.run_figures(rs, out, size=size)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"{len(rs.records)} run(s): {', '.join(rs.labels)} x {', '.join(rs.impls)}, "
                  f"seeds {', '.join(map(str, rs.seeds))}", highlight=False)
    for name, path in made.items():
        wrote(path, name.replace("_", " "))
    missing = [n for n in plots.RUN_FIGURES if n not in made]
    if missing:
        console.print(f"[dim]Not drawn (not in the records): {', '.join(missing)}[/]")


def _csv_option(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@plot_app.command("bench")
def plot_bench(
    bench_json: Path = typer.Argument(..., help="A result file of actkit bench (--json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG file \\[default: next to BENCH.json, .png]."),
    act: Optional[str] = typer.Option(None, "--act", "-a", help="Only these activations (comma-separated)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Only these modes: fwd, bwd, fwd+bwd."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Only these dtypes: fp32, bf16, fp16."),
    width: Optional[int] = WIDTH,
    height: Optional[int] = HEIGHT,
) -> None:
    """GB/s against tensor size per provider, with the copy roofline measured in the same run."""
    from actkit import bench, plots

    existing_file(bench_json, "benchmark file")
    out = png_path(out if out is not None else bench_json.with_suffix(".png"))
    size = parse_size(width, height)
    try:
        payload = bench.load(bench_json)
    except bench.BenchError as exc:
        fail(str(exc))
    acts = parse_activations(act) if act else None
    try:
        path = plots.bench(payload, out, activations=acts, modes=_csv_option(mode), dtypes=_csv_option(dtype),
                           size=size)
    except ValueError as exc:
        fail(str(exc))
    wrote(path, "benchmark figure")
