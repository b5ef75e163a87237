"""Toys that tests/test_extending.py adds at runtime, each written as README "Extending actkit" says, with
nothing in actkit edited for them:

* ``toy_shrink``, an elementwise activation: soft shrinkage, ``x - clamp(x, -lambd, lambd)``: a registry
  spec, and two ``@triton.jit`` device functions put in the kernels' table;
* the ``toy_pairmax`` kind, whose one activation ``toy_maxout`` is ``max(a, b)`` of x's two halves along
  the last dim (a maxout of two pieces): this module is the kind's ops module;
* ``toymlp``, a model: flatten -> dense 64 -> act -> [depth x (dense 64 -> act)] -> dense.

:func:`add_activation`, :func:`add_kind` and :func:`add_model` register one each (in a test, inside the
``restored_tables`` fixture of test_extending.py, which puts every table back afterwards). Run as a pytest
plugin (``-p toys``, with tests/ on PYTHONPATH) it registers all three before any test module is collected,
so the registry-parametrised tests include them.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn

import actkit
from actkit import kinds, models
from actkit.backend import TORCH, TRITON, backend_for
from actkit.kinds.base import (BoundOp, EagerFunction, Implementation, check_tensor, define_ops, is_compiling,
                               per_activation)

# -- an activation: a spec and its device functions -------------------------------------------------------


@triton.jit
def toy_shrink_fwd(x, p0, p1, ACC: tl.constexpr):
    # x - clamp(x, -lambd, lambd): 0 in the band, NaN stays NaN (as torch's softshrink)
    return x - tl.minimum(tl.maximum(x, -p0), p0)


@triton.jit
def toy_shrink_bwd(x, p0, p1, ACC: tl.constexpr):
    # 0 in the closed band, else 1; NaN takes the 1 branch, as torch's float32 softshrink_backward
    return tl.where((x >= -p0) & (x <= p0), 0.0, 1.0)


@triton.jit
def toy_shrink_zero(x, p0, p1):
    # softshrink_backward selects 0 in the band (dy NaN or inf included), so the kernel must too
    return (x >= -p0) & (x <= p0)


SHRINK = actkit.ActivationSpec(
    "toy_shrink", "f(x) = x - clamp(x, -lambd, lambd)", F.softshrink, "ToyShrink", "(-inf, inf)",
    monotonic=True, smooth=False, zero_centred=True, saturating=False,
    # lambd = 1 puts the kinks at +-1, among those the suite's finite-difference tests keep away from
    params=(actkit.Param("lambd", 1.0, "half-width of the band sent to 0 (>= 0)"),),
    torch_backward=torch.ops.aten.softshrink_backward)


def add_activation() -> None:
    from actkit.kernels.activations import TABLE, DeviceFunctions

    actkit.register(SHRINK)
    TABLE["toy_shrink"] = DeviceFunctions(toy_shrink_fwd, toy_shrink_bwd, zero=toy_shrink_zero)


# -- a kind: its math, what it saves, its bound op and custom ops, its hooks --------------------------------
KIND = kinds.Kind("toy_pairmax", pointwise=False, scalar_params=False, few_bit=False, learnable=False,
                  not_pointwise="a maxout of x's two halves (half as many outputs as inputs)", normalises=False,
                  gated=False, module=__name__)
BLOCK = 1024


@triton.jit
def _pairmax_forward(x_ptr, y_ptr, n, half, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    at = (i // half) * 2 * half + i % half  # a's element in x; b's is half further
    a = tl.load(x_ptr + at, mask=mask)
    b = tl.load(x_ptr + at + half, mask=mask)
    tl.store(y_ptr + i, tl.where(a >= b, a, b), mask=mask)


@triton.jit
def _pairmax_backward(x_ptr, grad_ptr, dx_ptr, n, half, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    at = (i // half) * 2 * half + i % half
    a = tl.load(x_ptr + at, mask=mask)
    b = tl.load(x_ptr + at + half, mask=mask)
    grad = tl.load(grad_ptr + i, mask=mask)
    share = tl.where(a == b, grad * 0.5, grad)  # a tie splits the gradient, as torch.maximum's autograd
    tl.store(dx_ptr + at, tl.where(a >= b, share, 0.0), mask=mask)
    tl.store(dx_ptr + at + half, tl.where(b >= a, share, 0.0), mask=mask)


def _triton_forward(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = x.new_empty((*x.shape[:-1], x.shape[-1] // 2))
    if y.numel():
        _pairmax_forward[(triton.cdiv(y.numel(), BLOCK),)](x, y, y.numel(), y.shape[-1], BLOCK=BLOCK)
    return y


def _triton_dx(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    x, grad = x.contiguous(), grad.contiguous()
    dx = torch.empty_like(x)
    if grad.numel():
        _pairmax_backward[(triton.cdiv(grad.numel(), BLOCK),)](x, grad, dx, grad.numel(), grad.shape[-1],
                                                               BLOCK=BLOCK)
    return dx


def _torch_forward(x: torch.Tensor) -> torch.Tensor:
    return torch.maximum(*x.chunk(2, -1))


def _torch_dx(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, -1)
    share = torch.where(a == b, grad * 0.5, grad)
    return torch.cat([torch.where(a >= b, share, 0.0), torch.where(b >= a, share, 0.0)], -1)


class PairmaxImpl(Implementation):
    """``forward(x)``; autograd saves x, and backward sends each gradient to the larger half."""

    __slots__ = ("forward", "dx")

    def __init__(self, backend: str, forward, dx):
        self.backend, self.forward, self.dx = backend, forward, dx

    def to_save(self, inputs, y):
        return inputs, ()

    def input_grads(self, saved, grad: torch.Tensor, state) -> tuple[torch.Tensor]:
        return (self.dx(saved[0], grad),)


class PairmaxOp(BoundOp):
    __slots__ = ()

    def __init__(self, spec):
        super().__init__(spec, (spec.name,))
        self.torch = PairmaxImpl(TORCH, _torch_forward, _torch_dx)

    def make_triton(self) -> PairmaxImpl:
        return PairmaxImpl(TRITON, _triton_forward, _triton_dx)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(self.name, x)
        if x.dim() == 0 or x.shape[-1] % 2:
            raise ValueError(f"{self.name}: the last dim must have an even size (two halves), got {tuple(x.shape)}")
        if type(x) is torch.Tensor and not is_compiling():  # the eager route (see actkit.kinds.base)
            impl = self.impl(backend_for(x))
            if x.requires_grad and torch.is_grad_enabled():
                return EagerFunction.apply(impl, x)
            return impl.forward(x)
        return torch.ops.actkit.toy_pairmax(x, self.name, backend_for(x))


resolve, op_for = per_activation(PairmaxOp)

define_ops("toy_pairmax", "(Tensor x, str name, str backend) -> Tensor",
           "(Tensor x, Tensor grad, str name, str backend) -> Tensor", key=("name",), inputs=("x",),
           resolve=resolve, conform=False, fake=lambda x, *rest: x.new_empty((*x.shape[:-1], x.shape[-1] // 2)),
           backward_fake=lambda x, *rest: x.new_empty(x.shape))


def apply(spec, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if args or kwargs:
        raise TypeError(f"{spec.name}(x) takes no parameters")
    return resolve(spec.name)(x)


def functional(spec):
    return lambda x, *args, **kwargs: apply(spec, x, *args, **kwargs)


def parameters(spec) -> list[inspect.Parameter]:
    return []


def init_module(module) -> None:
    module.forward = module._op = resolve(module.spec.name)


def module_kwargs(module) -> dict:
    return {}


def init_reference(module) -> None:
    pass


def reference_forward(module, x: torch.Tensor) -> torch.Tensor:
    return module.spec.reference(x)


MAXOUT = actkit.ActivationSpec(
    "toy_maxout", "f(x) = max(a, b); a, b = the halves of x along the last dim", _torch_forward, "ToyMaxout",
    "(-inf, inf)", monotonic=True, smooth=False, zero_centred=False, saturating=False, native=False, kind=KIND)


def _rows(numel: int) -> tuple[int, ...]:
    return (numel // 1024, 1024) if numel % 1024 == 0 else (1, numel)


def add_kind() -> None:
    from actkit.bench.cases import KINDS, KindModel

    kinds.register(KIND)
    actkit.register(MAXOUT)
    # forward reads x and writes half of it; backward reads x and dy (a half) and writes dx
    KINDS[KIND.name] = KindModel({"fwd": (1, 0.5), "bwd": (1.5, 1)}, _rows, "rows of 1024, max of the halves",
                                 output_shape=lambda shape: (*shape[:-1], shape[-1] // 2))


# -- a model ----------------------------------------------------------------------------------------------
class ToyMLP(models.ActivationModel):
    """flatten -> dense 64 -> act -> [depth x (dense 64 -> act)] -> dense."""

    def __init__(self, act: str = "relu", impl: str = "actkit", params=None, in_shape=(1, 28, 28),
                 num_classes: int = 10, depth: int = 0):
        super().__init__()
        models.check_depth(depth)
        layers = [nn.Flatten(), nn.Linear(int(torch.Size(in_shape).numel()), 64),
                  models.make_activation(act, impl, params, 64)]
        for _ in range(depth):
            layers += [nn.Linear(64, 64), models.make_activation(act, impl, params, 64)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)


def add_model() -> None:
    models.register_model("toymlp")(ToyMLP)


def pytest_configure(config) -> None:  # as a plugin (-p toys): before any test module is collected
    add_activation()
    add_kind()
    add_model()
