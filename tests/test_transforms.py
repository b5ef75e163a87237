"""torch.func transforms of every activation and kind give torch's results.

``grad``, ``vmap``, ``jvp``, ``jacrev`` and ``vmap(grad)`` (per-sample gradients, with a learnable
parameter shared by the batch) of each case in :mod:`kindcases`, on both backends, against the
reference computed without torch.func: plain autograd, Jacobians row by row, and loops over samples.
On the PyTorch backend the inputs are float64; on the Triton backend (its interpreter on CPU) fp32,
and the forward runs the kernels there.
"""
import pytest
import torch
from torch.func import grad, jacrev, jvp, vmap

import actkit
from kindcases import CASES
from refcheck import KERNEL_DEVICE, KERNEL_TOLERANCE, backend

BACKENDS = {"torch": (torch.float64, "cpu"), "triton": (torch.float32, KERNEL_DEVICE)}
BATCH = 3


def tolerance(dtype, case=None):
    """float64 (PyTorch backend): the same torch ops as the reference, give or take the order of a
    sum of at most 12 terms (a learnable parameter's gradient): 12 float64 roundings, 1.4e-15
    relative, well inside 1e-12. fp32 (Triton backend): the kernels' forward against torch
    (KERNEL_TOLERANCE: a few fp32 ulp); gradients are torch's formulas on the same inputs, whose
    sums of at most 12 terms round within 12 * 6e-8 = 7e-7 relative, inside that too. A few-bit
    gradient is dy rounded to fp32 times an fp32 level, rounded again: 2 * 2^-24 relative against
    float64 math on the same numbers (a Jacobian-vector product by plain autograd)."""
    if dtype == torch.float32:
        return KERNEL_TOLERANCE[torch.float32]
    if case is not None and case.fp32_gradients:
        return dict(rtol=2.4e-7, atol=1e-30)
    return dict(rtol=1e-12, atol=1e-14)


def _loss_weights(like: torch.Tensor) -> torch.Tensor:
    """A fixed cotangent, so that a gradient is not the derivative's plain sum."""
    return torch.linspace(-1.5, 2.0, like.numel(), dtype=like.dtype, device=like.device).reshape(like.shape)


def _argnums(case):
    return tuple(range(len(case.shapes)))


def _plain_grads(fn, inputs):
    """d(sum(fn(inputs) * w))/d(inputs) by plain autograd."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    return torch.autograd.grad(y, leaves, _loss_weights(y))


def _jacobian(fn, inputs):
    """Rows of the Jacobian by plain autograd (no torch.func), one per output element."""
    return torch.autograd.functional.jacobian(fn, inputs, vectorize=False)


@pytest.fixture(params=list(BACKENDS))
def backend_name(request):
    with backend(request.param):
        yield request.param


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_grad(case, backend_name):
    dtype, device = BACKENDS[backend_name]
    inputs = case.inputs(dtype, device)
    got = grad(lambda *t: (case.fn(*t) * _loss_weights(case.fn(*t))).sum(), argnums=_argnums(case))(*inputs)
    for g, e in zip(got, _plain_grads(case.ref, inputs)):
        torch.testing.assert_close(g, e, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vmap(case, backend_name):
    dtype, device = BACKENDS[backend_name]
    inputs = case.inputs(dtype, device, batch=BATCH)
    in_dims = tuple(None if s else 0 for s in case.shared)
    got = vmap(case.fn, in_dims=in_dims)(*inputs)
    expected = torch.stack([case.ref(*(t if s else t[i] for t, s in zip(inputs, case.shared)))
                            for i in range(BATCH)])
    torch.testing.assert_close(got, expected, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vmap_over_other_dims_and_unbatched_inputs(case, backend_name):
    """The batch dim last, and every input but the first unbatched (a GLU's b, a parameter): the
    rule moves and expands what the kernels need and the output matches the loop over samples."""
    dtype, device = BACKENDS[backend_name]
    per_sample = case.inputs(dtype, device, batch=BATCH)
    x = per_sample[0].movedim(0, -1)  # batch dim last
    rest = [t[0] if not s else t for t, s in zip(per_sample[1:], case.shared[1:])]  # unbatched
    got = vmap(case.fn, in_dims=(x.dim() - 1, *(None,) * len(rest)))(x, *rest)
    expected = torch.stack([case.ref(x[..., i], *rest) for i in range(BATCH)])
    torch.testing.assert_close(got, expected, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_jvp(case, backend_name):
    dtype, device = BACKENDS[backend_name]
    inputs = case.inputs(dtype, device)
    tangents = case.inputs(dtype, device, seed=1)
    y, dy = jvp(case.fn, inputs, tangents)
    jac = _jacobian(case.ref, inputs)
    jac = jac if isinstance(jac, tuple) else (jac,)
    ref_y = case.ref(*inputs)
    expected = sum((j.reshape(ref_y.numel(), -1) @ t.reshape(-1)).reshape(ref_y.shape) for j, t in zip(jac, tangents))
    torch.testing.assert_close(y, ref_y, **tolerance(dtype))
    torch.testing.assert_close(dy, expected, **tolerance(dtype, case))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_jacrev(case, backend_name):
    dtype, device = BACKENDS[backend_name]
    inputs = case.inputs(dtype, device)
    got = jacrev(case.fn, argnums=_argnums(case))(*inputs)
    expected = _jacobian(case.ref, inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_per_sample_gradients(case, backend_name):
    """vmap(grad): each sample's gradient, a shared parameter's included (what Opacus computes)."""
    dtype, device = BACKENDS[backend_name]
    inputs = case.inputs(dtype, device, batch=BATCH)
    in_dims = tuple(None if s else 0 for s in case.shared)

    def loss(*t):
        y = case.fn(*t)
        return (y * _loss_weights(y)).sum()

    got = vmap(grad(loss, argnums=_argnums(case)), in_dims=in_dims)(*inputs)
    for i in range(BATCH):
        expected = _plain_grads(case.ref, [t if s else t[i] for t, s in zip(inputs, case.shared)])
        for g, e in zip(got, expected):
            torch.testing.assert_close(g[i], e, **tolerance(dtype))


LEARNABLE = [c for c in CASES if c.shared[-1]]


@pytest.mark.parametrize("case", LEARNABLE, ids=[c.id for c in LEARNABLE])
def test_vmap_over_per_sample_parameters(case, backend_name):
    """A batched parameter (an ensemble: one PReLU slope per model), with x batched or shared: the
    kernels take one parameter per call, so the PyTorch reference runs under torch.vmap."""
    dtype, device = BACKENDS[backend_name]
    x, _ = case.inputs(dtype, device, batch=BATCH)
    weights = torch.stack([case.inputs(dtype, device, seed=i)[1] for i in range(BATCH)])
    torch.testing.assert_close(vmap(case.fn)(x, weights),
                               torch.stack([case.ref(x[i], weights[i]) for i in range(BATCH)]), **tolerance(dtype))
    torch.testing.assert_close(vmap(case.fn, in_dims=(None, 0))(x[0], weights),
                               torch.stack([case.ref(x[0], weights[i]) for i in range(BATCH)]), **tolerance(dtype))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_vmap_of_a_row_wise_op_on_0d_samples(name, backend_name):
    """Each sample a 0-d tensor (normalised over its one element, dim 0 as torch allows): no batched
    layout has a dim to shift that into, so the reference runs under torch.vmap."""
    dtype, device = BACKENDS[backend_name]
    x = torch.tensor([0.5, -3.0, float("inf")], dtype=dtype, device=device)
    got = vmap(lambda t: getattr(actkit.functional, name)(t, 0))(x)
    expected = torch.stack([actkit.get(name).reference(t, 0) for t in x])
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def test_vmap_runs_the_kernels_on_the_batched_tensor(monkeypatch):
    """Not the reference in a loop: one launch of the Triton forward for the whole batch."""
    from actkit.kernels import elementwise as kernels

    calls = []
    launch = kernels.forward
    monkeypatch.setattr(kernels, "forward", lambda x, *a: calls.append(tuple(x.shape)) or launch(x, *a))
    x = torch.randn(5, 7, device=KERNEL_DEVICE)
    with backend("triton"):
        y = vmap(actkit.functional.mish, in_dims=1)(x)
    assert calls == [(5, 7)]
    torch.testing.assert_close(y, torch.nn.functional.mish(x).t(), **KERNEL_TOLERANCE[torch.float32])


def test_hessian_composes_transforms():
    """jacfwd(jacrev): forward-mode over the backward; torch's Hessian of its own op."""
    x = torch.randn(5, dtype=torch.float64)
    got = torch.func.hessian(lambda t: actkit.functional.gelu(t).sum())(x)
    expected = torch.func.hessian(lambda t: torch.nn.functional.gelu(t).sum())(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


ONE_PER_KIND = [c for c in CASES if c.id in {"mish", "sigmoid", "gelu:saved_bits=2", "prelu:C=3", "softmax:dim=0",
                                               "swiglu:dim=-1", "glu:a,b", "step"}]


@pytest.mark.slow
@pytest.mark.parametrize("glu_path", ["composite", "kernel"])
@pytest.mark.parametrize("case", ONE_PER_KIND, ids=[c.id for c in ONE_PER_KIND])
def test_torch_compile_of_transforms(case, glu_path):
    """torch.compile(vmap(grad(...))) and torch.compile(jacrev(...)) with fullgraph=True: what eager
    torch.func gives (torch's own custom-op autograd has no functorch support, so under a compiled
    transform actkit hands Dynamo its PyTorch reference). Few-bit and step, whose gradients are not
    torch's, are refused there in one line."""
    from actkit.kinds import glu

    inputs = case.inputs(torch.float32, "cpu", batch=BATCH)
    in_dims = tuple(None if s else 0 for s in case.shared)

    def loss(*t):
        y = case.fn(*t)
        return (y * _loss_weights(y)).sum()

    per_sample = vmap(grad(loss, argnums=_argnums(case)), in_dims=in_dims)
    jacobian = jacrev(case.fn, argnums=_argnums(case))
    one = tuple(t if s else t[0] for t, s in zip(inputs, case.shared))
    torch._dynamo.reset()
    glu.set_compile_path(glu_path)
    try:
        with backend("torch"):
            expected = per_sample(*inputs), jacobian(*one)  # also binds the op (see test_checkpoint)
            if not case.differentiable:
                with pytest.raises(Exception, match="cannot run under torch.compile of a torch.func transform"):
                    torch.compile(per_sample, fullgraph=True)(*inputs)
                return
            got = torch.compile(per_sample, fullgraph=True)(*inputs), torch.compile(jacobian, fullgraph=True)(*one)
    finally:
        glu.set_compile_path(None)
        torch._dynamo.reset()
    for g, e in zip((*got[0], *got[1]), (*expected[0], *expected[1])):
        torch.testing.assert_close(g, e, **KERNEL_TOLERANCE[torch.float32])
