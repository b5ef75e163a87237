"""Each activation's time relative to one reference activation (``actkit bench-table --relative-to relu``).

"ELU, GELU, Swish and Mish are computationally expensive next to ReLU" is a claim about ratios: this
table gives, per activation x dtype x size x mode, the median time over the reference activation's
in the same file, for actkit and for eager PyTorch (on CPU both run PyTorch's op, so the two columns
are two measurements of the same cost), with bounds from the p20/p80 spread.

Within one case the providers and a copy kernel are timed in interleaved blocks, but the cases
(activations) run one after another: a change in the host's load between two cases enters their
ratio. The table says so, and repeats the file's busy-host warning.

The predicted ratio on a GPU, from a static roofline (bytes and instructions per element of each
compiled kernel, ``actkit roofline --json``), is a column of its own: :data:`PREDICTED_HEADER`,
filled by :func:`predicted_ratios` from such a file and left as "-" otherwise. A kernel's predicted
time per element is its binding resource's (the roofline's lower bound); fwd+bwd adds the forward
launch and the backward launch autograd runs at the activation's default parameters (from x or from y,
as the registry says it saves).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .cases import size_label
from .options import MODES, BenchError
from .sweep import busy_host

RELATIVE_PROVIDERS = ("actkit", "eager", "compile")
PREDICTED_HEADER = "predicted x {ref} on {device} (static roofline)"
"""The column for a predicted ratio (e.g. H100 from benchmarks/results/static-sm90.json); ``-`` when not given."""


def _by_case(records: Sequence[Mapping[str, Any]]) -> dict[tuple, Mapping[str, Any]]:
    return {(r["activation"], r["dtype"], r["numel"], r["mode"], r["provider"]): r for r in records}


def relative_rows(payload: Mapping[str, Any], reference: str, modes: Sequence[str] | None = None,
                  dtypes: Sequence[str] | None = None) -> list[dict]:
    """One row per activation x dtype x size x mode: ``{provider: {"median_ms", "ratio", "low", "high"}}``.

    ``ratio`` is median / the reference's median (same provider, dtype, size and mode); ``low``..``high``
    bound it with the spreads: p20 / the reference's p80 .. p80 / the reference's p20.
    """
    records = [r for r in payload.get("records", []) if r.get("median_ms") is not None
               and (modes is None or r["mode"] in modes) and (dtypes is None or r["dtype"] in dtypes)]
    held = list(dict.fromkeys(r["activation"] for r in payload.get("records", [])))
    if reference not in held:
        raise BenchError(f"--relative-to {reference}: the results file has no records of it; it has: "
                         f"{', '.join(held) or 'none'}")
    found = _by_case(records)
    cases = list(dict.fromkeys((r["activation"], r["dtype"], r["numel"], r["mode"]) for r in records))
    cases.sort(key=lambda c: (held.index(c[0]), c[1], c[2], MODES.index(c[3]) if c[3] in MODES else 9))
    rows = []
    for activation, dtype, numel, mode in cases:
        row = {"activation": activation, "dtype": dtype, "numel": numel, "size": size_label(numel), "mode": mode,
               "providers": {}}
        for provider in RELATIVE_PROVIDERS:
            mine = found.get((activation, dtype, numel, mode, provider))
            ref = found.get((reference, dtype, numel, mode, provider))
            if mine is None:
                continue
            cell = {"median_ms": mine["median_ms"], "ratio": None, "low": None, "high": None}
            if ref is not None and ref["median_ms"] > 0:
                cell["ratio"] = mine["median_ms"] / ref["median_ms"]
                if ref.get("p80_ms") and ref.get("p20_ms"):
                    cell["low"] = mine["p20_ms"] / ref["p80_ms"]
                    cell["high"] = mine["p80_ms"] / ref["p20_ms"]
            row["providers"][provider] = cell
        rows.append(row)
    return rows


PredictedKey = tuple[str, str, str]  # (activation, dtype, mode)


def predicted_ratios(static: Mapping[str, Any], reference: str, gpu: str = "H100") -> dict[PredictedKey, float]:
    """{(activation, dtype, mode): predicted time over ``reference``'s} on ``gpu`` from a static roofline file.

    Only elementwise activations have a forward and a backward launch to add up; others are left out.
    """
    from actkit import registry  # the saved tensor decides which backward launch autograd runs

    times: dict[tuple[str, str, str], float] = {}
    for row in static.get("rows", []):
        model = row.get("gpus", {}).get(gpu)
        if row.get("kind") != "elementwise" or model is None:
            continue
        times[(row["activation"], row["dtype"], row["what"])] = max(model["ps_per_element"].values())
    held = {gpus for row in static.get("rows", []) for gpus in row.get("gpus", {})}
    if gpu not in held:
        raise BenchError(f"the static roofline file has no {gpu} model; it has: {', '.join(sorted(held)) or 'none'}")
    per_mode: dict[PredictedKey, float] = {}
    for (activation, dtype, what), fwd in times.items():
        if what != "forward":
            continue
        spec = registry.get(activation)
        saves = spec.saves_under(registry.DEFAULT_SAVE_POLICY, spec.defaults)  # what a default call keeps
        bwd = times.get((activation, dtype, f"backward from {saves}"))
        per_mode[(activation, dtype, "fwd")] = fwd
        if bwd is not None:
            per_mode[(activation, dtype, "bwd")] = bwd
            per_mode[(activation, dtype, "fwd+bwd")] = fwd + bwd
    return {(a, d, m): t / per_mode[(reference, d, m)] for (a, d, m), t in per_mode.items()
            if per_mode.get((reference, d, m))}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _ratio(cell: Mapping[str, Any] | None) -> str:
    if cell is None or cell["ratio"] is None:
        return "-"
    bounds = f" ({cell['low']:.2f}-{cell['high']:.2f})" if cell["low"] is not None else ""
    return f"{cell['ratio']:.2f}x{bounds}"


def relative_table(payload: Mapping[str, Any], reference: str, modes: Sequence[str] | None = None,
                   dtypes: Sequence[str] | None = None, predicted: Mapping[PredictedKey, float] | None = None,
                   predicted_device: str = "H100") -> str:
    """The Markdown table of :func:`relative_rows`, headed by where it was measured and the host's load.

    ``predicted``: {(activation, dtype, mode): predicted time over the reference's} on ``predicted_device``
    (:func:`predicted_ratios`); without it that column shows ``-`` and the note says it is not computed here."""
    rows = relative_rows(payload, reference, modes, dtypes)
    env, host, config = payload.get("environment", {}), payload.get("host") or {}, payload.get("config", {})
    providers = [p for p in RELATIVE_PROVIDERS if any(p in r["providers"] for r in rows)]
    loads = [v for v in (host.get("load_average_start"), host.get("load_average_end")) if v is not None]
    threads = config.get("threads") or env.get("cpu_threads")
    lines = [f"Time relative to {reference}, measured on **{env.get('device_name')}** ({env.get('device')}"
             + (f", {threads} thread{'s' * (threads != 1)}" if threads else "") + f"), torch {env.get('torch')}, "
             f"at {env.get('timestamp')}"
             + (f"; host 1-minute load average {min(loads):.1f}-{max(loads):.1f} on {host.get('cpu_count')} CPUs"
                if loads else "; host load not recorded") + ". "
             f"Each cell: median time over {reference}'s (same provider, dtype, size, mode), in brackets the bounds "
             f"from the spread (p20 / {reference}'s p80 .. p80 / {reference}'s p20). The providers of one activation "
             "were timed in interleaved blocks; the activations one after another, so load that changed between "
             "them is in the ratio."]
    warning = busy_host(payload)
    if warning:
        lines.append(f"Note: {warning}.")
    lines.append("")
    predicted_header = PREDICTED_HEADER.format(ref=reference, device=predicted_device)
    header = ["activation", "dtype", "elements", "mode"]
    for p in providers:
        header += [f"{p} median", f"{p} x {reference}"]
    header.append(predicted_header)
    lines += ["| " + " | ".join(header) + " |", "|---|---|---|---|" + "---:|" * (len(header) - 4)]
    for r in rows:
        cells = [r["activation"], r["dtype"], r["size"], r["mode"]]
        for p in providers:
            cell = r["providers"].get(p)
            cells += [_ms(cell["median_ms"]) if cell else "-", _ratio(cell)]
        value = (predicted or {}).get((r["activation"], r["dtype"], r["mode"]))
        cells.append("-" if value is None else f"{value:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    if predicted is None:
        lines += ["", f"{predicted_header}: not computed here (it comes from the static roofline of the compiled "
                  "kernels, not from this measurement)."]
    return "\n".join(lines) + "\n"
