"""Row-wise Triton kernels: softmax and log_softmax over any dimension, forward and backward.

Layout. A dense tensor reduced over dim d (size N, stride ``inner``) is, in memory, an
``(outer, N, inner)`` array: row r = (o, i) with o = r // inner, i = r % inner starts at
``o * N * inner + i`` and its k-th element is ``inner * k`` further on. This holds for any
dense layout (contiguous, channels_last, transposed), so no dimension is ever moved or
copied; only views with gaps pay one copy into a dense layout. The last dimension of a
contiguous tensor is simply the case ``inner = 1``.

Tiles. A program holds a ``[REPS, G, T, W]`` tile of fp32 values; the launch shape
(:func:`config`) gives it ``G * T * W / VEC`` threads, VEC elements of one load each, so that
each thread holds the REPS elements of axis 0 itself and reduces them without a shuffle:

* innermost dim (``inner = 1``): G rows, element k = (rep * T + t) * W + w of each: a thread
  reads W = VEC consecutive elements (128 bits where the row length allows) per rep, neighbouring threads
  neighbouring vectors. A row's reduction: in the thread over axes 0 and 3, then over T threads.
* any other dim (STRIDED): G values of o, W neighbouring rows i (neighbouring addresses, VEC of
  them in one load when VEC divides ``inner``), element k = rep * T + t. A row's reduction: in the
  thread over axis 0, then over T threads. A program owns whole values of o, so no division or
  modulo is done per element.

Loads and stores see the tile as ``[REPS * G * T, W]`` (:func:`_chunk`), whose layout the compiler
orders the same way in every Triton version, and offsets from the program's first element that
are 32-bit (64-bit only for tensors of 2^31 elements or more: WIDE), so that an element's address
is one multiply-add.

Padding rows (past the last row) read the last row again and store nothing, so loads are masked
along the row only and no per-element select guards the maths.

Forward. When a row fits in one tile (:func:`config`: N <= ROWWISE_MAX_FUSED for the innermost
dim, N * min(inner, 8) <= ROWWISE_MAX_FUSED otherwise) the kernel reads x once and writes y once:
max, exp, sum, normalise in registers. Longer rows (the vocabulary of a language model) take two
sweeps: the first keeps, per thread slot (the elements a thread reads of one row), a running
maximum m and sum s of exp(x - m), rescaling s by exp(m_old - m_new) once per chunk and slot; the
slots are combined once at the end. The second sweep writes exp(x - m) / s, or x - m - log(s) for
log_softmax. Math is fp32 and every exponent is <= 0.

exp. ``tl.exp2`` is one ``MUFU.EX2`` (``ex2.approx.ftz.f32``: 2 ulp, results below 2^-126 flushed
to 0); ``tl.exp`` adds the scaling that keeps subnormal results (about 5 instructions). Sums use
``exp2((x - m) * log2 e)``: a term below 2^-126 of a sum that holds 1 changes nothing. Outputs use
``tl.exp`` for fp32 (as before), for bf16 the square of ``exp2`` at half the exponent (an FMUL:
subnormal bf16 results kept), for fp16 plain ``exp2`` (fp16 ends at 2^-24). The sum's reciprocal
and logarithm are taken once per row. The second sweep of a 16-bit softmax (:func:`_probability`)
folds 1 / s into the exponent and rounds to bf16/fp16 in integers: with two exps per element the
16-per-clock unit that runs MUFU and the ``F2FP`` conversion is the limit (actkit roofline).
Backward: log_softmax's exp(y) likewise (``tl.exp`` for fp32). Loads widen bf16 with integer
ops (:func:`_tile`).

Backward uses only the saved output y and dy (x is not kept):
softmax ``dx = y * (dy - sum(dy * y))``, log_softmax ``dx = dy - exp(y) * sum(dy)``;
one sweep when the row fits, two otherwise (partial sums per thread slot, combined once).

NaN and inf follow torch: a row holding NaN or +inf is all NaN; a row of only -inf is
NaN; -inf entries of any other row give probability 0 (log-probability -inf).
"""
import torch
import triton
import triton.language as tl

from .launch import kernel
from .layout import (ROWWISE_CHUNK_BYTES, ROWWISE_MAX_FUSED, ROWWISE_STRIDED_LANES, ROWWISE_THREAD_ELEMENTS,
                     ROWWISE_TILE, check_dtype, in_layout, rowwise_vector)

LOG2E = tl.constexpr(1.4426950408889634)
HALF_LOG2E = tl.constexpr(0.7213475204444817)
FLT_LOWEST = tl.constexpr(-3.4028234663852886e38)
GRID_YZ = 65535  # CUDA's limit on grid axes 1 and 2 (axis 0: 2^31 - 1)


# -- tiles -----------------------------------------------------------------------------------
@triton.jit
def _program(n_rows, N, inner, outer, STRIDED: tl.constexpr, WIDE: tl.constexpr, G: tl.constexpr,
             W: tl.constexpr, VEC: tl.constexpr):
    """(first, lane, lane_ok, rows, step, row_step) of this program: its first element (the start of
    its first row, or of its first value of o; 64-bit), the rows i it reads side by side, ``[1, W]``,
    and which of them exist (STRIDED; else 0 and True); how many of its G rows (values of o) exist
    (0 or less for a program past the last: the grid of o blocks is a rectangle, :func:`_grid`, and
    such a program reads the last row and stores nothing); the distance between a row's elements;
    the distance between its rows (values of o). ``x // VEC * VEC`` is x itself (VEC divides it,
    :func:`config`) and tells the compiler so: it may then load VEC elements at once."""
    if STRIDED:
        step = inner // VEC * VEC
        o0 = (tl.program_id(2) * tl.num_programs(1) + tl.program_id(1)) * G
        lane = tl.program_id(0) * W + tl.arange(0, W)[None, :]
        row_step = N * step
        if WIDE:
            row_step = N.to(tl.int64) * step
        return tl.minimum(o0, outer - 1).to(tl.int64) * N * step, lane, lane < step, outer - o0, step, row_step
    else:
        row0 = tl.program_id(0) * G
        row_step = N // VEC * VEC
        return row0.to(tl.int64) * row_step, 0, True, n_rows - row0, 1, row_step


@triton.jit
def _chunk(start, lane, lane_ok, rows, N, step, row_step, STRIDED: tl.constexpr, WIDE: tl.constexpr,
           BLOCK_N: tl.constexpr, G: tl.constexpr, T: tl.constexpr, W: tl.constexpr):
    """(offsets from the program's first element, mask, rows stored) of the row elements start ..
    start + BLOCK_N of its G rows, as the ``[REPS * G * T, W]`` view of a ``[REPS, G, T, W]`` tile
    (j = rep * G * T + g * T + t): loads and stores take this 2-d shape, whose one contiguous axis
    (W) orders the layout the compiler gives them in every Triton version (threads over W / VEC,
    then over j: g and t; registers over rep). Over four axes, three of them not contiguous, Triton
    3.6 and 3.8 break the tie differently, and 3.6 put threads over REPS. Rows past the last read
    the last row again (no mask across rows); the offsets are 32-bit unless WIDE."""
    if STRIDED:
        j = tl.arange(0, BLOCK_N * G)[:, None]
    else:
        j = tl.arange(0, BLOCK_N * G // W)[:, None]
    if G == 1:  # one row (the usual case): j is rep * T + t, spelled so that per-rep offsets fold
        at, row, stored = j, 0, rows > 0
    else:
        g = (j // T) % G
        at, row, stored = j // (G * T) * T + j % T, tl.minimum(g, tl.maximum(rows, 1) - 1), g < rows
    if WIDE:
        at = at.to(tl.int64)
    if STRIDED:
        k = start + at
        return row * row_step + k * step + lane, (k < N) & lane_ok, stored & lane_ok
    else:
        k = start + at * W + tl.arange(0, W)[None, :]
        return row * row_step + k, k < row_step, stored


@triton.jit
def _tile(x, STRIDED: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr, T: tl.constexpr, W: tl.constexpr):
    """Loaded ``[REPS * G * T, W]`` values as the ``[REPS, G, T, W]`` tile (fp32) the maths reduces."""
    if STRIDED:
        x = tl.reshape(x, [BLOCK_N // T, G, T, W])
    else:
        x = tl.reshape(x, [BLOCK_N // (T * W), G, T, W])
    if x.dtype == tl.bfloat16:  # as integers (its bits, 16 places up): the compiler's conversion
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)  # permutes bytes
    else:
        return x.to(tl.float32)


@triton.jit
def _flat(x):
    return tl.reshape(x, [x.shape[0] * x.shape[1] * x.shape[2], x.shape[3]])


@triton.jit
def _slot_reduce(x, STRIDED: tl.constexpr, MAX: tl.constexpr):
    """Each thread's own elements of a row (axis 0, and axis 3 unless STRIDED) reduced without a
    shuffle: their maximum where MAX, else their sum."""
    if MAX:
        x = tl.max(x, axis=0, keep_dims=True)
    else:
        x = tl.sum(x, axis=0, keep_dims=True)
    if not STRIDED:
        if MAX:
            x = tl.max(x, axis=3, keep_dims=True)
        else:
            x = tl.sum(x, axis=3, keep_dims=True)
    return x


@triton.jit
def _exp_out(x, m, DTYPE: tl.constexpr):
    """exp(x - m) for an output of DTYPE (see the module docstring)."""
    if DTYPE == tl.float32:
        return tl.exp(x - m)
    elif DTYPE == tl.bfloat16:
        h = tl.exp2((x - m) * HALF_LOG2E)
        return h * h
    else:
        return tl.exp2((x - m) * LOG2E)


# -- forward ---------------------------------------------------------------------------------
@triton.jit
def _probability(x, m, s, OUT: tl.constexpr):
    """exp(x - m) / s stored as OUT, in the second sweep (a second exp per element: the first was for
    the sum). fp32: ``tl.exp`` times 1 / s, as in one sweep. fp16/bf16: 1 / s folded into the
    exponent, and the rounding done in integers, because the 16-per-clock unit that runs MUFU also
    runs the ``F2FP`` conversion, and two exps per element already load it (actkit roofline):
    ``h = exp2((x - m) log2(e) / 2 - c)``, ``p = h * h`` (an FMUL, so subnormal results survive), then
    add half an ulp of the output to p's bits and keep the output's bits: round to nearest, ties
    away from zero (p is itself a few fp32 ulp from the exact value, so an exact fp32 tie says
    nothing about the side the exact value lies on). bf16 keeps the top 16 bits of p = exact / s
    (c = log2(s) / 2). fp16 keeps bits 13..28 of p = exact / s * 2^-112 (c = (log2(s) + 112) / 2):
    that scale maps fp16's exponents onto fp32's, its subnormals onto fp32 subnormals, whose bits
    are then exactly fp16's. A row whose sum is NaN is all NaN (exponent NaN, bits 0x7fffffff):
    its half ulp is 0, so the bits kept stay a NaN."""
    if OUT == tl.float32:
        return tl.exp(x - m) * (1.0 / s)
    else:
        finite = s == s
        if OUT == tl.bfloat16:
            c, half_ulp, shift = tl.log2(s) * 0.5, tl.where(finite, 0x8000, 0), 16
        else:
            c, half_ulp, shift = (tl.log2(s) + 112.0) * 0.5, tl.where(finite, 0x1000, 0), 13
        h = tl.exp2(tl.fma(x - m, HALF_LOG2E, -c))
        bits = ((h * h).to(tl.uint32, bitcast=True) + half_ulp.to(tl.uint32)) >> shift
        return bits.to(tl.uint16).to(OUT, bitcast=True)


@triton.jit
def _row_stats(x_first, lane, lane_ok, rows, N, step, row_step, STRIDED: tl.constexpr, WIDE: tl.constexpr,
               BLOCK_N: tl.constexpr, G: tl.constexpr, T: tl.constexpr, W: tl.constexpr):
    """(max, sum of exp(x - max)) of each row, from a sweep of running maxima and sums per slot."""
    if STRIDED:
        m = tl.full([1, G, T, W], float("-inf"), tl.float32)
    else:
        m = tl.full([1, G, T, 1], float("-inf"), tl.float32)
    s = tl.zeros(m.shape, tl.float32)
    for start in range(0, N, BLOCK_N):
        offsets, mask, _ = _chunk(start, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE, BLOCK_N, G, T, W)
        x = _tile(tl.load(x_first + offsets, mask=mask, other=float("-inf")), STRIDED, BLOCK_N, G, T, W)
        m_new = tl.maximum(m, _slot_reduce(x, STRIDED, True))
        # While a slot has seen only -inf its maximum is -inf: shift by a finite value instead, so
        # that its terms are exp(-inf) = 0, not exp(-inf + inf) = NaN (a row of only -inf still ends
        # as NaN, below: exp(m - max) with both -inf).
        shift = tl.maximum(m_new, FLT_LOWEST)
        e = tl.exp2((x - shift) * LOG2E)
        s = s * tl.exp2((m - shift) * LOG2E) + _slot_reduce(e, STRIDED, False)
        m = m_new
    row_max = tl.max(m, axis=2, keep_dims=True)
    return row_max, tl.sum(s * tl.exp2((m - row_max) * LOG2E), axis=2, keep_dims=True)


@triton.jit
def softmax_fwd_kernel(x_ptr, y_ptr, n_rows, N, inner, outer,
                       LOG: tl.constexpr, SINGLE: tl.constexpr, STRIDED: tl.constexpr, WIDE: tl.constexpr,
                       BLOCK_N: tl.constexpr, G: tl.constexpr, T: tl.constexpr, W: tl.constexpr,
                       VEC: tl.constexpr):
    OUT = y_ptr.dtype.element_ty
    first, lane, lane_ok, rows, step, row_step = _program(n_rows, N, inner, outer, STRIDED, WIDE, G, W, VEC)
    x_first, y_first = x_ptr + first, y_ptr + first
    if SINGLE:
        offsets, mask, stored = _chunk(0, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE, BLOCK_N, G, T, W)
        x = _tile(tl.load(x_first + offsets, mask=mask, other=float("-inf")), STRIDED, BLOCK_N, G, T, W)
        m = tl.max(_slot_reduce(x, STRIDED, True), axis=2, keep_dims=True)
        if LOG:
            shifted = x - m
            s = tl.sum(_slot_reduce(tl.exp2(shifted * LOG2E), STRIDED, False), axis=2, keep_dims=True)
            y = shifted - tl.log(s)
        else:
            e = _exp_out(x, m, OUT)
            s = tl.sum(_slot_reduce(e, STRIDED, False), axis=2, keep_dims=True)
            y = e * (1.0 / s)
        tl.store(y_first + offsets, _flat(y.to(OUT)), mask=mask & stored)
    else:
        m, s = _row_stats(x_first, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE, BLOCK_N, G, T, W)
        log_s = tl.log(s)
        for start in range(0, N, BLOCK_N):
            offsets, mask, stored = _chunk(start, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE,
                                           BLOCK_N, G, T, W)
            x = _tile(tl.load(x_first + offsets, mask=mask), STRIDED, BLOCK_N, G, T, W)  # others: not stored
            if LOG:
                y = ((x - m) - log_s).to(OUT)
            else:
                y = _probability(x, m, s, OUT)
            tl.store(y_first + offsets, _flat(y), mask=mask & stored)


# -- backward --------------------------------------------------------------------------------
@triton.jit
def _dx(y, dy, dot, LOG: tl.constexpr, OUT: tl.constexpr):
    if LOG:
        if OUT == tl.float32:
            return dy - tl.exp(y) * dot
        else:
            return dy - tl.exp2(y * LOG2E) * dot
    else:
        return y * (dy - dot)


@triton.jit
def softmax_bwd_kernel(y_ptr, dy_ptr, dx_ptr, n_rows, N, inner, outer,
                       LOG: tl.constexpr, SINGLE: tl.constexpr, STRIDED: tl.constexpr, WIDE: tl.constexpr,
                       BLOCK_N: tl.constexpr, G: tl.constexpr, T: tl.constexpr, W: tl.constexpr,
                       VEC: tl.constexpr):
    OUT = dx_ptr.dtype.element_ty
    first, lane, lane_ok, rows, step, row_step = _program(n_rows, N, inner, outer, STRIDED, WIDE, G, W, VEC)
    y_first, dy_first, dx_first = y_ptr + first, dy_ptr + first, dx_ptr + first
    if SINGLE:
        offsets, mask, stored = _chunk(0, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE, BLOCK_N, G, T, W)
        y = _tile(tl.load(y_first + offsets, mask=mask, other=0.0), STRIDED, BLOCK_N, G, T, W)
        dy = _tile(tl.load(dy_first + offsets, mask=mask, other=0.0), STRIDED, BLOCK_N, G, T, W)
        if LOG:
            dot = tl.sum(_slot_reduce(dy, STRIDED, False), axis=2, keep_dims=True)
        else:
            dot = tl.sum(_slot_reduce(dy * y, STRIDED, False), axis=2, keep_dims=True)
        tl.store(dx_first + offsets, _flat(_dx(y, dy, dot, LOG, OUT).to(OUT)), mask=mask & stored)
    else:
        if STRIDED:
            dot = tl.zeros([1, G, T, W], tl.float32)
        else:
            dot = tl.zeros([1, G, T, 1], tl.float32)
        for start in range(0, N, BLOCK_N):
            offsets, mask, _ = _chunk(start, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE, BLOCK_N,
                                      G, T, W)
            dy = _tile(tl.load(dy_first + offsets, mask=mask, other=0.0), STRIDED, BLOCK_N, G, T, W)
            if LOG:
                dot += _slot_reduce(dy, STRIDED, False)
            else:
                y = _tile(tl.load(y_first + offsets, mask=mask, other=0.0), STRIDED, BLOCK_N, G, T, W)
                dot += _slot_reduce(dy * y, STRIDED, False)
        dot = tl.sum(dot, axis=2, keep_dims=True)
        for start in range(0, N, BLOCK_N):
            offsets, mask, stored = _chunk(start, lane, lane_ok, rows, N, step, row_step, STRIDED, WIDE,
                                           BLOCK_N, G, T, W)
            y = _tile(tl.load(y_first + offsets, mask=mask), STRIDED, BLOCK_N, G, T, W)
            dy = _tile(tl.load(dy_first + offsets, mask=mask), STRIDED, BLOCK_N, G, T, W)
            tl.store(dx_first + offsets, _flat(_dx(y, dy, dot, LOG, OUT).to(OUT)), mask=mask & stored)


# -- launchers -------------------------------------------------------------------------------
def row_layout(t: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """(n_rows, N, inner) of a dense tensor reduced over ``dim`` (already wrapped, >= 0)."""
    N = t.shape[dim]
    inner = t.stride(dim) if N > 1 else 1
    return t.numel() // N, N, inner


def _power_of_two_dividing(n: int, cap: int) -> int:
    return min(n & -n, cap) if n > 0 else 1


def _threads(tile_threads: int, n_groups: int) -> tuple[int, int]:
    """(G, warps): groups of rows per program so that G * tile_threads fills at least one warp
    (as far as there are groups), and the warps that makes."""
    g = max(1, min(32 // tile_threads, triton.next_power_of_2(n_groups))) if tile_threads < 32 else 1
    return g, max(1, tile_threads * g // 32)


def config(N: int, n_rows: int, inner: int = 1, element_size: int = 4) -> dict:
    """Tile and launch shape for ``n_rows`` rows of N elements of ``element_size`` bytes whose
    elements are ``inner`` apart (see the module docstring for the ``[REPS, G, T, W]`` tile).

    One sweep when the row fits a tile (N <= ROWWISE_MAX_FUSED, or N * min(inner, 8) when not
    innermost): each thread holds ROWWISE_THREAD_ELEMENTS elements; over a dim that is not innermost,
    of at most ROWWISE_STRIDED_LANES rows, so that it holds more elements of each row (fewer shuffles
    and fewer per-row operations per element). Two sweeps otherwise: each thread reads
    ROWWISE_CHUNK_BYTES per chunk in 128-bit loads (at most 16 narrower ones), and a program's chunk
    is ROWWISE_TILE elements over the innermost dim, one warp's over another dim. VEC (the elements of
    one load) is a power of two dividing the row length, or ``inner``.
    T threads share a row (W / VEC more across the W rows side by side when the dim is not
    innermost); G rows (or values of o) fill a warp when a row needs fewer than 32 threads.
    """
    vector = rowwise_vector(element_size)
    strided, wide = inner > 1, n_rows * N >= 2 ** 31  # offsets within a program: 32-bit below that
    block_n = triton.next_power_of_2(N)
    chunk = ROWWISE_CHUNK_BYTES // element_size  # elements per thread and chunk, two sweeps
    if not strided:
        single = block_n <= ROWWISE_MAX_FUSED
        vec = w = min(_power_of_two_dividing(N, vector), block_n)
        if single:
            reps = min(ROWWISE_THREAD_ELEMENTS // vec, block_n // vec)
            t = block_n // (vec * reps)
        else:
            reps = min(chunk // vec, 16)  # narrow loads: every element needs its own address register
            block_n = ROWWISE_TILE
            t = block_n // (vec * reps)
        g, warps = _threads(t, n_rows)
    else:
        single = block_n * min(triton.next_power_of_2(inner), 8) <= ROWWISE_MAX_FUSED
        w = min(triton.next_power_of_2(inner), ROWWISE_MAX_FUSED // block_n if single else 32 * vector,
                32 * vector)
        if single:
            vec = _power_of_two_dividing(inner, min(vector, w, ROWWISE_STRIDED_LANES))
            reps = min(ROWWISE_THREAD_ELEMENTS // vec, block_n)
            t = block_n // reps
        else:
            vec = _power_of_two_dividing(inner, min(vector, w))
            reps = min(chunk // vec, 16)  # narrow loads: every element needs its own address register
            t = max(1, 32 // (w // vec))  # one warp: the programs side by side over o and i are many
            block_n = reps * t
        g, warps = _threads(t * (w // vec), n_rows // inner)
    return dict(SINGLE=single, STRIDED=strided, WIDE=wide, BLOCK_N=block_n, G=g, T=t, W=w, VEC=vec,
                num_warps=min(warps, 16))


def _grid(n_rows: int, inner: int, cfg: dict) -> tuple[int, ...]:
    if not cfg["STRIDED"]:
        return (triton.cdiv(n_rows, cfg["G"]),)
    o_blocks = triton.cdiv(n_rows // inner, cfg["G"])
    return triton.cdiv(inner, cfg["W"]), min(o_blocks, GRID_YZ), triton.cdiv(o_blocks, GRID_YZ)


def _launch(fn, inputs, out, dim, log):
    n_rows, N, inner = row_layout(out, dim)
    cfg = config(N, n_rows, inner, out.element_size())
    kernel(fn, LOG=log, **cfg)(_grid(n_rows, inner, cfg), *inputs, out, n_rows, N, inner, n_rows // inner)


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
