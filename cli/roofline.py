"""``actkit roofline`` and ``actkit roofline-table``: thin commands over :mod:`actkit.bench.roofline`."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import typer
from rich import box
from rich.table import Table

from actkit.bench import BenchError, parse_activations, parse_dtypes
from actkit.bench import compileonly, roofline
from actkit.bench import sass as sass_mod

from .main import app, console


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, no traceback (exit 2: bad usage)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=code)


def _headroom_cell(value: float) -> str:
    colour = "red" if value < 1 else "yellow" if value < roofline.HEADROOM_BAR else "green"
    return f"[{colour}]{value:.2f}[/]"


def result_table(result: Mapping[str, Any], only_below: Optional[float] = None) -> Table:
    """The rows of one arch's result: bytes and instructions per element, headroom per GPU."""
    gpus = [g["name"] for g in result["model"]["gpus"]]
    table = Table(title=f"[bold]sm_{result['arch']}[/]: per element, from the SASS (triton {result['triton']}); "
                        f"headroom on {', '.join(gpus)} (binds: on {gpus[-1]})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  header_style="bold")
    for name in ["activation", "launch", "dtype", "B/elem", "instr/elem"]:
        table.add_column(name, justify="left" if name in ("activation", "launch", "dtype") else "right",
                         no_wrap=name != "launch")
    for g in gpus:
        table.add_column(g, justify="right", no_wrap=True)
    table.add_column("binds", no_wrap=True)
    for r in result["rows"]:
        if only_below is not None and min(r["gpus"][g]["headroom"] for g in gpus) >= only_below:
            continue
        table.add_row(r["activation"], r["what"], r["dtype"], f"{r['bytes_per_element']:.3g}",
                      f"{r['instructions_per_element']:.1f}",
                      *[_headroom_cell(r["gpus"][g]["headroom"]) for g in gpus], r["gpus"][gpus[-1]]["binding"])
    return table


@app.command("roofline")
def roofline_command(
    arch: str = typer.Option("sm_90", "--arch", help="Targets to compile for: sm_80, sm_90 (comma list)."),
    act: str = typer.Option("all", "--act", help="Activations (comma list) or all."),
    dtype: str = typer.Option("fp32,bf16,fp16", "--dtype", help="Dtypes (comma list)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result file (one --arch)."),
    below: Optional[float] = typer.Option(None, "--below", help="Show only kernels whose headroom on some GPU "
                                          "is under this (e.g. 1.5)."),
) -> None:
    """Static roofline, no GPU needed: compile every kernel actkit launches for the target, count its SASS per
    element and model A100 (sm_80), H100 and H200 (sm_90): headroom = memory time / largest compute time."""
    try:
        archs = [roofline.parse_arch(a) for a in arch.split(",") if a.strip()] or [roofline.parse_arch(arch)]
        activations = None if act.strip().lower() == "all" else parse_activations(act)
        dtypes = parse_dtypes(dtype)
    except (roofline.RooflineError, BenchError) as exc:
        _fail(str(exc))
    if json_path is not None and len(archs) != 1:
        _fail(f"--json writes one arch's result; give one --arch, not {arch!r}")
    if json_path is not None and json_path.is_dir():
        _fail(f"--json {json_path} is a directory; give a file path such as benchmarks/results/static-sm90.json")
    failed = False
    for target in archs:
        try:
            with tempfile.TemporaryDirectory(prefix="actkit-roofline-") as tmp, \
                    console.status(f"compiling for sm_{target} and counting SASS (a minute or two for all)"):
                result = roofline.run(target, Path(tmp) / "probe.json", activations, dtypes)
        except (compileonly.ProbeError, sass_mod.SassError, roofline.RooflineError) as exc:
            _fail(str(exc), code=1)
        console.print(result_table(result, below))
        for line in result["failures"]:
            typer.echo(f"Error: {line}", err=True)
        failed |= bool(result["failures"])
        if json_path is not None:
            compileonly.write_json(json_path, result)
            console.print(f"wrote {json_path}")
    if failed:
        raise typer.Exit(code=1)


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}")
    if not isinstance(result, dict) or result.get("schema") != roofline.SCHEMA:
        schema = result.get("schema") if isinstance(result, dict) else None
        _fail(f"{path} is not a static roofline result (schema {schema!r}, expected {roofline.SCHEMA!r}); "
              "write one with actkit roofline --json")
    return result


def _names(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@app.command("roofline-table")
def roofline_table_command(
    paths: list[Path] = typer.Argument(..., help="JSON files written by actkit roofline --json (e.g. the sm_80 "
                                       "and the sm_90 one: headroom columns for the GPUs of both)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Headroom columns for these GPUs (comma list; "
                                      "default: every GPU of the files)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Only these dtypes (comma list)."),
    act: Optional[str] = typer.Option(None, "--act", help="Only these activations (comma list)."),
    launch: Optional[list[str]] = typer.Option(None, "--launch", help="Only this launch (the launch column's "
                                               "name, e.g. forward; repeat the option for several)."),
    below: Optional[float] = typer.Option(None, "--below", help="Only kernels whose headroom on some of those "
                                          "GPUs is under this."),
) -> None:
    """Print static roofline result files as the README's markdown table (rows of the last file)."""
    results = [_read_result(path) for path in paths]
    known = [g["name"] for result in results for g in result["model"]["gpus"]]
    names = _names(gpu) or known
    unknown = [g for g in names if g not in known]
    if unknown:
        _fail(f"unknown GPU {unknown[0]!r}: these files model {', '.join(known)}")
    try:
        dtypes = None if dtype is None else parse_dtypes(dtype)
        activations = None if act is None else parse_activations(act)
    except BenchError as exc:
        _fail(str(exc))
    typer.echo(roofline.markdown(results, names, dtypes, activations, launch or None, below))
