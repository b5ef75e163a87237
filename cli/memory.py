"""``actkit memory``: bytes autograd keeps for backward in a network, PyTorch against actkit."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from actkit.names import MEMORY_MODELS

from .common import console, fail, output_file, progress_bar

if TYPE_CHECKING:
    from rich.table import Table


def _parse_bits(value: str) -> list[int]:
    bits = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if not part.isdigit() or not 0 <= int(part) <= 8:
            fail(f"bad --saved-bits {part!r}: give integers from 1 to 8 (0: exact), e.g. --saved-bits 2,3")
        if int(part):
            bits.append(int(part))
    return bits


def _parse_policies(value: str) -> list[str]:
    from actkit.registry import SAVE_POLICIES

    policies = [p.strip() for p in value.split(",") if p.strip()]
    for policy in policies:
        if policy not in SAVE_POLICIES:
            fail(f"bad --saves {policy!r}: give save policies from {', '.join(SAVE_POLICIES)}, e.g. --saves torch,y")
    if not policies:
        fail(f"--saves is empty: give save policies from {', '.join(SAVE_POLICIES)}, e.g. --saves torch,y")
    return list(dict.fromkeys(policies))


def memory_command(
    act: str = typer.Option("relu,leaky_relu,elu,gelu,silu,mish", "--act", "-a",
                            help="Activations (comma-separated) or all."),
    saves: str = typer.Option("torch,y", "--saves",
                              help="actkit's save policies to measure, comma-separated: torch (keep what torch's op "
                                   "keeps: the default), y (the output wherever f' reads it), x (the input)."),
    saved_bits: str = typer.Option("", "--saved-bits",
                                   help="Also measure actkit's few-bit backward at these bit widths, e.g. 1,2,3."),
    model: str = typer.Option("resnet18", "--model", help=f"One of: {', '.join(MEMORY_MODELS)}."),
    batch: int = typer.Option(8, "--batch", help="Images per step."),
    size: int = typer.Option(64, "--size", help="Image height and width."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON (atomically)."),
) -> None:
    """Bytes autograd keeps for backward in one training step of ResNet-18 with its ReLUs replaced by each
    activation: PyTorch's own op against actkit under each save policy (and actkit's few-bit backward). Each
    storage counts once, parameters included (reported apart): an activation's output that the next layer
    saves too costs nothing."""
    from actkit import memory, results, selection

    acts = selection.activation_names(act, selection.NETWORK_SLOT)
    device = selection.parse_device(device)
    bits = _parse_bits(saved_bits)
    policies = _parse_policies(saves)
    if batch < 1 or size < 32:
        fail(f"--batch must be >= 1 and --size >= 32 (ResNet-18 downsamples 32x), got {batch} and {size}")
    if model not in MEMORY_MODELS:
        fail(f"unknown --model {model!r}; choose one of: {', '.join(MEMORY_MODELS)}")
    output_file(json_path, "--json", "results/memory.json")
    rows = []
    with progress_bar(description="[bold]{task.description}") as progress:
        task = progress.add_task("ResNet-18 steps", total=len(acts))
        for name in acts:
            progress.update(task, description=f"{name}")
            rows += memory.network_comparison([name], bits, policies, model=model, batch=batch, image_size=size,
                                              device=device)
            progress.advance(task)
    console.print(memory_table(rows, f"Saved for backward: {model}, batch {batch}, {size}x{size}, {device}"))
    if json_path is not None:
        payload = {"schema": "actkit.memory/1", "environment": results.environment(device),
                   "config": {"model": model, "batch": batch, "image_size": size, "saved_bits": bits,
                              "saves": policies},
                   "records": rows}
        console.print(f"wrote {results.write_json(json_path, payload)}", highlight=False)


def memory_table(rows: list[dict], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, header_style="bold",
                  caption="MB = 10^6 bytes, each storage once; 'activations' excludes the parameters the layers "
                          "save (the same in every row). vs torch: below 1, actkit keeps less.")
    for column in ("activation", "impl", "saved MB", "activations MB", "vs torch", "activations vs torch"):
        table.add_column(column, justify="left" if column in ("activation", "impl") else "right",
                         no_wrap=column == "impl")
    for r in rows:
        impl = r["impl"] + (f" {r['saved_bits']}-bit" if r["saved_bits"] else
                            f" saves={r['saves']}" if r.get("saves") not in (None, "torch") else "")
        ratio = r["vs_torch"]
        colour = "green" if ratio < 0.995 else "red" if ratio > 1.005 else "white"
        table.add_row(r["activation"], impl, f"{r['saved_bytes'] / 1e6:.1f}", f"{r['activation_bytes'] / 1e6:.1f}",
                      f"[{colour}]{ratio:.3f}[/]",
                      "-" if r["activation_vs_torch"] is None else f"{r['activation_vs_torch']:.3f}")
    return table
