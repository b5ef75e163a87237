"""Which implementation runs an activation: compiled Triton, Triton's interpreter, or PyTorch.

``auto`` (the default) runs CUDA tensors through the Triton kernels and everything else
through the PyTorch reference (the CPU fallback). ``ACTKIT_BACKEND`` or
:func:`set_backend` override it. The choice is resolved once and kept (``backend_for`` runs on
every activation call): ``ACTKIT_BACKEND`` is read on first use and again after
``set_backend(None)``. Forcing ``triton`` on CPU tensors is allowed only under
Triton's interpreter (``TRITON_INTERPRET=1``, set before ``actkit.kernels`` is imported),
which is how the tests run the real kernels without a GPU.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings

import torch

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "ACTKIT_BACKEND"
TRITON = "triton"
TRITON_INTERPRETER = "triton-interpreter"
TORCH = "torch"

# Dtypes the Triton kernels handle (fp32 math inside); anything else (fp64, integers)
# always takes the PyTorch path.
TRITON_DTYPES = frozenset((torch.float32, torch.float16, torch.bfloat16))

_override: str | None = None
_choice: str | None = None  # get_backend()'s answer, kept until set_backend() is called


class BackendError(RuntimeError):
    """The requested backend cannot run on this tensor or machine."""


def _validate(name: str, source: str) -> str:
    choice = name.strip().lower()
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} from {source}; choose one of: {', '.join(BACKENDS)}")
    return choice


def set_backend(name: str | None) -> None:
    """Override the backend for this process (``None`` returns to ``ACTKIT_BACKEND``, read anew, or auto)."""
    global _override, _choice
    _override = None if name is None else _validate(name, "set_backend()")
    _choice = None


def get_backend() -> str:
    """The configured backend choice: ``auto``, ``triton`` or ``torch``."""
    global _choice
    if _choice is None:
        choice = _override if _override is not None else _validate(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}")
        if torch.compiler.is_compiling():
            # Not kept while tracing: a first call inside a higher-order op's subgraph (a
            # checkpointed region) may not change a global ("HOP: Non-nullified side effect").
            return choice
        _choice = choice
    return _choice


# Triton from 3.3 on: the generic kernels take each activation's device functions as constexpr
# arguments, which Triton 3.1 and 3.2 refuse ("Callable constexpr ... is not supported").
TRITON_MIN_VERSION = (3, 3)


def _triton_version() -> str | None:
    for dist in ("triton", "pytorch-triton", "pytorch-triton-rocm"):  # the module is triton in each
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# Looked up once at import (cheap: no Triton import), so that backend_for stays a plain
# function that torch.compile traces without a cache wrapper.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
TRITON_VERSION = _triton_version() if _TRITON_INSTALLED else None
_TRITON_TOO_OLD = TRITON_VERSION is not None and _version_tuple(TRITON_VERSION) < TRITON_MIN_VERSION
_TRITON_USABLE = _TRITON_INSTALLED and not _TRITON_TOO_OLD
_warned_old_triton = False


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def triton_problem() -> str | None:
    """Why the Triton kernels cannot run here (not installed, too old), or None."""
    if not _TRITON_INSTALLED:
        return "Triton is not installed (pip install triton)"
    if _TRITON_TOO_OLD:
        return (f"Triton {TRITON_VERSION} is installed; actkit's kernels need triton >= "
                f"{'.'.join(map(str, TRITON_MIN_VERSION))} (they pass device functions as constexpr arguments, "
                "which older Triton refuses): pip install -U triton")
    return None


def _fall_back_to_torch() -> str:
    """auto on a CUDA tensor without a usable Triton: the PyTorch reference, said once."""
    global _warned_old_triton
    if _TRITON_TOO_OLD and not _warned_old_triton:
        _warned_old_triton = True
        warnings.warn(f"actkit runs the PyTorch fallback on CUDA: {triton_problem()}", RuntimeWarning, stacklevel=3)
    return TORCH


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_for(x: torch.Tensor) -> str:
    """The backend that an activation call on ``x`` runs: ``triton``, ``triton-interpreter`` or ``torch``."""
    choice = _choice or get_backend()
    if choice == "auto":  # the common case first: it runs on every activation call
        if not x.is_cuda or x.dtype not in TRITON_DTYPES:
            return TORCH
        return TRITON if _TRITON_USABLE else _fall_back_to_torch()
    if choice == TORCH or x.dtype not in TRITON_DTYPES:
        return TORCH
    if not _TRITON_USABLE:
        raise BackendError(f"backend 'triton' was requested but {triton_problem()}")
    if x.is_cuda:
        return TRITON
    if x.device.type == "cpu" and interpreter_enabled():
        return TRITON_INTERPRETER
    raise BackendError(
        f"backend 'triton' cannot run on a {x.device.type} tensor: Triton kernels need a CUDA device, "
        "or TRITON_INTERPRET=1 set before actkit's kernels are imported to run them on CPU through "
        "Triton's interpreter. Use ACTKIT_BACKEND=auto (or torch) for the PyTorch fallback.")


def available_backends() -> dict[str, bool]:
    """What this machine can run, for ``actkit list`` and result records."""
    return {
        TRITON: _TRITON_USABLE and torch.cuda.is_available(),
        TRITON_INTERPRETER: _TRITON_USABLE and interpreter_enabled(),
        TORCH: True,
    }
