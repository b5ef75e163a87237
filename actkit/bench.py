"""Benchmark harness: actkit's activations against eager PyTorch and ``torch.compile``.

For each activation x dtype x size, and for each provider

* ``actkit``  - :func:`actkit.functional.apply`, i.e. the custom op with its autograd (Triton on CUDA,
  the PyTorch fallback on CPU; the backend that ran is recorded),
* ``eager``   - the spec's PyTorch reference (the native ATen op, or the composite formula where
  torch has no op, e.g. LiSHT),
* ``compile`` - ``torch.compile`` of that same reference (static shapes, compiled per case),

it times three modes (``fwd``, ``bwd``, ``fwd+bwd``) and derives

* median time with p20/p80 spread,
* effective bandwidth: the bytes that *must* move (see :data:`KINDS`) over the median time,
* % of a copy kernel's bandwidth measured in the same case (the roofline),
* the speedup of actkit over each other provider,
* bytes saved for backward per element (measured with ``saved_tensors_hooks``),
* peak memory of one fwd+bwd step (CUDA only: ``torch.cuda.max_memory_allocated``),
* the first call's time (compile, Triton JIT, autotune, warm-up), excluded from every timing.

``fwd`` is the training forward: the input requires grad, so autograd records the graph and
saves what backward needs, as in a training step (forward-only activations run without grad).
``bwd`` replays backward on a retained graph; ``fwd+bwd`` is a full step.

Timing: on CUDA ``triton.testing.do_bench`` (warm-up, L2 cache flushed before every rep,
CUDA events, quantiles). On CPU ``torch.utils.benchmark.Timer`` (all of torch's threads) after
warm-up, in blocks interleaved round-robin over the copy and every provider x mode of a case, so
that load from other processes falls on all of them alike; CPU caches are not flushed, which the
records say (``cache_flushed``), and the host's load average is stored with the results.

Kinds: elementwise activations run on 1-D inputs; row-wise ones (softmax) on rows of
:data:`ROW_LENGTH`; learnable ones (PReLU, Swish-beta) on (N, :data:`CHANNELS`) inputs with a
per-channel parameter whose gradient backward also computes. What the harness knows about each
kind (shape, arguments, bytes) is in :data:`KINDS`; activations of other kinds are skipped with
a note.

This module draws nothing: :func:`run` reports progress through a callback and returns a
payload (plain dicts) that :mod:`actkit.results` writes and the CLI renders. Long sweeps are
resumable: a ``checkpoint`` callback receives the payload after every case (``"complete"`` stays
false until the last), and ``previous`` continues a saved payload, running only the cases it lacks.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from . import functional, registry, results
from .backend import backend_for

SCHEMA = "actkit.bench/1"

PROVIDERS = ("actkit", "eager", "compile")
MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("cuda", "cpu")

_PROVIDER_ALIASES = {"torch": "eager", "aten": "eager", "native": "eager", "torch.compile": "compile",
                     "inductor": "compile", "triton": "actkit"}
_MODE_ALIASES = {"forward": "fwd", "backward": "bwd", "fwdbwd": "fwd+bwd", "fwd_bwd": "fwd+bwd",
                 "fwd-bwd": "fwd+bwd", "step": "fwd+bwd"}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "f32": "fp32", "bfloat16": "bf16",
                  "float16": "fp16", "half": "fp16", "f16": "fp16"}

# Default sweeps: element counts. CUDA spans 2^16..2^26 (launch-bound to HBM-bound); CPU stays
# small because the CPU fallback and torch.compile's C++ kernels are orders of magnitude slower.
DEFAULT_SIZES = {"cuda": tuple(2 ** k for k in range(16, 27, 2)), "cpu": (2 ** 12, 2 ** 16, 2 ** 20)}
QUICK_SIZES = {"cuda": (2 ** 20, 2 ** 24), "cpu": (2 ** 16,)}
DEFAULT_DTYPES = ("fp32", "bf16", "fp16")
QUICK_DTYPES = {"cuda": ("fp32", "bf16"), "cpu": ("fp32",)}


# -- kinds: shapes, arguments and byte accounting ---------------------------------------------
# Everything the harness needs to know about a kind of activation lives here: the input shape
# for a given element count, the extra arguments, and the bytes that must move per element by
# mode, counted in tensors of the input's dtype as (tensors read, tensors written). Forward reads
# x and writes y; backward reads the one saved tensor (x, or y) and dy and writes dx; fwd+bwd is
# the sum. A new kind is benchmarked once it has an entry in KINDS; until then it is skipped with
# a note.
ROW_LENGTH = 1024
"""Row-wise kinds (softmax) run on rows of this many elements (fewer if the size is smaller)."""
CHANNELS = 64
"""Learnable kinds run on (N, 64) inputs with one parameter per channel (dim 1), as nn.PReLU(64)."""


def _rows(numel: int) -> tuple[int, ...]:
    row = min(ROW_LENGTH, numel)
    return (numel // row, row) if numel % row == 0 else (1, numel)


def _channels(numel: int) -> tuple[int, ...]:
    return (numel // CHANNELS, CHANNELS) if numel % CHANNELS == 0 and numel >= CHANNELS else (numel,)


@dataclass(frozen=True)
class KindModel:
    traffic: Mapping[str, tuple[int, int]]
    shape: Callable[[int], tuple[int, ...]]
    note: str


_ELEMENTWISE_TRAFFIC = {"fwd": (1, 1), "bwd": (2, 1)}
KINDS: dict[str, KindModel] = {
    "elementwise": KindModel(_ELEMENTWISE_TRAFFIC, lambda n: (n,), "1-D input"),
    "rowwise": KindModel(_ELEMENTWISE_TRAFFIC, _rows,
                         f"rows of {ROW_LENGTH} elements, normalised over the last dim; backward reads y and dy"),
    "learnable": KindModel(_ELEMENTWISE_TRAFFIC, _channels,
                           f"(N, {CHANNELS}) input, one learnable parameter per channel; backward also "
                           f"computes the parameter's gradient (its {CHANNELS} values are not counted in bytes)"),
}


class BenchError(ValueError):
    """A benchmark request that cannot run (bad option value, missing device)."""


def bytes_moved(kind: str, mode: str, numel: int, itemsize: int) -> int:
    """The bytes an ideal kernel must read plus write for ``mode`` on ``numel`` elements."""
    if kind not in KINDS:
        raise BenchError(f"no byte accounting for kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if mode == "fwd+bwd":
        return bytes_moved(kind, "fwd", numel, itemsize) + bytes_moved(kind, "bwd", numel, itemsize)
    if mode not in KINDS[kind].traffic:
        raise BenchError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    reads, writes = KINDS[kind].traffic[mode]
    return (reads + writes) * numel * itemsize


def copy_bytes(numel: int, itemsize: int) -> int:
    """A copy reads and writes every element once."""
    return 2 * numel * itemsize


def gbps(nbytes: int, seconds: float) -> float:
    """Effective bandwidth in GB/s (1e9 bytes per second)."""
    return nbytes / seconds / 1e9


def size_label(numel: int) -> str:
    """``2^k`` for powers of two, the count with thousands separators otherwise."""
    if numel > 0 and numel & (numel - 1) == 0:
        return f"2^{numel.bit_length() - 1}"
    return f"{numel:,}"


def format_bandwidth(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} TB/s" if value >= 1000 else f"{value:.1f} GB/s"


# -- option parsing -------------------------------------------------------------------------
def _items(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [p.strip() for p in parts if p.strip()]


def _choices(value, allowed: Sequence[str], aliases: Mapping[str, str], what: str, option: str) -> tuple[str, ...]:
    names = _items(value)
    if not names:
        raise BenchError(f"{option} is empty; choose from {', '.join(allowed)} (comma-separated) or all")
    if any(n.lower() == "all" for n in names):
        return tuple(allowed)
    chosen = []
    for name in names:
        key = name.lower()
        key = aliases.get(key, key)
        if key not in allowed:
            raise BenchError(f"unsupported {what} {name!r} in {option}; choose from {', '.join(allowed)}")
        if key not in chosen:
            chosen.append(key)
    return tuple(chosen)


def parse_providers(value) -> tuple[str, ...]:
    return _choices(value, PROVIDERS, _PROVIDER_ALIASES, "provider", "--providers")


def parse_modes(value) -> tuple[str, ...]:
    return _choices(value, MODES, _MODE_ALIASES, "mode", "--mode")


def parse_dtypes(value) -> tuple[str, ...]:
    return _choices(value, tuple(DTYPES), _DTYPE_ALIASES, "dtype", "--dtype")


def parse_activations(value) -> tuple[str, ...]:
    """Canonical names; ``all`` is every registered activation (unsupported kinds are skipped later)."""
    names = _items(value)
    if not names:
        raise BenchError("--act is empty; give an activation, a comma list, or all")
    if any(n.lower() == "all" for n in names):
        return tuple(registry.available())
    chosen = []
    for name in names:
        try:
            spec = registry.get(name)
        except ValueError as exc:
            raise BenchError(str(exc)) from None
        if spec.name not in chosen:
            chosen.append(spec.name)
    return tuple(chosen)


_SIZE = re.compile(r"^(?:(\d+)|2\s*(?:\^|\*\*)\s*(\d+))$")


def parse_sizes(value) -> tuple[int, ...]:
    """Element counts: integers (``65536``, ``1_048_576``) or powers of two (``2^20``, ``2**20``)."""
    names = _items(value)
    if not names:
        raise BenchError("--sizes is empty; give element counts such as 65536,2^20")
    sizes = []
    for name in names:
        match = _SIZE.match(name.replace("_", ""))
        if match is None:
            raise BenchError(f"bad size {name!r} in --sizes; give positive element counts as integers "
                             "or powers of two, e.g. 65536,2^20")
        n = int(match.group(1)) if match.group(1) is not None else 2 ** int(match.group(2))
        if n < 1:
            raise BenchError(f"bad size {name!r} in --sizes: element counts must be at least 1")
        if n > 2 ** 34:
            raise BenchError(f"size {name!r} in --sizes is larger than 2^34 elements; choose a smaller one")
        if n not in sizes:
            sizes.append(n)
    return tuple(sizes)


def parse_threads(value) -> int | None:
    """A positive thread count (``None`` keeps torch's setting)."""
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise BenchError(f"bad --threads {value!r}: give a positive integer, e.g. --threads 1")
    return number


def parse_device(value: str | None) -> str:
    """``cuda`` or ``cpu`` (``None``: cuda when a GPU is present); error if cuda has no GPU."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(value).strip().lower()
    if device.split(":")[0] not in DEVICES:
        raise BenchError(f"unsupported device {value!r}; choose cuda or cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"device {value!r} requested but no CUDA GPU is available "
                             "(torch.cuda.is_available() is False); use --device cpu")
        try:
            index = torch.device(device).index
        except RuntimeError:
            raise BenchError(f"unsupported device {value!r}; choose cuda, cuda:N or cpu") from None
        if index is not None and index >= torch.cuda.device_count():
            raise BenchError(f"device {value!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device != "cpu":
        raise BenchError(f"unsupported device {value!r}; choose cuda or cpu")
    return device


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    activations: tuple[str, ...]
    device: str
    dtypes: tuple[str, ...]
    sizes: tuple[int, ...]
    modes: tuple[str, ...] = MODES
    providers: tuple[str, ...] = PROVIDERS
    quick: bool = False
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
        return torch.device(self.device).type

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_config(act="all", device: str | None = None, dtypes=None, sizes=None, modes=None, providers=None,
                quick: bool = False, threads: int | None = None) -> BenchConfig:
    """Validate user options (strings or sequences) into a :class:`BenchConfig`; :class:`BenchError` if bad."""
    activations = parse_activations(act)
    dtype_names = parse_dtypes(dtypes) if dtypes is not None else None
    size_list = parse_sizes(sizes) if sizes is not None else None
    mode_list = parse_modes(modes) if modes is not None else MODES
    provider_list = parse_providers(providers) if providers is not None else PROVIDERS
    device = parse_device(device)
    device_type = torch.device(device).type
    if dtype_names is None:
        dtype_names = QUICK_DTYPES[device_type] if quick else DEFAULT_DTYPES
    if size_list is None:
        size_list = QUICK_SIZES[device_type] if quick else DEFAULT_SIZES[device_type]
    threads = parse_threads(threads)
    timing = {}
    if quick:
        timing = dict(warmup_ms=10, rep_ms=40, min_run_time=0.1, min_blocks=11, block_s=0.002, warmup_calls=2)
    return BenchConfig(activations=activations, device=device, dtypes=tuple(dtype_names), sizes=tuple(size_list),
                       modes=tuple(mode_list), providers=tuple(provider_list), quick=quick, threads=threads,
                       **timing)


# -- inputs, providers and modes ----------------------------------------------------------------
@dataclass
class CaseInputs:
    """One case's tensors: x, the upstream gradient dy, extra tensor arguments (a learnable
    parameter) and keyword parameters (the spec's defaults)."""
    x: torch.Tensor
    dy: torch.Tensor
    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def wrt(self) -> tuple[torch.Tensor, ...]:
        """What backward differentiates: x and any learnable parameter."""
        return tuple(t for t in (self.x, *self.args) if t.requires_grad)


def make_inputs(spec: registry.ActivationSpec, numel: int, dtype: torch.dtype, device: str,
                seed: int = 0) -> CaseInputs:
    """x (standard normal, in the kind's shape; a leaf requiring grad when the activation has a
    backward), dy, and the learnable parameter (initial value, one per channel) where there is one."""
    if spec.kind not in KINDS:
        raise BenchError(f"{spec.name}: kind {spec.kind!r} is not benchmarked yet "
                         f"(supported: {', '.join(KINDS)})")
    shape = KINDS[spec.kind].shape(numel)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    dy = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    x.requires_grad_(spec.differentiable)
    if spec.kind == "learnable":
        channels = shape[1] if len(shape) >= 2 else 1
        weight = torch.full((channels,), float(spec.params[0].default), dtype=dtype, device=device,
                            requires_grad=spec.differentiable)
        return CaseInputs(x, dy, (weight,))
    return CaseInputs(x, dy, kwargs=dict(spec.defaults))


_compiled: dict[str, Any] = {"key": None, "fns": {}}


def compiled_reference(spec: registry.ActivationSpec, kwargs: Mapping[str, Any], key: Any,
                       donated_buffers: bool = True) -> Callable:
    """``torch.compile`` of the eager reference, fresh for each ``key`` (activation, dtype, size).

    Dynamo caches compiled graphs per code object and gives up after a few recompiles, which a
    sweep over dtypes and sizes would hit, silently falling back to eager. So each new case
    starts from ``torch.compiler.reset()`` and compiles with static shapes, as a model with a
    fixed input shape gets; the compile time is the case's ``first_call_s``.

    ``donated_buffers=False`` gives a second compiled function (its own code object, so its
    graphs are cached apart) for callers that compile it under :func:`donated_buffers_off`:
    a backward that reuses ("donates") its saved tensors' memory cannot be replayed on a
    retained graph, which the ``bwd`` mode does.
    """
    if _compiled["key"] != key:
        torch.compiler.reset()
        _compiled["key"], _compiled["fns"] = key, {}
    if donated_buffers not in _compiled["fns"]:
        bound = dict(kwargs)

        def reference(x, *args):
            return spec.reference(x, *args, **bound)

        def reference_retainable(x, *args):
            return spec.reference(x, *args, **bound)

        _compiled["fns"][donated_buffers] = torch.compile(
            reference if donated_buffers else reference_retainable, dynamic=False)
    return _compiled["fns"][donated_buffers]


@contextlib.contextmanager
def donated_buffers_off():
    """Compile without donated buffers (AOTAutograd's ``donated_buffer``, where torch has it)."""
    try:
        from torch._functorch import config as functorch_config
    except ImportError:  # pragma: no cover - very old torch
        functorch_config = None
    if functorch_config is None or not hasattr(functorch_config, "donated_buffer"):
        yield
        return
    with functorch_config.patch(donated_buffer=False):
        yield


def provider_fn(provider: str, spec: registry.ActivationSpec, kwargs: Mapping[str, Any] | None = None,
                key: Any = None, donated_buffers: bool = True) -> Callable[..., torch.Tensor]:
    """``f(x, *args)`` for one provider; ``key`` identifies the case for ``compile`` (see
    :func:`compiled_reference`). ``kwargs`` default to the spec's parameter defaults."""
    if spec.kind not in KINDS:
        raise BenchError(f"{spec.name}: kind {spec.kind!r} is not benchmarked yet "
                         f"(supported: {', '.join(KINDS)})")
    kwargs = dict((spec.defaults if spec.kind != "learnable" else {}) if kwargs is None else kwargs)
    if provider == "actkit":
        return lambda x, *args: functional.apply(spec.name, x, *args, **kwargs)
    if provider == "eager":
        return lambda x, *args: spec.reference(x, *args, **kwargs)
    if provider == "compile":
        return compiled_reference(spec, kwargs, (spec.name, tuple(sorted(kwargs.items())), key), donated_buffers)
    raise BenchError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")


def prepared_runner(provider: str, spec: registry.ActivationSpec, mode: str, inputs: CaseInputs,
                    key: Any = None, fn: Callable | None = None) -> tuple[Callable[[], Any], str | None]:
    """The runner for one provider x mode, called twice (warm, and replayable), and a note.

    torch.compile may build a backward that donates its saved tensors' memory and so refuses a
    second backward on the same graph; for ``bwd`` the reference is then compiled again without
    donated buffers, and the note says so.
    """
    fn = provider_fn(provider, spec, inputs.kwargs, key=key) if fn is None else fn
    runner = mode_runner(fn, mode, inputs)
    try:
        runner()
        runner()
        return runner, None
    except RuntimeError as exc:
        if not (provider == "compile" and mode == "bwd" and "donated buffer" in str(exc)):
            raise
    del runner
    with donated_buffers_off():
        fn = provider_fn(provider, spec, inputs.kwargs, key=key, donated_buffers=False)
        runner = mode_runner(fn, mode, inputs)
        runner()
        runner()
    return runner, "bwd compiled without donated buffers, so that backward can replay on a retained graph"


def backend_label(provider: str, x: torch.Tensor) -> str:
    """What actually ran: actkit's backend for ``x``, ATen for eager, Inductor for compile."""
    return {"actkit": None, "eager": "aten", "compile": "inductor"}.get(provider) or backend_for(x)


def mode_runner(fn: Callable, mode: str, inputs: CaseInputs) -> Callable[[], Any]:
    """A no-argument callable that runs ``mode`` once.

    ``bwd`` builds the graph once here and replays its backward (``retain_graph=True``);
    ``torch.autograd.grad`` returns the gradients instead of accumulating them into ``.grad``.
    """
    x, dy, args, wrt = inputs.x, inputs.dy, inputs.args, inputs.wrt
    if mode == "fwd":
        return lambda: fn(x, *args)
    if mode == "bwd":
        y = fn(x, *args)
        return lambda: torch.autograd.grad(y, wrt, dy, retain_graph=True)
    if mode == "fwd+bwd":
        return lambda: torch.autograd.grad(fn(x, *args), wrt, dy)
    raise BenchError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def saved_bytes_per_element(fn: Callable, inputs: CaseInputs) -> float:
    """Bytes autograd keeps for backward after one forward, per element of x (each storage once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(inputs.x, *inputs.args)
    del y
    return sum(storages.values()) / max(inputs.x.numel(), 1)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(step: Callable[[], Any], device: str) -> int | None:
    """Peak memory one call of ``step`` allocates beyond what was live before it (CUDA); ``None`` on CPU."""
    if torch.device(device).type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


# -- timing -----------------------------------------------------------------------------------
@dataclass
class Timing:
    median_s: float
    p20_s: float
    p80_s: float
    reps: int | None
    timer: str
    cache_flushed: bool


def time_cuda(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> Timing:
    """``triton.testing.do_bench``: warm-up, L2 flush before every rep, CUDA events; quantiles in ms."""
    from triton.testing import do_bench  # keyword arguments: stable across triton 3.1 .. 3.8

    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(median / 1e3, p20 / 1e3, p80 / 1e3, None,
                  f"triton.testing.do_bench(warmup={warmup_ms}ms, rep={rep_ms}ms)", True)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _calls_per_block(timer, block_s: float) -> int:
    """How many calls fill about ``block_s``: grow a batch until it takes a quarter of that, then
    scale by the fastest of three such batches (a burst of load elsewhere shrinks blocks rather
    than inflating them; a per-call estimate from single calls would count the timer's overhead)."""
    number = 1
    while number < 2 ** 20:
        if timer.timeit(number).median * number >= block_s / 4:
            break
        number *= 4
    per_call = min(timer.timeit(number).median for _ in range(3))
    return max(1, round(block_s / max(per_call, 1e-12)))


def time_cpu(fns: Mapping[Any, Callable[[], Any]], *, min_run_time: float, min_blocks: int, block_s: float,
             warmup_calls: int) -> dict[Any, Timing]:
    """Time several callables with ``torch.utils.benchmark.Timer``, interleaved.

    Each callable runs in blocks of about ``block_s``; the blocks go round-robin over the
    callables (at least ``min_blocks`` rounds, and ``min_run_time`` seconds per callable unless
    contention has stretched the rounds past four times the planned time),
    so a burst of load from elsewhere on the machine slows every provider alike instead of
    falling on one of them. Median and p20/p80 are over the per-call times of the blocks.
    """
    from torch.utils import benchmark as tbench

    threads = torch.get_num_threads()
    timers, numbers, samples = {}, {}, {}
    for key, fn in fns.items():
        for _ in range(warmup_calls):
            fn()
        timers[key] = tbench.Timer("fn()", globals={"fn": fn}, num_threads=threads)
        numbers[key] = _calls_per_block(timers[key], block_s)
        samples[key] = []
    spent = dict.fromkeys(fns, 0.0)
    rounds = 0
    # On a loaded machine blocks stretch; past this wall-clock budget, min_blocks rounds suffice.
    deadline = time.perf_counter() + 4 * min_run_time * len(fns)
    while rounds < min_blocks or (min(spent.values()) < min_run_time and time.perf_counter() < deadline):
        for key, timer in timers.items():
            per_call = timer.timeit(numbers[key]).median
            samples[key].append(per_call)
            spent[key] += per_call * numbers[key]
        rounds += 1
    return {key: Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8),
                        numbers[key] * len(times),
                        f"torch.utils.benchmark.Timer({len(times)} interleaved blocks x {numbers[key]} calls, "
                        f"{threads} thread{'' if threads == 1 else 's'})", False)
            for key, times in samples.items()}


def time_all(fns: Mapping[Any, Callable[[], Any]], config: BenchConfig) -> dict[Any, Timing]:
    """Timings for each callable: ``do_bench`` one after another on CUDA, interleaved Timer blocks on CPU."""
    if config.device_type == "cuda":
        return {key: time_cuda(fn, config.warmup_ms, config.rep_ms) for key, fn in fns.items()}
    return time_cpu(fns, min_run_time=config.min_run_time, min_blocks=config.min_blocks, block_s=config.block_s,
                    warmup_calls=config.warmup_calls)


# -- the sweep --------------------------------------------------------------------------------
RECORD_FIELDS = (
    "activation", "kind", "params", "provider", "backend", "reference", "mode", "dtype", "numel", "size", "shape",
    "median_ms", "p20_ms", "p80_ms", "reps", "timer", "cache_flushed",
    "bytes_moved", "gbps", "copy_median_ms", "copy_gbps", "pct_of_copy",
    "actkit_speedup", "speedup_vs_eager", "speedup_vs_compile",
    "saved_bytes_per_element", "peak_mem_bytes", "first_call_s", "note",
    "device", "device_name", "torch", "triton", "cuda", "cpu_threads", "actkit", "timestamp",
)
"""Every record (one per activation x dtype x size x mode x provider) has exactly these keys.

``actkit_speedup`` is this provider's median over actkit's (>1: actkit is faster); the actkit
record also carries ``speedup_vs_eager`` and ``speedup_vs_compile``. ``saved_bytes_per_element``
and ``first_call_s`` belong to the provider (same in each mode); ``peak_mem_bytes`` is set on
``fwd+bwd`` records on CUDA and is ``None`` elsewhere (not measured)."""

_ENV_FIELDS = ("device", "device_name", "torch", "triton", "cuda", "cpu_threads", "actkit", "timestamp")

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
        if spec.kind not in KINDS:
            out.skipped.append(_skip(spec.name, reason=f"kind {spec.kind!r} is not benchmarked yet "
                                                       f"(actkit.bench supports: {', '.join(KINDS)})"))
            continue
        if not spec.differentiable and not any(m == "fwd" for m in config.modes):
            out.skipped.append(_skip(spec.name, reason="forward-only activation and no fwd mode requested"))
            continue
        for dtype in config.dtypes:
            for size in config.sizes:
                out.cases.append((spec, dtype, size))
    return out


def _skip(activation: str, reason: str, dtype: str | None = None, numel: int | None = None,
          provider: str | None = None, mode: str | None = None) -> dict[str, Any]:
    return {"activation": activation, "dtype": dtype, "numel": numel, "provider": provider, "mode": mode,
            "reason": reason}


def run(config: BenchConfig, progress: ProgressCallback | None = None, *,
        previous: Mapping[str, Any] | None = None,
        checkpoint: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Run the sweep; returns ``{"schema", "complete", "environment", "host", "config", "records", "skipped"}``.

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
_RESUME_CONFIG_KEYS = tuple(f.name for f in fields(BenchConfig) if f.name != "activations")
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
        return {"schema": SCHEMA, "complete": complete, "environment": environment, "host": host,
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
        _compiled["key"], _compiled["fns"] = None, {}
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
    dtype = DTYPES[dtype_name]
    device = config.device
    label = f"{spec.name} {dtype_name} {size_label(numel)}"
    modes = [m for m in config.modes if spec.differentiable or m == "fwd"]
    skipped = [_skip(spec.name, "forward-only activation: no backward to time", dtype_name, numel, mode=m)
               for m in config.modes if m not in modes]
    inputs = make_inputs(spec, numel, dtype, device, seed=config.seed)
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
            facts[provider], provider_runners = _prepare_provider(spec, provider, modes, inputs, device,
                                                                  (dtype_name, numel))
            runners.update(provider_runners)
        except Exception as exc:  # a provider that cannot run this case is reported, not fatal
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped.append(_skip(spec.name, f"{provider} failed: {type(exc).__name__}: {message}",
                                 dtype_name, numel, provider=provider))
    tick(f"{label}: timing")
    timings = time_all(runners, config)
    runners.clear()  # frees the graphs retained for bwd
    copy_timing = timings.pop(("copy", "copy"))
    copy_bw = gbps(copy_bytes(numel, itemsize), copy_timing.median_s)

    records = []
    for (provider, mode), timing in timings.items():
        nbytes = bytes_moved(spec.kind, mode, numel, itemsize)
        bw = gbps(nbytes, timing.median_s)
        actkit_timing = timings.get(("actkit", mode))
        fact = facts[provider]
        record = {
            "activation": spec.name, "kind": spec.kind, "params": dict(params), "provider": provider,
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
        }
        if provider == "actkit":
            for other in ("eager", "compile"):
                if (other, mode) in timings:
                    record[f"speedup_vs_{other}"] = timings[(other, mode)].median_s / timing.median_s
        record.update({k: env.get(k) for k in _ENV_FIELDS})
        records.append(record)
    provider_order = {p: i for i, p in enumerate(config.providers)}
    records.sort(key=lambda r: (MODES.index(r["mode"]), provider_order[r["provider"]]))
    return records, skipped


def _prepare_provider(spec, provider: str, modes: Sequence[str], inputs: CaseInputs, device: str,
                      key) -> tuple[dict[str, Any], dict[tuple[str, str], Callable[[], Any]]]:
    """First call, saved bytes and peak memory of one provider, and its warmed runner per mode."""
    fn = provider_fn(provider, spec, inputs.kwargs, key=key)

    # First call: compile (torch.compile), Triton JIT (actkit on CUDA), lazy initialisation.
    # Timed on its own and excluded from every timing.
    _sync(device)
    start = time.perf_counter()
    if spec.differentiable:
        mode_runner(fn, "fwd+bwd", inputs)()
    else:
        mode_runner(fn, "fwd", inputs)()
    _sync(device)
    facts = {"backend": backend_label(provider, inputs.x), "first_call_s": time.perf_counter() - start,
             "saved": saved_bytes_per_element(fn, inputs) if spec.differentiable else None, "peak": None,
             "notes": {}}
    if spec.differentiable and "fwd+bwd" in modes:
        facts["peak"] = peak_memory_bytes(mode_runner(fn, "fwd+bwd", inputs), device)
    runners = {}
    for mode in modes:
        runners[(provider, mode)], facts["notes"][mode] = prepared_runner(provider, spec, mode, inputs, key, fn)
    return facts, runners


# -- summaries and tables -----------------------------------------------------------------------
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
                   dtypes: Sequence[str] | None = None, layout: str = "wide") -> str:
    """A results payload (as :func:`run` returns or a bench JSON file holds) as a markdown table of
    actkit's figures, headed by where and how it was measured.

    ``wide``: one row per activation x dtype x size, the modes side by side (fwd / bwd / fwd+bwd).
    ``long``: one row per activation x dtype x size x mode, with actkit's median time.
    """
    if payload.get("schema") != SCHEMA:
        raise BenchError(f"not an actkit bench result (schema {payload.get('schema')!r}, expected {SCHEMA!r})")
    if layout not in LAYOUTS:
        raise BenchError(f"unknown table layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    env = payload.get("environment", {})
    records = [r for r in payload["records"] if r["provider"] == "actkit"
               and (modes is None or r["mode"] in modes) and (dtypes is None or r["dtype"] in dtypes)]
    shown_modes = [m for m in MODES if any(r["mode"] == m for r in records)]
    config = payload.get("config", {})
    device_type = torch.device(env.get("device", "cpu")).type
    flags = (" --quick" if config.get("quick") else "") + \
        (f" --threads {config['threads']}" if config.get("threads") else "")
    backends = ", ".join(sorted({str(r["backend"]) for r in records})) or "-"
    n_threads = env.get("cpu_threads")
    threads = f", {n_threads} thread{'' if n_threads == 1 else 's'}" if device_type == "cpu" else ""
    timer = records[0]["timer"].split("(")[0] if records else "-"
    lines = [
        f"Measured on **{env.get('device_name')}** ({env.get('device')}{threads}), torch {env.get('torch')}, "
        f"triton {env.get('triton')}, actkit {env.get('actkit')}, actkit backend `{backends}`, timer {timer}: "
        f"`actkit bench --device {device_type}{flags}` at {env.get('timestamp')}. "
        "GB/s counts the bytes that must move; % of copy compares with a copy of the same size and dtype timed "
        "in the same run; `vs eager` / `vs compile` are that provider's time over actkit's (>1: actkit faster); "
        "saved B/elem is what autograd keeps for backward.",
    ]
    warning = busy_host(payload)
    if warning:
        lines.append(f"Note: {warning}.")
    lines.append("")
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


def _fmt_time(ms: float) -> str:
    return f"{ms * 1e3:.1f} µs" if ms < 1 else f"{ms:.3f} ms"


def format_time(ms: float | None) -> str:
    """Milliseconds as µs below 1 ms."""
    return "-" if ms is None else _fmt_time(ms)


def write(payload: Mapping[str, Any], json_path=None, csv_path=None) -> list:
    """Write the payload as JSON and/or its records as CSV (atomic, via :mod:`actkit.results`)."""
    written = []
    if json_path is not None:
        written.append(results.write_json(json_path, payload))
    if csv_path is not None:
        written.append(results.write_csv(csv_path, payload["records"], fieldnames=RECORD_FIELDS))
    return written


def load(path) -> dict[str, Any]:
    """Read a bench JSON file, checking it is one."""
    try:
        payload = results.read_json(path)
    except FileNotFoundError:
        raise BenchError(f"no such file: {path}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise BenchError(f"{path} is not an actkit bench result file (expected schema {SCHEMA!r})")
    return payload
