"""Exact references for benchmarks/accuracy.py: each elementwise activation (registry defaults) as a
float64 formula free of cancellation, and the same function in mpmath to check it.

``forward(x)`` is f, ``backward(x)`` is f'(x), ``backward_y(y)`` is f' at the x whose f(x) is y
(activations that save y). The mpmath forms (``mp_forward``, ``mp_backward``; f' by
differentiating in mpmath for those without a closed form here) are used by
tests/test_accuracy.py on a sample to show the float64 forms are exact to well below an fp32 ulp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import mpmath as mp
import numpy as np
import torch
from scipy.special import erfc, expit

import actkit

SQRT2 = math.sqrt(2.0)
GELU_TANH_C = math.sqrt(2.0 / math.pi)
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sech2(x):
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(x) ** 2


def _tanhshrink(x):
    out = x - np.tanh(x)
    small = np.abs(x) < 0.5  # x - tanh x cancels: 60-digit mpmath there
    mp.mp.dps = 40
    out[small] = [float(v - mp.tanh(v)) for v in map(mp.mpf, x[small].tolist())]
    return out


def _gelu_tanh_v(x):
    return 2 * GELU_TANH_C * (x + 0.044715 * x ** 3)


@dataclass
class Case:
    name: str
    forward: Callable
    mp_forward: Callable
    backward: Callable | None = None  # f'(x), for those that save x
    backward_y: Callable | None = None  # f' from y, for those that save y
    mp_backward: Callable | None = None

    def __post_init__(self):
        spec = actkit.get(self.name)
        self.spec = spec
        self.prefix = spec.kernel or spec.name
        self.params = spec.defaults
        self.kernel_args = spec.kernel_args(self.params)
        self.saves = spec.saves_for(self.params)

    def mp_derivative(self, v):
        """f'(v) in mpmath: the closed form where given, else mpmath's numerical derivative."""
        if self.mp_backward is not None:
            return self.mp_backward(v)
        return mp.diff(self.mp_forward, v)

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec.reference(x, **self.params)

    @property
    def torch_backward(self):
        if self.saves == "none" or not self.spec.differentiable:
            return None
        if self.saves == "y":
            return lambda y: self.spec.torch_backward_y(torch.ones_like(y), y, **self.params)

        def grad(x):
            x = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.spec.reference(x, **self.params), x, torch.ones_like(x))
            return g
        return grad


def _where(cond, a, b):
    return np.where(cond, a, b)


CASES_LIST = [
    Case("identity", lambda x: x.copy(), lambda v: v),
    Case("step", lambda x: (x >= 0).astype(np.float64), lambda v: mp.mpf(v >= 0)),
    Case("sigmoid", expit, lambda v: 1 / (1 + mp.exp(-v)),
         backward_y=lambda y: y * (1 - y), mp_backward=lambda v: mp.exp(-v) / (1 + mp.exp(-v)) ** 2),
    Case("tanh", np.tanh, mp.tanh, backward_y=lambda y: 1 - y * y, mp_backward=lambda v: mp.sech(v) ** 2),
    Case("relu", lambda x: np.maximum(x, 0.0), lambda v: max(v, 0),
         backward_y=lambda y: (y > 0).astype(np.float64)),
    Case("relu6", lambda x: np.clip(x, 0.0, 6.0), lambda v: min(max(v, 0), 6),
         backward_y=lambda y: ((y > 0) & (y < 6)).astype(np.float64)),
    Case("leaky_relu", lambda x: _where(x > 0, x, 0.01 * x), lambda v: v if v > 0 else mp.mpf("0.01") * v,
         backward_y=lambda y: _where(y > 0, 1.0, 0.01)),
    Case("elu", lambda x: _where(x > 0, x, np.expm1(np.minimum(x, 0))), lambda v: v if v > 0 else mp.expm1(v),
         backward_y=lambda y: _where(y > 0, 1.0, y + 1.0), mp_backward=lambda v: 1 if v > 0 else mp.exp(v)),
    Case("celu", lambda x: _where(x > 0, x, np.expm1(np.minimum(x, 0))), lambda v: v if v > 0 else mp.expm1(v),
         backward_y=lambda y: _where(y > 0, 1.0, y + 1.0), mp_backward=lambda v: 1 if v > 0 else mp.exp(v)),
    Case("selu", lambda x: SELU_SCALE * _where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
         lambda v: SELU_SCALE * (v if v > 0 else SELU_ALPHA * mp.expm1(v)),
         backward_y=lambda y: _where(y > 0, SELU_SCALE, y + SELU_ALPHA * SELU_SCALE),
         mp_backward=lambda v: SELU_SCALE * (1 if v > 0 else SELU_ALPHA * mp.exp(v))),
    Case("gelu", lambda x: 0.5 * x * erfc(-x / SQRT2), lambda v: v * mp.ncdf(v),
         backward=lambda x: 0.5 * erfc(-x / SQRT2) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi),
         mp_backward=lambda v: mp.ncdf(v) + v * mp.npdf(v)),
    Case("gelu_tanh", lambda x: x * expit(_gelu_tanh_v(x)),
         # (1 + tanh u) / 2 written as 1 / (1 + e^(-2u)): even 60 digits cancel in 1 + tanh u
         lambda v: v / (1 + mp.exp(-2 * mp.sqrt(2 / mp.pi) * (v + mp.mpf("0.044715") * v ** 3))),
         backward=lambda x: expit(_gelu_tanh_v(x)) + x * expit(_gelu_tanh_v(x)) * expit(-_gelu_tanh_v(x))
         * 2 * GELU_TANH_C * (1 + 3 * 0.044715 * x * x)),
    Case("gelu_sigmoid", lambda x: x * expit(1.702 * x), lambda v: v / (1 + mp.exp(-mp.mpf("1.702") * v)),
         backward=lambda x: expit(1.702 * x) + 1.702 * x * expit(1.702 * x) * expit(-1.702 * x)),
    Case("silu", lambda x: x * expit(x), lambda v: v / (1 + mp.exp(-v)),
         backward=lambda x: expit(x) + x * expit(x) * expit(-x)),
    Case("mish", lambda x: x * np.tanh(_softplus(x)), lambda v: v * mp.tanh(mp.log1p(mp.exp(v))),
         backward=lambda x: np.tanh(_softplus(x)) + x * expit(x) * _sech2(_softplus(x))),
    Case("lisht", lambda x: x * np.tanh(x), lambda v: v * mp.tanh(v),
         backward=lambda x: np.tanh(x) + x * _sech2(x)),
    Case("softplus", lambda x: _where(x > 20, x, _softplus(x)), lambda v: v if v > 20 else mp.log1p(mp.exp(v)),
         backward_y=lambda y: _where(y > 20, 1.0, -np.expm1(-y)),
         mp_backward=lambda v: 1 if v > 20 else 1 / (1 + mp.exp(-v))),
    Case("softsign", lambda x: x / (1 + np.abs(x)), lambda v: v / (1 + abs(v)),
         backward_y=lambda y: (1 - np.abs(y)) ** 2, mp_backward=lambda v: 1 / (1 + abs(v)) ** 2),
    Case("hardswish", lambda x: x * np.clip(x + 3, 0, 6) / 6, lambda v: v * min(max(v + 3, 0), 6) / 6,
         backward=lambda x: _where(x <= -3, 0.0, _where(x < 3, x / 3 + 0.5, 1.0))),
    Case("hardsigmoid", lambda x: np.clip(x + 3, 0, 6) / 6, lambda v: min(max(v + 3, 0), 6) / 6,
         backward_y=lambda y: _where((y > 0) & (y < 1), 1 / 6, 0.0)),
    Case("hardtanh", lambda x: np.clip(x, -1.0, 1.0), lambda v: min(max(v, -1), 1),
         backward_y=lambda y: ((y > -1) & (y < 1)).astype(np.float64)),
    Case("logsigmoid", lambda x: -_softplus(-x), lambda v: -mp.log1p(mp.exp(-v)),
         backward_y=lambda y: -np.expm1(y), mp_backward=lambda v: 1 / (1 + mp.exp(v))),
    Case("tanhshrink", _tanhshrink, lambda v: v - mp.tanh(v),
         backward=lambda x: np.tanh(x) ** 2, mp_backward=lambda v: mp.tanh(v) ** 2),
]
CASES = {c.name: c for c in CASES_LIST}
