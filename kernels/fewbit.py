"""Few-bit backward kernels: y = F(x) plus a packed k-bit code per element; dx = dy * level[code].

Two activation-specific rules keep torch's NaN/inf behaviour where the quantised f' is exact: a level
stored as -0.0 marks an interval where torch's backward selects 0 (ReLU's x <= 0), and dx is 0 there
whatever dy is (``SELECTS``); ``NAN_CODE`` sends x = NaN to the interval torch's f'(NaN) belongs to
where that is not the top one (Leaky ReLU's NaN takes the negative slope).

A program owns ``W`` words of ``PER_WORD = 32 // K`` codes, i.e. ``W * PER_WORD`` consecutive
elements, and the forward reads x once: y = F(x) and the codes come from the same registers.
Every thread of the forward packs whole words of its own consecutive elements and stores them from
its registers (no exchange between threads; Triton is steered off its re-layouts through shared
memory by the tiles' shapes: ``[T, threads, V]`` tiles, a strided word order where no store vectors).
Where PER_WORD is a power of two (1, 2, 4, 7, 8 bits) a thread owns T = ``FEWBIT_THREAD_VECTORS``
128-bit vectors (8 of V = 8 elements of 16-bit x, 4 of V = 4 of fp32), or one word if longer (1 bit
of fp32): codes are shifted into place by constants and summed (disjoint bits) per word.
Otherwise (3, 5, 6 bits) each thread owns V consecutive words and reads their V * PER_WORD
elements as PER_WORD vectors; element j of its run is position ``j % PER_WORD`` of its word
``j // PER_WORD``, both known when compiling, so the selects that move each code into its word
fold away. Backward reads dy and writes dx in rows, or for 3, 5, 6 bits in the strided tile
``word * PER_WORD + c``, beside its words. Past the end x is not read (no fill instructions): the
last word's unused bits are unspecified. Codes of 1 and 2 bits lie in a word as
:func:`actkit.kinds.fewbit.code_shifts` says: its even elements in the low half, its odd ones in
the high half.

The code of x is the number of breakpoints below it (``torch.bucketize``; NaN takes the top
code, or ``NAN_CODE``), found one of four ways (``HOW``):

* 16-bit x, 3 bits and more (and 2 bits of bf16 before sm_90): one byte gather from a table of the
  code of every 16-bit value, indexed by x's bits (:func:`code_lut`; NaN's code included), 64 KiB
  per quantiser and dtype. For bf16 the index is the top half of the fp32 x that F converts anyway,
  so the address is one shift-add (and its carry); for fp16 a pair's register is split by a mask and
  a shift (PTX), which ptxas folds into the high one's address as well. Its hot part: 99% of
  x ~ N(0, 1) reads 18 of the table's 128-byte lines for bf16 (2.3 KiB; a warp's 32 gathers touch
  about 11 lines), 172 for fp16 (22 KiB; about 26 lines a warp), against 1 to 14 lines a warp for
  the fp32 cell tables of 3 to 8 bits. No GPU measured what the L1 makes of that; the static
  roofline counts a gather as one instruction, and the table's 64 KiB as traffic of its
  2^16-element probe (1 byte per element, nothing in a launch of millions of elements).
* fp32 x, 3 bits and more: one 64-bit gather from a table of uniform cells (:func:`code_table`):
  x's cell is ``round((max(x, lo) - lo) * s)`` for a power of two s, which is exact in fp32 (the
  product is exact, the rounding is the one addition of 1.5 * 2^23), clamped to the last cell,
  which also takes NaN; the cell's entry holds T, the number of breakpoints below the cell, and
  b[T], and ``code = T + (x > b[T])``. s is the coarsest for which no cell holds two breakpoints;
  breakpoints too close together for a table of ``MAX_CELLS`` fall back to a binary search (K
  dependent gathers).
* 1 and 2 bits: comparisons with every breakpoint (at most 3), read once per program. 16-bit x
  compares a register pair of neighbours at once (``HSET2``; bf16 from sm_90, before it one element
  at a time, and its 2 bits by the gather above) with the breakpoint rounded down to x's dtype,
  which sets both their codes' bits in the word's two halves, placed by one LOP3 each: 1
  instruction per element for 1 bit, 3 for 2 (the byte gather, its address and the shift into
  place took 4). fp32 x: the comparisons' predicates combined as they are set (:func:`compare_asm`).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime import driver

from . import fp32math as fm
from .activations import form_for
from .launch import kernel
from .layout import BLOCK, FEWBIT_FORWARD_WARPS, FEWBIT_THREAD_VECTORS, FEWBIT_WORDS, NUM_WARPS, check_dtype, in_layout

MAX_CELLS = 1 << 13  # 64 KiB of 8-byte entries at most
# How a kernel finds the codes (HOW): by the bits of 16-bit x, a cell table, comparisons with every
# breakpoint, a binary search.
LUT, CELLS, COUNT, SEARCH = (tl.constexpr(i) for i in range(4))
# How the forward of power-of-two codes per word (ROWS) combines them (BY): each element's code (HOW)
# shifted into place; 1 or 2 bits of fp32 x by comparisons (:func:`compare_asm`); of 16-bit x by
# comparisons of register pairs.
CODES, SINGLES, PAIRS = (tl.constexpr(i) for i in range(3))
LOW_WORD_CLEAR = tl.constexpr(-(1 << 32))  # an int64 with its low 32 bits clear
LUT_ALIGN = 1 << 16  # the 16-bit code tables' alignment: a table never crosses a 4 GiB boundary
MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer in the low bits
MAGIC_BITS = tl.constexpr(0x4B400000)
NEG_ZERO_BITS = tl.constexpr(-0x80000000)  # -0.0 as int32: a level that selects 0 (see backward)


@triton.jit
def _lut_code(x, lut_ptr):
    """The code of 16-bit x read from its 65536-entry table by x's bits (NaN's code included)."""
    if x.dtype == tl.bfloat16:  # the top half of the fp32 x that F converts anyway: one shift-add address
        i = fm.to_fp32(x).to(tl.uint32, bitcast=True) >> 16
    elif fm.INTERPRET:
        i = x.to(tl.uint16, bitcast=True).to(tl.uint32)
    else:  # a pair's register split by a mask and a shift, which ptxas folds into the high one's address
        i = tl.inline_asm_elementwise("{ and.b32 $0, $2, 0xffff; shr.u32 $1, $2, 16; }", "=r,=r,r", [x],
                                      dtype=tl.uint32, is_pure=True, pack=2)
    # The table starts on a 64 KiB boundary (:func:`_aligned_lut`), so that its low address word plus
    # i never carries: the address is the table's high word and one 32-bit add, not a 64-bit add
    # (its carry one instruction more per element).
    base = lut_ptr.to(tl.int64)
    low = base.to(tl.uint32) + i
    return tl.load(((base & LOW_WORD_CLEAR) | low.to(tl.int64)).to(tl.pointer_type(tl.uint8))).to(tl.int32)


@triton.jit
def _table_code(x, table_ptr, lo, scale, last):
    # The cell: round((x - lo) * scale) from the bits of x * scale + (MAGIC - lo * scale), x * scale
    # exact (a power of two); NaN stays NaN through the max, and an unsigned clamp sends its bits, as
    # anything above the table, to the last cell. The clamp keeps MAGIC's bits (the table's pointer
    # was moved down by them), so the address is one multiply-add of the clamped bits.
    t = tl.maximum(x, lo, propagate_nan=tl.PropagateNan.ALL) * scale + (MAGIC - lo * scale)
    cell = tl.minimum(t.to(tl.uint32, bitcast=True), (last + MAGIC_BITS).to(tl.uint32))
    entry = tl.load(table_ptr - MAGIC_BITS + cell.to(tl.int32))  # (T << 32) | bits of b[T]: one 64-bit gather
    return (entry >> 32).to(tl.int32) + (x > entry.to(tl.int32).to(tl.float32, bitcast=True)).to(tl.int32)


@triton.jit
def _count_code(x, breakpoint_ptr, K: tl.constexpr):
    # 2^K - 1 comparisons with breakpoints read once per program; NaN is <= none: the top code.
    code = tl.full(x.shape, (1 << K) - 1, tl.int32)
    for i in tl.static_range((1 << K) - 1):
        code -= (x <= tl.load(breakpoint_ptr + i)).to(tl.int32)
    return code


@triton.jit
def _search_code(x, breakpoint_ptr, K: tl.constexpr):
    code = tl.zeros(x.shape, dtype=tl.int32)
    for level in tl.static_range(K):  # binary search: steps of 2^(K-1), 2^(K-2), ..., 1
        b = tl.load(breakpoint_ptr + code + ((1 << (K - 1 - level)) - 1))
        code = tl.where(x <= b, code, code + (1 << (K - 1 - level)))
    return code


@triton.jit
def _slot_shift(pos, per_word: tl.constexpr, K: tl.constexpr):
    """The shift of the code of element ``pos`` of its word (actkit.kinds.fewbit.code_shifts): codes
    of 1 and 2 bits keep the word's even elements in its low half, the odd ones in its high half."""
    if K <= 2:
        return (pos % 2 * (per_word // 2) + pos // 2) * K
    else:
        return pos * K


@triton.jit
def _pairs_above(x, b, NAN_ABOVE: tl.constexpr):
    """16-bit x of shape [T, threads, V] in pairs of neighbours (2j, 2j + 1), which share a register on
    GPUs: at element 2j, 0xFFFF where x[2j] > b or'ed with 0xFFFF0000 where x[2j + 1] > b (NaN > b
    where NAN_ABOVE), at element 2j + 1 zero. One ``HSET2`` per pair. b is x's dtype (16-bit x > b
    exactly where it is above the fp32 breakpoint that b was rounded down from)."""
    if fm.INTERPRET:
        xf = fm.to_fp32(x)
        above = xf > fm.to_fp32(b)
        if NAN_ABOVE:
            above = above | (xf != xf)
        lo, hi = tl.split(tl.reshape(above.to(tl.int32), [x.shape[0], x.shape[1], x.shape[2] // 2, 2]))
        pair = lo * 0xFFFF | hi * -0x10000
        return tl.reshape(tl.join(pair, tl.zeros_like(pair)), x.shape)
    else:
        op: tl.constexpr = "gtu" if NAN_ABOVE else "gt"
        pair: tl.constexpr = "bf16x2" if x.dtype == tl.bfloat16 else "f16x2"
        return tl.inline_asm_elementwise("{ set." + op + ".u32." + pair + " $0, $2, $3; mov.b32 $1, 0; }",
                                         "=r,=r,r,r", [x, tl.broadcast_to(b, x.shape)], dtype=tl.int32,
                                         is_pure=True, pack=2)


@triton.jit
def _or(a, b):
    return a | b


@functools.lru_cache(maxsize=None)
def compare_asm(bits: int, nan_above: int) -> str:
    """PTX for the code of fp32 x (1 or 2 bits) shifted into its word: operands ``$0`` the result,
    ``$1`` x, then the 2^bits - 1 breakpoints, then the code's bit 0 and bit 1 in place. NaN is
    above the first ``nan_above`` breakpoints (``.gtu``), not the others (``.gt``). For 2 bits the
    predicates combine as they are set: bit 1 is x > b1 (sorted breakpoints), bit 0 the parity of
    the three comparisons, each FSETP xor-ing its own into the last; a select and a predicated
    add then build the code: 5 instructions, where each comparison's select and their sum took 8."""
    op = [".gtu" if i < nan_above else ".gt" for i in range(3)]
    if bits == 1:
        return f"{{ .reg .pred p; setp{op[0]}.f32 p, $1, $2; selp.b32 $0, $3, 0, p; }}"
    return (f"{{ .reg .pred p, q; setp{op[1]}.f32 p, $1, $3; setp{op[0]}.xor.f32 q, $1, $2, p; "
            f"setp{op[2]}.xor.f32 q, $1, $4, q; selp.b32 $0, $5, 0, q; @p add.s32 $0, $0, $6; }}")


@triton.jit
def _compared_fp32(x, table_ptr, pos, per_word: tl.constexpr, K: tl.constexpr, NAN_ABOVE: tl.constexpr,
                   COMPARE: tl.constexpr):
    """Each fp32 element's code of 1 or 2 bits, from comparisons with the 2^K - 1 breakpoints at
    ``table_ptr``, shifted into its place in the word (summed per word): ``COMPARE``
    (:func:`compare_asm`) on GPUs."""
    one = 1 << _slot_shift(pos, per_word, K)
    if fm.INTERPRET:
        code = tl.zeros(x.shape, dtype=tl.int32)
        for i in tl.static_range((1 << K) - 1):
            code += ((x > tl.load(table_ptr + i)) | ((i < NAN_ABOVE) & (x != x))).to(tl.int32)
        return code * one
    elif K == 1:
        return tl.inline_asm_elementwise(COMPARE, "=r,r,r,r", [x, tl.broadcast_to(tl.load(table_ptr), x.shape), one],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(
            COMPARE, "=r,r,r,r,r,r,r", [x, tl.broadcast_to(tl.load(table_ptr), x.shape),
                                        tl.broadcast_to(tl.load(table_ptr + 1), x.shape),
                                        tl.broadcast_to(tl.load(table_ptr + 2), x.shape), one, one * 2],
            dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _compared_pairs(x, table_ptr, pos, K: tl.constexpr, NAN_ABOVE: tl.constexpr):
    """16-bit x's codes of 1 or 2 bits from comparisons with the 2^K - 1 breakpoints at ``table_ptr``
    (x's dtype), in pairs: each comparison sets both codes' bits of a pair at once, merged by one
    LOP3 each (bit 0 of a code is the parity of the three comparisons, bit 1 the middle one: the
    breakpoints are sorted). Returns [T, threads, V, 2]: each element's bits in two parts, side by
    side, so that the word's or-fold takes each with its own and (or'ed together first, ptxas
    spends a third LOP3)."""
    low = (1 << (pos // 2 * K)) * 0x10001  # bit 0 of both codes of the pair starting at pos (even)
    m = _pairs_above(x, tl.load(table_ptr), 0 < NAN_ABOVE)
    if K == 1:
        return tl.join(m & low, tl.zeros_like(m))
    else:
        mid = _pairs_above(x, tl.load(table_ptr + 1), 1 < NAN_ABOVE)
        parity = m ^ mid ^ _pairs_above(x, tl.load(table_ptr + 2), 2 < NAN_ABOVE)
        return tl.join(parity & low, mid & (low << 1))


@triton.jit
def _code(x, breakpoint_ptr, table_ptr, lo, scale, last, K: tl.constexpr, HOW: tl.constexpr,
          NAN_CODE: tl.constexpr):
    if HOW == LUT:
        code = _lut_code(x, table_ptr)  # NaN's code is in the table
    else:
        xf = fm.to_fp32(x)
        if HOW == CELLS:
            code = _table_code(xf, table_ptr, lo, scale, last)
        elif HOW == COUNT:
            code = _count_code(xf, breakpoint_ptr, K)
        else:
            code = _search_code(xf, breakpoint_ptr, K)
        if NAN_CODE is not None:  # NaN's interval where torch's f'(NaN) is not the top code's level
            code = tl.where(xf != xf, NAN_CODE, code)
    return code


@triton.jit
def _span(n_elements, per_word: tl.constexpr, W: tl.constexpr):
    """This program's first word and first element, and how many of its W * per_word elements exist.
    The starts take n_elements' type (Triton passes it as int64 from 2^31 on, int32 below, where every
    start fits; a constant 1 as such): adding 0 * n_elements gives it. Offsets and masks within a
    program are int32."""
    word0 = (tl.program_id(0) + 0 * n_elements) * W
    base = word0 * per_word
    return word0, base, tl.minimum(n_elements - base, W * per_word).to(tl.int32)


@triton.jit
def fewbit_fwd_kernel(x_ptr, y_ptr, code_ptr, breakpoint_ptr, table_ptr, n_elements, n_words, p0, p1,
                      lo, scale, last, F: tl.constexpr, K: tl.constexpr, W: tl.constexpr,
                      HOW: tl.constexpr, NAN_CODE: tl.constexpr, BY: tl.constexpr, NAN_ABOVE: tl.constexpr,
                      COMPARE: tl.constexpr, ROWS: tl.constexpr, T: tl.constexpr):
    per_word: tl.constexpr = 32 // K
    word0, base, left = _span(n_elements, per_word, W)
    x_ptr += base
    y_ptr += base
    code_ptr += word0
    words_left = tl.minimum(n_words - word0, W).to(tl.int32)
    acc: tl.constexpr = y_ptr.dtype.element_ty == tl.float32
    # Elements past the end are not read (no fill): their codes, the last word's unused bits, are
    # whatever the registers held, which no reader looks at.
    if ROWS:  # 32 // K a power of two: each thread owns E consecutive elements, T vectors of V
        V: tl.constexpr = 128 // x_ptr.dtype.element_ty.primitive_bitwidth
        E: tl.constexpr = T * V
        threads: tl.constexpr = W * per_word // E
        # [T, threads, V]: Triton lays the threads along the middle dimension, T vectors each
        inner = tl.arange(0, T)[:, None, None] * V + tl.arange(0, V)[None, None, :]  # the thread's element
        start = tl.arange(0, threads)[None, :, None] * E  # the thread's first element
        offsets = start + inner
        # inner < left - start rather than offsets < left: one compare of a constant per vector, where
        # the offset's own add came first (0.1 instructions per element fewer at 8 vectors)
        mask = inner < left - start
        x = tl.load(x_ptr + offsets, mask=mask)
        pos = inner % per_word  # the element's place in its word (a thread's words are whole)
        # Codes shifted by constants to their places, combined per word in the thread, which then
        # holds whole words: stored as they lie, no exchange between threads, in G vectors of Q words
        # laid out as x's ([G, threads, Q]). Found before F: ptxas then recomputes less of F to spare
        # registers (measured on sm_90).
        if BY == PAIRS:
            bits = _compared_pairs(x, table_ptr, pos, K, NAN_ABOVE)
        elif BY == SINGLES:
            bits = _compared_fp32(x, table_ptr, pos, per_word, K, NAN_ABOVE, COMPARE)
        else:
            code = _code(x, breakpoint_ptr, table_ptr, lo, scale, last, K, HOW, NAN_CODE)
            bits = code << _slot_shift(pos, per_word, K)
        tl.store(y_ptr + offsets, F(fm.to_fp32(x), p0, p1, acc).to(y_ptr.dtype.element_ty), mask=mask)
        if BY == PAIRS:  # [T, threads, V, 2]; or'ed: and-or, one LOP3 per comparison
            words_of = tl.reduce(tl.reshape(tl.permute(bits, (1, 0, 2, 3)), [threads, E // per_word, 2 * per_word]),
                                 2, _or)
        else:  # disjoint bits: sums are ors
            words_of = tl.sum(tl.reshape(tl.permute(bits, (1, 0, 2)), [threads, E // per_word, per_word]), axis=2)
        # (not min(): Triton 3.3 takes it for tl.minimum, which needs tensors)
        Q: tl.constexpr = E // per_word if E // per_word < 4 else 4
        G: tl.constexpr = E // per_word // Q
        packed = tl.permute(tl.reshape(words_of, [threads, G, Q]), (1, 0, 2))
        words = (tl.arange(0, threads)[None, :, None] * (E // per_word) + tl.arange(0, G)[:, None, None] * Q
                 + tl.arange(0, Q)[None, None, :])
        tl.store(code_ptr + words, packed, mask=words < words_left)
    else:  # each thread owns V consecutive words (V elements of 128 bits), per_word vectors of them
        V: tl.constexpr = 128 // x_ptr.dtype.element_ty.primitive_bitwidth
        thread = tl.arange(0, W // V)[:, None]
        v = tl.arange(0, V)[None, :]
        word = (v * 3) % V  # the word each column of packed holds
        packed = tl.zeros([W // V, V], dtype=tl.int32)
        for c in tl.static_range(per_word):
            offsets = thread * (V * per_word) + c * V + v
            mask = offsets < left
            x = tl.load(x_ptr + offsets, mask=mask)
            tl.store(y_ptr + offsets, F(fm.to_fp32(x), p0, p1, acc).to(y_ptr.dtype.element_ty), mask=mask)
            code = _code(x, breakpoint_ptr, table_ptr, lo, scale, last, K, HOW, NAN_CODE)
            for i in tl.static_range(V):  # element j of the thread's run: position j % per_word of word j // per_word
                column = tl.sum(tl.where(v == i, code, 0), axis=1)[:, None]
                packed += tl.where(word == (c * V + i) // per_word, column << ((c * V + i) % per_word * K), 0)
        # Stored from the registers they are in, a thread's words strided by 3 and transposed: with no
        # contiguity to exploit (the mask's would not allow vectors anyway) Triton keeps the layout.
        words = tl.trans(thread * V + word)
        tl.store(code_ptr + words, tl.trans(packed), mask=words < words_left)


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
        code = (words >> _slot_shift(offsets % per_word, per_word, K)) & ((1 << K) - 1)
        dy = fm.to_fp32(tl.load(dy_ptr + offsets, mask=mask))
        tl.store(dx_ptr + offsets, _times_level(dy, tl.load(level_ptr + code), SELECTS).to(dx_ptr.dtype.element_ty),
                 mask=mask)
    else:  # position c of each word, strided, beside the word in the same thread
        words = tl.load(code_ptr + lanes, mask=lanes < tl.minimum(n_words - word0, W).to(tl.int32), other=0)
        rest = left - lanes * per_word  # elements of each word that exist: compared with c, one per element
        for c in tl.static_range(per_word):
            offsets = lanes * per_word + c
            dy = tl.load(dy_ptr + offsets, mask=c < rest).to(tl.float32)  # scalar loads: no pairs to widen
            level = tl.load(level_ptr + ((words >> (c * K)) & ((1 << K) - 1)))
            tl.store(dx_ptr + offsets, _times_level(dy, level, SELECTS).to(dx_ptr.dtype.element_ty), mask=c < rest)


def _words(bits: int) -> tuple[int, bool]:
    """(words per program, ROWS) of the backward: about 2048 elements in rows when 32 // bits is a power
    of two; otherwise FEWBIT_WORDS words, their positions strided."""
    per_word = 32 // bits
    if per_word & (per_word - 1) == 0:
        return BLOCK // per_word, True
    return FEWBIT_WORDS, False


def _forward_launch(bits: int, element_size: int) -> tuple[int, bool, int, int]:
    """(words per program, ROWS, warps, T) of the forward. Rows: each thread T =
    FEWBIT_THREAD_VECTORS[element size] 128-bit vectors, or one word where that is longer (1 bit,
    fp32), and a program the backward's words or as many more as keep FEWBIT_FORWARD_WARPS warps.
    Otherwise one 128-bit vector's elements' worth of words to each of FEWBIT_FORWARD_WARPS warps'
    threads."""
    words, rows = _words(bits)
    per_word = 32 // bits
    if rows:
        vectors = max(FEWBIT_THREAD_VECTORS[element_size], per_word * element_size // 16)
        per_warp = 32 * vectors * 16 // element_size // per_word  # the words a warp's threads pack
        words = max(words, FEWBIT_FORWARD_WARPS * per_warp)
        return words, rows, words // per_warp, vectors
    return FEWBIT_FORWARD_WARPS * 32 * 16 // element_size, False, FEWBIT_FORWARD_WARPS, 1


def code_table(breakpoints: np.ndarray) -> tuple[np.ndarray, float, float, int] | None:
    """(entries, lo, scale, last cell) of the cell table for sorted fp32 ``breakpoints``, or None
    when no table of at most MAX_CELLS cells separates them.

    Cell i holds the x whose ``round((max(x, lo) - lo) * scale)`` is i, i.e. [lo + (i - 1/2) / s,
    lo + (i + 1/2) / s] (ends included: ties may round either way), the first cell everything
    below and the last everything above and NaN. With T the number of breakpoints below the cell
    and at most one breakpoint from its left end up to (not including) its right end, every x in it
    has code ``T + (x > b[T])``; the entry is ``(T << 32) | bits of b[T]`` (b[M] = +inf). The last
    cell lies above every breakpoint: T = M, the top code, also for NaN (which is > nothing).
    """
    b = np.asarray(breakpoints, dtype=np.float32).astype(np.float64)
    padded = np.concatenate([b, [np.inf]]).astype(np.float32)  # padded[T] = b[T]
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
        t = np.searchsorted(b, left, side="left")  # codes of the cell: #{b < left}..#{b < right}
        if np.any(np.searchsorted(b, right, side="left") - t > 1):
            continue
        entries = (t.astype(np.int64) << 32) | padded[t].view(np.uint32).astype(np.int64)
        return entries, first / scale, scale, last
    return None


def code_lut(breakpoints: np.ndarray, dtype: torch.dtype, nan_code: int | None) -> np.ndarray:
    """The code of every 16-bit ``dtype`` value, indexed by its bits: ``#{b < x}``, NaN ``nan_code``
    (None: the top code)."""
    x = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype).float().numpy()
    codes = np.searchsorted(np.asarray(breakpoints, dtype=np.float32), x, side="left")
    codes[np.isnan(x)] = len(breakpoints) if nan_code is None else nan_code
    return codes.astype(np.uint8)


def _rounded_down(breakpoints: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Each fp32 breakpoint as the largest ``dtype`` value at or below it (-inf below them all):
    16-bit x is above the one exactly where it is above the other."""
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype)
    every = every[~every.isnan()]
    ordered = every.float().sort().values.numpy()
    at = np.searchsorted(ordered, np.asarray(breakpoints, dtype=np.float32), side="right") - 1
    return torch.from_numpy(ordered[np.maximum(at, 0)]).to(dtype)


def _aligned_lut(codes: np.ndarray, device: torch.device) -> torch.Tensor:
    """The 65536 codes in device memory starting on a LUT_ALIGN boundary (the kernel's address
    arithmetic relies on it): a view of a buffer one alignment longer."""
    buffer = torch.empty(len(codes) + LUT_ALIGN, dtype=torch.uint8, device=device)
    start = -buffer.data_ptr() % LUT_ALIGN
    lut = buffer[start:start + len(codes)]
    lut.copy_(torch.from_numpy(codes))
    return lut


# (id(breakpoints), dtype, nan_code, paired) -> (breakpoints, HOW, table, lo, scale, last cell)
_TABLES: dict[tuple, tuple] = {}


def _plan(breakpoints: torch.Tensor, dtype: torch.dtype, bits: int, nan_code: int | None, paired: bool) -> tuple:
    """How the forward finds the codes of ``dtype`` x, and its table: comparisons with all (at most 3)
    breakpoints for 1 bit, and for 2 bits of fp32 x or of 16-bit x compared in pairs (``paired``);
    otherwise 16-bit x by its bits (2 bits of bf16 before sm_90: three compares an element cost more
    than the gather), fp32 x by the cell table where one fits."""
    key = (id(breakpoints), dtype, nan_code, paired)
    found = _TABLES.get(key)
    if found is None or found[0] is not breakpoints:
        b = breakpoints.cpu().numpy()
        if bits == 1 or (bits == 2 and paired):
            table = breakpoints if dtype == torch.float32 else _rounded_down(b, dtype).to(breakpoints.device)
            found = (breakpoints, COUNT, table, 0.0, 1.0, 0)
        elif dtype != torch.float32:
            lut = _aligned_lut(code_lut(b, dtype, nan_code), breakpoints.device)
            found = (breakpoints, LUT, lut, 0.0, 1.0, 0)
        else:
            made = code_table(b)
            if made is None:
                found = (breakpoints, SEARCH, breakpoints, 0.0, 1.0, 0)
            else:
                entries, lo, scale, last = made
                found = (breakpoints, CELLS, torch.from_numpy(entries).to(breakpoints.device), lo, scale, last)
        _TABLES[key] = found  # keeps the breakpoints alive, so the id stays theirs
    return found[1:]


_BF16_PAIRS: dict[int, bool] = {}  # CUDA device index -> whether it compares bf16 pairs


def _paired(x: torch.Tensor) -> bool:
    """Whether 16-bit x can be compared in pairs: fp16 anywhere, bf16 from sm_90 (PTX's
    ``set.*.bf16x2``), asked of x's own GPU once (the compile-only driver's target for CPU tensors);
    under the interpreter, as on the newest GPUs."""
    if x.dtype != torch.bfloat16 or fm.INTERPRET:
        return True
    if not x.is_cuda:
        return driver.active.get_current_target().arch >= 90
    index = x.device.index
    found = _BF16_PAIRS.get(index)
    if found is None:
        found = _BF16_PAIRS[index] = torch.cuda.get_device_capability(x.device) >= (9, 0)
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
        paired = _paired(x)
        how, table, lo, scale, last = _plan(breakpoints, x.dtype, bits, nan_code, paired)
        words, rows, warps, vectors = _forward_launch(bits, x.element_size())
        nan_above = (1 << bits) - 1 if nan_code is None else nan_code
        by = CODES
        if how == COUNT and bits <= 2:
            by = SINGLES if x.dtype == torch.float32 else PAIRS if paired else CODES
        kernel(fewbit_fwd_kernel, F=form_for(fn, x.dtype == torch.float16), K=bits, W=words, HOW=int(how),
               NAN_CODE=nan_code, BY=int(by), NAN_ABOVE=nan_above,
               COMPARE=compare_asm(bits, nan_above) if by == SINGLES else "", ROWS=rows, T=vectors,
               num_warps=warps)(
            (triton.cdiv(n_words, words),), in_layout(x, y), y, codes, breakpoints, table, n, n_words,
            float(p0), float(p1), float(lo), float(scale), int(last))
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
