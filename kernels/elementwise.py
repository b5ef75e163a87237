"""The two generic elementwise kernels and their launchers.

``activation_fwd_kernel`` reads x and writes y = F(x); ``activation_bwd_kernel`` reads the
saved tensor s (x, or y for activations whose derivative is cheaper in y) and dy, and
writes dx = dy * DF(s). F and DF are ``@triton.jit`` device functions passed as
``tl.constexpr``, so each activation compiles to its own specialised kernel while the
indexing, masking and dtype handling live here once. ``ZERO`` (None for most activations) is
where ATen's backward selects 0 instead of multiplying (:func:`activations.zero_where`): dx is 0
there whatever dy is, NaN and inf included, as in torch.

Math is fp32; loads upcast and stores round to the output's dtype. The device functions'
``ACC`` constexpr is whether that dtype is fp32 (see :mod:`fp32math`). Offsets are int64 so
tensors with more than 2**31 elements index correctly.
"""
import torch
import triton
import triton.language as tl

from . import fp32math as fm
from .activations import form_for, zero_where
from .launch import Kernel
from .layout import BLOCK, check_dtype, elementwise_warps, in_layout



@triton.jit
def activation_fwd_kernel(x_ptr, y_ptr, n_elements, p0, p1,
                          F: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = fm.to_fp32(tl.load(x_ptr + offsets, mask=mask))
    y = F(x, p0, p1, y_ptr.dtype.element_ty == tl.float32)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def activation_bwd_kernel(s_ptr, dy_ptr, dx_ptr, n_elements, p0, p1,
                          DF: tl.constexpr, ZERO: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    s = fm.to_fp32(tl.load(s_ptr + offsets, mask=mask))
    dy = fm.to_fp32(tl.load(dy_ptr + offsets, mask=mask))
    dx = dy * DF(s, p0, p1, dx_ptr.dtype.element_ty == tl.float32)
    if ZERO is not None:
        dx = tl.where(ZERO(s, p0, p1), 0.0, dx)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


# One launcher per device function and dtype, made on first use: a call costs a dict lookup, not a
# JIT bind. Keyed by id: a JITFunction hashes its source key on every lookup; the device functions
# are module globals, alive (so their ids unique) as long as the process.
_FORWARD: dict[tuple[int, torch.dtype], Kernel] = {}
_BACKWARD: dict[tuple[int, torch.dtype], Kernel] = {}


def _kernel(cache: dict, kernel, fn, name: str, dtype: torch.dtype, **meta) -> Kernel:
    found = cache.get((id(fn), dtype))
    if found is None:
        device_fn = form_for(fn, dtype == torch.float16) if name == "F" else fn  # a forward's fp16 form
        found = cache[id(fn), dtype] = Kernel(kernel, **{name: device_fn}, **meta, BLOCK=BLOCK,
                                              num_warps=elementwise_warps(dtype.itemsize))
    return found


def forward(x: torch.Tensor, fn, p0: float = 0.0, p1: float = 0.0) -> torch.Tensor:
    """y = fn(x) elementwise with the Triton forward kernel; y has x's shape, dtype and memory format."""
    check_dtype(x, "x", "activation")
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        _kernel(_FORWARD, activation_fwd_kernel, fn, "F", x.dtype)(_grid(n), in_layout(x, y), y, n, float(p0), float(p1))
    return y


def backward(saved: torch.Tensor, grad: torch.Tensor, dfn, p0: float = 0.0, p1: float = 0.0) -> torch.Tensor:
    """dx = grad * dfn(saved) elementwise with the Triton backward kernel (0 where ATen's backward
    selects 0, see :func:`activations.zero_where`); dx is laid out like saved."""
    check_dtype(saved, "the saved tensor", "activation")
    dx = torch.empty_like(saved)
    n = saved.numel()
    if n:
        if grad.dtype != saved.dtype:
            grad = grad.to(saved.dtype)
        _kernel(_BACKWARD, activation_bwd_kernel, dfn, "DF", saved.dtype, ZERO=zero_where(dfn))(
            _grid(n), in_layout(saved, dx), in_layout(grad, dx), dx, n, float(p0), float(p1))
    return dx
