"""What every kernel family shares: the launch constants, the supported dtypes and the flat-buffer layout rule.

The launch constants of all families live here, so that a tuning change is one edit and the
static roofline (:mod:`actkit.bench.roofline`) and the kernels cannot disagree about them.

The kernels walk tensors as flat buffers, so every operand of one launch must share the
output's strides. The output comes from ``torch.empty_like``, which keeps the strides of any
gap-free tensor (contiguous, channels_last, transposed) and is contiguous in the suggested
memory format otherwise. So dense inputs are processed in place and only views with gaps
(slices, expands) pay one copy.
"""
import torch

# -- launch constants ------------------------------------------------------------------------
# 2048 elements per program, 4 warps: 16 elements per thread, i.e. four 128-bit loads of fp32
# (two of fp16/bf16) in flight per thread, enough to saturate HBM on current GPUs for a purely
# memory-bound op. Fewer, larger programs also keep the interpreter (one Python step per
# program) fast in tests. The elementwise, GLU, learnable and few-bit (power-of-two codes per
# word) kernels all take this block.
BLOCK = 2048
NUM_WARPS = 4
# The elementwise kernels keep the four 128-bit vectors per thread in 16-bit dtypes too: the block
# on 2 warps (32 elements per thread), so that the per-thread indexing and masking are shared by
# twice the elements (16-bit forwards on sm_90: 0.6-0.7 instructions per element fewer, e.g. GELU
# 21.2 -> 20.5; fp32 keeps 4 warps, whose 2-warp SASS came out longer, relu 4.9 -> 6.5).
ELEMENTWISE_VECTORS_PER_THREAD = 4


def elementwise_warps(element_size: int) -> int:
    """Warps of an elementwise program over BLOCK elements of this size: four 128-bit vectors a thread."""
    return max(1, BLOCK * element_size // (16 * ELEMENTWISE_VECTORS_PER_THREAD * 32))


# Few-bit kernels whose 32 // bits codes per word is not a power of two (3, 5, 6 bits) walk words,
# not elements. The backward takes 1024 words, 8 per thread (one 128-bit load of their 16-bit dy
# per code position). The forward gives each thread as many words as one 128-bit vector holds
# elements (8 for 16-bit x, 4 for fp32) and so reads 10, 6 or 5 vectors per thread: programs of 2
# warps keep the unused part of the last program small. Few-bit forwards of any width take at
# least FEWBIT_FORWARD_WARPS warps.
FEWBIT_WORDS = 1024
FEWBIT_FORWARD_WARPS = 2
# GLU programs take the block on 2 warps (32 elements per thread): a tile's row and column indices
# (an integer division of the program id) and its two-input addressing are per thread, so twice the
# elements per thread halve them per element (GELU-gated forwards in bf16: 27.4 -> 23.9 instructions
# per element on sm_90; no spills, sm_80 or sm_90).
GLU_WARPS = 2
# The few-bit forward of power-of-two codes per word gives each thread T consecutive 128-bit vectors
# (a word of 32 1-bit fp32 codes, 8 vectors, at least), so that a thread packs whole words and
# stores them itself, and more elements share its fixed instructions: T = 4 for fp32 (16 elements;
# at 8, lisht's 7-bit forward took 42.7 instructions per element on sm_90 against 41.0: ptxas
# recomputes parts of F), T = 8 for 16-bit x (64 elements; from 4: GELU's 2-bit bf16 forward 19.3 ->
# 18.9, gelu_sigmoid's 4-bit 17.1 -> 15.3, hardswish's 8-bit fp16 13.5 -> 12.6; lisht's 7-bit bf16
# 20.8 -> 20.9 the one not gaining). A program then takes more words than the backward's, so that
# it keeps FEWBIT_FORWARD_WARPS warps: with one, the 32 blocks an SM holds at most would be half
# its warps.
FEWBIT_THREAD_VECTORS = {4: 4, 2: 8}  # by element size
# The learnable backward with a parameter gradient takes the block on 2 warps (32 elements per
# thread): its per-channel partial sums cross threads and warps (shuffles, shared memory) once per
# thread, so twice the elements per thread halve that cost per element (Swish-beta's 16-bit
# backward: 31 -> 25 instructions per element on sm_90). Without one (frozen) it keeps NUM_WARPS.
LEARNABLE_BWD_WARPS = 2
# The learnable backward's final reduction adds this many partial-sum rows per step, per block
# of this many channels.
LEARNABLE_SUM_ROWS = 64
LEARNABLE_SUM_COLS = 64
# Row-wise (softmax) kernels (kernels/rowwise.py). Rows up to ROWWISE_MAX_FUSED elements are
# normalised in one read and one write, each thread holding ROWWISE_THREAD_ELEMENTS of them (eight
# 128-bit loads of fp32, four of fp16/bf16): a row's reductions across threads and its per-row
# operations (1 / sum, log) are shared by that many elements. Over a dim that is not innermost a
# thread takes at most ROWWISE_STRIDED_LANES neighbouring rows, so more elements of each. Longer rows
# take two sweeps, each thread reading ROWWISE_CHUNK_BYTES per chunk (the once-per-chunk exp that
# rescales a thread's running sum is shared by that many bytes); over the innermost dim a program's
# chunk is ROWWISE_TILE elements (4 warps of 16-bit, 8 of fp32), over another dim it is one warp (the
# programs side by side over the other dims are many).
ROWWISE_MAX_FUSED = 8192
ROWWISE_THREAD_ELEMENTS = 32
ROWWISE_STRIDED_LANES = 4
ROWWISE_TILE = 16384
ROWWISE_CHUNK_BYTES = 256


def rowwise_vector(element_size: int) -> int:
    """Elements of one 128-bit load or store."""
    return 16 // element_size


SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dtype(t: torch.Tensor, what: str, family: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton {family} kernels support float32, float16 and bfloat16; {what} is {t.dtype}")


def in_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with ``like``'s strides, copying only when they differ."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)
