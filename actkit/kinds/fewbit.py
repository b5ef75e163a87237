"""Few-bit backward: keep a k-bit code per element instead of x, and read f' from a table.

After Novikov et al., "Few-Bit Backward: Quantized Gradients of Activation Functions for Memory
Footprint Reduction" (ICML 2023). An activation whose derivative needs its input x (GELU, SiLU,
Mish, ...) keeps x for backward: 2 or 4 bytes per element. Instead, the forward pass can store
which of 2^k intervals of the real line each x falls in, and the backward pass use one
derivative value per interval: a piecewise-constant f', k bits per element.

The intervals and values are computed here from the activation itself (its PyTorch reference,
differentiated by autograd in float64), for any elementwise registry entry, never typed in: they
minimise the mean squared error of f' for inputs drawn from N(0, 1), the distribution a
normalisation layer aims to give pre-activations. On a grid of cells over [-8, 8] (with the
tails folded into the end cells) an exact dynamic programme chooses the 2^k - 1 breakpoints;
each value is f''s mean over its interval under the normal density. Where f' jumps inside a
cell (ReLU at 0, hardsigmoid at +-3, a hardtanh bound anywhere) the breakpoint is moved onto the
jump by bisection, so piecewise-constant derivatives with at most 2^k pieces are reproduced
exactly: one bit is exact for ReLU and Leaky ReLU.

Codes are packed ``32 // k`` to an int32 word (k = 3 keeps 10 codes in 30 of 32 bits), in the
memory order of the output (x's layout for any dense x), so a saved code costs ``4 / (32 // k)``
bytes: 1/8 byte for k = 1, 1/4 for k = 2, 0.4 for k = 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .. import registry
from ..backend import TORCH, TRITON, backend_for
from .base import Implementation, ScalarBoundOp, define_ops, like_fake, op_cache
from .sharding import is_dtensor, on_local_shards

BITS = range(1, 9)
GRID_CELLS = 1024
GRID_RANGE = 8.0  # N(0, 1) puts 1.2e-15 of its mass beyond +-8


def check_bits(bits) -> int:
    """``bits`` as an int in 1..8; ValueError naming what is allowed otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"saved_bits must be an integer from 1 to 8 (bits kept per element for backward), "
                         f"got {bits!r}")
    return bits


def codes_per_word(bits: int) -> int:
    return 32 // bits


def code_shifts(bits: int, device=None) -> torch.Tensor:
    """Where each of a word's ``codes_per_word(bits)`` elements keeps its code: the shift of its
    lowest bit. Codes of 3 bits and more lie in element order. Codes of 1 and 2 bits, which the
    kernels find by comparisons, keep a word's even elements in its low half and its odd ones in
    its high half (element 2r at slot r, element 2r + 1 at slot 16 / bits + r): two neighbouring
    16-bit elements share a register, and one paired comparison then sets both codes in place
    (kernels/fewbit.py). A word's bits past the last element are unspecified."""
    per = codes_per_word(bits)
    e = torch.arange(per, dtype=torch.int32, device=device)
    slot = e % 2 * (per // 2) + e // 2 if bits <= 2 else e
    return slot * bits


def saved_bytes_per_element(bits: int) -> float:
    return 4 / codes_per_word(bits)


@dataclass(frozen=True)
class Quantizer:
    """The piecewise-constant derivative of one activation with one set of parameters."""
    bits: int
    breakpoints: tuple[float, ...]
    """2^k - 1 increasing points: x > breakpoints[i] for the codes above i."""
    levels: tuple[float, ...]
    """f' on each of the 2^k intervals."""
    rms_error: float
    """sqrt(E[(f'(x) - level(x))^2]) for x ~ N(0, 1)."""
    selects: tuple[bool, ...] = ()
    """Per interval: torch's backward *selects* 0 there (ReLU's x <= 0: ``x <= 0 ? 0 : dy``), so dx is 0
    whatever dy is, NaN and inf included, where ``dy * 0`` would be NaN. Empty: none does."""
    nan_code: int | None = None
    """The code of x = NaN: the interval whose level is torch's f'(NaN) (Leaky ReLU's NaN takes the
    negative slope, hardtanh's passes dy); None, the top code (where NaN falls by itself)."""

    def tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(breakpoints, levels) as fp32 tensors on ``device`` (made once per device)."""
        return _tables(self, torch.device(device))


@lru_cache(maxsize=None)
def _tables(q: Quantizer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Breakpoints rounded down to fp32: then for every fp32 x, x > b32 exactly when x > b
    # (hardsigmoid's jump to 0 at x = 3 sits at b = 3 - 1 ulp(double), which rounds to 3.0 to nearest).
    b = np.array(q.breakpoints, dtype=np.float64)
    b32 = b.astype(np.float32)
    b32 = np.where(b32.astype(np.float64) > b, np.nextafter(b32, np.float32(-np.inf)), b32)
    # A selecting interval's level is stored as -0.0: the backward writes 0 where it reads that bit
    # pattern, dy * level elsewhere (see kernels/fewbit.py).
    levels = [-0.0 if chosen else level for level, chosen in zip(q.levels, q.selects or [False] * len(q.levels))]
    with _plain_tensors():  # cached for later calls: never a transform's or a mode's tensor
        return (torch.tensor(b32, dtype=torch.float32, device=device),
                torch.tensor(levels, dtype=torch.float32, device=device))


def selects_zero(levels: torch.Tensor) -> torch.Tensor:
    """Where a level table (as :meth:`Quantizer.tables` gives it) marks torch's select of 0: -0.0."""
    return (levels == 0) & torch.signbit(levels)


def _plain_tensors():
    """Plain tensors and torch ops inside torch.func transforms and TorchDispatchModes (a checkpoint
    policy): for what a few-bit op makes on its first use, its quantiser and tables."""
    from contextlib import ExitStack

    from torch.utils._python_dispatch import _disable_current_modes

    stack = ExitStack()
    stack.enter_context(torch._C._DisableFuncTorch())
    stack.enter_context(_disable_current_modes())
    return stack


def _derivative(spec: registry.ActivationSpec, params: dict, x: np.ndarray) -> np.ndarray:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = spec.reference(t, **params)
    return torch.autograd.grad(y.sum(), t)[0].numpy()


def _jump(spec, params, lo: float, hi: float) -> float:
    """Where f' jumps between lo and hi (bisection to float64 resolution), as a breakpoint: the
    returned b sends x > b to the right-hand value, exactly as f' itself does at the jump."""
    left, right = _derivative(spec, params, np.array([lo, hi]))
    for _ in range(80):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        value = _derivative(spec, params, np.array([mid]))[0]
        if abs(value - left) <= abs(value - right):
            lo = mid
        else:
            hi = mid
    return lo  # f'(lo) is on the left side, every x > lo on the right


@lru_cache(maxsize=None)
def _quantize(name: str, params: tuple, bits: int) -> Quantizer:
    from scipy import stats  # a second of start-up: only when a few-bit op is made

    spec = registry.get(name)
    kw = dict(params)
    edges = np.linspace(-GRID_RANGE, GRID_RANGE, GRID_CELLS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.diff(stats.norm.cdf(edges))
    weight[0] += stats.norm.cdf(-GRID_RANGE)  # the tails, in the end cells
    weight[-1] += stats.norm.sf(GRID_RANGE)
    d = _derivative(spec, kw, centres)
    d = np.where(np.isfinite(d), d, 0.0)
    # Prefix sums: cells i..j-1 have weight W, weighted sum A and sum of squares B, and squared
    # error B - A^2 / W around their weighted mean.
    s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (weight, weight * d, weight * d * d))
    i, j = np.arange(GRID_CELLS + 1)[:, None], np.arange(GRID_CELLS + 1)[None, :]
    w, a, b = s0[j] - s0[i], s1[j] - s1[i], s2[j] - s2[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(j > i, np.maximum(b - np.where(w > 0, a * a / w, 0.0), 0.0), np.inf)
    # best[j]: least error of the first j cells in n intervals; one more interval per step.
    best, choices = cost[0].copy(), []
    for _ in range(2 ** bits - 1):
        total = best[:, None] + cost
        choice = np.argmin(total, axis=0)
        best = total[choice, np.arange(GRID_CELLS + 1)]
        choices.append(choice)
    cuts, end = [], GRID_CELLS
    for choice in reversed(choices):
        end = int(choice[end])
        cuts.append(end)
    cuts.sort()
    bounds = [0, *cuts, GRID_CELLS]
    # Each level: f''s weighted mean over its cells; exactly f' where it is constant there.
    levels = [d[lo] if np.ptp(d[lo:hi]) == 0 else (s1[hi] - s1[lo]) / (s0[hi] - s0[lo])
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    breakpoints = []
    for cut in cuts:
        left, right = d[cut - 1], d[cut]
        jumps = abs(right - left) > 1e-6 * (1 + abs(left) + abs(right)) and _is_step(spec, kw, centres, cut)
        breakpoints.append(_jump(spec, kw, centres[cut - 1], centres[cut]) if jumps else edges[cut])
    breakpoints, levels = tuple(float(v) for v in breakpoints), tuple(float(v) for v in levels)
    selects = _selects(spec, kw, breakpoints, levels, centres)
    return Quantizer(bits, breakpoints, levels, _rms_error(spec, kw, breakpoints, levels), selects,
                     _nan_code(spec, kw, levels))


RMS_SUBCELLS = 1 << 16  # the error's quadrature: 2^16 cells over [-8, 8], 64 per cell of the grid


def _rms_error(spec, params, breakpoints, levels) -> float:
    """sqrt(E[(f'(x) - level(x))^2]), x ~ N(0, 1), by the midpoint rule on cells of 1/4096.

    Not on the grid that chose the breakpoints: there f' is one value per cell of 1/64, so an
    interval of one cell (most of them at 7 and 8 bits) has no error at all, and the variation of f'
    within cells, which is most of the error at 7 and 8 bits, went unreported (gelu at 8 bits
    reported 0.00027 for a true 0.0024)."""
    from scipy import stats

    edges = np.linspace(-GRID_RANGE, GRID_RANGE, RMS_SUBCELLS + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    weight = np.diff(stats.norm.cdf(edges))
    d = _derivative(spec, params, mids)
    level = np.asarray(levels)[np.searchsorted(np.asarray(breakpoints), mids, side="left")]  # x > b goes right
    return math.sqrt(float(np.sum(weight * (d - level) ** 2)))


def _selects(spec, params, breakpoints, levels, centres) -> tuple[bool, ...]:
    """Per interval, whether torch's backward gives 0 for dy = NaN all over it (it selects 0 rather
    than multiply): probed at the grid centres in it and at both its ends, in float64."""
    b = np.asarray(breakpoints)
    ends = np.concatenate([b, np.nextafter(b, np.inf), [-np.inf, np.inf]])
    points = np.concatenate([centres, ends])
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    dx = torch.autograd.grad(spec.reference(x, **params), x, torch.full_like(x, float("nan")))[0].numpy()
    interval = np.searchsorted(b, points, side="left")
    return tuple(bool(level == 0 and np.all(dx[interval == i] == 0)) for i, level in enumerate(levels))


def _nan_code(spec, params, levels) -> int | None:
    """The code whose level is f'(NaN) as torch's backward gives it, where that is not the top code
    already; None where it is, or where no level equals it (smooth f': torch's f'(NaN) is NaN)."""
    value = _derivative(spec, params, np.array([np.nan]))[0]
    matches = [code for code, level in enumerate(levels) if level == value]
    return None if not matches or matches[-1] == len(levels) - 1 else matches[0]


def _is_step(spec, params, centres, cut) -> bool:
    """f' is flat on both sides of the cut and differs across it: a jump, not a steep slope."""
    probe = np.array([centres[cut - 1] - 1e-3, centres[cut - 1], centres[cut], centres[cut] + 1e-3])
    v = _derivative(spec, params, probe)
    return abs(v[0] - v[1]) < 1e-9 and abs(v[2] - v[3]) < 1e-9


def refusal(spec: registry.ActivationSpec, params=None) -> str | None:
    """Why ``saved_bits`` does not apply to ``spec`` (with ``params``, default its defaults), in one line;
    None where it does. Identity is refused rather than given codes: autograd keeps nothing for it
    (its gradient is dy), so codes would add memory, not save it."""
    if not spec.kind.few_bit:
        return (f"{spec.name} is a {spec.kind} activation: it has no few-bit backward (saved_bits applies to "
                "elementwise activations)")
    if not spec.differentiable:
        return f"{spec.name} has no backward, so nothing to save: drop saved_bits"
    if spec.saves_for({**spec.defaults, **(params or {})}) == "none":
        return f"{spec.name} keeps nothing for backward (its gradient is dy itself), so saved_bits has nothing to save"
    return None


def quantizer(spec: registry.ActivationSpec, params: dict, bits: int) -> Quantizer:
    """The quantised derivative of an elementwise activation (computed once per activation,
    parameters and bits; about 0.1 s, 2 s for 8 bits)."""
    reason = refusal(spec, params)
    if reason is not None:
        raise ValueError(reason)
    with _plain_tensors():  # its float64 autograd and numpy, on an op's first use, anywhere
        return _quantize(spec.name, tuple(sorted(params.items())), check_bits(bits))


# -- the PyTorch implementation of the codes (the CPU fallback) -----------------------------------
def memory_order(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor's elements as a flat view in the order they lie in memory."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), -t.shape[d]))
    return t.permute(order).reshape(-1)


def pack_codes(x: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """Packed int32 codes of a dense x, in memory order."""
    breakpoints, _ = q.tables(x.device)
    flat = memory_order(x).float()
    codes = torch.bucketize(flat, breakpoints, right=False).to(torch.int32)
    if q.nan_code is not None:
        codes = torch.where(flat.isnan(), q.nan_code, codes).to(torch.int32)
    per = codes_per_word(q.bits)
    n = codes.numel()
    padded = torch.zeros(-(-n // per) * per, dtype=torch.int32, device=x.device)
    padded[:n] = codes
    return (padded.view(-1, per) << code_shifts(q.bits, x.device)).sum(1, dtype=torch.int32)


def unpack_codes(words: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """The codes (int32) of the n elements whose packed codes ``words`` holds, in memory order."""
    return ((words[:, None] >> code_shifts(bits, words.device)) & ((1 << bits) - 1)).reshape(-1)[:n]


def unpack_derivative(words: torch.Tensor, n: int, q: Quantizer) -> torch.Tensor:
    """f' (fp32) of the n elements whose codes ``words`` holds, in memory order."""
    _, levels = q.tables(words.device)
    return levels[unpack_codes(words, n, q.bits).long()]


# -- the bound op: y as the activation gives it, codes instead of x for backward -------------------
class FewBitImpl(Implementation):
    """One backend's few-bit implementation: ``forward(x)`` (no grad: y only), ``encode(x) -> (y,
    codes)`` and ``decode(codes, grad, stride) -> dx``; autograd saves the codes and y's strides.

    Its derivative is the quantised f' (``quantizer``), a step function, so its second derivative is
    zero: a double backward differentiates ``dx = dy * level(x)`` in dy only (:meth:`differentiable_grads`),
    and torch.func sees the same (:meth:`reference_vjp`, :meth:`reference_jvp`)."""

    __slots__ = ("forward", "encode", "decode", "quantizer")

    def __init__(self, backend: str, forward, encode, decode, quantizer: Quantizer):
        super().__init__(backend)
        self.forward, self.encode, self.decode, self.quantizer = forward, encode, decode, quantizer
        self.native = False  # its gradient is the quantised f', not torch's

    def op_forward(self, x: torch.Tensor):
        return self.encode(x)

    def forward_and_save(self, ctx, x: torch.Tensor) -> torch.Tensor:
        output = self.encode(x)
        self.save(ctx, (x,), output)
        return output[0]

    def to_save(self, inputs, output):
        y, codes = output
        return (codes,), (list(y.stride()),)  # the codes follow y's memory order

    def input_grads(self, saved, grad: torch.Tensor, state) -> tuple[torch.Tensor]:
        return (self.decode(saved[0], grad, state[0]),)

    def differentiable_grads(self, saved, grad: torch.Tensor, state) -> tuple[torch.Tensor]:
        """``dy * level`` with the levels read from the codes (either backend packs them alike) and
        laid out as y was: a product in dy, so its derivative in dy is the level and in x zero."""
        level = torch.empty_strided(grad.shape, state[0], dtype=torch.float32, device=grad.device)
        memory_order(level).copy_(unpack_derivative(saved[0], level.numel(), self.quantizer))
        return (self._times(grad, level),)

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised f' of x (fp32, x's shape, selecting intervals' -0.0 included), coded as
        :func:`pack_codes` codes it."""
        q = self.quantizer
        breakpoints, levels = q.tables(x.device)
        flat = x.detach().float().contiguous()
        codes = torch.bucketize(flat, breakpoints, right=False)
        if q.nan_code is not None:
            codes = torch.where(flat.isnan(), q.nan_code, codes)
        return levels[codes]

    def _times(self, grad: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """``grad * level`` in fp32, 0 where the level selects 0 (whatever grad is), as the backward does."""
        out = grad.float() * level
        if any(self.quantizer.selects):
            out = torch.where(selects_zero(level), 0.0, out)
        return out.to(grad.dtype)

    def reference_vjp(self, inputs, grad):
        return (self._times(grad, self.level(inputs[0])),)

    def reference_jvp(self, inputs, tangents):
        return self._times(tangents[0], self.level(inputs[0]))


def _like_stride(t: torch.Tensor, stride) -> torch.Tensor:
    if t.stride() == tuple(stride):
        return t
    return torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t)


class FewBitOp(ScalarBoundOp):
    """An elementwise activation whose backward reads f' from ``bits``-bit codes (see the module doc)."""

    __slots__ = ("bits", "quantizer")

    def __init__(self, spec: registry.ActivationSpec, params: dict[str, float], bits: int):
        self.bits = check_bits(bits)
        super().__init__(spec, params, (self.bits,))
        self.quantizer = q = quantizer(spec, dict(params), bits)
        self.saves = "codes"
        reference = self.reference

        def encode(x):
            y = like_fake(reference(x), x)
            return y, pack_codes(_like_stride(x, y.stride()), q)

        def decode(codes, grad, stride):
            dx = torch.empty_strided(grad.shape, stride, dtype=grad.dtype, device=grad.device)
            fprime = unpack_derivative(codes, dx.numel(), q)
            flat = memory_order(_like_stride(grad, stride)).float() * fprime
            if any(q.selects):
                flat = torch.where(selects_zero(fprime), 0.0, flat)
            memory_order(dx).copy_(flat)
            return dx

        self.torch = FewBitImpl(TORCH, reference, encode, decode, q)

    def make_triton(self) -> FewBitImpl:
        from actkit.kernels import elementwise, fewbit as kernels

        fwd, p0, p1 = self.spec.triton_forward(self.p0, self.p1)
        bits, q = self.bits, self.quantizer
        tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # by device index

        def on(t: torch.Tensor):
            found = tables.get(t.get_device())
            if found is None:
                found = tables[t.get_device()] = q.tables(t.device)
            return found

        nan_code, selects = q.nan_code, any(q.selects)
        return FewBitImpl(TRITON, lambda x: elementwise.forward(x, fwd, p0, p1),
                          lambda x: kernels.forward(x, fwd, p0, p1, on(x)[0], bits, nan_code),
                          lambda codes, grad, stride: kernels.backward(codes, on(codes)[1], grad, stride, bits,
                                                                       selects), q)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", saved_bits={self.bits})"

    def traced(self, x: torch.Tensor) -> torch.Tensor:
        if is_dtensor(x):  # the codes are per shard: no DTensor placement describes them (see .sharding)
            return on_local_shards(self, x)
        y, _ = torch.ops.actkit.fewbit(x, self.name, self.p0, self.p1, self.bits, backend_for(x))
        return y


@op_cache
def resolve(name: str, p0: float, p1: float, bits: int) -> FewBitOp:
    """The one few-bit op for these kernel arguments and bits."""
    spec = registry.get(name)
    return FewBitOp(spec, spec.params_from_kernel_args(p0, p1), bits)


def _fake(x, name, p0, p1, bits, backend):
    per = codes_per_word(bits)
    return torch.empty_like(x), x.new_empty(((x.numel() + per - 1) // per,), dtype=torch.int32)


define_ops("fewbit", "(Tensor x, str name, float p0, float p1, SymInt bits, str backend) -> (Tensor, Tensor)",
           "(Tensor codes, Tensor grad, SymInt[] stride, str name, float p0, float p1, SymInt bits, str backend) -> Tensor",
           key=("name", "p0", "p1", "bits"), inputs=("x",), resolve=resolve, conform=False, fake=_fake,
           backward_fake=lambda codes, grad, stride, *key: torch.empty_strided(grad.shape, stride, dtype=grad.dtype,
                                                                                device=grad.device))
