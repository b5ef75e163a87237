"""Double backward (gradient penalties, Hessian-vector products, MAML) for every activation and kind,
on both routes: the eager autograd.Functions and the custom ops (which tensor subclasses take; under
torch.compile torch itself refuses double backward: "torch.compile with aot_autograd does not currently
support double backward").

A backward run with grad mode on computes the input gradients by differentiable torch ops from the
saved tensors, so gradgradcheck holds in float64, and through the Triton kernels (interpreter on CPU)
the first and second derivatives are torch's. Few-bit ops differentiate their quantised derivative:
``dx = dy * level(x)`` is linear in dy and constant in x.
"""
import pytest
import torch

import actkit
from kindcases import CASES
from refcheck import KERNEL_DEVICE, KERNEL_TOLERANCE, backend

DIFFERENTIABLE = [c for c in CASES if c.differentiable]
FEW_BIT = [c for c in CASES if c.fp32_gradients]
ROUTES = ("eager", "custom_op")
EAGER_NODES = {"EagerFunctionBackward", "EagerFunction2Backward"}


class Subclass(torch.Tensor):
    """A tensor subclass with torch's default behaviour: it takes the custom ops."""


def on_route(fn, route):
    """``fn`` as the route calls it: plain tensors (eager), or the same tensors viewed as a subclass
    (the custom ops), results viewed back as plain tensors (as_subclass keeps the autograd graph)."""
    if route == "eager":
        return fn
    return lambda *t: fn(*(a.as_subclass(Subclass) for a in t)).as_subclass(torch.Tensor)


def _first_and_second(fn, inputs, seed=2):
    """(first-order grads with create_graph, their gradient in the inputs and in dy): what a
    gradient penalty differentiates."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device).requires_grad_(True)
    first = torch.autograd.grad(y, leaves, dy, create_graph=True)
    weights = [torch.randn(f.shape, generator=g, dtype=f.dtype).to(f.device) for f in first]
    penalty = sum((f * w).sum() for f, w in zip(first, weights))
    second = torch.autograd.grad(penalty, [*leaves, dy], allow_unused=True)
    return y, first, second


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=[c.id for c in DIFFERENTIABLE])
def test_gradgradcheck_float64(case, route):
    inputs = [t.requires_grad_(True) for t in case.inputs(torch.float64, "cpu")]
    fn = on_route(case.fn, route)
    with backend("torch"):
        node = type(fn(*inputs).grad_fn).__name__
        assert (node in EAGER_NODES) == (route == "eager"), node
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=[c.id for c in DIFFERENTIABLE])
def test_double_backward_through_the_kernels_is_torchs(case, route):
    """fp32 through the Triton kernels (the forward, and the fast backward that the second pass
    meets on the way back) against autograd of torch's op twice."""
    inputs = case.inputs(torch.float32, KERNEL_DEVICE)
    with backend("triton"):
        y, first, second = _first_and_second(on_route(case.fn, route), inputs)
    ref_y, ref_first, ref_second = _first_and_second(case.twice_ref or case.ref, inputs)
    tol = KERNEL_TOLERANCE[torch.float32]
    torch.testing.assert_close(y, ref_y, **tol)
    for got, expected in zip((*first, *second), (*ref_first, *ref_second)):
        if expected is None or got is None:  # no path (a linear input): torch and actkit alike
            assert got is None or not got.any(), "a gradient where torch has none"
            continue
        torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("backend_name", ["torch", "triton"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", FEW_BIT, ids=[c.id for c in FEW_BIT])
def test_few_bit_double_backward_is_the_derivative_of_the_quantised_one(case, route, backend_name):
    """dx = dy * level(x): its gradient in dy is w * level(x) (level: the first-order gradient at
    dy = 1), in x nothing (a step function's derivative, zero almost everywhere). (No gradgradcheck:
    the product is rounded to fp32 whatever the dtype, which float64 finite differences cannot see
    through.)"""
    x, = case.inputs(torch.float32, KERNEL_DEVICE if backend_name == "triton" else "cpu")
    with backend(backend_name):
        y, (first,), (d_x, d_dy) = _first_and_second(on_route(case.fn, route), (x,))
        leaf = x.clone().requires_grad_(True)
        level, = torch.autograd.grad(case.fn(leaf), leaf, torch.ones_like(x))
    g = torch.Generator().manual_seed(2)
    _ = torch.randn(y.shape, generator=g)  # dy, as _first_and_second drew it
    weights = torch.randn(first.shape, generator=g).to(x.device)
    assert d_x is None or not d_x.any()
    torch.testing.assert_close(d_dy, weights * level, rtol=0, atol=0)


def test_mish_silu_swiglu_double_backward_the_issue_cases():
    """The three that failed ("derivative for aten::mish_backward is not implemented"): a
    Hessian-vector product against torch's own."""
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, 8, dtype=torch.float64)
    for ours, theirs in ((actkit.functional.mish, torch.nn.functional.mish),
                         (actkit.functional.silu, torch.nn.functional.silu),
                         (actkit.functional.swiglu, actkit.registry.get("swiglu").reference)):
        hvp = torch.autograd.functional.hvp(lambda t: ours(t).pow(2).sum(), x, v)[1]
        expected = torch.autograd.functional.hvp(lambda t: theirs(t).pow(2).sum(), x, v)[1]
        torch.testing.assert_close(hvp, expected, rtol=1e-12, atol=1e-14)


def test_a_plain_backward_keeps_the_fast_path(monkeypatch):
    """Only a backward with grad mode on pays for differentiable ops: create_graph=False still runs
    the backward kernel."""
    from actkit.kernels import elementwise as kernels

    calls = []
    launch = kernels.backward
    monkeypatch.setattr(kernels, "backward", lambda *a: calls.append(1) or launch(*a))
    x = torch.randn(16, device=KERNEL_DEVICE, requires_grad=True)
    with backend("triton"):
        torch.autograd.grad(actkit.functional.gelu(x).sum(), x)
        assert calls == [1]
        torch.autograd.grad(actkit.functional.gelu(x).sum(), x, create_graph=True)
        assert calls == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_twice_differentiable_references_keep_the_first_derivative(dtype):
    """Where torch's op has no double backward (hardsigmoid), actkit differentiates another formula
    (``spec.twice_differentiable``): its first derivative is torch's to the bit, at the kinks, at
    +-inf and NaN, and for dy = NaN or inf."""
    from refcheck import SPECIAL_VALUES

    specs = [s for s in actkit.registry.REGISTRY.values() if s.twice_differentiable is not None]
    assert specs, "hardsigmoid at least"
    x = torch.tensor(SPECIAL_VALUES + [2.999, -2.999, 3.001, -3.001], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    for dy in (torch.randn(x.shape, generator=g, dtype=dtype), torch.full_like(x, float("nan")),
               torch.full_like(x, float("inf"))):
        for spec in specs:
            got, expected = (torch.autograd.grad(f(t), t, dy)[0] for f, t in (
                (spec.twice_differentiable, x.clone().requires_grad_(True)), (spec.reference, x.clone().requires_grad_(True))))
            torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
