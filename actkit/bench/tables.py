"""Results as text: summary lines and the README's markdown tables, for both measurements."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .cases import size_label
from .files import measure_of
from .hostcost import TARGETS, target_ratios
from .options import HOST_MODES, HOST_PROVIDERS, MODES, PROVIDERS, BenchError
from .sweep import busy_host


def format_bandwidth(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} TB/s" if value >= 1000 else f"{value:.1f} GB/s"


def _reference_label(record: Mapping[str, Any]) -> str:
    return "ATen" if record.get("reference") == "native" else "eager"


def headline(records: Sequence[Mapping[str, Any]], activation: str) -> Mapping[str, Any] | None:
    """The record a summary line is about: actkit (else the first provider), the first mode and
    dtype measured, the largest size."""
    rows = [r for r in records if r["activation"] == activation]
    if not rows:
        return None
    providers = [r["provider"] for r in rows]
    provider = "actkit" if "actkit" in providers else providers[0]
    rows = [r for r in rows if r["provider"] == provider]
    mode = min((r["mode"] for r in rows), key=MODES.index)
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    rows = [r for r in rows if r["mode"] == mode and r["dtype"] == dtypes[0]]
    return max(rows, key=lambda r: r["numel"])


def summary_line(records: Sequence[Mapping[str, Any]], activation: str) -> str | None:
    """E.g. ``mish fwd bf16 2^24: 2.71 TB/s, 93% of copy, 1.02x ATen, 1.00x compile``."""
    r = headline(records, activation)
    if r is None:
        return None
    parts = [format_bandwidth(r["gbps"]), f"{r['pct_of_copy']:.0f}% of copy"]
    if r["provider"] == "actkit":
        if r["speedup_vs_eager"] is not None:
            parts.append(f"{r['speedup_vs_eager']:.2f}x {_reference_label(r)}")
        if r["speedup_vs_compile"] is not None:
            parts.append(f"{r['speedup_vs_compile']:.2f}x compile")
    else:
        parts.append(f"({r['provider']}; actkit not measured)")
    return f"{r['activation']} {r['mode']} {r['dtype']} {r['size']}: " + ", ".join(parts)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


LAYOUTS = ("wide", "long")


def markdown_table(payload: Mapping[str, Any], modes: Sequence[str] | None = None,
                   dtypes: Sequence[str] | None = None, layout: str = "wide",
                   activations: Sequence[str] | None = None) -> str:
    """A results payload (as :func:`run` returns or a bench JSON file holds) as a markdown table of
    actkit's figures, headed by where and how it was measured.

    ``wide``: one row per activation x dtype x size, the modes side by side (fwd / bwd / fwd+bwd).
    ``long``: one row per activation x dtype x size x mode, with actkit's median time.
    A host-cost payload gets its own tables (see :func:`_host_markdown_table`). ``activations``: only
    these (in the file's order).
    """
    measure = measure_of(payload)
    if layout not in LAYOUTS:
        raise BenchError(f"unknown table layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if activations is not None:
        held = list(dict.fromkeys(r["activation"] for r in payload["records"]))
        missing = [a for a in activations if a not in held]
        if missing:
            raise BenchError(f"the results file has no records of {', '.join(missing)}; it has: {', '.join(held)}")
        payload = {**payload, "records": [r for r in payload["records"] if r["activation"] in activations]}
    if measure == "host":
        return _host_markdown_table(payload, modes, dtypes, layout)
    records = [r for r in payload["records"] if r["provider"] == "actkit"
               and (modes is None or r["mode"] in modes) and (dtypes is None or r["dtype"] in dtypes)]
    shown_modes = [m for m in MODES if any(r["mode"] == m for r in records)]
    lines = _heading(payload, records, "GB/s counts the bytes that must move; % of copy compares with a copy of the "
                     "same size and dtype timed in the same run; `vs eager` / `vs compile` are that provider's time "
                     "over actkit's (>1: actkit faster); saved B/elem is what autograd keeps for backward.")
    saved = {(r["activation"], r["dtype"], r["numel"], r["provider"]): r["saved_bytes_per_element"]
             for r in payload["records"]}

    def saved_triple(r) -> str:
        return " / ".join(_fmt(saved.get((r["activation"], r["dtype"], r["numel"], p)), ".3g") for p in PROVIDERS)

    if layout == "long":
        lines += ["| activation | mode | dtype | elements | actkit median | GB/s | % of copy | vs eager | vs compile "
                  "| saved B/elem (actkit / eager / compile) |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in records:
            lines.append(
                f"| {r['activation']} | {r['mode']} | {r['dtype']} | {r['size']} | {_fmt_time(r['median_ms'])} "
                f"| {r['gbps']:.1f} | {r['pct_of_copy']:.0f}% | {_fmt(r['speedup_vs_eager'], '.2f', 'x')} "
                f"| {_fmt(r['speedup_vs_compile'], '.2f', 'x')} | {saved_triple(r)} |")
        return "\n".join(lines) + "\n"

    joined = " / ".join(shown_modes)
    lines += [f"| activation | dtype | elements | GB/s ({joined}) | % of copy ({joined}) | vs eager ({joined}) "
              f"| vs compile ({joined}) | saved B/elem (actkit / eager / compile) |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    rows: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        rows.setdefault((r["activation"], r["dtype"], r["numel"]), {})[r["mode"]] = r

    def per_mode(by_mode, field_name: str, spec: str, suffix: str = "") -> str:
        return " / ".join(_fmt(by_mode[m][field_name] if m in by_mode else None, spec, suffix) for m in shown_modes)

    for (activation, dtype, _), by_mode in rows.items():
        first = next(iter(by_mode.values()))
        eager = per_mode(by_mode, "speedup_vs_eager", ".2f")
        if first["reference"] != "native":
            eager += " (composite)"
        lines.append(f"| {activation} | {dtype} | {first['size']} | {per_mode(by_mode, 'gbps', '.1f')} "
                     f"| {per_mode(by_mode, 'pct_of_copy', '.0f')} | {eager} "
                     f"| {per_mode(by_mode, 'speedup_vs_compile', '.2f')} | {saved_triple(first)} |")
    return "\n".join(lines) + "\n"


def _heading(payload: Mapping[str, Any], records: Sequence[Mapping[str, Any]], explanation: str) -> list[str]:
    """Where, with what and by which command a table's figures were measured, and a busy-host note."""
    env = payload.get("environment", {})
    config = payload.get("config", {})
    device_type = torch.device(env.get("device", "cpu")).type
    flags = (" --host-cost" if config.get("measure") == "host" else "") + \
        (" --quick" if config.get("quick") else "") + \
        (f" --threads {config['threads']}" if config.get("threads") else "") + \
        (f" --saved-bits {config['saved_bits']}" if config.get("saved_bits") else "")
    backends = ", ".join(sorted({str(r["backend"]) for r in records if r["provider"] in ("actkit", "module")})) or "-"
    n_threads = env.get("cpu_threads")
    threads = f", {n_threads} thread{'' if n_threads == 1 else 's'}" if device_type == "cpu" else ""
    timer = records[0]["timer"].split("(")[0] if records else "-"
    lines = [
        f"Measured on **{env.get('device_name')}** ({env.get('device')}{threads}), torch {env.get('torch')}, "
        f"triton {env.get('triton')}, actkit {env.get('actkit')}, actkit backend `{backends}`, timer {timer}: "
        f"`actkit bench --device {device_type}{flags}` at {env.get('timestamp')}. {explanation}",
    ]
    warning = busy_host(payload)
    if warning:
        lines.append(f"Note: {warning}.")
    lines.append("")
    return lines


# -- host cost -------------------------------------------------------------------------------------
PROVIDER_LABELS = {"actkit": "actkit.functional", "module": "actkit.nn", "eager": "eager",
                   "function": "autograd.Function", "compile": "torch.compile"}
MODE_LABELS = {"nograd": "no grad", "grad": "grad", "fwd+bwd": "fwd+bwd"}


def format_us(us: float | None) -> str:
    """Microseconds with three significant digits (``-`` when not measured)."""
    if us is None:
        return "-"
    return f"{us:.3g}" if us < 100 else f"{us:.0f}"


def target_line(target, ratio: float | None) -> str:
    """E.g. ``no grad: actkit.functional 18.8x eager (target <= 3x: missed)``."""
    what = f"{MODE_LABELS[target.mode]}: {PROVIDER_LABELS[target.provider]}"
    if ratio is None:
        return f"{what} vs {PROVIDER_LABELS[target.baseline]}: not measured"
    verdict = "met" if ratio <= target.at_most else "missed"
    return (f"{what} {ratio:.1f}x {PROVIDER_LABELS[target.baseline]} "
            f"(target <= {target.at_most:g}x: {verdict})")


def host_cases(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """The (activation, dtype, numel) cases host-cost records hold, in order."""
    return list(dict.fromkeys((r["activation"], r["dtype"], r["numel"]) for r in records))


def host_summary_line(records: Sequence[Mapping[str, Any]], activation: str, dtype: str, numel: int) -> str:
    """E.g. ``mish fp32 2^4: no grad: actkit.functional 18.8x eager (target <= 3x: missed); grad: ...``."""
    parts = [target_line(t, ratio) for t, ratio in target_ratios(records, activation, dtype, numel)]
    return f"{activation} {dtype} {size_label(numel)}: " + "; ".join(parts)


def _host_markdown_table(payload: Mapping[str, Any], modes: Sequence[str] | None, dtypes: Sequence[str] | None,
                         layout: str) -> str:
    """``wide``: a row per activation x dtype x size x call, the modes side by side, then the targets;
    ``long``: a row per mode too, with the p20-p80 spread."""
    records = [r for r in payload["records"]
               if (modes is None or r["mode"] in modes) and (dtypes is None or r["dtype"] in dtypes)]
    shown_modes = [m for m in HOST_MODES if any(r["mode"] == m for r in records)]
    lines = _heading(payload, records, "µs per call, median over interleaved blocks; `x eager` / `x Function` "
                     "are that call's time over the eager op's / a minimal torch.autograd.Function's (eager "
                     "forward, ATen backward) in the same mode (>1: costlier). no grad: inputs do not require grad; "
                     "grad: they do (autograd records the graph); fwd+bwd: that forward and its backward.")
    if layout == "long":
        lines += ["| activation | dtype | elements | call | mode | median µs | p20-p80 µs | x eager | x Function |",
                  "|---|---|---|---|---|---:|---:|---:|---:|"]
        for r in records:
            lines.append(f"| {r['activation']} | {r['dtype']} | {r['size']} | `{r['call']}` | {r['mode']} "
                         f"| {format_us(r['median_us'])} | {format_us(r['p20_us'])}-{format_us(r['p80_us'])} "
                         f"| {_fmt(r['cost_vs_eager'], '.2f', 'x')} | {_fmt(r['cost_vs_function'], '.2f', 'x')} |")
        return "\n".join(lines) + "\n"

    joined = " / ".join(MODE_LABELS[m] for m in shown_modes)
    lines += [f"| activation | dtype | elements | call | µs per call ({joined}) | x eager ({joined}) "
              f"| x Function ({joined}) |",
              "|---|---|---|---|---:|---:|---:|"]
    rows: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        rows.setdefault((r["activation"], r["dtype"], r["numel"], r["provider"]), {})[r["mode"]] = r

    def per_mode(by_mode, field_name: str, fmt) -> str:
        return " / ".join(fmt(by_mode[m][field_name]) if m in by_mode else "-" for m in shown_modes)

    def ratio(value):
        return _fmt(value, ".2f")

    cases, order = host_cases(records), {p: i for i, p in enumerate(HOST_PROVIDERS)}
    for key in sorted(rows, key=lambda k: (cases.index(k[:3]), order[k[3]])):
        by_mode = rows[key]
        first = next(iter(by_mode.values()))
        lines.append(f"| {key[0]} | {key[1]} | {first['size']} | `{first['call']}` "
                     f"| {per_mode(by_mode, 'median_us', format_us)} | {per_mode(by_mode, 'cost_vs_eager', ratio)} "
                     f"| {per_mode(by_mode, 'cost_vs_function', ratio)} |")
    headers = " | ".join(f"{MODE_LABELS[t.mode]}: {PROVIDER_LABELS[t.provider]} / {PROVIDER_LABELS[t.baseline]} "
                         f"(target <= {t.at_most:g}x)" for t in TARGETS)
    lines += ["", f"| activation | dtype | elements | {headers} |", "|---|---|---|" + "---:|" * len(TARGETS)]
    for activation, dtype, numel in cases:
        cells = " | ".join(_fmt(found, ".2f", "x") for _, found in target_ratios(records, activation, dtype, numel))
        lines.append(f"| {activation} | {dtype} | {size_label(numel)} | {cells} |")
    return "\n".join(lines) + "\n"


def _fmt_time(ms: float) -> str:
    return f"{ms * 1e3:.1f} µs" if ms < 1 else f"{ms:.3f} ms"


def format_time(ms: float | None) -> str:
    """Milliseconds as µs below 1 ms."""
    return "-" if ms is None else _fmt_time(ms)

