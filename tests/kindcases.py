"""One call of every activation and kind, with its PyTorch reference: what the torch.func, double
backward and checkpointing tests run.

A :class:`Case` is an actkit call ``fn(*tensors)`` (``actkit.functional.<name>``, which torch.compile
traces) on small per-sample inputs, and ``ref(*tensors)``,
the same function written in torch ops (torch's own op where there is one, the composite a model
would write otherwise). Where no torch op gives the result (the forward-only ``step``, whose gradient
actkit defines as zero, and the few-bit ops, whose gradient is the quantised f'), ``ref`` is the
actkit call itself on the eager route with plain autograd, the route the other test files hold to
the math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import actkit
from actkit import kinds, registry
from refcheck import OTHER_PARAMS, SAVES_X_PARAMS

F = actkit.functional


@dataclass(frozen=True)
class Case:
    id: str
    fn: Callable
    ref: Callable
    shapes: tuple[tuple[int, ...], ...]
    """Per-sample shape of each tensor input."""
    shared: tuple[bool, ...] = (False,)
    """Inputs that a batch of samples shares (a learnable parameter): unbatched under vmap."""
    differentiable: bool = True
    """Whether a double backward means anything (step and few-bit have a zero second derivative
    in x; see the double-backward tests)."""
    fp32_gradients: bool = False
    """The gradient is computed in fp32 whatever the dtype (few-bit: dy times an fp32 level)."""
    twice_ref: Callable | None = None
    """Where torch's op has no double backward, the same function in ops that have one."""

    def inputs(self, dtype, device, batch: int | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs (scaled to reach every branch), at least 0.02 away from every kink of the
        cases' activations (0; +-1, +-3, +-6: hardtanh, hardswish, hardsigmoid, relu6; 0.5 and -2:
        hardtanh(-2, 0.5); 2.5: softplus(beta=2, threshold=5)) so that finite differences in float64
        see one branch; ``batch`` adds a leading dim to the per-sample (not shared) ones."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for shape, shared in zip(self.shapes, self.shared):
            full = shape if shared or batch is None else (batch, *shape)
            t = torch.randn(full, generator=g, dtype=torch.float64) * 2.5
            if shared:  # a parameter: positive slopes and sharpnesses, as modules initialise them
                t = t.abs() * 0.2 + 0.1
            else:
                kinks = torch.tensor([0.0, 1.0, -1.0, 3.0, -3.0, 6.0, -6.0, 0.5, -2.0, 2.5], dtype=torch.float64)
                near = (t[..., None] - kinks).abs().min(-1)
                t = torch.where(near.values < 0.02, t + 0.07, t)  # kinks are >= 0.5 apart
            out.append(t.to(dtype).to(device))
        return tuple(out)


# torch's F.hardsigmoid has no double backward ("derivative for aten::hardsigmoid_backward is not
# implemented"); clamp's has, and the two agree away from the kinks at +-3.
TWICE_REF = {"hardsigmoid": lambda x: torch.clamp(x / 6 + 0.5, 0.0, 1.0)}


def _elementwise(name: str, params: dict | None = None, label: str | None = None, saves: str | None = None) -> Case:
    """``saves``: the save policy (None: the default, what torch's op keeps)."""
    spec = actkit.get(name)
    params = params or {}
    policy = {} if saves is None else {"saves": saves}
    fn = lambda x: getattr(F, name)(x, **params, **policy)  # noqa: E731
    ref = fn if not spec.differentiable else (lambda x: spec.reference(x, **params))
    return Case(label or name, fn, ref, ((2, 3),), differentiable=spec.differentiable,
                twice_ref=TWICE_REF.get(name))


def _fewbit(name: str, bits: int) -> Case:
    fn = lambda x: getattr(F, name)(x, saved_bits=bits)  # noqa: E731
    return Case(f"{name}:saved_bits={bits}", fn, fn, ((2, 3),), differentiable=False, fp32_gradients=True)


def _learnable(name: str, channels: int) -> Case:
    spec = actkit.get(name)
    return Case(f"{name}:C={channels}", lambda x, w: getattr(F, name)(x, w), lambda x, w: spec.reference(x, w),
                ((2, 3, 2), (channels,)), shared=(False, True))


def _rowwise(name: str, dim: int) -> Case:
    spec = actkit.get(name)
    return Case(f"{name}:dim={dim}", lambda x: getattr(F, name)(x, dim), lambda x: spec.reference(x, dim), ((3, 4),))


def _glu(name: str, dim: int | None, **gate) -> Case:
    """dim None: the two-tensor form glu(a, b); else the one-tensor form split along dim."""
    spec = actkit.get(name)
    shown = "".join(f",{k}={v}" for k, v in gate.items())
    if dim is None:
        return Case(f"{name}{shown}:a,b", lambda a, b: getattr(F, name)(a, b, **gate),
                    lambda a, b: spec.reference(a, b, **gate), ((2, 3), (2, 3)), shared=(False, False))
    return Case(f"{name}{shown}:dim={dim}", lambda x: getattr(F, name)(x, dim=dim, **gate),
                lambda x: spec.reference(x, dim=dim, **gate), ((4, 2),))


def all_cases() -> list[Case]:
    out = []
    for spec in registry.REGISTRY.values():
        if spec.kind is kinds.ELEMENTWISE:
            out.append(_elementwise(spec.name))
        elif spec.kind is kinds.LEARNABLE:
            out += [_learnable(spec.name, 1), _learnable(spec.name, 3)]
        elif spec.kind is kinds.ROWWISE:
            out += [_rowwise(spec.name, -1), _rowwise(spec.name, 0)]
        elif spec.kind is kinds.GLU:
            out += [_glu(spec.name, -1), _glu(spec.name, 0), _glu(spec.name, None)]
    for table in (OTHER_PARAMS, SAVES_X_PARAMS):
        for name, params in table.items():
            shown = ",".join(f"{k}={v}" for k, v in params.items())
            out.append(_elementwise(name, params, f"{name}:{shown}"))
    for spec in registry.REGISTRY.values():  # y kept where torch keeps x: f' read from y, on every path
        if spec.kind is kinds.ELEMENTWISE and spec.differentiable and spec.saves_under("y", spec.defaults) == "y" \
                and spec.saves_under("torch", spec.defaults) != "y":
            out.append(_elementwise(spec.name, label=f"{spec.name}:saves=y", saves="y"))
    out += [_glu("glu", -1, act="leaky_relu", negative_slope=0.1), _glu("glu", None, act="gelu_tanh")]
    out += [_fewbit("gelu", 2), _fewbit("relu", 1), _fewbit("silu", 3), _fewbit("tanh", 4)]
    return out


CASES = all_cases()
