"""``actkit memory``: bytes autograd keeps for backward in a network, PyTorch against actkit."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actkit import memory, results, selection

from .main import app, console


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def _parse_bits(value: str) -> list[int]:
    bits = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if not part.isdigit() or not 0 <= int(part) <= 8:
            _fail(f"bad --saved-bits {part!r}: give integers from 1 to 8 (0: exact), e.g. --saved-bits 2,3")
        if int(part):
            bits.append(int(part))
    return bits


@app.command("memory")
def memory_command(
    act: str = typer.Option("relu,leaky_relu,elu,gelu,silu,mish", "--act", "-a",
                            help="Activations (comma-separated) or all."),
    saved_bits: str = typer.Option("", "--saved-bits",
                                   help="Also measure actkit's few-bit backward at these bit widths, e.g. 1,2,3."),
    model: str = typer.Option("resnet18", "--model", help=f"One of: {', '.join(memory.MODELS)}."),
    batch: int = typer.Option(8, "--batch", help="Images per step."),
    size: int = typer.Option(64, "--size", help="Image height and width."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON (atomically)."),
) -> None:
    """Bytes autograd keeps for backward in one training step of ResNet-18 with its ReLUs replaced by each
    activation: PyTorch's own op against actkit (and actkit's few-bit backward). Each storage counts once,
    parameters included (reported apart): an activation's output that the next layer saves too costs nothing."""
    try:
        acts = selection.activation_names(act, selection.NETWORK_SLOT)
        device = selection.parse_device(device)
    except ValueError as exc:
        _fail(str(exc))
    bits = _parse_bits(saved_bits)
    if batch < 1 or size < 32:
        _fail(f"--batch must be >= 1 and --size >= 32 (ResNet-18 downsamples 32x), got {batch} and {size}")
    if model not in memory.MODELS:
        _fail(f"unknown --model {model!r}; choose one of: {', '.join(memory.MODELS)}")
    if json_path is not None and json_path.is_dir():
        _fail(f"--json {json_path} is a directory; give a file path")
    rows = []
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task("ResNet-18 steps", total=len(acts))
        for name in acts:
            progress.update(task, description=f"{name}")
            rows += memory.network_comparison([name], bits, model=model, batch=batch, image_size=size, device=device)
            progress.advance(task)
    table = Table(title=f"Saved for backward: {model}, batch {batch}, {size}x{size}, {device}", header_style="bold",
                  caption="MB = 10^6 bytes, each storage once; 'activations' excludes the parameters the layers "
                          "save (the same in every row). vs torch: below 1, actkit keeps less.")
    for column in ("activation", "impl", "saved MB", "activations MB", "vs torch", "activations vs torch"):
        table.add_column(column, justify="left" if column in ("activation", "impl") else "right")
    for r in rows:
        impl = r["impl"] + (f" {r['saved_bits']}-bit" if r["saved_bits"] else "")
        ratio = r["vs_torch"]
        colour = "green" if ratio < 0.995 else "red" if ratio > 1.005 else "white"
        table.add_row(r["activation"], impl, f"{r['saved_bytes'] / 1e6:.1f}", f"{r['activation_bytes'] / 1e6:.1f}",
                      f"[{colour}]{ratio:.3f}[/]",
                      "-" if r["activation_vs_torch"] is None else f"{r['activation_vs_torch']:.3f}")
    console.print(table)
    if json_path is not None:
        payload = {"schema": "actkit.memory/1", "environment": results.environment(device),
                   "config": {"model": model, "batch": batch, "image_size": size, "saved_bits": bits},
                   "records": rows}
        console.print(f"wrote {results.write_json(json_path, payload)}", highlight=False)
