"""``actkit roofline`` and ``actkit roofline-table``: thin commands over :mod:`actkit.bench.roofline` (imported
when a command runs)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import typer

from .common import Col, comma_list, console, error_line, fail, fit_width, fitted_table, output_file

if TYPE_CHECKING:
    from rich.table import Table

COMPILE_FAILED = 1  # a kernel that did not compile, or SASS that could not be read: not the user's input


def _headroom_cell(value: float) -> str:
    from actkit.bench import roofline

    colour = "red" if value < 1 else "yellow" if value < roofline.HEADROOM_BAR else "green"
    return f"[{colour}]{value:.2f}[/]"


def result_table(results: Sequence[Mapping[str, Any]], only_below: Optional[float] = None,
                 width: Optional[int] = None) -> Table:
    """One line per launch: bytes and instructions per element (the last arch's SASS), headroom on every
    GPU of every arch's result, and what binds on the last GPU (under the launch, in fewer than the
    table's width, with the bytes and instructions)."""
    from rich import box

    from actkit.bench import roofline

    gpus, merged = roofline.merge(results)
    last = results[-1]
    columns = [Col("activation", "left"), Col("launch", "left", no_wrap=False), Col("dtype", "left"),
               Col("B/elem", stack=True), Col("instr/elem", stack=True), *[Col(g) for g in gpus],
               Col(f"binds on {gpus[-1]}", "left", stack=True)]
    rows = [[r["activation"], r["what"], r["dtype"], f"{r['bytes_per_element']:.3g}",
             f"{r['instructions_per_element']:.1f}",
             *[_headroom_cell(models[g]["headroom"]) if g in models else "-" for g in gpus],
             models[gpus[-1]]["binding"] if gpus[-1] in models else "-"]
            for r, models in roofline.select(merged, gpus, only_below=only_below)]
    return fitted_table(columns, rows, width, into=1, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                        collapse_padding=True, header_style="bold",
                        title=f"[bold]Static roofline[/] (triton {last['triton']}): per element from the "
                              f"sm_{last['arch']} SASS; headroom = memory time / largest compute time")


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
    from actkit.bench import compileonly, parse_activations, parse_dtypes, roofline
    from actkit.bench import sass as sass_mod

    archs = sorted({roofline.parse_arch(a) for a in arch.split(",") if a.strip()}) or [roofline.parse_arch(arch)]
    activations = None if act.strip().lower() == "all" else parse_activations(act)
    dtypes = parse_dtypes(dtype)
    if json_path is not None and len(archs) > 1 and "{arch}" not in json_path:
        fail(f"--json {json_path} names one file for {len(archs)} archs; put {{arch}} in it "
             "(static-sm{arch}.json) or give one --arch")
    paths = {a: Path(json_path.replace("{arch}", str(a))) for a in archs} if json_path is not None else {}
    for path in paths.values():
        output_file(path, "--json", "benchmarks/results/static-sm90.json")
    results = []
    for target in archs:
        try:
            with tempfile.TemporaryDirectory(prefix="actkit-roofline-") as tmp, \
                    console.status(f"compiling for sm_{target} and counting SASS (about a minute for all)"):
                results.append(roofline.run(target, Path(tmp) / "probe.json", activations, dtypes))
        except (compileonly.ProbeError, sass_mod.SassError, roofline.RooflineError) as exc:
            fail(str(exc), code=COMPILE_FAILED)
        if target in paths:
            compileonly.write_json(paths[target], results[-1])
    console.print(result_table(results, below, fit_width(console)))
    for target, path in paths.items():
        console.print(f"wrote {path}")
    failures = [line for result in results for line in result["failures"]]
    for line in failures:
        error_line(line)
    if failures:
        raise typer.Exit(code=COMPILE_FAILED)


def _read_result(path: Path) -> dict:
    from actkit.bench import roofline

    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not isinstance(result, dict) or result.get("schema") != roofline.SCHEMA:
        schema = result.get("schema") if isinstance(result, dict) else None
        fail(f"{path} is not a static roofline result (schema {schema!r}, expected {roofline.SCHEMA!r}); "
             "write one with actkit roofline --json")
    return result


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
    from actkit.bench import parse_activations, parse_dtypes, roofline

    results = [_read_result(path) for path in paths]
    known = [g["name"] for result in results for g in result["model"]["gpus"]]
    names = comma_list(gpu) or known
    unknown = [g for g in names if g not in known]
    if unknown:
        fail(f"unknown GPU {unknown[0]!r}: these files model {', '.join(known)}")
    dtypes = None if dtype is None else parse_dtypes(dtype)
    activations = None if act is None else parse_activations(act)
    typer.echo(roofline.markdown(results, names, dtypes, activations, launch or None, below))
