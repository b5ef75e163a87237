"""Few-bit backward kernels: y = F(x) plus a packed k-bit code per element; dx = dy * level[code].

Forward reads x once and writes y and the codes: a program owns W words of ``PER_WORD = 32 // K``
codes each, as a ``[W, P2]`` tile (P2 the next power of two, the extra columns masked); each
element's code is found by a binary search over the 2^K - 1 sorted breakpoints (K loads from a
table that stays in cache), and a row's codes are shifted into place and added into one int32.
Backward reads dy and the codes, looks f' up in the 2^K-entry table and writes dx. Everything in
the flat memory order of the output, as in :mod:`elementwise`.

NaN takes the top code (every ``x <= b`` test fails), as ``torch.bucketize`` does.
"""
import torch
import triton
import triton.language as tl

from .launch import kernel
from .layout import check_dtype, in_layout

ELEMENTS = 2048  # per program, as the elementwise kernels
NUM_WARPS = 4


@triton.jit
def fewbit_fwd_kernel(x_ptr, y_ptr, code_ptr, breakpoint_ptr, n_elements, n_words, p0, p1,
                      F: tl.constexpr, K: tl.constexpr, P2: tl.constexpr, W: tl.constexpr):
    per_word: tl.constexpr = 32 // K
    word = tl.program_id(0).to(tl.int64) * W + tl.arange(0, W)
    column = tl.arange(0, P2)
    offsets = word[:, None] * per_word + column[None, :]
    mask = (column[None, :] < per_word) & (offsets < n_elements)
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(y_ptr + offsets, F(x, p0, p1, y_ptr.dtype.element_ty == tl.float32).to(y_ptr.dtype.element_ty), mask=mask)
    code = tl.zeros([W, P2], dtype=tl.int32)
    for level in tl.static_range(K):  # binary search: steps of 2^(K-1), 2^(K-2), ..., 1
        b = tl.load(breakpoint_ptr + code + ((1 << (K - 1 - level)) - 1))
        code = tl.where(x <= b, code, code + (1 << (K - 1 - level)))
    packed = tl.sum(tl.where(mask, code << (column[None, :] * K), 0), axis=1)
    tl.store(code_ptr + word, packed, mask=word < n_words)


@triton.jit
def fewbit_bwd_kernel(code_ptr, level_ptr, dy_ptr, dx_ptr, n_elements,
                      K: tl.constexpr, BLOCK: tl.constexpr):
    per_word: tl.constexpr = 32 // K
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    words = tl.load(code_ptr + offsets // per_word, mask=mask, other=0)
    code = (words >> ((offsets % per_word) * K).to(tl.int32)) & ((1 << K) - 1)
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    dx = dy * tl.load(level_ptr + code, mask=mask, other=0.0)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def forward(x: torch.Tensor, fn, p0: float, p1: float, breakpoints: torch.Tensor, bits: int):
    """(y, codes): y = fn(x) laid out like x, codes packed ``32 // bits`` per int32 in y's memory order."""
    check_dtype(x, "x", "few-bit activation")
    y = torch.empty_like(x)
    n = x.numel()
    per_word = 32 // bits
    n_words = -(-n // per_word)
    codes = torch.empty(n_words, dtype=torch.int32, device=x.device)
    if n:
        p2 = triton.next_power_of_2(per_word)
        w = ELEMENTS // p2
        kernel(fewbit_fwd_kernel, F=fn, K=bits, P2=p2, W=w, num_warps=NUM_WARPS)(
            (triton.cdiv(n_words, w),), in_layout(x, y), y, codes, breakpoints, n, n_words, float(p0), float(p1))
    return y, codes


def backward(codes: torch.Tensor, levels: torch.Tensor, grad: torch.Tensor, stride, bits: int):
    """dx = grad * levels[code], with ``stride`` (the forward output's, which the codes follow)."""
    check_dtype(grad, "the gradient", "few-bit activation")
    dx = torch.empty_strided(grad.shape, stride, dtype=grad.dtype, device=grad.device)
    n = dx.numel()
    if n:
        kernel(fewbit_bwd_kernel, K=bits, BLOCK=ELEMENTS, num_warps=NUM_WARPS)(
            (triton.cdiv(n, ELEMENTS),), codes, levels, in_layout(grad, dx), dx, n)
    return dx
