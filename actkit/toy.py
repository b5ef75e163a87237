"""Seeded 2-D toy problems (moons, circles, spirals) and a small MLP trained on them.

Used by ``actkit boundary`` to draw decision regions per activation: on two input
dimensions the boundary a network learns can actually be seen. The generators follow the
usual definitions (two interleaving half circles; two concentric circles; two interleaved
Archimedean spirals) with Gaussian noise, from a ``torch.Generator`` so a seed gives the
same points on every machine.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from . import registry
from .names import TOY_DATASETS
from .nn import Activation

DATASETS = TOY_DATASETS


def make_moons(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n0 = n // 2
    n1 = n - n0
    t0 = torch.rand(n0, generator=g) * math.pi
    t1 = torch.rand(n1, generator=g) * math.pi
    a = torch.stack([torch.cos(t0), torch.sin(t0)], 1)
    b = torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], 1)
    x = torch.cat([a, b]) + noise * torch.randn(n, 2, generator=g)
    return x - torch.tensor([0.5, 0.25]), torch.cat([torch.zeros(n0), torch.ones(n1)]).long()


def make_circles(n: int, noise: float, g: torch.Generator, factor: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    n0 = n // 2
    n1 = n - n0
    t0 = torch.rand(n0, generator=g) * 2 * math.pi
    t1 = torch.rand(n1, generator=g) * 2 * math.pi
    outer = torch.stack([torch.cos(t0), torch.sin(t0)], 1)
    inner = factor * torch.stack([torch.cos(t1), torch.sin(t1)], 1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n, 2, generator=g)
    return x, torch.cat([torch.zeros(n0), torch.ones(n1)]).long()


def make_spirals(n: int, noise: float, g: torch.Generator, turns: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    n0 = n // 2
    n1 = n - n0
    parts = []
    for k, count in enumerate((n0, n1)):
        r = torch.sqrt(torch.rand(count, generator=g))  # uniform density along the arm
        theta = r * turns * 2 * math.pi + k * math.pi
        parts.append(torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1))
    x = torch.cat(parts) + noise * torch.randn(n, 2, generator=g)
    return x, torch.cat([torch.zeros(n0), torch.ones(n1)]).long()


_MAKERS = {"moons": make_moons, "circles": make_circles, "spirals": make_spirals}
DEFAULT_NOISE = {"moons": 0.15, "circles": 0.08, "spirals": 0.05}


def make_dataset(name: str, n: int = 400, *, noise: float | None = None, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``n`` points in 2-D (float32) and their class (0/1), reproducible from ``seed``."""
    key = name.strip().lower()
    if key not in _MAKERS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if n < 2:
        raise ValueError(f"need at least 2 points, got {n}")
    g = torch.Generator().manual_seed(seed)
    return _MAKERS[key](n, DEFAULT_NOISE[key] if noise is None else float(noise), g)


def mlp(activation: str, *, hidden: int = 32, depth: int = 3, in_features: int = 2, classes: int = 2,
        **params) -> nn.Sequential:
    """``depth`` hidden layers of ``hidden`` units, each followed by the actkit activation."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), Activation(activation, **params)]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


@dataclass
class ToyResult:
    activation: str
    model: nn.Module
    train_accuracy: float
    test_accuracy: float
    final_loss: float
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_toy(activation: str, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
              steps: int = 600, lr: float = 0.01, hidden: int = 32, depth: int = 3, seed: int = 0,
              threads: int | None = 1) -> ToyResult:
    """Full-batch Adam on the toy problem; the same initialisation seed for every activation.

    ``threads``: CPU threads for PyTorch while training (restored afterwards). One by default: the
    tensors are tiny, and on a busy machine several threads spin-waiting on each other make a
    second of work take a minute.
    """
    spec = registry.get(activation)
    reason = spec.kind.not_pointwise
    if reason is not None:
        raise ValueError(f"{spec.name} is {reason}; the toy MLP takes elementwise or learnable activations")
    if not spec.differentiable:
        raise ValueError(f"{spec.name} has no gradient, so a network using it cannot be trained")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_toy(spec.name, x, y, x_test, y_test, steps, lr, hidden, depth, seed)
    finally:
        torch.set_num_threads(previous)


def _train_toy(name, x, y, x_test, y_test, steps, lr, hidden, depth, seed) -> ToyResult:
    torch.manual_seed(seed)
    model = mlp(name, hidden=hidden, depth=depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    model.eval()
    return ToyResult(name, model, accuracy(model, x, y), accuracy(model, x_test, y_test),
                     losses[-1] if losses else float("nan"), steps, seconds, losses)
