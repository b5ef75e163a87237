"""The ``actkit`` command: the Typer app, ``--version``, and the registration of every command.

The command modules define plain functions and never import this one; each is registered here through
:func:`~actkit.cli.common.reports_errors`, the one place where the library's errors become a one-line
message and an exit code. None of them imports torch at import time, so ``--help``, ``--version`` and
shell completion stay fast.
"""
from __future__ import annotations

from typing import Callable, Optional

import typer

import actkit

from . import bench, listing, memory, plot, report, roofline, train
from .common import reports_errors

app = typer.Typer(help="Activation functions as fused Triton kernels: list, benchmark, train, compare.",
                  no_args_is_help=True, rich_markup_mode="rich")
plot_app = typer.Typer(help="Draw figures (PNG): activation curves, training runs, benchmarks.",
                       no_args_is_help=True, rich_markup_mode="rich")

# In the order ``actkit --help`` lists them.
COMMANDS = {
    "list": listing.list_command,
    "boundary": plot.boundary_command,
    "train": train.train_command,
    "bench": bench.bench_command,
    "bench-table": bench.bench_table_command,
    "bench-glu-block": bench.bench_glu_block_command,
    "report": report.report_command,
    "memory": memory.memory_command,
    "roofline": roofline.roofline_command,
    "roofline-table": roofline.roofline_table_command,
}
PLOT_COMMANDS = {
    "curves": plot.curves_command,
    "runs": plot.runs_command,
    "bench": plot.bench_command,
}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"actkit {actkit.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True,
                                                help="Show the version and exit.")) -> None:
    """actkit: which activation, and at what cost?"""


def register(name: str, command: Callable[..., None], on: typer.Typer = app) -> None:
    """Make ``command`` (a function whose parameters are Typer options) ``actkit <name>``, its known errors
    one line each."""
    on.command(name)(reports_errors(command))


for _name, _command in COMMANDS.items():
    register(_name, _command)
for _name, _command in PLOT_COMMANDS.items():
    register(_name, _command, on=plot_app)
app.add_typer(plot_app, name="plot")

if __name__ == "__main__":  # python -m actkit.cli.main ..., as torchrun and SLURM scripts start workers
    app()
