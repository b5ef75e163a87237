"""Triton kernels for activations with a learnable parameter per channel (PReLU, Swish-beta).

Layout. A dense tensor (contiguous, channels_last, any permutation without gaps) whose
channel dimension (dim 1, as in ``torch.nn.PReLU``) has size C and stride ``inner`` is,
in memory, an ``(outer, C, inner)`` array: the element at flat offset p lies in channel
``(p // inner) % C``. So both kernels work on the flat buffer with any dense layout, and
only views with gaps pay one copy (as in :mod:`elementwise`). A shared parameter
(``num_parameters=1``) is the case C = 1.

Forward reads x and writes y = F(x, a[c]); the parameter vector is tiny and stays cached.

Backward reads x and dy, writes dx = dy * dF/dx and the parameter gradient
``da[c] = sum over every element of channel c of dy * dF/da`` -- a reduction over all
dimensions but the channel. It is done without atomics, so it is deterministic for a
fixed shape:

1. ``learnable_bwd_kernel``: program (q, k) owns a tile of BLOCK_C channels x BLOCK_Q
   elements of those channels, writes dx for the tile and one fp32 partial sum per channel
   into ``partials[q, c]``. The tile shape follows the layout: channel-first tensors
   (large ``inner``) use 1 x 2048 tiles that read along a channel's contiguous run;
   channels-last tensors (``inner`` = 1) use tiles that are wide in C, which is then the
   contiguous axis. Either way each input byte is read once.
2. ``column_sum_kernel``: one program per block of channels adds its column of partials in
   a fixed order (fp32), and stores da in the parameter's dtype.

A second tiny Triton kernel rather than ``torch.sum(partials, 0)``: both would be
deterministic, but the kernel fixes the summation order and the fp32 accumulation
explicitly (independent of ATen's reduction heuristics), fuses the cast to the
parameter's dtype, and keeps the whole backward in Triton.
"""
import torch
import triton
import triton.language as tl

from .launch import kernel
from .layout import check_dtype, in_layout

BLOCK_SIZE = 2048
NUM_WARPS = 4
# Partial-sum rows added per step of the final reduction, per block of channels.
SUM_ROWS = 64
SUM_COLS = 64
MAX_GRID_Y = 65535



# -- device functions: F(x, a) and (dF/dx, dF/da) -------------------------------------------
@triton.jit
def prelu_fwd(x, a):
    # NaN takes the a * x branch, as torch's prelu kernel (x > 0 ? x : a * x).
    return tl.where(x > 0.0, x, a * x)


@triton.jit
def prelu_bwd(x, a):
    # torch: dx = x > 0 ? dy : a * dy, da = x > 0 ? 0 : x * dy (so NaN x gives a finite dx).
    pos = x > 0.0
    return tl.where(pos, 1.0, a), tl.where(pos, 0.0, x)


@triton.jit
def swish_beta_fwd(x, b):
    return x * tl.sigmoid(b * x)


@triton.jit
def swish_beta_bwd(x, b):
    # y = x s(bx): dy/dx = s + b x s (1 - s), dy/db = x^2 s (1 - s), written in the same
    # order as autograd of the formula so +-inf gives NaN exactly where torch does.
    # 1 - s is computed as s(-bx): for large |bx| the subtraction would cancel to a few bits.
    bx = b * x
    s = tl.sigmoid(bx)
    ds = s * tl.sigmoid(-bx)
    return s + (x * ds) * b, (x * ds) * x


# -- kernels ---------------------------------------------------------------------------------
@triton.jit
def learnable_fwd_kernel(x_ptr, a_ptr, y_ptr, n_elements, C, inner,
                         F: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    channel = (offsets // inner) % C
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    a = tl.load(a_ptr + channel, mask=mask).to(tl.float32)
    tl.store(y_ptr + offsets, F(x, a).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def learnable_bwd_kernel(x_ptr, dy_ptr, a_ptr, dx_ptr, partial_ptr, C, inner, per_channel,
                         DF: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
                         WEIGHT_GRAD: tl.constexpr):
    # per_channel = outer * inner: elements in each channel, indexed q = o * inner + i.
    pid_q = tl.program_id(0)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    q = pid_q.to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    c_mask = c < C
    q_mask = q < per_channel
    q_offset = (q // inner) * C * inner + q % inner
    offsets = c[:, None] * inner + q_offset[None, :]
    mask = c_mask[:, None] & q_mask[None, :]
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    a = tl.load(a_ptr + c, mask=c_mask).to(tl.float32)
    dfdx, dfda = DF(x, a[:, None])
    tl.store(dx_ptr + offsets, (dy * dfdx).to(dx_ptr.dtype.element_ty), mask=mask)
    if WEIGHT_GRAD:
        partial = tl.sum(tl.where(mask, dy * dfda, 0.0), axis=1)
        tl.store(partial_ptr + pid_q.to(tl.int64) * C + c, partial, mask=c_mask)


@triton.jit
def column_sum_kernel(partial_ptr, out_ptr, n_rows, C,
                      ROWS: tl.constexpr, COLS: tl.constexpr):
    c = tl.program_id(0) * COLS + tl.arange(0, COLS)
    c_mask = c < C
    acc = tl.zeros([ROWS, COLS], dtype=tl.float32)
    for start in range(0, n_rows, ROWS):
        r = start + tl.arange(0, ROWS)
        mask = (r[:, None] < n_rows) & c_mask[None, :]
        acc += tl.load(partial_ptr + r[:, None].to(tl.int64) * C + c[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + c, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=c_mask)


# -- launchers -------------------------------------------------------------------------------
def channel_layout(t: torch.Tensor, n_params: int) -> tuple[int, int]:
    """(C, inner) of a dense tensor for a parameter vector of ``n_params`` entries."""
    if n_params == 1:
        return 1, max(t.numel(), 1)
    return t.shape[1], t.stride(1)


def _tiles(C: int, inner: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_Q): wide in the channel axis when channels are the contiguous axis."""
    wide = max(1, 128 // inner)
    block_c = min(triton.next_power_of_2(C), 1 << (wide.bit_length() - 1))  # powers of two
    block_c = max(block_c, triton.next_power_of_2(triton.cdiv(C, MAX_GRID_Y)))
    return block_c, max(BLOCK_SIZE // block_c, 16)


def forward(x: torch.Tensor, a: torch.Tensor, fn) -> torch.Tensor:
    """y = fn(x, a[channel]) with a of 1 or C = x.shape[1] entries; y is laid out like x."""
    check_dtype(x, "x", "learnable-activation")
    check_dtype(a, "the parameter", "learnable-activation")
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        C, inner = channel_layout(y, a.numel())
        kernel(learnable_fwd_kernel, F=fn, BLOCK=BLOCK_SIZE, num_warps=NUM_WARPS)(
            (triton.cdiv(n, BLOCK_SIZE),), in_layout(x, y), a.contiguous(), y, n, C, inner)
    return y


def backward(x: torch.Tensor, a: torch.Tensor, grad: torch.Tensor, dfn,
             weight_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, da): dx laid out like x, da shaped and typed like a (summed in fp32, no atomics).

    With ``weight_grad=False`` (a constant or frozen parameter) the reduction is skipped and da
    is zeros.
    """
    check_dtype(x, "x", "learnable-activation")
    check_dtype(a, "the parameter", "learnable-activation")
    dx = torch.empty_like(x)
    n = x.numel()
    da = torch.empty_like(a, memory_format=torch.contiguous_format)
    if n == 0 or not weight_grad:
        da.zero_()
    if n == 0:
        return dx, da
    C, inner = channel_layout(dx, a.numel())
    per_channel = n // C
    block_c, block_q = _tiles(C, inner)
    n_q = triton.cdiv(per_channel, block_q)
    partials = torch.empty((n_q if weight_grad else 1, C), device=x.device, dtype=torch.float32)
    kernel(learnable_bwd_kernel, DF=dfn, BLOCK_C=block_c, BLOCK_Q=block_q, WEIGHT_GRAD=weight_grad,
           num_warps=NUM_WARPS)(
        (n_q, triton.cdiv(C, block_c)), in_layout(x, dx), in_layout(grad.to(x.dtype), dx), a.contiguous(), dx,
        partials, C, inner, per_channel)
    if weight_grad:
        kernel(column_sum_kernel, ROWS=SUM_ROWS, COLS=SUM_COLS, num_warps=NUM_WARPS)(
            (triton.cdiv(C, SUM_COLS),), partials, da, n_q, C)
    return dx, da
