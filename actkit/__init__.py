"""actkit: activation functions as fused Triton kernels, with a PyTorch fallback.

``import actkit`` is cheap: the library (torch, the kernels, the custom ops) loads on first use of any
of its names (``actkit.functional``, ``from actkit import nn``, ``actkit.patch(...)``), all of it at
once as a plain import would, so that the ``actkit`` command answers ``--help`` and ``--version`` (and
shell completion, which runs it on every TAB) without importing torch (PEP 562).
"""
import sys
import types
from importlib import import_module

# The modules the first use loads, in this order: each kind module registers its custom ops with
# torch.library.
_LIBRARY = ("kinds.elementwise", "functional", "nn", "kinds.glu", "kinds.learnable", "kinds.rowwise")
# The public names defined in submodules: name -> the module that defines it.
_EXPORTS = {
    "PatchReport": "patch", "patch": "patch", "unpatch": "patch",
    "BackendError": "backend", "available_backends": "backend", "backend_for": "backend",
    "get_backend": "backend", "set_backend": "backend",
    "ActivationSpec": "registry", "Param": "registry", "available": "registry", "get": "registry",
    "register": "registry",
}
# Submodules the eager package imported, so that ``actkit.<name>`` worked without importing it. Each of
# them registers the custom ops it calls, so importing one alone is enough for it.
_SUBMODULES = frozenset({"functional", "nn", "backend", "registry", "kinds"})
# Kind modules reachable as attributes of the package, as before they moved into actkit.kinds
# (``actkit.glu.set_compile_path``).
_KIND_ALIASES = {"glu": "kinds.glu"}

__all__ = ["ActivationSpec", "BackendError", "Param", "PatchReport", "patch", "unpatch", "available", "available_backends", "backend_for",
           "functional", "get", "get_backend", "nn", "register", "set_backend", "__version__"]


def _load() -> None:
    for module in _LIBRARY:
        import_module(f"{__name__}.{module}")
    namespace = globals()
    for name, module in _EXPORTS.items():
        namespace[name] = getattr(import_module(f"{__name__}.{module}"), name)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # 0.1 s of imports: only when asked

    try:
        return version("actkit")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = _package_version()
        return globals()[name]
    if name in _SUBMODULES:  # also asked by `from . import registry` inside the package: import that one only
        return import_module(f"{__name__}.{name}")
    if name in _KIND_ALIASES:
        return import_module(f"{__name__}.{_KIND_ALIASES[name]}")
    if name in _EXPORTS:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES | set(_KIND_ALIASES))


class _Package(types.ModuleType):
    """The ``actkit`` module. Importing a submodule binds it on its package, and ``actkit.patch`` is a
    function with the name of its module: keep the function when ``actkit.patch`` (the module) is first
    imported by some other module (``from .patch import patch`` in actkit.memory, say) before ``_load``."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS:
            return  # the module stays reachable as sys.modules["actkit.patch"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
