"""actkit: activation functions as fused Triton kernels, with a PyTorch fallback."""
from importlib.metadata import PackageNotFoundError, version as _version

from .kinds import elementwise, glu, learnable, rowwise  # noqa: F401  (each kind registers its custom ops)
from . import functional, nn
from .patch import PatchReport, patch, unpatch
from .backend import BackendError, available_backends, backend_for, get_backend, set_backend
from .registry import ActivationSpec, Param, available, get, register

try:
    __version__ = _version("actkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ActivationSpec", "BackendError", "Param", "PatchReport", "patch", "unpatch", "available", "available_backends", "backend_for",
           "functional", "get", "get_backend", "nn", "register", "set_backend", "__version__"]
