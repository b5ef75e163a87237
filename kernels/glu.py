"""The gated-linear-unit kernels and their launchers: y = F(a) * b, forward and backward in one pass each.

``glu_fwd_kernel`` reads a and b and writes y = F(a) * b; ``glu_bwd_kernel`` reads a, b and dy
and writes both gradients, da = dy * b * DF(a) and db = dy * F(a), in the same pass. F and DF are
an activation's ``<name>_fwd`` and ``<name>_bwd`` device functions (:mod:`activations`), passed as
``tl.constexpr`` as in :mod:`elementwise`, so each gate compiles to its own kernel.

Every operand is addressed as rows: element (r, c) of an operand is at ``r * row_stride + c``.
That one rule covers the layouts GLUs meet without copying them:

* two contiguous tensors: one row of n elements (the kernel is then a flat elementwise one);
* the halves of a contiguous x split along ``dim``: rows of ``inner`` = (half of dim) x (the dims
  after it) elements, a row stride of 2 * inner, b starting ``inner`` elements after a;
* halves a user took with ``x.chunk(2, -1)``, and other views whose last dim is contiguous and
  whose leading dims collapse into one stride: rows of the last dim, at their own row stride.

Anything else (transposed, channels_last halves) is copied once. Each program handles a tile of
``ROWS x COLS`` = :data:`BLOCK` elements, ``COLS`` a power of two covering the row up to BLOCK,
so short rows share a program and long rows are split over several; columns are the contiguous
axis, so aligned tensors get 128-bit loads and stores as the elementwise kernels do.

Math is fp32 (loads upcast, stores round to the output's dtype) with int64 offsets.
"""
import torch
import triton
import triton.language as tl

from . import fp32math as fm
from .activations import form_for, fused_with, zero_where
from .launch import kernel
from .layout import BLOCK, GLU_WARPS, check_dtype



@triton.jit
def _tile(rows, cols, ROWS: tl.constexpr, COLS: tl.constexpr):
    """This program's row and column indices (int64, as [ROWS, 1] and [1, COLS]) and its mask."""
    col_blocks = tl.cdiv(cols, COLS)
    pid = tl.program_id(0)
    r = (pid // col_blocks).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = (pid % col_blocks).to(tl.int64) * COLS + tl.arange(0, COLS)
    mask = (r < rows)[:, None] & (c < cols)[None, :]
    return r[:, None], c[None, :], mask


@triton.jit
def glu_fwd_kernel(a_ptr, b_ptr, y_ptr, rows, cols, a_row, b_row, y_row, p0, p1,
                   F: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r, c, mask = _tile(rows, cols, ROWS, COLS)
    a = fm.to_fp32(tl.load(a_ptr + (r * a_row + c), mask=mask))
    b = fm.to_fp32(tl.load(b_ptr + (r * b_row + c), mask=mask))
    y = F(a, p0, p1, y_ptr.dtype.element_ty == tl.float32) * b
    tl.store(y_ptr + (r * y_row + c), y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def glu_bwd_kernel(a_ptr, b_ptr, dy_ptr, da_ptr, db_ptr, rows, cols, a_row, b_row, dy_row, da_row, db_row,
                   p0, p1, F: tl.constexpr, DF: tl.constexpr, DF_OF_Y: tl.constexpr, ZERO: tl.constexpr,
                   FUSED: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r, c, mask = _tile(rows, cols, ROWS, COLS)
    a = fm.to_fp32(tl.load(a_ptr + (r * a_row + c), mask=mask))
    b = fm.to_fp32(tl.load(b_ptr + (r * b_row + c), mask=mask))
    dy = fm.to_fp32(tl.load(dy_ptr + (r * dy_row + c), mask=mask))
    # The same order of products as autograd of the composite: (dy * b) * f'(a), f' read from f(a)
    # where torch's autograd of the gate reads it from its output (sigmoid, tanh: so f'(a) is 0, and
    # dy * b = inf gives NaN, where sigmoid(a) rounds to 1, as in torch), and 0 where the gate's ATen
    # backward selects 0 (ReLU's a <= 0), whatever dy * b is.
    acc: tl.constexpr = da_ptr.dtype.element_ty == tl.float32
    if FUSED is not None:  # f and f' from pieces computed once (activations.fused_with)
        fa, dfa = FUSED(a, p0, p1, acc)
        da = dy * b * dfa
    elif DF_OF_Y:
        fa = F(a, p0, p1, acc)
        da = dy * b * DF(fa, p0, p1, acc)
    else:
        da = dy * b * DF(a, p0, p1, acc)
        fa = F(a, p0, p1, acc)
    if ZERO is not None:
        da = tl.where(ZERO(a, p0, p1), 0.0, da)
    db = dy * fa
    tl.store(da_ptr + (r * da_row + c), da.to(da_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + (r * db_row + c), db.to(db_ptr.dtype.element_ty), mask=mask)


# -- launchers ------------------------------------------------------------------------------------
def tile(cols: int) -> tuple[int, int]:
    """(ROWS, COLS) of a program's tile for rows of ``cols`` elements: COLS the power of two that
    covers a row (at most BLOCK), ROWS = BLOCK // COLS."""
    width = min(BLOCK, triton.next_power_of_2(max(cols, 1)))
    return BLOCK // width, width


def _launch(fn, fns: dict, rows: int, cols: int, *args) -> None:
    n_rows, width = tile(cols)
    grid = (triton.cdiv(rows, n_rows) * triton.cdiv(cols, width),)
    kernel(fn, **fns, ROWS=n_rows, COLS=width, num_warps=GLU_WARPS)(grid, *args)


def row_stride(t: torch.Tensor, cols: int) -> int | None:
    """The row stride of ``t`` read as rows of ``cols`` contiguous elements, or None if it cannot be."""
    if t.is_contiguous():
        return cols
    try:
        rows = t.view(-1, cols)
    except RuntimeError:  # the leading dims do not collapse into one stride
        return None
    if cols > 1 and rows.stride(1) != 1:
        return None
    return rows.stride(0)


def _as_rows(t: torch.Tensor, cols: int) -> tuple[torch.Tensor, int]:
    """``t`` as rows of ``cols`` elements and its row stride, copied where it has none."""
    stride = row_stride(t, cols)
    return (t, stride) if stride is not None else (t.contiguous(), cols)


def _operands(x: torch.Tensor, y: torch.Tensor | None, dim: int):
    """(a, b, rows, cols, a_row, b_row): the gate a and the other half b as ``rows`` rows of ``cols``
    elements at their row strides. One tensor: the halves of x (made contiguous) along ``dim``;
    two contiguous tensors: one flat row; other pairs: rows of the last dim."""
    if y is None:
        if not x.is_contiguous():
            x = x.contiguous()
        dim %= x.dim()
        half = x.shape[dim] // 2
        cols = half
        for size in x.shape[dim + 1:]:
            cols *= size
        rows = x.numel() // (2 * cols) if cols else 0
        return x, x.narrow(dim, half, half), rows, cols, 2 * cols, 2 * cols
    n = x.numel()
    if x.is_contiguous() and y.is_contiguous():
        return x, y, 1, n, n, n
    cols = x.shape[-1]
    (a, a_row), (b, b_row) = _as_rows(x, cols), _as_rows(y, cols)
    return a, b, n // cols, cols, a_row, b_row


def _half_shape(x: torch.Tensor, y: torch.Tensor | None, dim: int) -> list[int]:
    shape = list(x.shape)
    if y is None:
        shape[dim] //= 2
    return shape


def forward(x: torch.Tensor, y: torch.Tensor | None, dim: int, fn, p0: float = 0.0, p1: float = 0.0) -> torch.Tensor:
    """fn(a) * b with the Triton forward kernel; a, b are the halves of x along ``dim`` (a first)
    when ``y`` is None, else x and y (same shape and dtype). The result is contiguous."""
    check_dtype(x, "x", "GLU")
    out = torch.empty(_half_shape(x, y, dim), dtype=x.dtype, device=x.device)
    if out.numel():
        a, b, rows, cols, a_row, b_row = _operands(x, y, dim)
        _launch(glu_fwd_kernel, {"F": form_for(fn, x.dtype == torch.float16)}, rows, cols,
                a, b, out, rows, cols, a_row, b_row, cols, float(p0), float(p1))
    return out


def backward(x: torch.Tensor, y: torch.Tensor | None, grad: torch.Tensor, dim: int, fn, dfn,
             p0: float = 0.0, p1: float = 0.0, dfn_of_y: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, None) for one tensor (dx holds da and db in x's halves), (da, db) for two; one pass of
    the Triton backward kernel. ``dfn`` is f' of a, or with ``dfn_of_y`` f' of f(a) (``<name>_bwd_y``).
    Gradients are contiguous."""
    check_dtype(x, "x", "GLU")
    if y is None:
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        half = x.shape[dim] // 2
        da, db = dx, dx.narrow(dim, half, half)
    else:
        da, db = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(2))
    if da.numel():
        a, b, rows, cols, a_row, b_row = _operands(x, y, dim)
        d_row = a_row if y is None else cols  # dx is laid out as the contiguous x; da, db are contiguous
        if grad.dtype != x.dtype:
            grad = grad.to(x.dtype)
        grad, g_row = _as_rows(grad, cols)
        _launch(glu_bwd_kernel, {"F": form_for(fn, x.dtype == torch.float16), "DF": dfn, "DF_OF_Y": dfn_of_y,
                                 "ZERO": zero_where(dfn), "FUSED": None if dfn_of_y else fused_with(dfn)}, rows, cols,
                a, b, grad, da, db,
                rows, cols, a_row, b_row, g_row, d_row, d_row, float(p0), float(p1))
    return (da, None) if y is None else (da, db)
