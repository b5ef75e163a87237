"""Few-bit backward kernels: y = F(x) plus a packed k-bit code per element; dx = dy * level[code].

Two activation-specific rules keep torch's NaN/inf behaviour where the quantised f' is exact: a level
stored as -0.0 marks an interval where torch's backward selects 0 (ReLU's x <= 0), and dx is 0 there
whatever dy is (``SELECTS``); ``NAN_CODE`` sends x = NaN to the interval torch's f'(NaN) belongs to
where that is not the top one (Leaky ReLU's NaN takes the negative slope).

A program owns ``W`` words of ``PER_WORD = 32 // K`` codes, i.e. ``W * PER_WORD`` consecutive
elements. Forward reads them twice (the second read hits the cache): as ``PER_WORD`` contiguous
chunks of ``W`` elements for y = F(x) (full-width vector loads and stores), and once per code
position c as the strided tile ``word * PER_WORD + c``, whose codes are shifted into place in
their own thread's word, so packing costs one shift-or per element and no cross-thread sum.
Backward reads dy and writes dx in that strided tile, beside its words.

The code of x is the number of breakpoints below it (``torch.bucketize``; NaN takes the top
code). Instead of a binary search (K dependent gathers per element), one gather from a table of
uniform cells (:func:`code_table`): x's cell is ``round((max(x, lo) - lo) * s)`` for a power of
two s, which is exact in fp32 (the product is exact, the rounding is the one addition of
1.5 * 2^23), clamped to the last cell, which also takes NaN; the cell's entry holds T + 1 and the
breakpoints around T (the code of the cell's middle, give or take one), and two comparisons
correct T to the exact code: ``code = T + 1 - (x <= b[T]) - (x <= b[T - 1])``. s is the
coarsest for which no cell spans more than two breakpoints; breakpoints too close together for
a table of ``MAX_CELLS`` fall back to the binary search.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .launch import kernel
from .layout import BLOCK, FEWBIT_WORDS, NUM_WARPS, check_dtype, in_layout

MAX_CELLS = 1 << 13  # 128 KiB of 16-byte entries at most
MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer in the low bits
MAGIC_BITS = tl.constexpr(0x4B400000)
NEG_ZERO_BITS = tl.constexpr(-0x80000000)  # -0.0 as int32: a level that selects 0 (see backward)


@triton.jit
def _table_code(x, table_ptr, lo, scale, n_cells):
    # The cell: round((x - lo) * scale) from the bits of x * scale + (MAGIC - lo * scale), x * scale
    # exact (a power of two); NaN stays NaN through the max and lands, as anything above the table,
    # in the last cell (an unsigned clamp also sends a NaN's bits there).
    t = tl.maximum(x, lo, propagate_nan=tl.PropagateNan.ALL) * scale + (MAGIC - lo * scale)
    cell = tl.minimum((t.to(tl.int32, bitcast=True) - MAGIC_BITS).to(tl.uint32), n_cells.to(tl.uint32))
    entry = table_ptr + cell.to(tl.int32) * 4  # three gathers at one address: no 2-D tile to convert
    below = tl.load(entry).to(tl.float32, bitcast=True)  # b[T - 1]; NaN for T = 0 (never >= x)
    above = tl.load(entry + 1).to(tl.float32, bitcast=True)  # b[T]; +inf for the top code
    t_plus_1 = tl.load(entry + 2)
    return t_plus_1 - (x <= above).to(tl.int32) - (x <= below).to(tl.int32)


@triton.jit
def _search_code(x, breakpoint_ptr, K: tl.constexpr):
    code = tl.zeros(x.shape, dtype=tl.int32)
    for level in tl.static_range(K):  # binary search: steps of 2^(K-1), 2^(K-2), ..., 1
        b = tl.load(breakpoint_ptr + code + ((1 << (K - 1 - level)) - 1))
        code = tl.where(x <= b, code, code + (1 << (K - 1 - level)))
    return code


@triton.jit
def _code(x, breakpoint_ptr, table_ptr, lo, scale, n_cells, K: tl.constexpr, TABLE: tl.constexpr,
          NAN_CODE: tl.constexpr):
    if TABLE:
        code = _table_code(x, table_ptr, lo, scale, n_cells)
    else:
        code = _search_code(x, breakpoint_ptr, K)
    if NAN_CODE is not None:  # NaN's interval where torch's f'(NaN) is not the top code's level
        code = tl.where(x != x, NAN_CODE, code)
    return code


@triton.jit
def _span(n_elements, per_word: tl.constexpr, W: tl.constexpr):
    """This program's first word and first element, and how many of its W * per_word elements exist.
    int64 only per program (the starts): offsets and masks within it are int32."""
    word0 = tl.program_id(0).to(tl.int64) * W
    base = word0 * per_word
    return word0, base, tl.minimum(n_elements - base, W * per_word).to(tl.int32)


@triton.jit
def fewbit_fwd_kernel(x_ptr, y_ptr, code_ptr, breakpoint_ptr, table_ptr, n_elements, n_words, p0, p1,
                      lo, scale, n_cells, F: tl.constexpr, K: tl.constexpr, W: tl.constexpr,
                      TABLE: tl.constexpr, NAN_CODE: tl.constexpr, ROWS: tl.constexpr):
    per_word: tl.constexpr = 32 // K
    word0, base, left = _span(n_elements, per_word, W)
    x_ptr += base
    y_ptr += base
    code_ptr += word0
    words_left = tl.minimum(n_words - word0, W).to(tl.int32)
    lanes = tl.arange(0, W)
    if ROWS:  # 32 // K a power of two: a [W, 32 // K] tile is contiguous, one row per word
        column = tl.arange(0, per_word)
        offsets = lanes[:, None] * per_word + column[None, :]
        mask = offsets < left
        x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
        tl.store(y_ptr + offsets, F(x, p0, p1, y_ptr.dtype.element_ty == tl.float32).to(y_ptr.dtype.element_ty), mask=mask)
        code = _code(x, breakpoint_ptr, table_ptr, lo, scale, n_cells, K, TABLE, NAN_CODE)
        packed = tl.sum(tl.where(mask, code << (column[None, :] * K), 0), axis=1)
    else:  # per_word chunks of W contiguous elements for y; each word's code position c strided
        for c in tl.static_range(per_word):
            offsets = c * W + lanes
            mask = offsets < left
            x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
            tl.store(y_ptr + offsets, F(x, p0, p1, y_ptr.dtype.element_ty == tl.float32).to(y_ptr.dtype.element_ty), mask=mask)
        packed = tl.zeros([W], dtype=tl.int32)
        for c in tl.static_range(per_word):  # the second read of x hits the cache
            offsets = lanes * per_word + c
            mask = offsets < left
            x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
            code = _code(x, breakpoint_ptr, table_ptr, lo, scale, n_cells, K, TABLE, NAN_CODE)
            packed = packed | tl.where(mask, code << (c * K), 0)  # the last word's unused bits stay 0
    tl.store(code_ptr + lanes, packed, mask=lanes < words_left)


@triton.jit
def _times_level(dy, level, SELECTS: tl.constexpr):
    """dy * level, and 0 where the level is -0.0: an interval where torch's backward selects 0, so that
    dy = NaN or inf gives 0 there as in torch (``dy * 0`` would be NaN)."""
    dx = dy * level
    if SELECTS:
        dx = tl.where(level.to(tl.int32, bitcast=True) == NEG_ZERO_BITS, 0.0, dx)
    return dx


@triton.jit
def fewbit_bwd_kernel(code_ptr, level_ptr, dy_ptr, dx_ptr, n_elements, n_words,
                      K: tl.constexpr, W: tl.constexpr, SELECTS: tl.constexpr, ROWS: tl.constexpr):
    per_word: tl.constexpr = 32 // K
    word0, base, left = _span(n_elements, per_word, W)
    dy_ptr += base
    dx_ptr += base
    code_ptr += word0
    lanes = tl.arange(0, W)
    if ROWS:  # contiguous: element i's word is i // per_word, a shift
        offsets = tl.arange(0, W * per_word)
        mask = offsets < left
        words = tl.load(code_ptr + offsets // per_word, mask=mask, other=0)
        code = (words >> ((offsets % per_word) * K)) & ((1 << K) - 1)
        dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
        tl.store(dx_ptr + offsets, _times_level(dy, tl.load(level_ptr + code), SELECTS).to(dx_ptr.dtype.element_ty),
                 mask=mask)
    else:  # position c of each word, strided, beside the word in the same thread
        words = tl.load(code_ptr + lanes, mask=lanes < tl.minimum(n_words - word0, W).to(tl.int32), other=0)
        for c in tl.static_range(per_word):
            offsets = lanes * per_word + c
            mask = offsets < left
            dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
            level = tl.load(level_ptr + ((words >> (c * K)) & ((1 << K) - 1)))
            tl.store(dx_ptr + offsets, _times_level(dy, level, SELECTS).to(dx_ptr.dtype.element_ty), mask=mask)


def _words(bits: int) -> tuple[int, bool]:
    """(words per program, ROWS): about 2048 elements in rows when 32 // bits is a power of two;
    otherwise FEWBIT_WORDS words, their positions strided."""
    per_word = 32 // bits
    if per_word & (per_word - 1) == 0:
        return BLOCK // per_word, True
    return FEWBIT_WORDS, False


def code_table(breakpoints: np.ndarray) -> tuple[np.ndarray, float, float, int] | None:
    """(entries, lo, scale, last cell) of the cell table for sorted fp32 ``breakpoints``, or None
    when no table of at most MAX_CELLS cells separates them.

    Cell i holds the x whose ``round((max(x, lo) - lo) * scale)`` is i, i.e. [lo + (i - 1/2) / s,
    lo + (i + 1/2) / s] (ends included: ties may round either way), the first cell everything
    below and the last everything above and NaN. Its entry is (b[T - 1], b[T], T + 1, 0) as int32
    (the breakpoints' fp32 bits), for a T within one of every code in the cell; the last cell's T is M - 1 so that NaN,
    which fails both comparisons, gets T + 1 = M, the top code.
    """
    b = np.asarray(breakpoints, dtype=np.float32).astype(np.float64)
    m = len(b)
    padded = np.concatenate([[np.nan], b, [np.inf]]).astype(np.float32)  # padded[j] = b[j - 1]
    for log2_scale in range(-4, 24):
        scale = 2.0 ** log2_scale
        first = np.floor(b[0] * scale) - 1  # lo * scale: an integer, so lo * scale is exact in fp32
        last = int(np.ceil(b[-1] * scale - first)) + 2  # the last cell starts above every breakpoint
        if last + 1 > MAX_CELLS:
            return None
        if abs(first) >= 2 ** 22:
            continue
        i = np.arange(last + 1, dtype=np.float64)
        left = np.where(i == 0, -np.inf, (first + i - 0.5) / scale)
        right = np.where(i == last, np.inf, (first + i + 0.5) / scale)
        lowest = np.searchsorted(b, left, side="left")  # codes of the cell: #{b < left}..#{b < right}
        highest = np.searchsorted(b, right, side="left")
        if np.any(highest - lowest > 2):
            continue
        t = np.minimum(lowest + 1, m)
        t[-1] = m - 1
        entries = np.zeros((last + 1, 4), dtype=np.int32)
        entries[:, 0], entries[:, 1] = padded[t].view(np.int32), padded[t + 1].view(np.int32)
        entries[:, 2] = t + 1
        return entries, first / scale, scale, last
    return None


_TABLES: dict[int, tuple] = {}  # id(breakpoints) -> (breakpoints, table or None, lo, scale, last cell)


def _table_for(breakpoints: torch.Tensor) -> tuple:
    found = _TABLES.get(id(breakpoints))
    if found is None or found[0] is not breakpoints:
        made = code_table(breakpoints.cpu().numpy())
        if made is None:
            found = (breakpoints, None, 0.0, 1.0, 0)
        else:
            entries, lo, scale, last = made
            found = (breakpoints, torch.from_numpy(entries).to(breakpoints.device), lo, scale, last)
        _TABLES[id(breakpoints)] = found  # keeps the breakpoints alive, so the id stays theirs
    return found


def forward(x: torch.Tensor, fn, p0: float, p1: float, breakpoints: torch.Tensor, bits: int,
            nan_code: int | None = None):
    """(y, codes): y = fn(x) laid out like x, codes packed ``32 // bits`` per int32 in y's memory order;
    NaN takes ``nan_code`` (None: the top code)."""
    check_dtype(x, "x", "few-bit activation")
    y = torch.empty_like(x)
    n = x.numel()
    per_word = 32 // bits
    n_words = -(-n // per_word)
    codes = torch.empty(n_words, dtype=torch.int32, device=x.device)
    if n:
        # A binary search of one or two steps is cheaper than the table's three gathers.
        _, table, lo, scale, last = _table_for(breakpoints) if bits > 2 else (None, None, 0.0, 1.0, 0)
        words, rows = _words(bits)
        kernel(fewbit_fwd_kernel, F=fn, K=bits, W=words, TABLE=table is not None, NAN_CODE=nan_code, ROWS=rows,
               num_warps=NUM_WARPS)(
            (triton.cdiv(n_words, words),), in_layout(x, y), y, codes, breakpoints,
            breakpoints if table is None else table, n, n_words, float(p0), float(p1), float(lo), float(scale),
            int(last))
    return y, codes


def backward(codes: torch.Tensor, levels: torch.Tensor, grad: torch.Tensor, stride, bits: int,
             selects: bool = False):
    """dx = grad * levels[code], with ``stride`` (the forward output's, which the codes follow); with
    ``selects``, 0 where the level is -0.0 (torch selects 0 there, whatever grad is)."""
    check_dtype(grad, "the gradient", "few-bit activation")
    dx = torch.empty_strided(grad.shape, stride, dtype=grad.dtype, device=grad.device)
    n = dx.numel()
    if n:
        n_words = codes.numel()
        words, rows = _words(bits)
        kernel(fewbit_bwd_kernel, K=bits, W=words, SELECTS=bool(selects), ROWS=rows, num_warps=NUM_WARPS)(
            (triton.cdiv(n_words, words),), codes, levels, in_layout(grad, dx), dx, n, n_words)
    return dx
