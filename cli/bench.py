"""``actkit bench``, ``actkit bench-table`` and ``actkit bench-glu-block``: thin commands over :mod:`actkit.bench`
(imported when a command runs; what they print is in :mod:`.bench_view`)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from actkit.names import GLU_ACTIVATIONS

from .common import console, err_console, fail, interrupted, output_file, progress_bar

DEVICE = typer.Option(None, "--device", help="cuda or cpu \\[default: cuda if available].")
JSON_EXAMPLE = "results/bench.json"


def _threads_option(why: str) -> typer.Option:
    return typer.Option(None, "--threads", help=f"CPU threads{why} \\[default: torch's]; 1 is steadier on a shared "
                                                "machine.")


def bench_command(
    act: str = typer.Option("all", "--act", help="Activation name, comma list, or 'all'."),
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Comma list of fp32, bf16, fp16 "
                                        "\\[default: all three; --quick: fp32 (cpu), fp32,bf16 (cuda); "
                                        "--host-cost: fp32]."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Element counts, e.g. 65536,2^20 \\[default: "
                                        "2^16..2^26 on cuda, 2^12,2^16,2^20 on cpu; --host-cost: 16]."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Comma list of fwd, bwd, fwd+bwd; with --host-cost "
                                       "of nograd, grad, fwd+bwd \\[default: all]."),
    providers: Optional[str] = typer.Option(None, "--providers", help="Comma list of actkit, eager, compile; with "
                                            "--host-cost of actkit, module, eager, function, compile "
                                            "\\[default: all]."),
    host_cost: bool = typer.Option(False, "--host-cost", help="Measure what one call costs the host at a tiny "
                                   "size (µs per call, no grad / grad / fwd+bwd) against the eager op and a minimal "
                                   "autograd.Function, instead of the bandwidth sweep."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure and the environment "
                                             "as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one CSV row per record."),
    quick: bool = typer.Option(False, "--quick", help="Short run: fewer sizes and dtypes, shorter timing."),
    markdown: bool = typer.Option(False, "--markdown", help="Also print actkit's figures as a markdown table."),
    threads: Optional[str] = _threads_option(" for the run"),
    saved_bits: Optional[int] = typer.Option(None, "--saved-bits", help="actkit keeps a k-bit code per element "
                                             "(1..8) for backward instead of x (few-bit backward; elementwise "
                                             "activations); compare saved B/elem and speed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep saved in --json FILE: check its "
                                "settings match, run only the cases it lacks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json FILE instead of "
                                   "refusing."),
) -> None:
    """Time actkit against eager PyTorch and torch.compile: forward, backward, fwd+bwd.

    Reports median time with p20/p80, effective GB/s, % of a copy kernel's bandwidth in the same run,
    actkit's speedup, bytes saved for backward and peak memory of a fwd+bwd step. --host-cost instead
    reports µs per call at a tiny size, where the host's work per call is all there is. --json/--csv are
    rewritten after every case, so an interrupted sweep keeps what finished; --resume continues it.
    """
    from actkit import bench

    from .bench_view import render

    output_file(json_path, "--json", JSON_EXAMPLE)
    output_file(csv_path, "--csv", JSON_EXAMPLE)
    if resume and json_path is None:
        fail("--resume needs --json FILE: the results file of the sweep to continue")
    if resume and overwrite:
        fail("--resume and --overwrite contradict each other: choose one")
    config = bench.make_config(act, device, dtype, sizes, mode, providers, quick=quick, threads=threads,
                               measure="host" if host_cost else "bandwidth", saved_bits=saved_bits)
    previous = None
    if json_path is not None and json_path.exists():
        if not (resume or overwrite):
            # A finished sweep can take an hour of GPU time: never replace it by accident.
            fail(f"{json_path} already exists; add --resume to continue that sweep, --overwrite to replace it, "
                 "or choose another --json path")
        if resume:
            previous = bench.load(json_path, measures=bench.MEASURES)
    payload = _run_sweep(config, json_path, csv_path, previous)
    render(payload)
    if markdown:
        typer.echo(bench.markdown_table(payload))
    for path in (json_path, csv_path):  # the last checkpoint wrote the final result
        if path is not None:
            console.print(f"wrote {path}")


def _run_sweep(config, json_path: Optional[Path], csv_path: Optional[Path], previous):
    """Run the sweep under a progress bar, saving after every case; on Ctrl-C say what was saved."""
    from actkit import bench

    saved = {"cases": len(bench.cases_done(previous)) if previous else 0}

    def checkpoint(payload) -> None:
        bench.write(payload, json_path, csv_path)
        saved["cases"] = len(bench.cases_done(payload))

    try:
        with progress_bar(on=err_console, transient=True) as bar:
            task = bar.add_task("benchmarking", total=None)

            def report(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=label)

            return bench.run(config, progress=report, previous=previous,
                             checkpoint=checkpoint if json_path or csv_path else None)
    except OSError as exc:
        fail(f"cannot write results: {exc}")
    except KeyboardInterrupt:
        total = len(bench.plan(config).cases)
        if json_path is not None:
            where = f"{saved['cases']} of {total} cases saved in {json_path}; resume with: " \
                    f"{_resume_command(config, json_path, csv_path)}"
        elif csv_path is not None:
            where = f"{saved['cases']} of {total} cases saved in {csv_path} (add --json FILE to make a sweep resumable)"
        else:
            where = "nothing saved (give --json FILE to keep finished cases and resume)"
        interrupted(f"Interrupted: {where}")


def _resume_command(config, json_path: Path, csv_path: Optional[Path]) -> str:
    """The command that continues this sweep (an :class:`actkit.bench.BenchConfig`): every setting spelt
    out, so it matches the file."""
    from actkit import bench

    acts = "all" if config.activations == bench.parse_activations("all") else ",".join(config.activations)
    words = ["actkit", "bench"] + (["--host-cost"] if config.measure == "host" else [])
    words += ["--act", acts, "--device", config.device, "--dtype", ",".join(config.dtypes),
              "--sizes", ",".join(map(str, config.sizes)), "--mode", ",".join(config.modes),
              "--providers", ",".join(config.providers)]
    words += ["--quick"] if config.quick else []
    words += ["--threads", str(config.threads)] if config.threads is not None else []
    words += ["--json", str(json_path)] + (["--csv", str(csv_path)] if csv_path is not None else [])
    return shlex.join(words + ["--resume"])


def bench_table_command(
    path: Path = typer.Argument(..., help="A JSON file written by actkit bench --json (or --host-cost --json)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Only these modes (comma list)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Only these dtypes (comma list)."),
    act: Optional[str] = typer.Option(None, "--act", help="Only these activations (comma list)."),
    layout: str = typer.Option("wide", "--layout", help="wide: a row per activation x dtype x size with the "
                               "modes side by side; long: a row per mode too."),
    relative_to: Optional[str] = typer.Option(None, "--relative-to", metavar="ACT",
                                              help="Instead: each activation's time over this one's (e.g. relu), "
                                                   "per provider, with bounds from the p20/p80 spread."),
    static: Optional[Path] = typer.Option(None, "--static", metavar="FILE",
                                          help="With --relative-to: add the ratio a static roofline file "
                                               "(actkit roofline --json) predicts on --gpu."),
    gpu: str = typer.Option("H100", "--gpu", help="With --static: the GPU model whose prediction to show."),
) -> None:
    """Print a bench results file (actkit bench --json, with or without --host-cost) as the README's markdown
    table."""
    from actkit import bench
    from actkit.bench.relative import predicted_ratios, relative_table

    payload = bench.load(path, measures=bench.MEASURES)
    modes = bench.parse_modes(mode, bench.measure_of(payload)) if mode is not None else None
    dtypes = bench.parse_dtypes(dtype) if dtype is not None else None
    activations = bench.parse_activations(act) if act is not None else None
    if relative_to is not None:
        if bench.measure_of(payload) != "bandwidth":
            fail("--relative-to compares the times of a bandwidth sweep (actkit bench --json), not a --host-cost file")
        if activations is not None:
            payload = {**payload, "records": [r for r in payload["records"]
                                              if r["activation"] in activations or r["activation"] == relative_to]}
        predicted = predicted_ratios(_load_static(static), relative_to.strip(), gpu) if static else None
        text = relative_table(payload, relative_to.strip(), modes=modes, dtypes=dtypes, predicted=predicted,
                              predicted_device=gpu)
    elif static is not None:
        fail("--static goes with --relative-to (it predicts ratios to one activation)")
    else:
        text = bench.markdown_table(payload, modes=modes, dtypes=dtypes, layout=layout, activations=activations)
    typer.echo(text, nl=False)


def _load_static(path: Path) -> dict:
    """A static roofline results file; one line saying why where it cannot be read."""
    import json

    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read the static roofline file {path}: {exc}")
    if not isinstance(payload, dict) or not str(payload.get("schema", "")).startswith("actkit-static-roofline/"):
        fail(f"{path} is not a static roofline file (write one with actkit roofline --json)")
    return payload


def bench_glu_block_command(
    act: str = typer.Option("swiglu", "--act", help=f"A gated linear unit: {', '.join(GLU_ACTIVATIONS)}."),
    device: Optional[str] = DEVICE,
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, bf16 or fp16."),
    tokens: int = typer.Option(512, "--tokens", help="Rows of the block's input (batch x sequence)."),
    hidden: int = typer.Option(256, "--hidden", help="Model width: the block's input and output features."),
    ffn: int = typer.Option(688, "--ffn", help="Width of the GLU's halves (the MLP's inner size)."),
    layout: str = typer.Option("pair", "--layout", help="pair: gate and up projections, glu(gate, up); "
                               "split: one gate_up projection, glu(x) splits it."),
    threads: Optional[str] = _threads_option(""),
    compile_backend: str = typer.Option("inductor", "--compile-backend", help="torch.compile's backend."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records and the environment as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json FILE."),
    quick: bool = typer.Option(False, "--quick", help="Shorter timing (fewer, shorter blocks)."),
) -> None:
    """A GLU inside a compiled MLP block, x + down(glu(...)): which path actkit should take under torch.compile.

    Times the eager composite, actkit eager, torch.compile of the composite and torch.compile of the actkit
    block on each of actkit's compile paths (composite: Inductor fuses the GLU with its neighbours; kernel:
    actkit's opaque custom op), forward and fwd+bwd, with the bytes autograd keeps (linkedin/Liger-Kernel#1330).
    """
    from actkit import bench, results
    from actkit.bench import glublock

    from .bench_view import glu_block_report

    output_file(json_path, "--json", JSON_EXAMPLE)
    if json_path is not None and json_path.exists() and not overwrite:
        fail(f"{json_path} already exists; add --overwrite to replace it, or choose another --json path")
    config = glublock.BlockConfig(act=act, device=bench.parse_device(device), dtype=dtype, tokens=tokens,
                                  hidden=hidden, ffn=ffn, layout=layout, backend=compile_backend,
                                  threads=bench.parse_threads(threads), **(glublock.QUICK_TIMING if quick else {}))
    glublock.check(config)
    with progress_bar(on=err_console, transient=True) as bar:
        task = bar.add_task("compiling", total=None)

        def report(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        payload = glublock.run(config, progress=report)
    glu_block_report(payload)
    if json_path is not None:
        try:
            results.write_json(json_path, payload)
        except OSError as exc:
            fail(f"cannot write results: {exc}")
        console.print(f"wrote {json_path}")
