"""Row-wise Triton kernels: softmax and log_softmax over any dimension, forward and backward.

Layout. A dense tensor reduced over dim d (size N, stride ``inner``) is, in memory, an
``(outer, N, inner)`` array: row r = (o, i) with o = r // inner, i = r % inner starts at
``o * N * inner + i`` and its k-th element is ``inner * k`` further on. This holds for any
dense layout (contiguous, channels_last, transposed), so no dimension is ever moved or
copied; only views with gaps pay one copy into a dense layout. The last dimension of a
contiguous tensor is simply the case ``inner = 1``.

Tiles. A program owns BLOCK_R rows and walks their elements BLOCK_N at a time, in a
``[BLOCK_N, BLOCK_R]`` tile reduced over axis 0. Short rows (``inner = 1``, small N) pack
many rows per program; rows of a reduced dim that is not innermost (``inner > 1``) are
read side by side, so neighbouring rows are neighbouring addresses.

Forward. When a row fits in one tile (N <= ROWWISE_MAX_FUSED for the innermost dim, N * 8 <=
ROWWISE_MAX_FUSED otherwise, see :func:`config`), the kernel reads x once and writes y once: max, exp, sum, normalise in registers. Longer rows (the vocabulary of a
language model, > 64k) take two sweeps: the first keeps an online running maximum m and
sum s (s is rescaled by exp(m_old - m_new) whenever the maximum grows), the second
writes exp(x - m) / s, or x - m - log(s) for log_softmax. Math is fp32; numerically stable
because every exponent is <= 0.

Backward uses only the saved output y and dy (x is not kept):
softmax ``dx = y * (dy - sum(dy * y))``, log_softmax ``dx = dy - exp(y) * sum(dy)``;
one sweep when the row fits, two otherwise.

NaN and inf follow torch: a row holding NaN or +inf is all NaN; a row of only -inf is
NaN; -inf entries of any other row give probability 0 (log-probability -inf).
"""
import torch
import triton
import triton.language as tl

from .launch import kernel
from .layout import ROWWISE_MAX_FUSED, ROWWISE_TILE, check_dtype, in_layout, rowwise_warps




@triton.jit
def _row_offsets(pid, n_rows, N, inner, BLOCK_R: tl.constexpr):
    r = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    base = (r // inner) * N * inner + r % inner
    return base, r < n_rows


@triton.jit
def _tile(cols, base, r_mask, N, inner):
    # Offsets and mask of a (columns x rows) tile: column k of row r is at base[r] + k * inner.
    offsets = cols[:, None] * inner + base[None, :]
    return offsets, (cols[:, None] < N) & r_mask[None, :]


@triton.jit
def softmax_fwd_kernel(x_ptr, y_ptr, n_rows, N, inner,
                       LOG: tl.constexpr, SINGLE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    base, r_mask = _row_offsets(tl.program_id(0), n_rows, N, inner, BLOCK_R)
    k = tl.arange(0, BLOCK_N).to(tl.int64)
    if SINGLE:
        offsets, mask = _tile(k, base, r_mask, N, inner)
        x = tl.load(x_ptr + offsets, mask=mask, other=float("-inf")).to(tl.float32)
        x = tl.where(r_mask[None, :], x, 0.0)  # padding rows: keep their (unstored) math finite
        m = tl.max(x, axis=0)
        shifted = x - m[None, :]
        e = tl.where(mask, tl.exp(shifted), 0.0)
        s = tl.sum(e, axis=0)
        if LOG:
            y = shifted - tl.log(s)[None, :]
        else:
            y = e * (1.0 / s)[None, :]
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        m = tl.full([BLOCK_R], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_R], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            kk = start + k
            offsets, mask = _tile(kk, base, r_mask, N, inner)
            x = tl.load(x_ptr + offsets, mask=mask, other=float("-inf")).to(tl.float32)
            x = tl.where(r_mask[None, :], x, 0.0)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            # While the running maximum is -inf every element so far was -inf: contribute 0
            # (not exp(-inf + inf) = NaN), so a later finite chunk still gives torch's answer;
            # a row that stays all -inf ends with s = 0 and comes out NaN in the second sweep.
            e = tl.where(mask & (m_new != float("-inf"))[None, :], tl.exp(x - m_new[None, :]), 0.0)
            scale = tl.where(m == m_new, 1.0, tl.exp(m - m_new))
            s = s * scale + tl.sum(e, axis=0)
            m = m_new
        log_s = tl.log(s)
        inv_s = 1.0 / s
        for start in range(0, N, BLOCK_N):
            kk = start + k
            offsets, mask = _tile(kk, base, r_mask, N, inner)
            x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            shifted = x - m[None, :]
            if LOG:
                y = shifted - log_s[None, :]
            else:
                y = tl.exp(shifted) * inv_s[None, :]
            tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_kernel(y_ptr, dy_ptr, dx_ptr, n_rows, N, inner,
                       LOG: tl.constexpr, SINGLE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    base, r_mask = _row_offsets(tl.program_id(0), n_rows, N, inner, BLOCK_R)
    k = tl.arange(0, BLOCK_N).to(tl.int64)
    if SINGLE:
        offsets, mask = _tile(k, base, r_mask, N, inner)
        y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            dot = tl.sum(dy, axis=0)
            dx = dy - tl.exp(y) * dot[None, :]
        else:
            dot = tl.sum(dy * y, axis=0)
            dx = y * (dy - dot[None, :])
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        dot = tl.zeros([BLOCK_R], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            kk = start + k
            offsets, mask = _tile(kk, base, r_mask, N, inner)
            dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                dot += tl.sum(dy, axis=0)
            else:
                y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
                dot += tl.sum(dy * y, axis=0)
        for start in range(0, N, BLOCK_N):
            kk = start + k
            offsets, mask = _tile(kk, base, r_mask, N, inner)
            y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                dx = dy - tl.exp(y) * dot[None, :]
            else:
                dx = y * (dy - dot[None, :])
            tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# -- launchers -------------------------------------------------------------------------------
def row_layout(t: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """(n_rows, N, inner) of a dense tensor reduced over ``dim`` (already wrapped, >= 0)."""
    N = t.shape[dim]
    inner = t.stride(dim) if N > 1 else 1
    return t.numel() // N, N, inner


def config(N: int, n_rows: int, inner: int = 1) -> dict:
    """Tile and launch shape for ``n_rows`` rows of N elements whose elements are ``inner`` apart.

    When the reduced dim is not innermost (``inner > 1``) a tile takes several neighbouring
    rows so that each load covers a run of consecutive addresses, not one scattered word.
    """
    side_by_side = 1 if inner == 1 else min(triton.next_power_of_2(inner), 8)
    if triton.next_power_of_2(N) * side_by_side <= ROWWISE_MAX_FUSED:
        single, block_n, budget = True, triton.next_power_of_2(N), ROWWISE_MAX_FUSED
    else:
        side_by_side = 1 if inner == 1 else min(triton.next_power_of_2(inner), 32)
        single, block_n, budget = False, ROWWISE_TILE // side_by_side, ROWWISE_TILE
    block_r = max(1, min(budget // block_n, triton.next_power_of_2(n_rows)))
    return dict(SINGLE=single, BLOCK_N=block_n, BLOCK_R=block_r, num_warps=rowwise_warps(block_n * block_r))


def _launch(fn, inputs, out, dim, log):
    n_rows, N, inner = row_layout(out, dim)
    cfg = config(N, n_rows, inner)
    kernel(fn, LOG=log, **cfg)((triton.cdiv(n_rows, cfg["BLOCK_R"]),), *inputs, out, n_rows, N, inner)


def forward(x: torch.Tensor, dim: int, log: bool = False) -> torch.Tensor:
    """softmax (or log_softmax) of x over ``dim`` (0 <= dim < x.dim(), or 0 for a 0-d x)."""
    check_dtype(x, "x", "softmax")
    if x.dim() == 0:
        return forward(x.reshape(1), 0, log).reshape(())
    y = torch.empty_like(x)
    if x.numel():
        _launch(softmax_fwd_kernel, (in_layout(x, y),), y, dim, log)
    return y


def backward(y: torch.Tensor, grad: torch.Tensor, dim: int, log: bool = False) -> torch.Tensor:
    """dx from the saved output y and dy; dx is laid out like y."""
    check_dtype(y, "the saved output", "softmax")
    if y.dim() == 0:
        return backward(y.reshape(1), grad.reshape(1), 0, log).reshape(())
    dx = torch.empty_like(y)
    if y.numel():
        _launch(softmax_bwd_kernel, (in_layout(y, dx), in_layout(grad.to(y.dtype), dx)), dx, dim, log)
    return dx
