"""What a benchmark case is: the input shape and byte accounting of each kind of activation, and
the tensors a case runs on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .. import registry
from .options import MODES, BenchError

# Everything the harness needs to know about a kind of activation lives here: the input shape
# for a given element count, the extra arguments, and the bytes that must move per element by
# mode, counted in tensors of the input's size and dtype as (tensors read, tensors written).
# Forward reads x and writes y; backward reads the one saved tensor (x, or y) and dy and writes
# dx; fwd+bwd is the sum. A GLU's output is half of x: forward reads x and writes half of it,
# backward reads x and dy (a half) and writes dx. A new kind is benchmarked once it has an entry
# in KINDS; until then it is skipped with a note.
ROW_LENGTH = 1024
"""Row-wise kinds (softmax) run on rows of this many elements (fewer if the size is smaller)."""
CHANNELS = 64
"""Learnable kinds run on (N, 64) inputs with one parameter per channel (dim 1), as nn.PReLU(64)."""


def _rows(numel: int) -> tuple[int, ...]:
    row = min(ROW_LENGTH, numel)
    return (numel // row, row) if numel % row == 0 else (1, numel)


def _channels(numel: int) -> tuple[int, ...]:
    return (numel // CHANNELS, CHANNELS) if numel % CHANNELS == 0 and numel >= CHANNELS else (numel,)


def _glu_rows(numel: int) -> tuple[int, ...]:
    if numel % 2:
        raise BenchError(f"a GLU splits x into two halves: {numel} elements is odd; choose an even size")
    shape = _rows(numel)
    return shape if shape[-1] % 2 == 0 else (1, numel)


def _same_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


@dataclass(frozen=True)
class KindModel:
    traffic: Mapping[str, tuple[float, float]]
    shape: Callable[[int], tuple[int, ...]]
    note: str
    output_shape: Callable[[tuple[int, ...]], tuple[int, ...]] = _same_shape


_ELEMENTWISE_TRAFFIC = {"fwd": (1, 1), "bwd": (2, 1)}
KINDS: dict[str, KindModel] = {
    "elementwise": KindModel(_ELEMENTWISE_TRAFFIC, lambda n: (n,), "1-D input"),
    "rowwise": KindModel(_ELEMENTWISE_TRAFFIC, _rows,
                         f"rows of {ROW_LENGTH} elements, normalised over the last dim; backward reads y and dy"),
    "learnable": KindModel(_ELEMENTWISE_TRAFFIC, _channels,
                           f"(N, {CHANNELS}) input, one learnable parameter per channel; backward also "
                           f"computes the parameter's gradient (its {CHANNELS} values are not counted in bytes)"),
    "glu": KindModel({"fwd": (1, 0.5), "bwd": (1.5, 1)}, _glu_rows,
                     f"x in rows of {ROW_LENGTH} elements, split into halves a (gated) and b of {ROW_LENGTH // 2}; "
                     "the size counts x's elements, the output has half as many",
                     output_shape=lambda shape: (*shape[:-1], shape[-1] // 2)),
}


def bytes_moved(kind: str, mode: str, numel: int, itemsize: int) -> int:
    """The bytes an ideal kernel must read plus write for ``mode`` on ``numel`` elements."""
    if kind not in KINDS:
        raise BenchError(f"no byte accounting for kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if mode == "fwd+bwd":
        return bytes_moved(kind, "fwd", numel, itemsize) + bytes_moved(kind, "bwd", numel, itemsize)
    if mode not in KINDS[kind].traffic:
        raise BenchError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    reads, writes = KINDS[kind].traffic[mode]
    return round((reads + writes) * numel * itemsize)


def copy_bytes(numel: int, itemsize: int) -> int:
    """A copy reads and writes every element once."""
    return 2 * numel * itemsize


def gbps(nbytes: int, seconds: float) -> float:
    """Effective bandwidth in GB/s (1e9 bytes per second)."""
    return nbytes / seconds / 1e9


def size_label(numel: int) -> str:
    """``2^k`` for powers of two, the count with thousands separators otherwise."""
    if numel > 0 and numel & (numel - 1) == 0:
        return f"2^{numel.bit_length() - 1}"
    return f"{numel:,}"


@dataclass
class CaseInputs:
    """One case's tensors: x, the upstream gradient dy, extra tensor arguments (a learnable
    parameter) and keyword parameters (the spec's defaults)."""
    x: torch.Tensor
    dy: torch.Tensor
    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    actkit_kwargs: dict[str, Any] = field(default_factory=dict)
    """Options of actkit's own call only, not the reference's: ``saved_bits``."""

    @property
    def wrt(self) -> tuple[torch.Tensor, ...]:
        """What backward differentiates: x and any learnable parameter."""
        return tuple(t for t in (self.x, *self.args) if t.requires_grad)


def make_inputs(spec: registry.ActivationSpec, numel: int, dtype: torch.dtype, device: str,
                seed: int = 0) -> CaseInputs:
    """x (standard normal, in the kind's shape; a leaf requiring grad when the activation has a
    backward), dy, and the learnable parameter (initial value, one per channel) where there is one."""
    if spec.kind.name not in KINDS:
        raise BenchError(f"{spec.name}: kind {spec.kind.name!r} is not benchmarked yet "
                         f"(supported: {', '.join(KINDS)})")
    model = KINDS[spec.kind.name]
    shape = model.shape(numel)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    dy = torch.randn(model.output_shape(shape), generator=gen, device=device, dtype=torch.float32).to(dtype)
    x.requires_grad_(spec.differentiable)
    if spec.kind.learnable:
        channels = shape[1] if len(shape) >= 2 else 1
        weight = torch.full((channels,), float(spec.params[0].default), dtype=dtype, device=device,
                            requires_grad=spec.differentiable)
        return CaseInputs(x, dy, (weight,))
    return CaseInputs(x, dy, kwargs=dict(spec.defaults))


ENV_FIELDS = ("device", "device_name", "torch", "triton", "cuda", "cpu_threads", "actkit", "timestamp")
"""The environment's fields every record repeats, so that a record read alone says where it was measured."""


def skip_note(activation: str, reason: str, dtype: str | None = None, numel: int | None = None,
              provider: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """What was not measured and why: the whole activation, or one case's provider or mode."""
    return {"activation": activation, "dtype": dtype, "numel": numel, "provider": provider, "mode": mode,
            "reason": reason}


def failure_note(activation: str, provider: str, exc: BaseException, dtype: str, numel: int) -> dict[str, Any]:
    """A provider that could not run a case is reported with the first line of its error, not fatal."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return skip_note(activation, f"{provider} failed: {type(exc).__name__}: {message}", dtype, numel, provider=provider)
