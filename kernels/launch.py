"""Launching ``@triton.jit`` kernels with little host work per call.

``JITFunction.run`` binds the arguments to the signature, specialises every one of them (dtype,
16-byte alignment, integer width and divisibility), builds a cache key from them and the
options, and only then launches: several microseconds per call, as long as a small activation
runs on a GPU. :class:`Kernel` does that work once per specialisation. The first call with a new
specialisation goes through ``JITFunction`` itself, so Triton compiles and launches exactly as it
always would; the :class:`~triton.compiler.CompiledKernel` it returns is kept under a key at least
as fine as the JIT's own (per tensor: dtype and 16-byte alignment; per integer: 32/64-bit range,
``== 1`` and divisibility by 16; plus the device), and later calls hand the arguments straight
to its launcher, as ``JITFunction.run`` does at its end.

Under ``TRITON_INTERPRET=1`` kernels are interpreted functions and every call goes through them.

A kernel that does not compile raises :class:`KernelCompileError`: one line naming the kernel, its
device functions, the dtypes and the device, instead of a compiler stack.
"""
from __future__ import annotations

import torch
import triton
from triton.compiler import CompiledKernel
from triton.runtime import driver
from triton.runtime.jit import JITFunction


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# What CompiledKernel's launcher takes after the hooks, as JITFunction.run passes it: from
# Triton 3.3 every bound argument in signature order (the launcher skips constexprs itself),
# before that only the non-constexpr ones. (Read from the sources of 3.1, 3.2, 3.3, 3.4, 3.6
# and 3.8; actkit/bench/compileonly.py checks it against JITFunction's own launch.)
PASS_CONSTEXPRS = _version(triton.__version__) >= (3, 3)
# Launch hooks (profilers set them): class attributes of CompiledKernel up to Triton 3.3,
# triton.knobs.runtime from 3.4.
_HOOKS_ON_KERNEL = hasattr(CompiledKernel, "launch_enter_hook")
_RUNTIME_KNOBS = None if _HOOKS_ON_KERNEL else triton.knobs.runtime


class KernelCompileError(RuntimeError):
    """Triton could not compile (or load) a kernel for this device."""


def _int_key(value: int) -> tuple:
    # Triton types an integer argument as i32, i64 or u64 by its range and specialises on
    # value == 1 and on divisibility by 16.
    width = 0 if -2 ** 31 <= value < 2 ** 31 else 1 if value < 2 ** 63 else 2
    return width, value == 1, value % 16 == 0


def _arg_key(arg) -> object:
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool):
        return bool
    if isinstance(arg, int):
        return _int_key(arg)
    return type(arg)  # floats: always fp32, never specialised


def _key_function(args: tuple):
    """A function computing the specialisation key of arguments of the types in ``args``.

    Generated once per kernel, as Triton's own binder is: written out per argument, the key
    costs a fraction of a generic loop over the arguments. It records each non-tensor's class,
    so an argument of another type gives another key; a non-tensor where a tensor was raises
    AttributeError, and the caller falls back to the generic :func:`_arg_key`.
    """
    names = [f"a{i}" for i in range(len(args))]
    parts = ["device"]
    for name, arg in zip(names, args):
        if isinstance(arg, torch.Tensor):
            parts.append(f"{name}.dtype, {name}.data_ptr() % 16 == 0")
        elif isinstance(arg, int) and not isinstance(arg, bool):
            parts.append(f"{name}.__class__, -0x80000000 <= {name} < 0x80000000, {name} < 0x8000000000000000, "
                         f"{name} == 1, {name} % 16 == 0")
        else:
            parts.append(f"{name}.__class__")
    namespace: dict = {}
    exec(f"def key(device, {', '.join(names)}):\n    return ({', '.join(parts)},)\n", namespace)
    return namespace["key"]


def _label(value) -> str:
    fn = getattr(value, "fn", value)
    return getattr(fn, "__name__", None) or repr(value)


class Kernel:
    """A ``@triton.jit`` kernel with its constexprs and launch options fixed.

    ``Kernel(fn, F=relu_fwd, BLOCK=2048, num_warps=4)(grid, x, y, n, p0, p1)`` launches ``fn``
    like ``fn[grid](x, y, n, p0, p1, F=relu_fwd, BLOCK=2048, num_warps=4)``. The constexprs must
    be the kernel's last parameters (true of every actkit kernel), so that the positional
    arguments are exactly its runtime parameters.
    """

    def __init__(self, fn, **meta):
        self.fn, self.meta = fn, meta
        self.direct = isinstance(fn, JITFunction)
        self.compiled: dict[tuple, CompiledKernel] = {}
        self._key = None  # made from the first call's arguments
        _MADE.append(self)
        if self.direct:
            constexpr = [p.is_constexpr for p in fn.params]
            n_runtime = constexpr.count(False)
            if any(constexpr[:n_runtime]) or not all(constexpr[n_runtime:]):
                raise TypeError(f"{_label(fn)}: constexpr parameters must come after the runtime ones")
            names = [p.name for p in fn.params[n_runtime:]]
            missing = [n for n in names if n not in meta]
            if missing:
                raise TypeError(f"{_label(fn)}: no value for constexpr(s) {', '.join(missing)}")
            self.n_runtime = n_runtime
            self.constexpr_values = tuple(meta[n] for n in names) if PASS_CONSTEXPRS else ()

    def __call__(self, grid: tuple, *args) -> None:
        if not self.direct:
            self.fn[grid](*args, **self.meta)
            return
        target_device = args[0].get_device()  # -1 for CPU tensors (compile-only tests)
        drv = driver.active
        device = drv.get_current_device()
        if target_device >= 0 and target_device != device:
            with torch.cuda.device(target_device):  # launch on the tensors' GPU, as ATen ops do
                return self(grid, *args)
        if self._key is None:
            self._key = _key_function(args)
        try:
            key = self._key(device, *args)
        except (TypeError, AttributeError):  # arguments of other types than the first call's
            key = (device, *map(_arg_key, args))
        compiled = self.compiled.get(key)
        if compiled is None:
            self._first_launch(grid, args, key)
            return
        launch_args = args + self.constexpr_values
        stream = drv.get_current_stream(device)
        if _HOOKS_ON_KERNEL:
            enter, leave = CompiledKernel.launch_enter_hook, CompiledKernel.launch_exit_hook
        else:
            enter, leave = _RUNTIME_KNOBS.launch_enter_hook, _RUNTIME_KNOBS.launch_exit_hook
        metadata = compiled.launch_metadata(grid, stream, *launch_args) if enter is not None else None
        compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream,
                     compiled.function, compiled.packed_metadata, metadata, enter, leave, *launch_args)

    def _first_launch(self, grid: tuple, args: tuple, key: tuple) -> None:
        if len(args) != self.n_runtime:
            raise TypeError(f"{_label(self.fn)} takes {self.n_runtime} runtime arguments, got {len(args)}")
        try:
            compiled = self.fn[grid](*args, **self.meta)
        except Exception as exc:
            raise KernelCompileError(self._describe_failure(args, exc)) from exc
        if isinstance(compiled, CompiledKernel):
            self.compiled[key] = compiled

    def _describe_failure(self, args: tuple, exc: Exception) -> str:
        dtypes = sorted({str(a.dtype).replace("torch.", "") for a in args if isinstance(a, torch.Tensor)})
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), "?")
        try:
            target = driver.active.get_current_target()
            where = f"{device} ({target.backend} arch {target.arch})"
        except Exception:  # no driver at all: say what we know
            where = str(device)
        constexprs = ", ".join(f"{k}={_label(v)}" for k, v in self.meta.items() if k != "num_warps")
        # Triton wraps the real error (a NameError, a ptxas failure) in a CompilationError per
        # function it was compiling, each showing source: report the innermost one.
        while (exc.__cause__ or exc.__context__) is not None:
            exc = exc.__cause__ or exc.__context__
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "").split(". ")[0]
        return (f"Triton could not compile {_label(self.fn)}[{constexprs}] for {'/'.join(dtypes)} tensors on {where}: "
                f"{type(exc).__name__}: {reason[:300]}. ACTKIT_BACKEND=torch runs the PyTorch fallback instead")


_KERNELS: dict[tuple, Kernel] = {}
_MADE: list[Kernel] = []  # every Kernel of this process (they live as long as it does)


def kernels() -> list[Kernel]:
    """Every :class:`Kernel` made so far, with the compiled kernels each holds (for tests and tools)."""
    return list(_MADE)


def kernel(fn, **meta) -> Kernel:
    """The :class:`Kernel` for ``fn`` with these constexprs and options (one per combination)."""
    # Device functions and kernels by id: a JITFunction hashes its source key on every lookup
    # (they are module globals, so their ids stay unique while the process runs).
    key = (id(fn), *((k, v if isinstance(v, (bool, int, float, str)) else id(v)) for k, v in sorted(meta.items())))
    found = _KERNELS.get(key)
    if found is None:
        found = _KERNELS[key] = Kernel(fn, **meta)
    return found
