"""The providers a case compares (actkit, eager PyTorch, torch.compile) and the modes each is run in:
a no-argument runner per provider x mode, and the facts measured once per provider (bytes saved for
backward, peak memory)."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Mapping

import torch

from .. import functional, registry
from ..backend import backend_for
from .cases import KINDS, CaseInputs
from .options import MODES, PROVIDERS, BenchError

_compiled: dict[str, Any] = {"key": None, "fns": {}}


def forget_compiled() -> None:
    """Drop the compiled reference of the last case (its graphs and the tensors they hold)."""
    _compiled["key"], _compiled["fns"] = None, {}


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
                key: Any = None, donated_buffers: bool = True,
                actkit_kwargs: Mapping[str, Any] | None = None) -> Callable[..., torch.Tensor]:
    """``f(x, *args)`` for one provider; ``key`` identifies the case for ``compile`` (see
    :func:`compiled_reference`). ``kwargs`` default to the spec's parameter defaults;
    ``actkit_kwargs`` (``saved_bits``) go to actkit's call only."""
    if spec.kind.name not in KINDS:
        raise BenchError(f"{spec.name}: kind {spec.kind.name!r} is not benchmarked yet "
                         f"(supported: {', '.join(KINDS)})")
    kwargs = dict((spec.defaults if not spec.kind.learnable else {}) if kwargs is None else kwargs)
    if provider == "actkit":
        options = {**kwargs, **(actkit_kwargs or {})}
        return lambda x, *args: functional.apply(spec.name, x, *args, **options)
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
    fn = provider_fn(provider, spec, inputs.kwargs, key=key, actkit_kwargs=inputs.actkit_kwargs) if fn is None else fn
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
    """What actually ran: actkit's backend for ``x`` (functional or module call), ATen for eager and
    the minimal autograd.Function around it, Inductor for compile."""
    return {"eager": "aten", "function": "aten", "compile": "inductor"}.get(provider) or backend_for(x)


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
    from actkit.memory import saved_bytes

    return saved_bytes(lambda: fn(inputs.x, *inputs.args)) / max(inputs.x.numel(), 1)


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_first_call(run: Callable[[], Any], device: str) -> float:
    """Seconds one call of ``run`` takes, synchronised: the first call pays for compiling (torch.compile),
    Triton's JIT and lazy initialisation, so it is timed on its own and kept out of every timing."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def peak_memory_bytes(step: Callable[[], Any], device: str) -> int | None:
    """Peak memory one call of ``step`` allocates beyond what was live before it (CUDA); ``None`` on CPU."""
    if torch.device(device).type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base

