"""The ``actkit`` command: thin Typer commands that call the library and render with rich."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import actkit
from actkit import registry
from actkit.backend import available_backends, triton_problem

app = typer.Typer(help="Activation functions as fused Triton kernels: list, benchmark, train, compare.",
                  no_args_is_help=True, rich_markup_mode="rich")
console = Console()


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"actkit {actkit.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True,
                                                help="Show the version and exit.")) -> None:
    """actkit: which activation, and at what cost?"""


def spec_record(spec: registry.ActivationSpec) -> dict:
    """A JSON-ready description of one registry entry."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "formula": spec.formula,
        "params": [{"name": p.name, "default": p.default, "doc": p.doc} for p in spec.params],
        "output_range": spec.output_range,
        "monotonic": spec.monotonic,
        "smooth": spec.smooth,
        "zero_centred": spec.zero_centred,
        "saturating": spec.saturating,
        "differentiable": spec.differentiable,
        "saves_for_backward": spec.saves,
        "saves_rule": spec.saves_rule or None,
        "native_reference": spec.native,
        "class_name": spec.class_name,
        "notes": spec.notes,
        "kind": spec.kind.name,
    }


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


@app.command("list")
def list_activations(as_json: bool = typer.Option(False, "--json", help="Print machine-readable specs.")) -> None:
    """Every activation: formula, range, properties, and the backends this machine can run."""
    backends = available_backends()
    if as_json:
        typer.echo(json.dumps({"backends": backends, "triton_problem": triton_problem(),
                               "activations": [spec_record(s) for s in registry.REGISTRY.values()]}, indent=2))
        return
    rules = "; ".join(f"{s.name}: {s.saves_rule}" for s in registry.REGISTRY.values() if s.saves_rule)
    table = Table(title="actkit activations", header_style="bold",
                  caption="mono: monotonic; smooth: C1; zero-c.: zero-centred; satur.: f' -> 0 on both sides; "
                          "saves: the tensor kept for backward (y costs nothing where the next layer keeps it)"
                          + (f"; * by parameters ({rules})" if rules else ""))
    table.add_column("name", no_wrap=True, style="bold cyan")
    table.add_column("formula", overflow="fold", min_width=24)
    table.add_column("range", no_wrap=True)
    table.add_column("params", overflow="fold")
    for column in ("mono", "smooth", "zero-c.", "satur.", "saves"):
        table.add_column(column, no_wrap=True, justify="center")
    for spec in registry.REGISTRY.values():
        name = spec.name + (f"\n[dim]{', '.join(spec.aliases)}[/]" if spec.aliases else "")
        params = ", ".join(f"{p.name}={p.default:g}" for p in spec.params) or "-"
        saves = spec.saves + ("*" if spec.saves_rule else "")
        if spec.kind.learnable:  # a learnable parameter (initial value shown), saved with x
            params, saves = f"{params} [dim](learnable)[/]", f"{saves} + {spec.params[0].name}"
        if spec.kind.gated:  # a gated linear unit keeps its two inputs (x's halves) and recomputes act(a)
            saves = "a, b"
        table.add_row(name, spec.formula, spec.output_range, params, _mark(spec.monotonic), _mark(spec.smooth),
                      _mark(spec.zero_centred), _mark(spec.saturating),
                      saves if spec.differentiable else "[dim]no grad[/]")
    console.print(table)
    runnable = ", ".join(f"[green]{b}[/]" if ok else f"[dim]{b} (unavailable)[/]" for b, ok in backends.items())
    console.print(f"Backends on this machine: {runnable}. Configured: [bold]{actkit.get_backend()}[/].")
    problem = triton_problem()
    if problem:
        console.print(f"[yellow]Triton kernels unavailable:[/] {problem}", highlight=False)


# Commands defined in their own modules register themselves here, one import each.
# (keep this block at the end of the file)
if __name__ == "__main__":
    # python -m actkit.cli.main (torchrun -m ...): this file runs as __main__, a module apart from
    # actkit.cli.main, on which the command modules register. Run that one.
    from actkit.cli.main import app as _app

    _app()
else:
    from . import plot as _plot  # noqa: E402,F401
    from . import train as _train  # noqa: E402,F401
    from . import bench as _bench  # noqa: E402,F401
    from . import report as _report  # noqa: E402,F401
    from . import memory as _memory  # noqa: E402,F401
    from . import roofline as _roofline  # noqa: E402,F401
