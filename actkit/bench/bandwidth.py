"""The bandwidth measurement: one activation x dtype x size case, every provider x mode timed
together with a copy of the same size (the roofline), turned into records of time, GB/s, % of
copy, speedups, bytes saved for backward and peak memory."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from .. import registry
from .cases import (ENV_FIELDS, CaseInputs, bytes_moved, copy_bytes, failure_note, gbps, make_inputs, size_label,
                    skip_note)
from .config import BenchConfig
from .options import DTYPES, MODES
from .providers import (backend_label, mode_runner, peak_memory_bytes, prepared_runner, provider_fn,
                        saved_bytes_per_element, time_first_call)
from .timing import time_all

RECORD_FIELDS = (
    "activation", "kind", "params", "provider", "backend", "reference", "mode", "dtype", "numel", "size", "shape",
    "median_ms", "p20_ms", "p80_ms", "reps", "timer", "cache_flushed",
    "bytes_moved", "gbps", "copy_median_ms", "copy_gbps", "pct_of_copy",
    "actkit_speedup", "speedup_vs_eager", "speedup_vs_compile",
    "saved_bytes_per_element", "peak_mem_bytes", "first_call_s", "note", "saved_bits",
    "device", "device_name", "torch", "triton", "cuda", "cpu_threads", "actkit", "timestamp",
)
"""Every record (one per activation x dtype x size x mode x provider) has exactly these keys.

``actkit_speedup`` is this provider's median over actkit's (>1: actkit is faster); the actkit
record also carries ``speedup_vs_eager`` and ``speedup_vs_compile``. ``saved_bytes_per_element``
and ``first_call_s`` belong to the provider (same in each mode); ``peak_mem_bytes`` is set on
``fwd+bwd`` records on CUDA and is ``None`` elsewhere (not measured)."""


def run_case(config: BenchConfig, spec: registry.ActivationSpec, dtype_name: str, numel: int,
             env: Mapping[str, Any], tick: Callable[[str], None]):
    dtype = DTYPES[dtype_name]
    device = config.device
    label = f"{spec.name} {dtype_name} {size_label(numel)}"
    modes = [m for m in config.modes if spec.differentiable or m == "fwd"]
    skipped = [skip_note(spec.name, "forward-only activation: no backward to time", dtype_name, numel, mode=m)
               for m in config.modes if m not in modes]
    inputs = make_inputs(spec, numel, dtype, device, seed=config.seed)
    few_bit = config.saved_bits if spec.kind.few_bit and spec.differentiable else None
    if few_bit:
        inputs.actkit_kwargs["saved_bits"] = few_bit
    x = inputs.x
    params = spec.defaults  # learnable kinds: the parameter's initial value (one per channel, see shape)
    itemsize = x.element_size()

    # The roofline: a plain copy of the same size and dtype, timed with the providers.
    copy_out, source = torch.empty_like(x, requires_grad=False), x.detach()
    runners: dict[tuple[str, str], Callable[[], Any]] = {("copy", "copy"): lambda: copy_out.copy_(source)}
    facts: dict[str, dict[str, Any]] = {}
    for provider in config.providers:
        tick(f"{label}: {provider} (first call)")
        try:
            facts[provider], provider_runners = prepare_provider(spec, provider, modes, inputs, device,
                                                                 (dtype_name, numel))
            runners.update(provider_runners)
        except Exception as exc:  # a provider that cannot run this case is reported, not fatal
            skipped.append(failure_note(spec.name, provider, exc, dtype_name, numel))
    tick(f"{label}: timing")
    timings = time_all(runners, config)
    runners.clear()  # frees the graphs retained for bwd
    copy_timing = timings.pop(("copy", "copy"))
    copy_bw = gbps(copy_bytes(numel, itemsize), copy_timing.median_s)

    records = []
    for (provider, mode), timing in timings.items():
        nbytes = bytes_moved(spec.kind.name, mode, numel, itemsize)
        bw = gbps(nbytes, timing.median_s)
        actkit_timing = timings.get(("actkit", mode))
        fact = facts[provider]
        record = {
            "activation": spec.name, "kind": spec.kind.name, "params": dict(params), "provider": provider,
            "backend": fact["backend"], "reference": "native" if spec.native else "composite", "mode": mode,
            "dtype": dtype_name, "numel": numel, "size": size_label(numel), "shape": list(x.shape),
            "median_ms": timing.median_s * 1e3, "p20_ms": timing.p20_s * 1e3, "p80_ms": timing.p80_s * 1e3,
            "reps": timing.reps, "timer": timing.timer, "cache_flushed": timing.cache_flushed,
            "bytes_moved": nbytes, "gbps": bw, "copy_median_ms": copy_timing.median_s * 1e3, "copy_gbps": copy_bw,
            "pct_of_copy": 100.0 * bw / copy_bw,
            "actkit_speedup": timing.median_s / actkit_timing.median_s if actkit_timing else None,
            "speedup_vs_eager": None, "speedup_vs_compile": None,
            "saved_bytes_per_element": fact["saved"], "peak_mem_bytes": fact["peak"] if mode == "fwd+bwd" else None,
            "first_call_s": fact["first_call_s"], "note": fact["notes"].get(mode),
            "saved_bits": few_bit if provider == "actkit" else None,
        }
        if provider == "actkit":
            for other in ("eager", "compile"):
                if (other, mode) in timings:
                    record[f"speedup_vs_{other}"] = timings[(other, mode)].median_s / timing.median_s
        record.update({k: env.get(k) for k in ENV_FIELDS})
        records.append(record)
    provider_order = {p: i for i, p in enumerate(config.providers)}
    records.sort(key=lambda r: (MODES.index(r["mode"]), provider_order[r["provider"]]))
    return records, skipped


def prepare_provider(spec, provider: str, modes: Sequence[str], inputs: CaseInputs, device: str,
                     key) -> tuple[dict[str, Any], dict[tuple[str, str], Callable[[], Any]]]:
    """First call, saved bytes and peak memory of one provider, and its warmed runner per mode."""
    fn = provider_fn(provider, spec, inputs.kwargs, key=key, actkit_kwargs=inputs.actkit_kwargs)

    first_call_s = time_first_call(mode_runner(fn, "fwd+bwd" if spec.differentiable else "fwd", inputs), device)
    facts = {"backend": backend_label(provider, inputs.x), "first_call_s": first_call_s,
             "saved": saved_bytes_per_element(fn, inputs) if spec.differentiable else None, "peak": None,
             "notes": {}}
    if spec.differentiable and "fwd+bwd" in modes:
        facts["peak"] = peak_memory_bytes(mode_runner(fn, "fwd+bwd", inputs), device)
    runners = {}
    for mode in modes:
        runners[(provider, mode)], facts["notes"][mode] = prepared_runner(provider, spec, mode, inputs, key, fn)
    return facts, runners

