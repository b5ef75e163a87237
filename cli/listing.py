"""``actkit list``: every activation of the registry, as a table or JSON."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from .common import console, unsqueezed_width

if TYPE_CHECKING:
    from rich.table import Table

PROPERTIES = (("mono", "monotonic"), ("smooth", "smooth"), ("zero-c.", "zero_centred"), ("satur.", "saturating"))
"""The yes/no properties of a spec: the column (or the word, stacked) and the spec's field."""
LEGEND = ("mono: monotonic; smooth: C1; zero-c.: zero-centred; satur.: f' -> 0 on both sides; "
          "saves: the tensor kept for backward, what torch keeps; (y): kept with saves='y' instead (y costs "
          "nothing where the next layer keeps it, but an in-place change of y then breaks backward)")
FORMULA_WIDTH = 40
"""The wide table is used where the formula column gets at least this many characters; else each row's
range, parameters and properties are stacked under its formula."""


def spec_record(spec) -> dict:
    """A JSON-ready description of one registry entry (an :class:`actkit.registry.ActivationSpec`)."""
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
        "saves_for_backward": _saved(spec, "torch"),
        "saves_with_saves_y": _saved(spec, "y"),
        "torch_saves": spec.torch_saves,
        "saves_rule": spec.saves_rule or None,
        "native_reference": spec.native,
        "class_name": spec.class_name,
        "notes": spec.notes,
        "kind": spec.kind.name,
    }


def _saved(spec, policy: str) -> str:
    """What a spec keeps for backward at its defaults under a save policy (the other kinds: what they keep)."""
    return spec.saves_under(policy, spec.defaults) if spec.kind.save_policy else spec.saves


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


def _cells(spec) -> dict:
    """The text of each column for one activation."""
    params = escape(", ".join(f"{p.name}={p.default:g}" for p in spec.params)) or "-"
    by_default, by_y = _saved(spec, "torch"), _saved(spec, "y") + ("*" if spec.saves_rule else "")
    saves = by_y if by_default == by_y else f"{by_default} ({by_y})"
    if spec.kind.learnable:  # a learnable parameter (initial value shown), saved with x
        params, saves = f"{params} [dim](learnable)[/]", f"{saves} + {spec.params[0].name}"
    if spec.kind.gated:  # a gated linear unit keeps its two inputs (x's halves) and recomputes act(a)
        saves = "a, b"
    # The registry's text is not markup: "[min_val, max_val]" is a range, not a style.
    return {"name": escape(spec.name) + (f"\n[dim]{escape(', '.join(spec.aliases))}[/]" if spec.aliases else ""),
            "formula": escape(spec.formula), "range": escape(spec.output_range), "params": params,
            "saves": saves if spec.differentiable else "[dim]no grad[/]",
            **{column: _mark(getattr(spec, field)) for column, field in PROPERTIES}}


def wide_table(specs, caption: str) -> Table:
    """A column for everything: for a terminal of some 170 columns."""
    from rich.table import Table

    table = Table(title="actkit activations", header_style="bold", caption=caption)
    table.add_column("name", no_wrap=True, style="bold cyan")
    table.add_column("formula", overflow="fold", min_width=FORMULA_WIDTH)
    table.add_column("range", no_wrap=True)
    table.add_column("params", no_wrap=True)
    for column, _ in PROPERTIES:
        table.add_column(column, no_wrap=True, justify="center")
    table.add_column("saves", no_wrap=True, justify="center")
    for spec in specs:
        cells = _cells(spec)
        table.add_row(*(cells[c.header] for c in table.columns))
    return table


def stacked_table(specs, caption: str) -> Table:
    """Name, formula and saves; under each formula its range, parameters and the properties that hold:
    readable in 80 columns."""
    from rich.table import Table

    table = Table(title="actkit activations", header_style="bold",
                  caption=caption + ". Under each formula: its range, parameters and the properties that hold")
    longest = max(len(word) for s in specs for word in (s.name, *s.aliases))  # aliases wrap, names do not
    table.add_column("name", style="bold cyan", min_width=longest, max_width=longest)
    table.add_column("formula", overflow="fold", ratio=1)
    table.add_column("saves", justify="center", no_wrap=True)
    for spec in specs:
        cells = _cells(spec)
        held = [column for column, field in PROPERTIES if getattr(spec, field)]
        details = [f"range {cells['range']}"] + ([f"params {cells['params']}"] if spec.params else [])
        details += [", ".join(held)] if held else []
        table.add_row(cells["name"], cells["formula"] + "\n[dim]" + "; ".join(details) + "[/]", cells["saves"])
    return table


def activations_table(specs, width: int) -> Table:
    """The wide table where it fits in ``width`` columns, else the stacked one."""
    rules = "; ".join(f"{s.name}: {s.saves_rule}" for s in specs if s.saves_rule)
    caption = LEGEND + (f"; * by parameters ({rules})" if rules else "")
    wide = wide_table(specs, caption)
    return wide if unsqueezed_width(wide) <= width else stacked_table(specs, caption)


def list_command(as_json: bool = typer.Option(False, "--json", help="Print machine-readable specs.")) -> None:
    """Every activation: formula, range, properties, and the backends this machine can run."""
    from actkit import get_backend, registry
    from actkit.backend import available_backends, triton_problem

    backends = available_backends()
    specs = list(registry.REGISTRY.values())
    if as_json:
        typer.echo(json.dumps({"backends": backends, "triton_problem": triton_problem(),
                               "activations": [spec_record(s) for s in specs]}, indent=2))
        return
    console.print(activations_table(specs, console.width))
    runnable = ", ".join(f"[green]{b}[/]" if ok else f"[dim]{b} (unavailable)[/]" for b, ok in backends.items())
    console.print(f"Backends on this machine: {runnable}. Configured: [bold]{get_backend()}[/].")
    problem = triton_problem()
    if problem:
        console.print(f"[yellow]Triton kernels unavailable:[/] {problem}", highlight=False)
