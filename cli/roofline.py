"""``actkit roofline`` and ``actkit roofline-table``: thin commands over :mod:`actkit.bench.roofline`."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

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


def result_table(results: Sequence[Mapping[str, Any]], only_below: Optional[float] = None) -> Table:
    """One line per launch: bytes and instructions per element (the last arch's SASS), headroom on every
    GPU of every arch's result, and what binds on the last GPU."""
    gpus, merged = roofline.merge(results)
    last = results[-1]
    table = Table(title=f"[bold]Static roofline[/] (triton {last['triton']}): per element from the sm_{last['arch']} "
                        f"SASS; headroom = memory time / largest compute time",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  header_style="bold")
    for name in ["activation", "launch", "dtype", "B/elem", "instr/elem"]:
        table.add_column(name, justify="left" if name in ("activation", "launch", "dtype") else "right",
                         no_wrap=name != "launch")
    for g in gpus:
        table.add_column(g, justify="right", no_wrap=True)
    table.add_column(f"binds on {gpus[-1]}", no_wrap=True)
    for r, models in roofline.select(merged, gpus, only_below=only_below):
        table.add_row(r["activation"], r["what"], r["dtype"], f"{r['bytes_per_element']:.3g}",
                      f"{r['instructions_per_element']:.1f}",
                      *[_headroom_cell(models[g]["headroom"]) if g in models else "-" for g in gpus],
                      models[gpus[-1]]["binding"] if gpus[-1] in models else "-")
    return table


@app.command("roofline")
def roofline_command(
    arch: str = typer.Option("sm_80,sm_90", "--arch", help="Targets to compile for: sm_80 (A100), sm_90 (H100, "
                             "H200); a comma list."),
    act: str = typer.Option("all", "--act", help="Activations (comma list) or all."),
    dtype: str = typer.Option("fp32,bf16,fp16", "--dtype", help="Dtypes (comma list)."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the result file; with several archs, "
                                            "a path holding {arch}, e.g. benchmarks/results/static-sm{arch}.json."),
    below: Optional[float] = typer.Option(None, "--below", help="Show only kernels whose headroom on some GPU "
                                          "is under this (e.g. 1.5)."),
) -> None:
    """Static roofline, no GPU needed: compile every kernel actkit launches for each target, count its SASS per
    element and model A100 (sm_80), H100 and H200 (sm_90): headroom = memory time / largest compute time."""
    try:
        archs = sorted({roofline.parse_arch(a) for a in arch.split(",") if a.strip()}) or [roofline.parse_arch(arch)]
        activations = None if act.strip().lower() == "all" else parse_activations(act)
        dtypes = parse_dtypes(dtype)
    except (roofline.RooflineError, BenchError) as exc:
        _fail(str(exc))
    if json_path is not None and len(archs) > 1 and "{arch}" not in json_path:
        _fail(f"--json {json_path} names one file for {len(archs)} archs; put {{arch}} in it "
              "(static-sm{arch}.json) or give one --arch")
    paths = {a: Path(json_path.replace("{arch}", str(a))) for a in archs} if json_path is not None else {}
    for path in paths.values():
        if path.is_dir():
            _fail(f"--json {path} is a directory; give a file path such as benchmarks/results/static-sm90.json")
    results = []
    for target in archs:
        try:
            with tempfile.TemporaryDirectory(prefix="actkit-roofline-") as tmp, \
                    console.status(f"compiling for sm_{target} and counting SASS (about a minute for all)"):
                results.append(roofline.run(target, Path(tmp) / "probe.json", activations, dtypes))
        except (compileonly.ProbeError, sass_mod.SassError, roofline.RooflineError) as exc:
            _fail(str(exc), code=1)
        if target in paths:
            compileonly.write_json(paths[target], results[-1])
    console.print(result_table(results, below))
    for target, path in paths.items():
        console.print(f"wrote {path}")
    failures = [line for result in results for line in result["failures"]]
    for line in failures:
        typer.echo(f"Error: {line}", err=True)
    if failures:
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
