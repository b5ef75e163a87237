"""What the ``actkit`` commands share: the consoles, the one-line error, number formats, option parsers.

Nothing here imports torch: ``actkit --help`` imports every command module, and the commands import
the library inside their functions.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # rich's progress and table modules load when a command draws one, not for --help
    from rich.progress import Progress, ProgressColumn
    from rich.table import Table

console = Console()
err_console = Console(stderr=True, emoji=False)


# --------------------------------------------------------------------------------------------
# Errors: one line on stderr and an exit code, never a traceback for bad input
# --------------------------------------------------------------------------------------------
USAGE = 2  # bad options or input files
NOT_FOUND = 1  # a dataset that is not on this machine (and was not to be downloaded)
INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def error_line(message: str) -> None:
    """``Error: <message>`` as one line on stderr."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``Error: <message>`` as one line on stderr and exit with ``code``."""
    error_line(message)
    raise typer.Exit(code)


def interrupted(message: str) -> NoReturn:
    """After Ctrl-C: say what was kept and how to continue, exit 130."""
    err_console.print(escape(message), soft_wrap=True, highlight=False)
    raise typer.Exit(INTERRUPTED)


def exit_code(exc: BaseException) -> Optional[int]:
    """The exit code of a known problem with the user's input, None for anything else (a bug: traceback).

    The library reports bad input as ValueError (BenchError, RunsError, TrainError, DatasetError,
    LaunchError and the registry's lookups derive from it). The two that do not are looked up only
    where their module is loaded: an exception of a module that was never imported cannot be raised.
    """
    data = sys.modules.get("actkit.data")
    if data is not None and isinstance(exc, data.DatasetNotFoundError):  # a FileNotFoundError
        return NOT_FOUND
    backend = sys.modules.get("actkit.backend")
    if isinstance(exc, ValueError) or (backend is not None and isinstance(exc, backend.BackendError)):
        return USAGE
    return None


def reports_errors(command: Callable) -> Callable:
    """Wrap a command so that the library's known errors end it with :func:`fail` (main registers every
    command through this)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            code = exit_code(exc)
            if code is None:
                raise
            fail(str(exc), code)
    return run


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def wide_console(width: int) -> Console:
    """The console for a table: itself on a terminal or where $COLUMNS says how wide to be; for a file or
    pipe (no width to fit), one at least ``width`` wide, so that a table is not folded to the 80 columns
    rich assumes there."""
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(width=max(console.width, width))


def unsqueezed_width(table: Table) -> int:
    """The narrowest width at which rich squeezes none of ``table``'s columns: a column that does not wrap
    at its widest cell, the others at their longest word or min_width. (rich measures a column that does
    not wrap by its longest word too, and crops the table where the width is short of that.)"""
    from rich.measure import Measurement

    options = console.options.update_width(10_000)
    _, right, _, left = table.padding
    total = (len(table.columns) + 1 if table.show_edge else len(table.columns) - 1) if table.box else 0
    for i, column in enumerate(table.columns):
        cells = [Measurement.get(console, options, cell) for cell in (column.header, *column.cells)]
        widest = max(m.maximum if column.no_wrap else m.minimum for m in cells)
        pad_left, pad_right = (0, right) if table.collapse_padding else (left, right)  # as rich counts them
        if not table.pad_edge:
            pad_left, pad_right = (0 if i == 0 else pad_left), (0 if i == len(table.columns) - 1 else pad_right)
        total += max(widest, column.min_width or 0) + pad_left + pad_right
    return total


@dataclass(frozen=True)
class Col:
    """A column of a :func:`fitted_table`: its header, rich's settings for it, and whether it moves under
    the row (``stack``, as ``label value``) where the table does not fit."""
    header: str
    justify: str = "right"
    no_wrap: bool = True
    stack: bool = False
    label: str = ""  # the name of a stacked value, where the header alone is ambiguous
    style: Optional[str] = None
    overflow: str = "ellipsis"
    min_width: Optional[int] = None


def fitted_table(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: Optional[int], *,
                 into: int = 0, sections: Sequence[bool] = (), **table) -> "Table":
    """A table of ``rows``. Where it needs more than ``width`` columns (None: never), the columns marked
    ``stack`` leave, and their values stand under each row in the ``into``-th remaining column (which
    then takes the width left), e.g. ``p20-p80 42-46 · 1st call 0.61 s``."""
    from rich.table import Table

    def build(cols: Sequence[Col], cells: Sequence[Sequence[str]], flexible: Optional[int] = None) -> Table:
        out = Table(**table)
        for i, c in enumerate(cols):
            out.add_column(c.header, justify=c.justify, no_wrap=c.no_wrap and i != flexible, style=c.style,
                           overflow=c.overflow, min_width=c.min_width, ratio=1 if i == flexible else None)
        for i, row in enumerate(cells):
            out.add_row(*row, end_section=i < len(sections) and sections[i])
        return out

    wide = build(columns, rows)
    if width is None or unsqueezed_width(wide) <= width or not any(c.stack for c in columns):
        return wide
    kept = [i for i, c in enumerate(columns) if not c.stack]
    target = kept[into]
    narrow = []
    for row in rows:
        details = " · ".join(f"{c.label or c.header} {row[i]}" for i, c in enumerate(columns)
                             if c.stack and row[i] not in ("", "-"))
        cell = row[target] + ("\n" if row[target] and details else "") + (f"[dim]{details}[/]" if details else "")
        narrow.append([cell if i == target else row[i] for i in kept])
    return build([columns[i] for i in kept], narrow, flexible=into)


def fit_width(out: Console) -> Optional[int]:
    """The width a table must fit in: the terminal's, or $COLUMNS; None for a file or pipe, where a table keeps
    all its columns (:func:`fitted_table`)."""
    return out.width if out.is_terminal or os.environ.get("COLUMNS", "").isdigit() else None


def progress_bar(*more: ProgressColumn, description: str = "[progress.description]{task.description}",
                 on: Console = console, transient: bool = False) -> Progress:
    """Description, bar, done/total and elapsed time, then ``more`` columns."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), *more,
                    console=on, transient=transient)


def stop(progress: Progress) -> None:
    if progress.live.is_started:  # stopping a display that never started prints an empty line
        progress.stop()


def wrote(path: Path, what: str) -> None:
    size = path.stat().st_size
    console.print(f"Wrote {what}: [bold]{path}[/] ({size / 1024:.1f} KiB)", soft_wrap=True, highlight=False)


def pct(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def size_of(nbytes: Optional[float]) -> str:
    """Bytes as B/KiB/MiB/GiB, ``n/m`` (dim) where not measured."""
    from actkit.results import format_bytes

    return "[dim]n/m[/]" if nbytes is None else format_bytes(nbytes)


# --------------------------------------------------------------------------------------------
# Option values
# --------------------------------------------------------------------------------------------
def comma_list(value: Optional[str]) -> Optional[list[str]]:
    """``"a, b,"`` -> ``["a", "b"]``; None for no option or nothing in it."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()] or None


def activation_names(text: str) -> list[str]:
    """Comma-separated names -> canonical registry names (aliases accepted), duplicates dropped
    (:func:`actkit.selection.activation_names`; its errors are one line through :func:`reports_errors`)."""
    from actkit import selection

    return selection.activation_names(text)


def output_file(path: Optional[Path], option: str, example: str) -> Optional[Path]:
    """A file the command will write: not an existing directory."""
    if path is not None and path.is_dir():
        fail(f"{option} {path} is a directory; give a file path such as {example}")
    return path
