"""``actkit bench`` and ``actkit bench-table``: thin commands over :mod:`actkit.bench`."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actkit import bench
from actkit.bench.relative import predicted_ratios, relative_table
from actkit.results import format_bytes

from .main import app, console

err_console = Console(stderr=True)


def _fail(message: str) -> None:
    """One line on stderr, exit code 2 (bad usage), no traceback."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def _check_output(path: Optional[Path], option: str) -> None:
    if path is not None and path.is_dir():
        _fail(f"{option} {path} is a directory; give a file path such as results/bench.json")


def _size_of(nbytes: Optional[float]) -> str:
    return "[dim]n/m[/]" if nbytes is None else format_bytes(nbytes)


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "-"
    colour = "green" if value >= 1.0 else "red"
    return f"[{colour}]{value:.2f}x[/]"


def _time_with_spread(r: Mapping[str, Any]) -> tuple[str, str]:
    """Median and p20-p80 in the median's unit: ("142 µs", "140-155")."""
    scale, unit = (1e3, "µs") if r["median_ms"] < 1 else (1.0, "ms")
    digits = lambda v: f"{v * scale:.3g}" if v * scale < 100 else f"{v * scale:.0f}"  # noqa: E731
    return f"{digits(r['median_ms'])} {unit}", f"{digits(r['p20_ms'])}-{digits(r['p80_ms'])}"


def activation_table(activation: str, records: Sequence[Mapping[str, Any]]) -> Table:
    """One table per activation; the fastest provider of each dtype x size x mode is highlighted."""
    rows = [r for r in records if r["activation"] == activation]
    on_cuda = any(str(r["device"]).startswith("cuda") for r in rows)
    reference = "ATen" if rows and rows[0]["reference"] == "native" else "eager composite"
    backends = ", ".join(dict.fromkeys(r["backend"] for r in rows if r["provider"] == "actkit")) or "-"
    table = Table(title=f"[bold]{activation}[/]  actkit backend: {backends}; eager = {reference}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, header_style="bold")
    columns = [("case", "left"), ("provider", "left"), ("median", "right"), ("p20-p80", "right"),
               ("GB/s", "right"), ("%copy", "right"), ("speedup", "right"), ("saved B", "right")]
    if on_cuda:
        columns.append(("peak mem", "right"))
    columns.append(("1st call", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["size"], r["mode"]), []).append(r)
    for key, group in groups.items():
        best = min(group, key=lambda r: r["median_ms"])
        for i, r in enumerate(group):
            hi = (lambda s: f"[bold green]{s}[/]") if r is best and len(group) > 1 else (lambda s: s)
            median, spread = _time_with_spread(r)
            cells = [" ".join(key) if i == 0 else "", r["provider"], hi(median), spread, hi(f"{r['gbps']:.1f}"),
                     hi(f"{r['pct_of_copy']:.0f}%"),
                     "[dim]1.00x[/]" if r["provider"] == "actkit" else _ratio(r["actkit_speedup"]),
                     "-" if r["saved_bytes_per_element"] is None else f"{r['saved_bytes_per_element']:g}"]
            if on_cuda:
                cells.append(_size_of(r["peak_mem_bytes"]) if r["mode"] == "fwd+bwd" else "")
            cells.append(f"{r['first_call_s']:.2f} s")
            table.add_row(*cells, end_section=i == len(group) - 1)
    copies = {(r["dtype"], r["size"]): r["copy_gbps"] for r in rows}
    table.caption = ("speedup = provider time / actkit time; saved B = bytes kept for backward per element; "
                     "copy roofline: "
                     + ", ".join(f"{d} {s} {bench.format_bandwidth(g)}" for (d, s), g in copies.items()))
    table.caption_justify = "left"
    return table


def _time_cell(r: Mapping[str, Any], best: bool) -> str:
    """µs per call and the half-width of its p20-p80 spread in %, the cheapest call of its mode in bold green."""
    median = bench.format_us(r["median_us"])
    spread = 50 * (r["p80_us"] - r["p20_us"]) / r["median_us"] if r["median_us"] > 0 else 0.0
    return f"{f'[bold green]{median}[/]' if best else median} [dim]±{spread:.0f}%[/]"


def host_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """One table for all activations: a row per call; for each mode, µs per call and its cost over the
    eager op's and the minimal autograd.Function's in that mode."""
    modes = [m for m in bench.HOST_MODES if any(r["mode"] == m for r in records)]
    cases = bench.host_cases(records)
    variants = {(dtype, numel) for _, dtype, numel in cases}
    where = f": {cases[0][1]}, {cases[0][2]:,} elements" if len(variants) == 1 else ""
    table = Table(title=f"[bold]Host cost per call[/] (µs, median ±half the p20-p80 spread){where}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  header_style="bold")
    table.add_column("activation", no_wrap=True)
    table.add_column("call", overflow="fold", min_width=20)
    for m in modes:
        table.add_column(bench.MODE_LABELS[m], justify="right", no_wrap=True)
        table.add_column("x eager", justify="right", no_wrap=True)
        table.add_column("x Fn", justify="right", no_wrap=True)
    for case in cases:
        rows: dict[str, dict[str, Mapping[str, Any]]] = {}
        for r in records:
            if (r["activation"], r["dtype"], r["numel"]) == case:
                rows.setdefault(r["provider"], {})[r["mode"]] = r
        cheapest = {m: min((by[m]["median_us"] for by in rows.values() if m in by), default=None) for m in modes}
        name = case[0] if where else f"{case[0]} {case[1]} {bench.size_label(case[2])}"
        for i, by_mode in enumerate(rows.values()):
            cells = [name if i == 0 else "", escape(next(iter(by_mode.values()))["call"])]
            for m in modes:
                r = by_mode.get(m)
                cells += [_time_cell(r, len(rows) > 1 and r["median_us"] == cheapest[m]),
                          _cost(r["cost_vs_eager"]), _cost(r["cost_vs_function"])] if r else ["-", "", ""]
            table.add_row(*cells, end_section=i == len(rows) - 1)
    table.caption = ("x eager / x Fn: this call's time over the eager op's / a minimal torch.autograd.Function's "
                     "(eager forward, ATen backward) in the same mode. no grad: inputs do not require grad; grad: "
                     "they do; fwd+bwd: that forward and torch.autograd.grad.")
    table.caption_justify = "left"
    return table


def _cost(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _target_markup(line: str) -> str:
    return escape(line).replace(": missed)", ": [red]missed[/])").replace(": met)", ": [green]met[/])")


def render(payload: Mapping[str, Any]) -> None:
    host = bench.measure_of(payload) == "host"
    # Tables are wider than 80 columns; when writing to a file or pipe there is no terminal to wrap.
    out = console if console.is_terminal else Console(width=max(console.width, 150 if host else 110))
    records = payload["records"]
    env = payload["environment"]
    if host:
        out.print(host_table(records))
        for case in bench.host_cases(records):
            out.print(_target_markup(bench.host_summary_line(records, *case)))
        out.print()
    else:
        for activation in dict.fromkeys(r["activation"] for r in records):
            out.print(activation_table(activation, records))
            out.print(f"[bold]{escape(bench.summary_line(records, activation) or '')}[/]\n")
    notes = dict.fromkeys(
        f"{s['activation']}" + (f" {s['provider']}" if s["provider"] else "") + (f" {s['mode']}" if s["mode"] else "")
        + f": {s['reason']}" for s in payload["skipped"])
    for note in notes:
        out.print(f"[yellow]skipped[/] {escape(note)}")
    warning = bench.busy_host(payload)
    if warning:
        out.print(f"[yellow]note[/]: {escape(warning)}")
    backends = ", ".join(sorted({r["backend"] for r in records if r["provider"] == "actkit"})) or "-"
    n = env["cpu_threads"]
    threads = f", {n} thread{'' if n == 1 else 's'}" if env["device"].startswith("cpu") else ""
    if host:
        how = ("Host cost: calls back to back in interleaved blocks, one device synchronisation per block; first "
               "calls (compile, JIT) are timed apart and excluded")
    else:
        how = ("First calls (compile, JIT, autotune) are timed apart and excluded from the timings"
               + ("; peak memory is measured on CUDA only" if threads else ""))
    out.print(f"[dim]{escape(str(env['device_name']))} ({env['device']}{threads}); torch {env['torch']}, triton "
              f"{env['triton']}; actkit backend: {backends}. {how}.[/]")


@app.command("bench")
def bench_command(
    act: str = typer.Option("all", "--act", help="Activation name, comma list, or 'all'."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu \\[default: cuda if available]."),
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
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU threads for the run \\[default: torch's]; "
                                          "1 is steadier on a shared machine."),
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
    _check_output(json_path, "--json")
    _check_output(csv_path, "--csv")
    if resume and json_path is None:
        _fail("--resume needs --json FILE: the results file of the sweep to continue")
    if resume and overwrite:
        _fail("--resume and --overwrite contradict each other: choose one")
    try:
        config = bench.make_config(act, device, dtype, sizes, mode, providers, quick=quick, threads=threads,
                                   measure="host" if host_cost else "bandwidth", saved_bits=saved_bits)
    except bench.BenchError as exc:
        _fail(str(exc))
    previous = None
    if json_path is not None and json_path.exists():
        if not (resume or overwrite):
            # A finished sweep can take an hour of GPU time: never replace it by accident.
            _fail(f"{json_path} already exists; add --resume to continue that sweep, --overwrite to replace it, "
                  "or choose another --json path")
        if resume:
            try:
                previous = bench.load(json_path, measures=bench.MEASURES)
            except bench.BenchError as exc:
                _fail(str(exc))
    saved = {"cases": len(bench.cases_done(previous)) if previous else 0}

    def checkpoint(payload) -> None:
        bench.write(payload, json_path, csv_path)
        saved["cases"] = len(bench.cases_done(payload))

    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("benchmarking", total=None)

            def report(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=label)

            payload = bench.run(config, progress=report, previous=previous,
                                checkpoint=checkpoint if json_path or csv_path else None)
    except bench.BenchError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write results: {exc}")
    except KeyboardInterrupt:
        total = len(bench.plan(config).cases)
        if json_path is not None:
            where = f"{saved['cases']} of {total} cases saved in {json_path}; resume with: " \
                    f"{_resume_command(config, json_path, csv_path)}"
        elif csv_path is not None:
            where = f"{saved['cases']} of {total} cases saved in {csv_path} (add --json FILE to make a sweep resumable)"
        else:
            where = "nothing saved (give --json FILE to keep finished cases and resume)"
        typer.echo(f"Interrupted: {where}", err=True)
        raise typer.Exit(130)
    render(payload)
    if markdown:
        typer.echo(bench.markdown_table(payload))
    for path in (json_path, csv_path):  # the last checkpoint wrote the final result
        if path is not None:
            console.print(f"wrote {path}")


def _resume_command(config: bench.BenchConfig, json_path: Path, csv_path: Optional[Path]) -> str:
    """The command that continues this sweep: every setting spelt out, so it matches the file."""
    acts = "all" if config.activations == bench.parse_activations("all") else ",".join(config.activations)
    words = ["actkit", "bench"] + (["--host-cost"] if config.measure == "host" else [])
    words += ["--act", acts, "--device", config.device, "--dtype", ",".join(config.dtypes),
             "--sizes", ",".join(map(str, config.sizes)), "--mode", ",".join(config.modes),
             "--providers", ",".join(config.providers)]
    words += ["--quick"] if config.quick else []
    words += ["--threads", str(config.threads)] if config.threads is not None else []
    words += ["--json", str(json_path)] + (["--csv", str(csv_path)] if csv_path is not None else [])
    return shlex.join(words + ["--resume"])


@app.command("bench-table")
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
    try:
        payload = bench.load(path, measures=bench.MEASURES)
        modes = bench.parse_modes(mode, bench.measure_of(payload)) if mode is not None else None
        dtypes = bench.parse_dtypes(dtype) if dtype is not None else None
        activations = bench.parse_activations(act) if act is not None else None
        if relative_to is not None:
            if bench.measure_of(payload) != "bandwidth":
                raise bench.BenchError("--relative-to compares the times of a bandwidth sweep (actkit bench --json), "
                                       "not a --host-cost file")
            if activations is not None:
                payload = {**payload, "records": [r for r in payload["records"]
                                                  if r["activation"] in activations or r["activation"] == relative_to]}
            predicted = predicted_ratios(_load_static(static), relative_to.strip(), gpu) if static else None
            text = relative_table(payload, relative_to.strip(), modes=modes, dtypes=dtypes, predicted=predicted,
                                  predicted_device=gpu)
        elif static is not None:
            raise bench.BenchError("--static goes with --relative-to (it predicts ratios to one activation)")
        else:
            text = bench.markdown_table(payload, modes=modes, dtypes=dtypes, layout=layout, activations=activations)
    except bench.BenchError as exc:
        _fail(str(exc))
    typer.echo(text, nl=False)


def _load_static(path: Path) -> dict:
    """A static roofline results file, or a one-line BenchError saying why it cannot be read."""
    import json

    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise bench.BenchError(f"cannot read the static roofline file {path}: {exc}") from None
    if not isinstance(payload, dict) or not str(payload.get("schema", "")).startswith("actkit-static-roofline/"):
        raise bench.BenchError(f"{path} is not a static roofline file (write one with actkit roofline --json)")
    return payload


@app.command("bench-glu-block")
def bench_glu_block_command(
    act: str = typer.Option("swiglu", "--act", help="A gated linear unit: swiglu, geglu, geglu_tanh, reglu, glu."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu \\[default: cuda if available]."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, bf16 or fp16."),
    tokens: int = typer.Option(512, "--tokens", help="Rows of the block's input (batch x sequence)."),
    hidden: int = typer.Option(256, "--hidden", help="Model width: the block's input and output features."),
    ffn: int = typer.Option(688, "--ffn", help="Width of the GLU's halves (the MLP's inner size)."),
    layout: str = typer.Option("pair", "--layout", help="pair: gate and up projections, glu(gate, up); "
                               "split: one gate_up projection, glu(x) splits it."),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU threads \\[default: torch's]; 1 is steadier "
                                          "on a shared machine."),
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
    from actkit.bench import glublock

    _check_output(json_path, "--json")
    if json_path is not None and json_path.exists() and not overwrite:
        _fail(f"{json_path} already exists; add --overwrite to replace it, or choose another --json path")
    try:
        config = glublock.BlockConfig(act=act, device=bench.parse_device(device), dtype=dtype, tokens=tokens,
                                      hidden=hidden, ffn=ffn, layout=layout, backend=compile_backend,
                                      threads=bench.parse_threads(threads),
                                      **(glublock.QUICK_TIMING if quick else {}))
        glublock.check(config)
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("compiling", total=None)

            def report(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=label)

            payload = glublock.run(config, progress=report)
    except (bench.BenchError, ValueError) as exc:
        _fail(str(exc))
    out = console if console.is_terminal else Console(width=max(console.width, 120))
    out.print(glu_block_table(payload))
    for line in glublock.summary(payload):
        out.print(f"[bold]{escape(line)}[/]")
    env = payload["environment"]
    out.print(f"[dim]{escape(str(env['device_name']))} ({env['device']}, {env['cpu_threads']} threads); torch "
              f"{env['torch']}, triton {env['triton']}; actkit's default compile path: "
              f"{payload['default_compile_path']}.[/]")
    if json_path is not None:
        from actkit import results

        try:
            results.write_json(json_path, payload)
        except OSError as exc:
            _fail(f"cannot write results: {exc}")
        console.print(f"wrote {json_path}")


def glu_block_table(payload: Mapping[str, Any]) -> Table:
    config = payload["config"]
    table = Table(title=f"[bold]{config['act']}[/] in x + down(glu(...)): {config['tokens']} x {config['hidden']} "
                        f"-> {config['ffn']}, {config['layout']} layout, {config['dtype']}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  header_style="bold")
    for name, justify in (("variant", "left"), ("mode", "left"), ("median", "right"), ("p20-p80", "right"),
                          ("x compiled composite", "right"), ("saved", "right"), ("max |diff|", "right"),
                          ("1st call", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in payload["records"]:
        median, spread = _time_with_spread(r)
        ratio = r["vs_compile_composite"]
        table.add_row(r["variant"], r["mode"], median, spread, "-" if ratio is None else f"{ratio:.2f}x",
                      _size_of(r["saved_bytes"]), f"{r['max_abs_diff']:.1e}", f"{r['first_call_s']:.1f} s",
                      end_section=r["mode"] == "fwd+bwd")
    table.caption = ("x compiled composite: this time over torch.compile of F.silu(a) * b's block in the same mode; "
                     "saved: bytes autograd keeps for backward besides the parameters and the input")
    table.caption_justify = "left"
    return table
