"""The host-cost measurement: what one call costs at a tiny size, where the kernel's own work is
negligible and the host's work per call (argument handling, dispatch, autograd bookkeeping, the
launch) is all there is.

For each activation, every provider x mode of a case is timed interleaved (see
:func:`.timing.time_interleaved`), in µs per call. Providers (:data:`.options.HOST_PROVIDERS`):

* ``actkit``   - ``actkit.functional.<name>(x)``, as a user calls it;
* ``module``   - ``actkit.nn.<Class>()(x)``, the module call (``nn.Module.__call__`` included);
* ``eager``    - the spec's PyTorch reference, e.g. ``F.mish(x)``;
* ``function`` - a minimal ``torch.autograd.Function`` around that reference and the spec's ATen
  backward op (e.g. ``aten.mish_backward``): the floor for any custom op with its own autograd,
  measured only where the registry names an ATen backward op (``spec.aten_backward()``);
* ``compile``  - ``torch.compile`` of the reference (Dynamo's guards and the compiled call).

Modes (:data:`.options.HOST_MODES`): ``nograd`` (a forward whose inputs do not require grad, so
autograd records nothing: inference), ``grad`` (the input and any learnable parameter require grad:
the forward records the graph and saves what backward needs) and ``fwd+bwd`` (that forward and
``torch.autograd.grad`` of it).

Calls spell only what a caller must: the default parameters are implied (``F.leaky_relu(x)``),
row-wise kinds pass ``dim=-1``, learnable kinds pass their parameter tensor (the module owns it).

On CUDA the host cost is what the CPU spends to issue a call: the timer synchronises once per
block of calls (thousands of them), not per call, so the GPU runs behind the host. When a call's
kernels take longer on the GPU than their launch takes on the host, the launch queue fills and
the figure becomes the GPU time: at the tiny default size that does not happen.

Records report each time as ``cost_vs_eager`` (over the eager op's time in the same mode) and
``cost_vs_function`` (over the minimal autograd.Function's); :data:`TARGETS` names the ratios
issue 9 sets as goals, which the tables show explicitly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from .. import functional, registry
from .. import nn as actkit_nn
from .cases import ENV_FIELDS, failure_note, make_inputs, size_label, skip_note
from .config import BenchConfig
from .options import DTYPES, HOST_MODES, BenchError
from .providers import backend_label, compiled_reference, time_first_call
from .timing import time_interleaved

HOST_RECORD_FIELDS = (
    "activation", "kind", "provider", "call", "backend", "mode", "dtype", "numel", "size", "shape",
    "median_us", "p20_us", "p80_us", "reps", "timer", "cost_vs_eager", "cost_vs_function", "first_call_s",
    *ENV_FIELDS,
)
"""Every host-cost record (one per activation x dtype x size x mode x provider) has exactly these keys.

``call`` is the expression timed; ``cost_vs_eager`` / ``cost_vs_function`` are this median over the
eager op's / the minimal autograd.Function's in the same mode (``None`` where that one was not
measured); ``first_call_s`` is this mode's first call (compiles, lazy initialisation), not timed."""


@dataclass(frozen=True)
class Target:
    """A goal on the ratio of two providers' host cost in one mode: ``provider`` within ``at_most``
    times ``baseline``."""
    mode: str
    provider: str
    baseline: str
    at_most: float


TARGETS = (
    Target("nograd", "actkit", "eager", 3.0),     # a no-grad call within 3x of the native op
    Target("grad", "module", "function", 2.0),    # actkit.nn.<Class>()(x), x requiring grad, within 2x of
)                                                 # the minimal autograd.Function
"""Issue 9's targets on this measurement."""

_BASELINE_FIELD = {"eager": "cost_vs_eager", "function": "cost_vs_function"}


@dataclass
class HostCase:
    """One case's tensors and callables. ``x``, ``args`` and ``module`` require grad where the
    activation has a backward; ``x0``, ``args0`` and ``module0`` are the same values without grad."""
    spec: registry.ActivationSpec
    x: torch.Tensor
    x0: torch.Tensor
    dy: torch.Tensor
    args: tuple[torch.Tensor, ...]
    args0: tuple[torch.Tensor, ...]
    kwargs: dict[str, Any]
    module: torch.nn.Module
    module0: torch.nn.Module

    @property
    def wrt(self) -> tuple[torch.Tensor, ...]:
        return tuple(t for t in (self.x, *self.args) if t.requires_grad)


def make_host_case(spec: registry.ActivationSpec, numel: int, dtype: torch.dtype, device: str,
                   seed: int = 0) -> HostCase:
    """The case's inputs (as :func:`.cases.make_inputs`), and the modules: a learnable kind's
    parameter is the module's own, so that every provider differentiates the same tensors."""
    inputs = make_inputs(spec, numel, dtype, device, seed=seed)
    x = inputs.x
    kwargs = {"dim": -1} if spec.kind.normalises else {}
    if spec.kind.learnable:
        channels = inputs.args[0].numel()
        module, module0 = (actkit_nn.class_for(spec)(num_parameters=channels, device=device, dtype=dtype)
                           for _ in range(2))
        module.requires_grad_(spec.differentiable)
        module0.requires_grad_(False)
        pname = spec.params[0].name
        args, args0 = (getattr(module, pname),), (getattr(module0, pname),)
    else:
        module, module0 = (actkit_nn.class_for(spec)(**kwargs) for _ in range(2))
        args = args0 = ()
    return HostCase(spec, x, x.detach(), inputs.dy, args, args0, kwargs, module, module0)


def minimal_function(spec: registry.ActivationSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """``apply`` of the smallest ``torch.autograd.Function`` that gives the activation its autograd:
    forward calls the eager op and saves x (or y), backward calls the registry's ATen backward op.

    What a user would write by hand for one activation; no custom op, no checks. Needs the spec's
    ATen backward op (``spec.aten_backward()``; native elementwise activations have one).
    """
    found = spec.aten_backward()
    if found is None:
        raise BenchError(f"{spec.name}: the registry has no ATen backward op for it, so there is no minimal "
                         "autograd.Function baseline")
    (backward_op, saved), forward_op, params = found, spec.reference, spec.defaults
    saves_output = saved == "y"

    def forward(ctx, x):
        y = forward_op(x, **params)
        ctx.save_for_backward(y if saves_output else x)
        return y

    def backward(ctx, dy):
        (saved,) = ctx.saved_tensors
        return backward_op(dy, saved, **params)

    # Built with type() so that the class, and the graph node autograd names after it, say which activation.
    minimal = type(f"Minimal{spec.class_name}", (torch.autograd.Function,),
                   {"forward": staticmethod(forward), "backward": staticmethod(backward)})
    return minimal.apply


def call_label(provider: str, spec: registry.ActivationSpec) -> str:
    """The expression a provider's call stands for, e.g. ``actkit.nn.Mish()(x)``."""
    learnable = spec.kind.learnable
    arg = f", {spec.params[0].name}" if learnable else ", dim=-1" if spec.kind.normalises else ""
    if provider == "actkit":
        return f"actkit.functional.{spec.name}(x{arg})"
    if provider == "module":
        ctor = "num_parameters=C" if learnable else "dim=-1" if spec.kind.normalises else ""
        return f"actkit.nn.{spec.class_name}({ctor})(x)"
    reference = _qualified_name(spec.reference)
    if provider == "eager":
        return f"{reference}(x{arg})"
    if provider == "function":
        backward = spec.aten_backward()[0]
        backward_name = str(backward) if isinstance(backward, torch._ops.OpOverloadPacket) else "ATen backward"
        return f"autograd.Function({reference}, {backward_name})"
    if provider == "compile":
        return f"torch.compile({reference})(x{arg})"
    raise BenchError(f"unknown host-cost provider {provider!r}")


@functools.lru_cache(maxsize=None)
def _qualified_name(fn: Callable) -> str:
    """How a user would spell ``fn``: ``F.mish``, ``F.logsigmoid``, ``torch.softmax``; else module and name."""
    name = getattr(fn, "__name__", None)
    functional_ns = torch.nn.functional
    if name and getattr(functional_ns, name, None) is fn:
        return f"F.{name}"
    if name and getattr(torch, name, None) is fn:
        return f"torch.{name}"
    alias = next((n for n in dir(functional_ns) if getattr(functional_ns, n) is fn), None)  # F.logsigmoid
    if alias is not None:
        return f"F.{alias}"
    return f"{getattr(fn, '__module__', None) or '?'}.{name or repr(fn)}"


def _provider_call(provider: str, case: HostCase, grad: bool, key: Any) -> tuple[Callable, tuple]:
    """The callable a provider times and its arguments after x."""
    spec, kwargs = case.spec, case.kwargs
    args = case.args if grad else case.args0
    if provider == "module":
        return (case.module if grad else case.module0), ()
    if provider == "function":
        return minimal_function(spec), ()
    if provider == "compile":
        return compiled_reference(spec, kwargs, (spec.name, "host", key)), args
    fn = getattr(functional, spec.name) if provider == "actkit" else spec.reference
    if kwargs:
        return (lambda x, *a: fn(x, *a, **kwargs)), args
    return fn, args


def host_runner(provider: str, case: HostCase, mode: str, key: Any = None) -> Callable[[], Any]:
    """A no-argument callable making one call of ``provider`` in ``mode``."""
    if mode not in HOST_MODES:
        raise BenchError(f"unknown host-cost mode {mode!r}; choose from {', '.join(HOST_MODES)}")
    fn, args = _provider_call(provider, case, mode != "nograd", key)
    if mode == "nograd":
        x = case.x0
        return lambda: fn(x, *args)
    x, dy, wrt = case.x, case.dy, case.wrt
    if mode == "grad":
        return lambda: fn(x, *args)
    return lambda: torch.autograd.grad(fn(x, *args), wrt, dy)


def run_case(config: BenchConfig, spec: registry.ActivationSpec, dtype_name: str, numel: int,
             env: Mapping[str, Any], tick: Callable[[str], None]):
    """Time every provider x mode of one activation x dtype x size, interleaved; records and notes."""
    label = f"{spec.name} {dtype_name} {size_label(numel)}"
    modes = [m for m in config.modes if spec.differentiable or m == "nograd"]
    skipped = [skip_note(spec.name, "forward-only activation: its input never requires grad", dtype_name, numel,
                         mode=m) for m in config.modes if m not in modes]
    case = make_host_case(spec, numel, DTYPES[dtype_name], config.device, seed=config.seed)
    runners: dict[tuple[str, str], Callable[[], Any]] = {}
    first_calls: dict[tuple[str, str], float] = {}
    for provider in config.providers:
        tick(f"{label}: {provider} (first calls)")
        if provider == "function" and spec.aten_backward() is None:
            skipped.append(skip_note(spec.name, "no minimal autograd.Function baseline: the registry has no ATen "
                                     "backward op for it", dtype_name, numel, provider=provider))
            continue
        try:
            for mode in modes:
                run = host_runner(provider, case, mode, key=(dtype_name, numel))
                first_calls[(provider, mode)] = time_first_call(run, config.device)
                runners[(provider, mode)] = run
        except Exception as exc:  # a provider that cannot run this case is reported, not fatal
            for mode in modes:
                runners.pop((provider, mode), None)
            skipped.append(failure_note(spec.name, provider, exc, dtype_name, numel))
    tick(f"{label}: timing")
    timings = time_interleaved(runners, config)
    runners.clear()

    records = []
    for (provider, mode), timing in timings.items():
        record = {
            "activation": spec.name, "kind": spec.kind.name, "provider": provider, "call": call_label(provider, spec),
            "backend": backend_label(provider, case.x), "mode": mode, "dtype": dtype_name, "numel": numel,
            "size": size_label(numel), "shape": list(case.x.shape),
            "median_us": timing.median_s * 1e6, "p20_us": timing.p20_s * 1e6, "p80_us": timing.p80_s * 1e6,
            "reps": timing.reps, "timer": timing.timer,
        }
        for baseline, name in _BASELINE_FIELD.items():
            other = timings.get((baseline, mode))
            record[name] = timing.median_s / other.median_s if other is not None else None
        record["first_call_s"] = first_calls[(provider, mode)]
        record.update({k: env.get(k) for k in ENV_FIELDS})
        records.append(record)
    provider_order = {p: i for i, p in enumerate(config.providers)}
    records.sort(key=lambda r: (provider_order[r["provider"]], HOST_MODES.index(r["mode"])))
    return records, skipped


def target_ratios(records, activation: str, dtype: str, numel: int) -> list[tuple[Target, float | None]]:
    """Each of :data:`TARGETS` with the ratio measured for one case (``None``: not measured)."""
    found = []
    for target in TARGETS:
        ratio = next((r[_BASELINE_FIELD[target.baseline]] for r in records
                      if (r["activation"], r["dtype"], r["numel"], r["mode"], r["provider"])
                      == (activation, dtype, numel, target.mode, target.provider)), None)
        found.append((target, ratio))
    return found
