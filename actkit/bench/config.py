"""A validated benchmark configuration: what to measure, where, and with which timing budget."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .. import registry, selection
from .options import (HOST_MODES, HOST_PROVIDERS, MEASURES, MODES, PROVIDERS, BenchError, parse_activations,
                      parse_device, parse_dtypes, parse_modes, parse_providers, parse_sizes, parse_threads)

# Default sweeps: element counts. CUDA spans 2^16..2^26 (launch-bound to HBM-bound); CPU stays
# small because the CPU fallback and torch.compile's C++ kernels are orders of magnitude slower.
DEFAULT_SIZES = {"cuda": tuple(2 ** k for k in range(16, 27, 2)), "cpu": (2 ** 12, 2 ** 16, 2 ** 20)}
QUICK_SIZES = {"cuda": (2 ** 20, 2 ** 24), "cpu": (2 ** 16,)}
DEFAULT_DTYPES = ("fp32", "bf16", "fp16")
QUICK_DTYPES = {"cuda": ("fp32", "bf16"), "cpu": ("fp32",)}
# Host cost: a size at which the kernels' own work is negligible next to what the host spends
# per call (argument handling, dispatch, autograd bookkeeping, the launch), in fp32.
HOST_SIZES = (16,)
HOST_DTYPES = ("fp32",)


@dataclass(frozen=True, kw_only=True)
class TimingBudget:
    """What the timers (:func:`.timing.time_all`) read from a configuration: the budgets per device.

    Keyword-only, so that a configuration adds its own positional fields in front of these; one
    that needs other defaults redeclares the field."""
    # CUDA (triton.testing.do_bench): warm-up and measurement budgets in milliseconds.
    warmup_ms: int = 25
    rep_ms: int = 100
    # CPU (torch.utils.benchmark.Timer): blocks of about block_s each, at least min_blocks of them
    # and at least min_run_time seconds in all, after warmup_calls untimed calls.
    min_run_time: float = 0.3
    min_blocks: int = 21
    block_s: float = 0.003
    warmup_calls: int = 3
    seed: int = 0
    threads: int | None = None
    """CPU threads for the run (``torch.set_num_threads``); ``None`` keeps torch's setting."""

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type  # type: ignore[attr-defined]  (every configuration has one)


@dataclass(frozen=True)
class BenchConfig(TimingBudget):
    activations: tuple[str, ...]
    device: str
    dtypes: tuple[str, ...]
    sizes: tuple[int, ...]
    modes: tuple[str, ...] = MODES
    providers: tuple[str, ...] = PROVIDERS
    quick: bool = False
    measure: str = "bandwidth"
    """``bandwidth``: the sweep (see :mod:`.bandwidth`); ``host``: µs per call (see :mod:`.hostcost`)."""
    saved_bits: int | None = None
    """actkit's few-bit backward (:mod:`actkit.kinds.fewbit`) for the differentiable elementwise activations."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _few_bit(act, activations: tuple[str, ...], saved_bits) -> int:
    """``--saved-bits`` checked: 1..8 (0 is refused: leaving it out is the exact backward), and every
    activation named must have a few-bit backward; with ``all`` the others are skipped, with a note
    (:func:`actkit.bench.sweep.plan`)."""
    from actkit.kinds.fewbit import check_bits

    try:
        bits = check_bits(saved_bits)
    except ValueError:
        raise BenchError(f"--saved-bits must be an integer from 1 to 8 (bits kept per element for backward), got "
                         f"{saved_bits!r}; leave it out for the exact backward") from None
    if not any(item.lower() == "all" for item in selection.comma_items(act)):
        for name in activations:
            reason = selection.few_bit_refusal(registry.get(name))
            if reason is not None:
                raise BenchError(f"--saved-bits {bits}: {reason}; leave {name} out of --act or drop --saved-bits")
    return bits


def make_config(act="all", device: str | None = None, dtypes=None, sizes=None, modes=None, providers=None,
                quick: bool = False, threads: int | None = None, measure: str = "bandwidth",
                saved_bits: int | None = None) -> BenchConfig:
    """Validate user options (strings or sequences) into a :class:`BenchConfig`; :class:`BenchError` if bad.

    ``measure="host"`` takes the host-cost vocabulary for modes and providers and defaults to
    :data:`HOST_SIZES` in fp32 on either device.
    """
    if measure not in MEASURES:
        raise BenchError(f"unknown measurement {measure!r}; choose from {', '.join(MEASURES)}")
    host = measure == "host"
    activations = parse_activations(act)
    dtype_names = parse_dtypes(dtypes) if dtypes is not None else None
    size_list = parse_sizes(sizes) if sizes is not None else None
    mode_list = parse_modes(modes, measure) if modes is not None else (HOST_MODES if host else MODES)
    provider_list = parse_providers(providers, measure) if providers is not None else \
        (HOST_PROVIDERS if host else PROVIDERS)
    device = parse_device(device)
    device_type = torch.device(device).type
    if dtype_names is None:
        dtype_names = HOST_DTYPES if host else QUICK_DTYPES[device_type] if quick else DEFAULT_DTYPES
    if size_list is None:
        size_list = HOST_SIZES if host else QUICK_SIZES[device_type] if quick else DEFAULT_SIZES[device_type]
    threads = parse_threads(threads)
    timing = {}
    if quick:
        timing = dict(warmup_ms=10, rep_ms=40, min_run_time=0.1, min_blocks=11, block_s=0.002, warmup_calls=2)
    if saved_bits is not None:
        saved_bits = _few_bit(act, activations, saved_bits)
    return BenchConfig(activations=activations, device=device, dtypes=tuple(dtype_names), sizes=tuple(size_list),
                       modes=tuple(mode_list), providers=tuple(provider_list), quick=quick, threads=threads,
                       measure=measure, saved_bits=saved_bits or None, **timing)
