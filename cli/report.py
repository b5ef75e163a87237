"""``actkit report``: tables, figures and findings from training runs and benchmark files, as Markdown/HTML."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .main import app
from .plot import console, fail, wrote


def _kind(path: Path) -> str:
    """``runs`` (a sweep directory or a run record) or ``bench`` (an actkit bench result file)."""
    if not path.exists():
        fail(f"{str(path)!r} does not exist")
    if path.is_dir():
        return "runs"
    try:
        with open(path, encoding="utf-8") as fh:
            schema = json.load(fh).get("schema", "")
    except (OSError, ValueError, AttributeError):
        fail(f"{str(path)!r} is not a JSON result file of actkit train or actkit bench")
    if str(schema).startswith(("actkit.bench/", "actkit.bench.")):  # bench.load refuses host-cost files clearly
        return "bench"
    if str(schema).startswith("actkit.train.run/"):
        return "runs"
    fail(f"{str(path)!r} is not a result file of actkit train or actkit bench (schema {schema!r})")
    return ""


def _assemble(path: Path) -> None:
    """A sweep directory (``config.json``) spread over workers: write its ``runs.csv`` and summaries once
    every planned run is finished, or say which runs the report will lack."""
    from actkit import runs, train

    if not (path / "config.json").is_file():
        return
    if runs.table_only(path):  # run records not kept (e.g. not committed): report from runs.csv, as it is
        console.print(f"[yellow]note:[/] {path} has no run records (runs/*.json); the report is built from its "
                      "runs.csv, without learning curves or diagnostics.", soft_wrap=True, highlight=False)
        return
    try:
        state = train.assemble(path)
    except train.TrainError as exc:
        fail(str(exc))
    except OSError as exc:  # a read-only results directory: the report itself goes elsewhere
        console.print(f"[yellow]note:[/] runs.csv and the summaries of {path} not written "
                      f"({exc.strerror or exc})", soft_wrap=True, highlight=False)
        return
    if state.missing:
        shown = ", ".join(state.missing[:3]) + (", ..." if len(state.missing) > 3 else "")
        console.print(f"[yellow]note:[/] the sweep in {path} has {len(state.records)} of "
                      f"{len(state.records) + len(state.missing)} planned runs finished (missing: {shown}); the "
                      "report covers the finished ones. Workers still running, or killed ones, finish it "
                      "(a killed worker: rerun its command with --resume).", soft_wrap=True, highlight=False)


@app.command("report")
def report_command(
    inputs: List[Path] = typer.Argument(..., help="RUN_DIR (what actkit train wrote) and/or BENCH.json files."),
    out: Path = typer.Option(Path("report.md"), "--out", "-o", help="Markdown file to write (.md)."),
    as_html: bool = typer.Option(False, "--html", help="Also write a standalone HTML file (figures embedded)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline activation \\[default: the sweep's]."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (PNG) and link them."),
    detect: Optional[str] = typer.Option(None, "--detect", metavar="PP",
                                         help="A difference in accuracy (percentage points, e.g. 0.2): say how many "
                                              "seeds each comparison with the baseline needs to detect it with 80% "
                                              "power, from its observed spread."),
) -> None:
    """One document: tables, figures and plain-language findings computed from the results."""
    from actkit import bench, power, report, runs

    try:
        detect_pp = power.check_detect(detect) if detect is not None else None
    except ValueError as exc:
        fail(str(exc))
    if out.suffix.lower() not in (".md", ".markdown"):
        fail(f"--out must end in .md (the HTML version is written next to it with --html), got {str(out)!r}")
    run_paths = [p for p in inputs if _kind(p) == "runs"]
    bench_paths = [p for p in inputs if p not in run_paths]
    if detect_pp is not None and not run_paths:
        fail("--detect sizes the comparisons of a training sweep: give its directory (what actkit train wrote)")
    if len(run_paths) > 1:
        fail("give one training run directory per report (got " + ", ".join(map(str, run_paths)) + ")")
    if run_paths:
        _assemble(run_paths[0])
    try:
        rs = runs.load(run_paths[0], baseline) if run_paths else None
        benches = [(p.name, bench.load(p)) for p in bench_paths]
        written = report.write(rs, benches, out, as_html=as_html, figures=figures, detect=detect_pp)
    except (runs.RunsError, bench.BenchError, ValueError) as exc:
        fail(str(exc))
    if rs is not None and detect_pp is not None:
        for line in power.detect_lines(power.rows(rs, report.ALPHA, detect_pp), rs.baseline, detect_pp, report.ALPHA) \
                or [f"no paired comparison with the baseline {rs.baseline} to size"]:
            console.print(line, highlight=False, soft_wrap=True)
    for name, path in written.items():
        if path is not None:
            wrote(path, name.replace("_", " "))
