"""The "compiled neighbours" case of linkedin/Liger-Kernel#1330: a GLU inside a compiled MLP block.

A kernel can win on its own and lose inside ``torch.compile``: Inductor fuses a composite
``F.silu(a) * b`` with what surrounds it, but cannot see into an opaque custom op. This module
measures that case: a transformer MLP block with a residual,

    out = x + down(act(gate(x)) * up(x))        (``layout="pair"``: two projections, as LLaMA)
    out = x + down(glu(gate_up(x)))             (``layout="split"``: one fused projection, split in halves)

in five variants (:data:`VARIANTS`): the eager composite, actkit eager, ``torch.compile`` of the
composite, and ``torch.compile`` of the actkit block with each of actkit's compile paths
(:data:`actkit.glu.COMPILE_PATHS`: ``composite``, its default, and ``kernel``, the opaque custom op).
For each it times the training forward and a forward and backward (``torch.autograd.grad`` of the
parameters), interleaved on CPU as :func:`.timing.time_cpu` does, with ``do_bench`` on CUDA, and
measures what autograd keeps for backward besides the parameters and the input (bytes, each storage
once) and the largest difference from the eager composite's output.

``actkit bench-glu-block`` is the command line for it.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .. import functional, glu, memory, registry, results
from .config import TimingBudget
from .options import DTYPES, BenchError
from .providers import time_first_call
from .sweep import ProgressCallback
from .timing import time_all

LAYOUTS = ("pair", "split")
VARIANTS = {
    "eager composite": ("composite", False, None),
    "eager actkit": ("actkit", False, None),
    "compile composite": ("composite", True, None),
    "compile actkit (composite path)": ("actkit", True, "composite"),
    "compile actkit (kernel path)": ("actkit", True, "kernel"),
}
"""Each variant: (the GLU it calls, whether the block is compiled, actkit's compile path)."""
MODES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class BlockConfig(TimingBudget):
    act: str = "swiglu"
    device: str = "cpu"
    dtype: str = "fp32"
    tokens: int = 512
    hidden: int = 256
    ffn: int = 688
    layout: str = "pair"
    backend: str = "inductor"
    """torch.compile's backend: ``inductor``; ``aot_eager`` traces the same graphs without code generation."""
    # A block runs for milliseconds, not microseconds: fewer, longer CPU timing blocks.
    min_run_time: float = field(default=0.5, kw_only=True)
    min_blocks: int = field(default=15, kw_only=True)
    block_s: float = field(default=0.02, kw_only=True)


class GluBlock(nn.Module):
    """``x + down(glu(...))``; ``glu`` is a callable taking (gate, up) or one tensor to split."""

    def __init__(self, hidden: int, ffn: int, glu_fn: Callable, layout: str):
        super().__init__()
        self.glu_fn, self.layout = glu_fn, layout
        if layout == "pair":
            self.gate, self.up = nn.Linear(hidden, ffn, bias=False), nn.Linear(hidden, ffn, bias=False)
        else:
            self.gate_up = nn.Linear(hidden, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.glu_fn(self.gate(x), self.up(x)) if self.layout == "pair" else self.glu_fn(self.gate_up(x))
        return x + self.down(h)


QUICK_TIMING = dict(min_run_time=0.1, min_blocks=7, block_s=0.01, warmup_calls=2, warmup_ms=10, rep_ms=40)
"""``actkit bench-glu-block --quick``: a shorter timing budget."""


def check(config: BlockConfig) -> registry.ActivationSpec:
    spec = registry.get(config.act)
    if not spec.kind.gated:
        raise BenchError(f"{spec.name} is not a gated linear unit (its kind is {spec.kind}); this benchmark takes "
                         f"one of: {', '.join(s.name for s in registry.REGISTRY.values() if s.kind.gated)}")
    if config.layout not in LAYOUTS:
        raise BenchError(f"unknown layout {config.layout!r}; choose from {', '.join(LAYOUTS)}")
    if config.dtype not in DTYPES:
        raise BenchError(f"unsupported dtype {config.dtype!r}; choose from {', '.join(DTYPES)}")
    if min(config.tokens, config.hidden, config.ffn) < 1:
        raise BenchError("tokens, hidden and ffn must be positive")
    if config.threads is not None and config.threads < 1:
        raise BenchError(f"threads must be at least 1, got {config.threads}")
    return spec


def _with_path(path: str | None, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with actkit's GLU compile path set (Dynamo guards on it: each compiled variant
    keeps its own graph instead of recompiling when the variants alternate)."""
    if path is None:
        return fn

    def run():
        glu.set_compile_path(path)
        return fn()
    return run


def run(config: BlockConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Measure every variant; returns ``{"environment", "config", "records"}`` (one record per
    variant x mode). The actkit compile path is restored afterwards."""
    spec = check(config)
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, spec, progress)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: BlockConfig, spec: registry.ActivationSpec, progress) -> dict[str, Any]:
    dtype, device = DTYPES[config.dtype], config.device
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    base = GluBlock(config.hidden, config.ffn, spec.reference, config.layout).to(device=device, dtype=dtype)
    x = (torch.randn(config.tokens, config.hidden, generator=gen) * 0.5).to(device=device, dtype=dtype)
    dy = torch.randn(config.tokens, config.hidden, generator=gen).to(device=device, dtype=dtype)
    actkit_fn = getattr(functional, spec.name)
    before = glu.get_compile_path()
    torch.compiler.reset()
    runners: dict[tuple[str, str], Callable[[], Any]] = {}
    facts: dict[str, dict[str, Any]] = {}
    reference_out = base(x).detach()
    try:
        units = len(VARIANTS) + 1  # each variant's first calls (compiles), then the timing
        for done, (name, (impl, compiled, path)) in enumerate(VARIANTS.items()):
            if progress is not None:
                progress(done, units, f"{name}: first calls")
            model = copy.deepcopy(base)
            model.glu_fn = actkit_fn if impl == "actkit" else spec.reference
            params = list(model.parameters())
            forward = torch.compile(model, backend=config.backend) if compiled else model
            fwd = _with_path(path, lambda forward=forward: forward(x))
            step = _with_path(path, lambda forward=forward, params=params: torch.autograd.grad(forward(x), params, dy))
            first = time_first_call(step, device)
            out = fwd().detach()
            facts[name] = {"first_call_s": first, "saved_bytes": memory.saved_bytes(fwd, [*params, x]),
                           "max_abs_diff": (out.float() - reference_out.float()).abs().max().item()}
            runners[(name, "fwd")], runners[(name, "fwd+bwd")] = fwd, step
        if progress is not None:
            progress(units - 1, units, "timing")
        timings = time_all(runners, config)
    finally:
        glu.set_compile_path(before)
        torch.compiler.reset()
    records = []
    for (name, mode), timing in timings.items():
        baseline = timings.get(("compile composite", mode))
        records.append({"variant": name, "mode": mode, "median_ms": timing.median_s * 1e3,
                        "p20_ms": timing.p20_s * 1e3, "p80_ms": timing.p80_s * 1e3, "timer": timing.timer,
                        "vs_compile_composite": timing.median_s / baseline.median_s if baseline else None,
                        **facts[name]})
    return {"environment": results.environment(device), "config": asdict(config),
            "default_compile_path": glu.COMPILE_PATHS[0], "records": records}


def summary(payload: Mapping[str, Any]) -> list[str]:
    """One line per mode: the opaque kernel path's time over the compiled composite's."""
    lines = []
    by = {(r["variant"], r["mode"]): r for r in payload["records"]}
    for mode in MODES:
        kernel, default = by.get(("compile actkit (kernel path)", mode)), by.get(("compile actkit (composite path)", mode))
        if kernel and default:
            lines.append(f"{mode}: compiled block with actkit's opaque kernel {kernel['vs_compile_composite']:.2f}x "
                         f"the time of the compiled composite; with actkit's default compile path "
                         f"{default['vs_compile_composite']:.2f}x")
    return lines
