"""What ``actkit bench`` and ``actkit bench-glu-block`` print: a table per activation, the host-cost table,
the GLU block's table, and the notes under them. Imported by the commands when they run (it imports
:mod:`actkit.bench`, and torch with it)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from actkit import bench

from .common import Col, fit_width, fitted_table, size_of, wide_console

# The look of every bench table: a rule under the header, no outer padding, left-aligned title and caption.
_BENCH_STYLE = dict(title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                    collapse_padding=True, header_style="bold")


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


def activation_table(activation: str, records: Sequence[Mapping[str, Any]], width: Optional[int] = None) -> Table:
    """One table per activation; the fastest provider of each dtype x size x mode is highlighted. In fewer
    than the table's width (``width``), the spread, %copy, bytes and first call stand under each case."""
    rows = [r for r in records if r["activation"] == activation]
    on_cuda = any(str(r["device"]).startswith("cuda") for r in rows)
    reference = "ATen" if rows and rows[0]["reference"] == "native" else "eager composite"
    backends = ", ".join(dict.fromkeys(r["backend"] for r in rows if r["provider"] == "actkit")) or "-"
    columns = [Col("case", "left", no_wrap=False), Col("provider", "left"), Col("median"),
               Col("p20-p80", stack=True), Col("GB/s"), Col("%copy", stack=True), Col("speedup"),
               Col("saved B", stack=True)]
    if on_cuda:
        columns.append(Col("peak mem", stack=True))
    columns.append(Col("1st call", stack=True))
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["size"], r["mode"]), []).append(r)
    cells, sections = [], []
    for key, group in groups.items():
        best = min(group, key=lambda r: r["median_ms"])
        for i, r in enumerate(group):
            hi = (lambda s: f"[bold green]{s}[/]") if r is best and len(group) > 1 else (lambda s: s)
            median, spread = _time_with_spread(r)
            row = [" ".join(key) if i == 0 else "", r["provider"], hi(median), spread, hi(f"{r['gbps']:.1f}"),
                   hi(f"{r['pct_of_copy']:.0f}%"),
                   "[dim]1.00x[/]" if r["provider"] == "actkit" else _ratio(r["actkit_speedup"]),
                   "-" if r["saved_bytes_per_element"] is None else f"{r['saved_bytes_per_element']:g}"]
            if on_cuda:
                row.append(size_of(r["peak_mem_bytes"]) if r["mode"] == "fwd+bwd" else "")
            row.append(f"{r['first_call_s']:.2f} s")
            cells.append(row)
            sections.append(i == len(group) - 1)
    copies = {(r["dtype"], r["size"]): r["copy_gbps"] for r in rows}
    caption = ("speedup = provider time / actkit time; saved B = bytes kept for backward per element; "
               "copy roofline: " + ", ".join(f"{d} {s} {bench.format_bandwidth(g)}" for (d, s), g in copies.items()))
    return fitted_table(columns, cells, width, sections=sections, **_BENCH_STYLE, caption=caption,
                        title=f"[bold]{activation}[/]  actkit backend: {backends}; eager = {reference}")


def _time_cell(r: Mapping[str, Any], best: bool) -> str:
    """µs per call and the half-width of its p20-p80 spread in %, the cheapest call of its mode in bold green."""
    median = bench.format_us(r["median_us"])
    spread = 50 * (r["p80_us"] - r["p20_us"]) / r["median_us"] if r["median_us"] > 0 else 0.0
    return f"{f'[bold green]{median}[/]' if best else median} [dim]±{spread:.0f}%[/]"


def host_table(records: Sequence[Mapping[str, Any]], width: Optional[int] = None) -> Table:
    """One table for all activations: a row per call; for each mode, µs per call and its cost over the
    eager op's and the minimal autograd.Function's in that mode (under the call, in fewer than the table's
    width)."""
    modes = [m for m in bench.HOST_MODES if any(r["mode"] == m for r in records)]
    cases = bench.host_cases(records)
    variants = {(dtype, numel) for _, dtype, numel in cases}
    where = f": {cases[0][1]}, {cases[0][2]:,} elements" if len(variants) == 1 else ""
    columns = [Col("activation", "left"), Col("call", "left", no_wrap=False, overflow="fold", min_width=20)]
    for m in modes:
        label = bench.MODE_LABELS[m]
        columns += [Col(label), Col("x eager", stack=True, label=f"{label} x eager"),
                    Col("x Fn", stack=True, label=f"{label} x Fn")]
    cells, sections = [], []
    for case in cases:
        rows: dict[str, dict[str, Mapping[str, Any]]] = {}
        for r in records:
            if (r["activation"], r["dtype"], r["numel"]) == case:
                rows.setdefault(r["provider"], {})[r["mode"]] = r
        cheapest = {m: min((by[m]["median_us"] for by in rows.values() if m in by), default=None) for m in modes}
        name = case[0] if where else f"{case[0]} {case[1]} {bench.size_label(case[2])}"
        for i, by_mode in enumerate(rows.values()):
            row = [name if i == 0 else "", escape(next(iter(by_mode.values()))["call"])]
            for m in modes:
                r = by_mode.get(m)
                row += [_time_cell(r, len(rows) > 1 and r["median_us"] == cheapest[m]),
                        _cost(r["cost_vs_eager"]), _cost(r["cost_vs_function"])] if r else ["-", "", ""]
            cells.append(row)
            sections.append(i == len(rows) - 1)
    caption = ("x eager / x Fn: this call's time over the eager op's / a minimal torch.autograd.Function's "
               "(eager forward, ATen backward) in the same mode. no grad: inputs do not require grad; grad: "
               "they do; fwd+bwd: that forward and torch.autograd.grad.")
    return fitted_table(columns, cells, width, into=1, sections=sections, **_BENCH_STYLE, caption=caption,
                        title=f"[bold]Host cost per call[/] (µs, median ±half the p20-p80 spread){where}")


def _cost(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _target_markup(line: str) -> str:
    return escape(line).replace(": missed)", ": [red]missed[/])").replace(": met)", ": [green]met[/])")


def render(payload: Mapping[str, Any]) -> None:
    host = bench.measure_of(payload) == "host"
    # Tables are wider than 80 columns; when writing to a file or pipe there is no terminal to wrap.
    out = wide_console(150 if host else 110)
    records = payload["records"]
    env = payload["environment"]
    if host:
        out.print(host_table(records, fit_width(out)))
        for case in bench.host_cases(records):
            out.print(_target_markup(bench.host_summary_line(records, *case)))
        out.print()
    else:
        for activation in dict.fromkeys(r["activation"] for r in records):
            out.print(activation_table(activation, records, fit_width(out)))
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


def glu_block_report(payload: Mapping[str, Any]) -> None:
    """The GLU block's table, its findings and the environment that measured them."""
    from actkit.bench import glublock

    out = wide_console(120)
    out.print(glu_block_table(payload, fit_width(out)))
    for line in glublock.summary(payload):
        out.print(f"[bold]{escape(line)}[/]")
    env = payload["environment"]
    out.print(f"[dim]{escape(str(env['device_name']))} ({env['device']}, {env['cpu_threads']} threads); torch "
              f"{env['torch']}, triton {env['triton']}; actkit's default compile path: "
              f"{payload['default_compile_path']}.[/]")


def glu_block_table(payload: Mapping[str, Any], width: Optional[int] = None) -> Table:
    """A row per variant and mode; in fewer than the table's width, the spread, bytes, error and first call
    stand under the variant."""
    config = payload["config"]
    columns = [Col("variant", "left"), Col("mode", "left"), Col("median"), Col("p20-p80", stack=True),
               Col("x compiled composite"), Col("saved", stack=True), Col("max |diff|", stack=True),
               Col("1st call", stack=True)]
    cells, sections = [], []
    for r in payload["records"]:
        median, spread = _time_with_spread(r)
        ratio = r["vs_compile_composite"]
        cells.append([r["variant"], r["mode"], median, spread, "-" if ratio is None else f"{ratio:.2f}x",
                      size_of(r["saved_bytes"]), f"{r['max_abs_diff']:.1e}", f"{r['first_call_s']:.1f} s"])
        sections.append(r["mode"] == "fwd+bwd")
    caption = ("x compiled composite: this time over torch.compile of F.silu(a) * b's block in the same mode; "
               "saved: bytes autograd keeps for backward besides the parameters and the input")
    return fitted_table(columns, cells, width, sections=sections, **_BENCH_STYLE, caption=caption,
                        title=f"[bold]{config['act']}[/] in x + down(glu(...)): {config['tokens']} x "
                              f"{config['hidden']} -> {config['ffn']}, {config['layout']} layout, {config['dtype']}")
