"""Triton kernels for activations with a learnable parameter per channel (PReLU, Swish-beta).

Layout. A dense tensor (contiguous, channels_last, any permutation without gaps) whose
channel dimension (dim 1, as in ``torch.nn.PReLU``) has size C and stride ``inner`` is,
in memory, an ``(outer, C, inner)`` array: the element at flat offset p lies in channel
``(p // inner) % C``. So both kernels work on the flat buffer with any dense layout, and
only views with gaps pay one copy (as in :mod:`elementwise`). A shared parameter
(``num_parameters=1``) is the case C = 1.

Both kernels tile that ``(outer, C, inner)`` array: a program owns ``BLOCK_O x BLOCK_C x
BLOCK_I`` elements (about 2048), longest along the contiguous axis (inner; the channels when
inner is 1), so every element's channel is its tile column: no per-element division (an int64
``(p // inner) % C`` per element cost prelu's backward 80 instructions per element on sm_90).

Forward reads x and writes y = F(x, a[c]); the parameter vector is tiny and stays cached.

Backward reads x and dy, writes dx = dy * dF/dx and the parameter gradient
``da[c] = sum over every element of channel c of dy * dF/da`` -- a reduction over all
dimensions but the channel. It is done without atomics, so it is deterministic for a
fixed shape:

1. ``learnable_bwd_kernel``: each program writes dx for its tile and one fp32 partial sum per
   channel of the tile into ``partials[row, c]``, one row per tile position along outer and
   inner. Each input byte is read once.
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

from . import fp32math as fm
from .launch import kernel
from .layout import (BLOCK, LEARNABLE_BWD_WARPS, LEARNABLE_SUM_COLS, LEARNABLE_SUM_ROWS, NUM_WARPS, check_dtype,
                     elementwise_warps, in_layout)


# -- device functions: F(x, a) and, given dy, (dy * dF/dx, dy * dF/da) ----------------------
# ACC (a constexpr) is whether the output is fp32: 16-bit outputs take fp32math's cheaper forms
# (see there). The backward ones take dy so that they can select as ATen does rather than
# multiply: PReLU's weight gradient is 0 where x > 0 even for dy = NaN or inf (torch selects,
# dy * 0 would be NaN).
@triton.jit
def prelu_fwd(x, a, ACC: tl.constexpr):
    # NaN takes the a * x branch, as torch's prelu kernel (x > 0 ? x : a * x).
    return tl.where(x > 0.0, x, a * x)


@triton.jit
def prelu_bwd(x, a, dy, ACC: tl.constexpr):
    # torch: dx = x > 0 ? dy : a * dy, da = x > 0 ? 0 : x * dy (so NaN x gives a finite dx).
    pos = x > 0.0
    return tl.where(pos, dy, a * dy), tl.where(pos, 0.0, x * dy)


@triton.jit
def sigmoid_parts_16(x, b, PAIRS: tl.constexpr):
    """16-bit outputs: (v, z, r), v = b x log2(e) / 2 (the sign of t = b x), z = e^-|t| = (2^-|v|)^2
    (fm.exp's fast form, the constant folded into the per-channel b) and r = 1 / (1 + z): s(t) = r
    for v >= 0, z r for v < 0, and s(t) s(-t) = z r^2 (fm.sigmoid_parts). The reciprocal is one
    MUFU.RCP and a Newton step (about half an ulp: near t = 0, z r^2 = 1/4 - t^2/16 decides
    between two 16-bit values by its last fp32 bits), or with PAIRS (forwards, whose F2FP store
    shares the XU with MUFU) one MUFU.RCP per two elements (fm.rcp_pairs)."""
    v = x * (b * fm.HALF_LOG2E)
    h = tl.exp2(-tl.abs(v))
    z = h * h
    if PAIRS:
        r = fm.rcp_pairs(1.0 + z)
    else:
        r = fm.rcp_acc(1.0 + z, True)
    return v, z, r


@triton.jit
def swish_beta_fwd(x, b, ACC: tl.constexpr):
    # x s(bx) = x r, or (x z) r for bx < 0. +-inf: inf r = inf, -inf * 0 = NaN, as torch's x * s.
    if ACC:
        # e^-|t| 2^32 on the FMA pipe (fm.exp_scaled, about 1 ulp where ex2.approx has 2), the scale
        # taken off last so that x e^-|t| r rounds once where it is subnormal, as silu's fp32 forward.
        t = b * x
        m, r = fm.sigmoid_parts_scaled(t, False)
        return tl.where(t < 0.0, (x * (m * r)) * fm.TWO_M32, x * r)
    else:
        v, z, r = sigmoid_parts_16(x, b, True)
        # x s(bx) = x / 2 + b x^2 / 4 + ...: on b's side of x / 2. Where x / 2 is subnormal (bf16's
        # smallest x) it can be a tie between two 16-bit values, which fp32's x s (exactly x / 2, or
        # off by far less than 2^-149) cannot break: the product is fused with 2^-149 on b's side
        # (0 for b = 0, where x / 2 is exact), as fp32math.times_half_and_more does for b > 0.
        tiny = tl.full(b.shape, 1, tl.int32).to(tl.float32, bitcast=True)  # 2^-149, from its bits
        nudge = tl.where(b > 0.0, tiny, tl.where(b < 0.0, -tiny, 0.0))
        return tl.fma(x, tl.where(v < 0.0, z * r, r), nudge)


@triton.jit
def swish_beta_bwd(x, b, dy, ACC: tl.constexpr):
    # y = x s(t), t = bx: dy/dx = s + b w, dy/db = x w, w = x s (1 - s) = x z r^2, with 1 - s =
    # s(-t) = z r or r, exact to the last bits (1 - s would cancel to a few bits). Products in
    # autograd's order so that +-inf gives NaN exactly where torch does (inf * 0).
    if ACC:
        t = b * x
        m, r = fm.sigmoid_parts_scaled(t, True)
        mr = m * r  # s(-|t|) 2^32
        negative = t < 0.0
        zr = mr * fm.TWO_M32
        # s + x b s s(-t), s s(-t) = mr r 2^-32: in units of 2^-32, one FMA (one rounding where the
        # sum cancels, dy/dx = 0 at t = -1.28), scaled last. x and b apart, not t: a finite x whose
        # b x overflows keeps torch's finite dy/dx (m = 0).
        dx = tl.fma(x, b * (mr * r), tl.where(negative, mr, r * fm.TWO_P32)) * fm.TWO_M32
    else:
        v, z, r = sigmoid_parts_16(x, b, False)
        zr = z * r
        s = tl.where(v < 0.0, zr, r)
    w = (x * zr) * r
    if not ACC:
        w, b = tl.broadcast(w, b)
        dx = tl.fma(w, b, s)
    return dy * dx, dy * (w * x)


# The table the learnable specs point to (``ActivationSpec.kernel``, default the name): F(x, a)
# and (dy dF/dx, dy dF/da) per activation.
TABLE = {
    "prelu": (prelu_fwd, prelu_bwd),
    "swish_beta": (swish_beta_fwd, swish_beta_bwd),
}


# -- kernels ---------------------------------------------------------------------------------
@triton.jit
def _channel_tile(outer, C, inner, n_cb, n_ib, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_I: tl.constexpr):
    """This program's tile of the (outer, C, inner) array: flat offsets, mask, channels and the
    index of its row of partial sums. Divisions happen once per program, never per element."""
    pid = tl.program_id(0)
    ib = pid % n_ib
    rest = pid // n_ib
    cb = rest % n_cb
    ob = rest // n_cb
    o = ob * BLOCK_O + tl.arange(0, BLOCK_O)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    i = ib * BLOCK_I + tl.arange(0, BLOCK_I)
    # int64 only per (o, c) row: the per-element part is an int32 index within the row.
    row = o.to(tl.int64)[:, None] * C * inner + c.to(tl.int64)[None, :] * inner
    offsets = row[:, :, None] + i[None, None, :]
    mask = ((o < outer)[:, None] & (c < C)[None, :])[:, :, None] & (i < inner)[None, None, :]
    return offsets, mask, c, ob * n_ib + ib


@triton.jit
def learnable_fwd_kernel(x_ptr, a_ptr, y_ptr, outer, C, inner, n_cb, n_ib,
                         F: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr):
    offsets, mask, c, _ = _channel_tile(outer, C, inner, n_cb, n_ib, BLOCK_O, BLOCK_C, BLOCK_I)
    x = fm.to_fp32(tl.load(x_ptr + offsets, mask=mask))
    a = tl.load(a_ptr + c, mask=c < C).to(tl.float32)
    y = F(x, a[None, :, None], y_ptr.dtype.element_ty == tl.float32)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def learnable_bwd_kernel(x_ptr, dy_ptr, a_ptr, dx_ptr, partial_ptr, outer, C, inner, n_cb, n_ib,
                         DF: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                         WEIGHT_GRAD: tl.constexpr):
    offsets, mask, c, partial_row = _channel_tile(outer, C, inner, n_cb, n_ib, BLOCK_O, BLOCK_C, BLOCK_I)
    c_mask = c < C
    x = fm.to_fp32(tl.load(x_ptr + offsets, mask=mask))
    dy = fm.to_fp32(tl.load(dy_ptr + offsets, mask=mask))
    a = tl.load(a_ptr + c, mask=c_mask).to(tl.float32)
    dx, da = DF(x, a[None, :, None], dy, dx_ptr.dtype.element_ty == tl.float32)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if WEIGHT_GRAD:
        partial = tl.sum(tl.sum(tl.where(mask, da, 0.0), axis=2), axis=0)
        tl.store(partial_ptr + partial_row.to(tl.int64) * C + c, partial, mask=c_mask)


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


def _tiles(C: int, inner: int, outer: int) -> tuple[int, int, int]:
    """(BLOCK_O, BLOCK_C, BLOCK_I), about BLOCK elements: as long as possible along the
    contiguous axis (inner, or the channels when inner is 1), then the channels, then outer."""
    block_i = min(triton.next_power_of_2(inner), BLOCK)
    block_c = min(triton.next_power_of_2(C), BLOCK // block_i)
    block_o = min(triton.next_power_of_2(outer), BLOCK // (block_i * block_c))
    return block_o, block_c, block_i


def _grid(C: int, inner: int, outer: int) -> tuple[dict, tuple[int, int, int], int]:
    """(constexprs, (outer, n_cb, n_ib), number of programs) of a tiling of (outer, C, inner)."""
    block_o, block_c, block_i = _tiles(C, inner, outer)
    n_ob, n_cb, n_ib = triton.cdiv(outer, block_o), triton.cdiv(C, block_c), triton.cdiv(inner, block_i)
    return dict(BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_I=block_i), (n_ob, n_cb, n_ib), n_ob * n_cb * n_ib


def _sum_block(n_rows: int, C: int) -> tuple[int, int, int]:
    """(ROWS, COLS, num_warps) of the column sum: at most LEARNABLE_SUM_ROWS x LEARNABLE_SUM_COLS,
    no larger than the partials, and a warp per 1024 of its elements: a small problem (few tiles,
    few channels) launches one warp, not four over a mostly masked 64 x 64 block."""
    rows = min(LEARNABLE_SUM_ROWS, triton.next_power_of_2(n_rows))
    cols = min(LEARNABLE_SUM_COLS, triton.next_power_of_2(C))
    return rows, cols, max(1, min(NUM_WARPS, rows * cols // 1024))


def forward(x: torch.Tensor, a: torch.Tensor, fn) -> torch.Tensor:
    """y = fn(x, a[channel]) with a of 1 or C = x.shape[1] entries; y is laid out like x."""
    check_dtype(x, "x", "learnable-activation")
    check_dtype(a, "the parameter", "learnable-activation")
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        C, inner = channel_layout(y, a.numel())
        outer = n // (C * inner)
        tiles, (_, n_cb, n_ib), programs = _grid(C, inner, outer)
        # The elementwise kernels' rule, four 128-bit vectors a thread (swish_beta's 16-bit NC forward
        # 17.9 -> 14.9 instructions per element on sm_90; PReLU's fp16 NC forward 6.0 -> 8.4, at 3.2).
        kernel(learnable_fwd_kernel, F=fn, **tiles, num_warps=elementwise_warps(x.element_size()))(
            (programs,), in_layout(x, y), a.contiguous(), y, outer, C, inner, n_cb, n_ib)
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
    outer = n // (C * inner)
    tiles, (n_ob, n_cb, n_ib), programs = _grid(C, inner, outer)
    n_rows = n_ob * n_ib  # one row of partial sums per tile position outside the channels
    partials = torch.empty((n_rows if weight_grad else 1, C), device=x.device, dtype=torch.float32)
    kernel(learnable_bwd_kernel, DF=dfn, **tiles, WEIGHT_GRAD=weight_grad,
           num_warps=LEARNABLE_BWD_WARPS if weight_grad else NUM_WARPS)(
        (programs,), in_layout(x, dx), in_layout(grad.to(x.dtype), dx), a.contiguous(), dx,
        partials, outer, C, inner, n_cb, n_ib)
    if weight_grad:
        rows, cols, warps = _sum_block(n_rows, C)
        kernel(column_sum_kernel, ROWS=rows, COLS=cols, num_warps=warps)((triton.cdiv(C, cols),), partials, da, n_rows, C)
    return dx, da
