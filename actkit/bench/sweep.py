"""The sweep: plan the activation x dtype x size cases of a configuration, run each, and keep a
payload of records that can be checkpointed after every case and resumed from a saved file."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import torch

from .. import registry, results, selection
from . import bandwidth, hostcost
from .cases import KINDS, skip_note
from .config import BenchConfig
from .files import SCHEMAS
from .options import BenchError
from .providers import forget_compiled

_RUN_CASE = {"bandwidth": bandwidth.run_case, "host": hostcost.run_case}
# The mode a forward-only activation (no backward) can still be measured in.
_FORWARD_MODE = {"bandwidth": "fwd", "host": "nograd"}

ProgressCallback = Callable[[int, int, str], None]
"""``progress(done, total, label)``: ``done`` of ``total`` work units finished, ``label`` names the next."""


@dataclass
class _Plan:
    cases: list[tuple[registry.ActivationSpec, str, int]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def plan(config: BenchConfig) -> _Plan:
    """The (spec, dtype, size) cases to run, and the activations skipped with the reason."""
    out = _Plan()
    for name in config.activations:
        spec = registry.get(name)
        if spec.kind.name not in KINDS:
            out.skipped.append(skip_note(spec.name, reason=f"kind {spec.kind.name!r} is not benchmarked yet "
                                                           f"(actkit.bench supports: {', '.join(KINDS)})"))
            continue
        reason = selection.few_bit_refusal(spec) if config.saved_bits else None
        if reason is not None:  # only with --act all: make_config refuses such an activation when named
            out.skipped.append(skip_note(spec.name, reason=f"--saved-bits: {reason}"))
            continue
        forward = _FORWARD_MODE[config.measure]
        if not spec.differentiable and forward not in config.modes:
            out.skipped.append(skip_note(spec.name, reason=f"forward-only activation and no {forward} mode "
                                                           "requested"))
            continue
        sizes = []
        for size in config.sizes:
            try:
                KINDS[spec.kind.name].shape(size)
                sizes.append(size)
            except BenchError as exc:  # a size this kind cannot take (an odd size for a GLU)
                out.skipped.append(skip_note(spec.name, reason=str(exc), numel=size))
        for dtype in config.dtypes:
            for size in sizes:
                out.cases.append((spec, dtype, size))
    return out


def run(config: BenchConfig, progress: ProgressCallback | None = None, *,
        previous: Mapping[str, Any] | None = None,
        checkpoint: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Run every case of the configuration's measurement (``config.measure``); returns
    ``{"schema", "complete", "environment", "host", "config", "records", "skipped"}``.

    ``previous``: a payload from an earlier run of the same configuration (see :func:`check_resumable`);
    its records and notes are kept as they are and only the cases it lacks are run.
    ``checkpoint(payload)`` is called before the first case and after every case, so that a caller can
    save each step and an interrupted sweep keeps every finished case; ``"complete"`` turns true once
    every case of the file's configuration is recorded (so the last checkpoint holds the final result).
    """
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, progress, previous, checkpoint)
    finally:
        torch.set_num_threads(threads_before)


CaseKey = tuple[str, str, int]
"""(activation, dtype, numel): the unit a sweep stores and resumes."""

# What decides the numbers in a file: a resumed run must match all of it. Activations may differ
# (each case stands alone), so a resume can also add activations to a file.
# The measurement comes first: it is the difference to name when a file holds the other one.
_RESUME_CONFIG_KEYS = ("measure", *(f.name for f in fields(BenchConfig) if f.name not in ("activations", "measure")))
_RESUME_ENV_KEYS = ("device_name", "cpu_threads", "torch", "triton")


def cases_done(payload: Mapping[str, Any]) -> set[CaseKey]:
    """The cases a payload holds. A case's records and notes are stored together when it finishes,
    so any record or per-case note (a skipped mode or provider) marks the case done."""
    return {(r["activation"], r["dtype"], r["numel"]) for r in (*payload["records"], *payload["skipped"])
            if r.get("numel") is not None}


def check_resumable(previous: Mapping[str, Any], config: BenchConfig, env: Mapping[str, Any]) -> None:
    """:class:`BenchError` naming the first setting in which ``previous`` differs from this run."""
    # Through JSON, as the file holds it: tuples become lists.
    now = json.loads(json.dumps(config.to_dict()))
    saved_config, saved_env = previous.get("config") or {}, previous.get("environment") or {}
    # Files from before host-cost measurements existed hold bandwidth sweeps.
    saved_config = {"measure": "bandwidth", **saved_config}
    differing = [(key, saved_config.get(key), now[key]) for key in _RESUME_CONFIG_KEYS
                 if saved_config.get(key) != now[key]]
    differing += [(key, saved_env.get(key), env.get(key)) for key in _RESUME_ENV_KEYS
                  if saved_env.get(key) != env.get(key)]
    if differing:
        key, was, is_now = differing[0]
        raise BenchError(f"cannot resume: the file was made with {key} {was!r}, this run has {is_now!r}; "
                         "rerun with the file's options, or write to another --json path")


def _run(config: BenchConfig, progress: ProgressCallback | None, previous: Mapping[str, Any] | None,
         checkpoint: Callable[[dict[str, Any]], Any] | None) -> dict[str, Any]:
    env = results.environment(config.device)
    if previous is not None:
        check_resumable(previous, config, env)
    # On resume the file's environment and start load stay: they describe when the sweep began;
    # every record carries its own timestamp.
    environment = dict(previous["environment"]) if previous is not None else env
    load_start = (previous.get("host") or {}).get("load_average_start") if previous is not None else _load_average()
    records: list[dict[str, Any]] = list(previous["records"]) if previous is not None else []
    skipped: list[dict[str, Any]] = list(previous["skipped"]) if previous is not None else []
    done = cases_done(previous) if previous is not None else set()
    # The file describes every activation it holds: the earlier ones and any this run adds.
    earlier = tuple(previous["config"]["activations"]) if previous is not None else ()
    stored = replace(config, activations=tuple(dict.fromkeys(earlier + config.activations)))
    the_plan = plan(config)
    if not the_plan.cases and previous is None:  # every case skipped: a request that cannot run, not a result
        raise BenchError("nothing to measure: " + "; ".join(f"{s['activation']}: {s['reason']}" for s in the_plan.skipped))
    skipped += [s for s in the_plan.skipped if s not in skipped]
    todo = [case for case in the_plan.cases if (case[0].name, case[1], case[2]) not in done]
    # Work units: each provider's first call (compiles happen here), then the case's timing.
    units = len(todo) * (len(config.providers) + 1)
    started = 0

    def tick(label: str) -> None:
        """Announce the unit about to run; ``done`` counts the units finished before it."""
        nonlocal started
        if progress is not None:
            progress(started, units, label)
        started += 1

    def payload() -> dict[str, Any]:
        complete = all((spec.name, dtype, numel) in done for spec, dtype, numel in plan(stored).cases)
        host = {"cpu_count": os.cpu_count(), "load_average_start": load_start, "load_average_end": _load_average()}
        return {"schema": SCHEMAS[config.measure], "complete": complete, "environment": environment, "host": host,
                "config": stored.to_dict(), "records": records, "skipped": skipped}

    if checkpoint is not None:
        checkpoint(payload())  # claims the path (and fails on an unwritable one) before the long part
    try:
        with torch.cuda.device(config.device) if config.device_type == "cuda" else contextlib.nullcontext():
            for spec, dtype_name, numel in todo:
                case_records, case_skipped = _run_case(config, spec, dtype_name, numel, env, tick)
                records.extend(case_records)
                skipped.extend(case_skipped)
                done.add((spec.name, dtype_name, numel))
                if checkpoint is not None:
                    checkpoint(payload())
    finally:
        forget_compiled()
    if progress is not None:
        progress(units, units, "done")
    return payload()


def _load_average() -> float | None:
    """The host's 1-minute load average (where the OS reports one): CPU timings on a busy host are noisy."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_host(payload: Mapping[str, Any]) -> str | None:
    """A warning when other work loaded the CPU during a CPU run (load >= half the cores), else None."""
    host = payload.get("host") or {}
    if not str(payload.get("environment", {}).get("device", "")).startswith("cpu"):
        return None
    loads = [v for v in (host.get("load_average_start"), host.get("load_average_end")) if v is not None]
    cores = host.get("cpu_count") or 1
    if loads and max(loads) >= cores / 2:
        threads = payload.get("environment", {}).get("cpu_threads") or 1
        hint = "; multi-threaded ops stall while a thread waits for a core (--threads 1 is steadier)" \
            if threads > 1 else ""
        return (f"the host was busy (1-minute load average up to {max(loads):.1f} on {cores} CPUs): CPU timings "
                "include waiting for other processes; the providers were interleaved, so ratios are fairer than "
                f"absolute times{hint}")
    return None


def _run_case(config: BenchConfig, spec: registry.ActivationSpec, dtype_name: str, numel: int,
              env: Mapping[str, Any], tick: Callable[[str], None]):
    """One case's records and notes, from the configuration's measurement."""
    return _RUN_CASE[config.measure](config, spec, dtype_name, numel, env, tick)
