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

import importlib.util
import os

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
        _choice = _override if _override is not None else _validate(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}")
    return _choice


# Looked up once at import (cheap: no Triton import), so that backend_for stays a plain
# function that torch.compile traces without a cache wrapper.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_for(x: torch.Tensor) -> str:
    """The backend that an activation call on ``x`` runs: ``triton``, ``triton-interpreter`` or ``torch``."""
    choice = _choice or get_backend()
    if choice == "auto":  # the common case first: it runs on every activation call
        return TRITON if x.is_cuda and _TRITON_INSTALLED and x.dtype in TRITON_DTYPES else TORCH
    if choice == TORCH or x.dtype not in TRITON_DTYPES:
        return TORCH
    if x.is_cuda:
        if _TRITON_INSTALLED:
            return TRITON
        raise BackendError("backend 'triton' was requested but Triton is not installed (pip install triton)")
    if x.device.type == "cpu" and _TRITON_INSTALLED and interpreter_enabled():
        return TRITON_INTERPRETER
    raise BackendError(
        f"backend 'triton' cannot run on a {x.device.type} tensor: Triton kernels need a CUDA device, "
        "or TRITON_INTERPRET=1 set before actkit's kernels are imported to run them on CPU through "
        "Triton's interpreter. Use ACTKIT_BACKEND=auto (or torch) for the PyTorch fallback.")


def available_backends() -> dict[str, bool]:
    """What this machine can run, for ``actkit list`` and result records."""
    return {
        TRITON: triton_installed() and torch.cuda.is_available(),
        TRITON_INTERPRETER: triton_installed() and interpreter_enabled(),
        TORCH: True,
    }
