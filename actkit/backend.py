"""Which implementation runs an activation: compiled Triton, Triton's interpreter, or PyTorch.

``auto`` (the default) runs CUDA tensors through the Triton kernels and everything else
through the PyTorch reference (the CPU fallback). ``ACTKIT_BACKEND`` or
:func:`set_backend` override it. Forcing ``triton`` on CPU tensors is allowed only under
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
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_override: str | None = None


class BackendError(RuntimeError):
    """The requested backend cannot run on this tensor or machine."""


def _validate(name: str, source: str) -> str:
    choice = name.strip().lower()
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} from {source}; choose one of: {', '.join(BACKENDS)}")
    return choice


def set_backend(name: str | None) -> None:
    """Override the backend for this process (``None`` returns to ``ACTKIT_BACKEND``/auto)."""
    global _override
    _override = None if name is None else _validate(name, "set_backend()")


def get_backend() -> str:
    """The configured backend choice: ``auto``, ``triton`` or ``torch``."""
    if _override is not None:
        return _override
    return _validate(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}")


# Looked up once at import (cheap: no Triton import), so that backend_for stays a plain
# function that torch.compile traces without a cache wrapper.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_for(x: torch.Tensor) -> str:
    """The backend that an activation call on ``x`` runs: ``triton``, ``triton-interpreter`` or ``torch``."""
    choice = get_backend()
    if choice == "torch" or x.dtype not in TRITON_DTYPES:
        return TORCH
    if x.device.type == "cuda":
        if triton_installed():
            return TRITON
        if choice == "triton":
            raise BackendError("backend 'triton' was requested but Triton is not installed (pip install triton)")
        return TORCH
    if choice == "auto":
        return TORCH
    if x.device.type == "cpu" and triton_installed() and interpreter_enabled():
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
