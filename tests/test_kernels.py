"""Every elementwise activation, through the Triton kernels and through the CPU fallback,
forward and backward, against the PyTorch reference and float64 math.

The Triton backend runs compiled on a GPU and through Triton's interpreter on CPU
(TRITON_INTERPRET=1, set by the root conftest.py). The torch backend is the fallback CPU
users get.
"""
import math

import pytest
import torch

import actkit
from refcheck import (DTYPES, EXACT, KERNEL_DEVICE, KERNEL_TOLERANCE, PARAM_CASES, SPECIAL_VALUES, TORCH_TOLERANCE,
                     assert_matches, backend, elementwise_specs, run_actkit, run_reference)

SPECS = elementwise_specs()
IDS = [s.name for s in SPECS]
BACKENDS = ["triton", "torch"]


def _policies(spec, params) -> list[str]:
    """The default save policy, and "y" where it keeps y instead (its f'(y) kernel and backward op)."""
    return ["torch"] + (["y"] if spec.saves_under("y", params) != spec.saves_under("torch", params) else [])


# (spec, save policy): every spec by default, and the y-form of those that save x by default but can save y.
POLICY_CASES = [(s, p) for s in SPECS for p in _policies(s, s.defaults)]
POLICY_IDS = [s.name + ("" if p == "torch" else "-saves=y") for s, p in POLICY_CASES]


def _device(backend_name):
    return KERNEL_DEVICE if backend_name == "triton" else "cpu"


def check(spec, x, params, backend_name, dy=None, saves="torch"):
    """Run actkit on x (any shape/layout) under a save policy and compare forward and backward with the
    references."""
    if dy is None:
        dy = torch.linspace(-1.5, 1.5, x.numel(), dtype=torch.float64).reshape(x.shape).to(x.dtype).to(x.device)
    with backend(backend_name):
        assert actkit.backend_for(x) in (("triton", "triton-interpreter") if backend_name == "triton" else ("torch",))
        y, dx = run_actkit(spec, x, dy, params, saves)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    label = f"{spec.name}{params or ''} saves={saves} {x.dtype} {tuple(x.shape)} [{backend_name}]"
    y_same, dx_same = run_reference(spec, x, dy, params, y_saved=y, saves=saves)
    y_64, dx_64 = run_reference(spec, x, dy, params, dtype=torch.float64, y_saved=y, saves=saves)
    tolerance = KERNEL_TOLERANCE if backend_name == "triton" else TORCH_TOLERANCE
    assert_matches(y, y_same, y_64, x, label + " forward", tolerance)
    if backend_name == "torch":  # the fallback is torch itself, to the bit
        torch.testing.assert_close(y, y_same, **EXACT, equal_nan=True)
    if spec.differentiable:
        assert dx.shape == x.shape and dx.dtype == x.dtype
        assert_matches(dx, dx_same, dx_64, x, label + " backward", tolerance)
        if backend_name == "torch":
            torch.testing.assert_close(dx, dx_same, **EXACT, equal_nan=True)
    else:
        assert dx is None or torch.count_nonzero(dx) == 0
    return y, dx


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("spec, saves", POLICY_CASES, ids=POLICY_IDS)
def test_special_values(spec, saves, dtype, backend_name):
    """Branch points (0, +-3, +-6, the softplus threshold 20), +-20, +-88, +-1e4, +-inf and NaN."""
    x = torch.tensor(SPECIAL_VALUES, dtype=dtype, device=_device(backend_name))
    check(spec, x, spec.defaults, backend_name, saves=saves)


DIFFERENTIABLE = [s for s in SPECS if s.differentiable]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("spec", DIFFERENTIABLE, ids=[s.name for s in DIFFERENTIABLE])
def test_non_finite_dy(spec, dtype, backend_name):
    """dy = NaN, +inf and -inf at every special x. Where ATen's backward selects 0 (the ReLU family
    beyond its clamps: ``x <= 0 ? 0 : dy``) dx is 0 whatever dy is; where it multiplies, dy * f'(x),
    which is NaN where f'(x) = 0 (tanh at x = 20 in fp32, as torch's tanh_backward).

    Composite references (gelu_sigmoid, lisht, tanhshrink: torch has no op, only autograd of a
    formula) are the one documented exception on the Triton path: autograd of ``x * sigmoid(1.702 x)``
    meets dy = inf as ``inf - inf`` or ``inf * 0`` in its intermediate terms and gives NaN where f'(x)
    is finite and non-zero (F.silu's own backward op gives +-inf there; x * sigmoid(x) gives NaN). The
    kernels give dy * f'(x), as torch's native ops do; the PyTorch fallback is torch's autograd itself.
    Each dy value is its own call, so that the NaN x (last) is in torch's scalar CPU loop, whose
    hardtanh gradient at NaN is the CUDA kernel's (its vectorised loop gives 0 there)."""
    x = torch.tensor(SPECIAL_VALUES, dtype=dtype, device=_device(backend_name))
    for value in (float("nan"), float("inf"), float("-inf")):
        dy = torch.full_like(x, value)
        if spec.native or backend_name == "torch" or spec.saves_under("torch", spec.defaults) == "y":
            check(spec, x, spec.defaults, backend_name, dy=dy)
            continue
        with backend(backend_name):
            _, dx = run_actkit(spec, x, dy, spec.defaults)
        ones = torch.ones_like(x)
        fprime, fprime_64 = (run_reference(spec, x, ones, spec.defaults, dtype=t)[1] for t in (dtype, torch.float64))
        expected, expected_64 = dy.cpu() * fprime, dy.cpu().double() * fprime_64
        assert_matches(dx, expected, expected_64, x, f"{spec.name} {dtype} dy={value} [triton]")


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name, params", PARAM_CASES + [("hardtanh", dict(min_val=0.5, max_val=0.5))],
                         ids=[f"{n}-{'-'.join(f'{k}={v:g}' for k, v in p.items())}" for n, p in PARAM_CASES]
                         + ["hardtanh-min_val=max_val"])
def test_non_finite_dy_with_parameters(name, params, backend_name):
    """As above with non-default parameters (those that save x instead of y among them) and hardtanh
    with min_val == max_val, which torch accepts: a constant, whose gradient is 0 everywhere (selected)."""
    spec = actkit.get(name)
    x = torch.tensor([params.get("max_val", 0.0), params.get("min_val", 0.0), -0.7] + SPECIAL_VALUES,
                     device=_device(backend_name))  # NaN last: in torch's scalar loop (see above)
    for value in (float("nan"), float("inf"), float("-inf")):
        check(spec, x, params, backend_name, dy=torch.full_like(x, value))


SOFTPLUS_AT_THRESHOLD = [(1.0, 20.0), (2.0, 30.0), (0.5, 15.0), (4.0, 20.0), (1.0, 15.0), (1.0, 1.0), (2.0, 5.0)]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("beta, threshold", SOFTPLUS_AT_THRESHOLD)
def test_softplus_at_exactly_its_threshold(beta, threshold, backend_name):
    """beta x == threshold is on softplus's log1p side (torch: linear where beta x > threshold), so
    dx = dy sigmoid(threshold) there, and dy just above it. From a threshold of 15 softplus keeps y,
    whose beta y passes the threshold by exp(-threshold) at that point: below the rounding of fp32,
    fp16 and bf16 (y rounds to x), not of float64, where it keeps x. Every dtype, both routes (eager
    and the custom op under torch.compile) for float64."""
    spec, params = actkit.get("softplus"), dict(beta=beta, threshold=threshold)
    at = threshold / beta
    x = torch.tensor([at, math.nextafter(at, math.inf), math.nextafter(at, -math.inf), 0.0, -at], dtype=torch.float64)
    for dtype in DTYPES.values():
        check(spec, x.to(dtype).to(_device(backend_name)), params, backend_name, dy=torch.ones(5, dtype=dtype))
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.nn.functional.softplus(xr, beta, threshold).sum(), xr)
    assert expected[0] < 1 and expected[1] == 1  # what is being checked: the two sides of the threshold
    torch._dynamo.reset()  # one lambda per parametrisation: not recompiles of one code object
    softplus = torch.compile(lambda t: actkit.functional.softplus(t, beta, threshold), backend="aot_eager",
                             fullgraph=True)
    for route in (lambda t: actkit.functional.softplus(t, beta, threshold), softplus):
        with backend(backend_name):
            xa = x.clone().requires_grad_(True)
            (dx,) = torch.autograd.grad(route(xa).sum(), xa)
        torch.testing.assert_close(dx, expected, rtol=0, atol=0)


SOFTPLUS_FORMS = [(1.0, 20.0), (3.0, 15.0), (0.5, 40.0), (2.0 ** -12, 20.0), (2.0, 14.5), (1.0, 1.0), (0.5, -2.0),
                  (-1.5, 20.0), (-0.5, 1.0), (-3.0, -4.0)]


@pytest.mark.parametrize("beta, threshold", SOFTPLUS_FORMS)
def test_softplus_forms_take_the_linear_branch_exactly_where_torch_does(beta, threshold):
    """softplus's elementwise forward: no test where the threshold changes no result (beta > 0,
    threshold >= 15: x + log1p(e^(-beta x)) / beta rounds to x wherever beta x passes it), else x
    against a boundary computed once (``linear_boundary``) in place of torch's beta x > threshold.
    Past the threshold (torch's fp32 test) every form gives x to the bit, and everywhere it matches
    torch, in every dtype: random values around the boundary and its neighbours, large, special."""
    from actkit.kernels import activations

    spec, params = actkit.get("softplus"), dict(beta=beta, threshold=threshold)
    fn, _, _ = spec.triton_forward(beta, threshold)
    plain = beta > 0 and threshold >= 15
    assert fn.fn.__name__ == ("softplus_plain_fwd" if plain else "softplus_above_fwd" if beta > 0
                              else "softplus_below_fwd")
    g = torch.Generator().manual_seed(1)
    at = threshold / beta
    near = [math.nextafter(at, math.inf), at, math.nextafter(at, -math.inf)]
    if not plain:
        b = activations.linear_boundary(beta, threshold)
        near += [b, math.nextafter(b, math.inf), math.nextafter(b, -math.inf)]
    x = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64) * 3 * abs(at) + at,
                   torch.tensor(near + [2 * at, -at, 1e30, -1e30] + SPECIAL_VALUES, dtype=torch.float64)])
    for dtype in DTYPES.values():
        xd = x.to(dtype).to(KERNEL_DEVICE)
        y, _ = check(spec, xd, params, "triton")
        linear = (xd.float() * beta > threshold).cpu()
        assert linear.any() and (~linear).any()
        assert torch.equal(y.cpu()[linear], xd.cpu()[linear])


@pytest.mark.parametrize("beta", [1.0, 2.5e-3, 7.0, 1e30, 1e-40, -1.0, -3e-3, -1e30])
@pytest.mark.parametrize("threshold", [20.0, 5.0, 0.0, -3.5, 1e-30, 3e38, -3e38])
def test_softplus_linear_boundary_is_torch_fp32_test(beta, threshold):
    """``linear_boundary``: torch's fp32 test ``x * beta > threshold`` is ``x > boundary`` for
    beta > 0 and its negation for beta < 0, at the boundary, its neighbours and a spread of values
    (torch's fp32 product is the reference), also where the product over- or underflows."""
    from actkit.kernels import activations

    b = activations.linear_boundary(beta, threshold)
    g = torch.Generator().manual_seed(2)
    around = [b]
    for _ in range(3):
        around += [math.nextafter(around[-1], math.inf)]
    down = b
    for _ in range(3):
        down = math.nextafter(down, -math.inf)
        around.append(down)
    spread = torch.randn(4000, generator=g) * torch.exp2(torch.randint(-130, 128, (4000,), generator=g).float())
    x = torch.cat([torch.tensor(around, dtype=torch.float32), spread, torch.tensor([math.inf, -math.inf, 0.0])])
    x = x[torch.isfinite(x) | torch.isinf(x)]
    test = x * torch.tensor(beta, dtype=torch.float32) > torch.tensor(threshold, dtype=torch.float32)
    assert torch.equal(test, x > b if beta > 0 else ~(x > b))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("spec, saves", POLICY_CASES, ids=POLICY_IDS)
def test_random_values(spec, saves, dtype, backend_name):
    """A spread of ordinary values, across several kernel blocks."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5000, generator=g) * 4).to(dtype).to(_device(backend_name))
    check(spec, x, spec.defaults, backend_name, saves=saves)


SHAPES = {
    "0-d": lambda: torch.randn(()),
    "empty": lambda: torch.randn(0),
    "empty-4d": lambda: torch.randn(2, 0, 3, 3),
    "one": lambda: torch.randn(1),
    "odd-2049": lambda: torch.randn(2049),
    "odd-3d": lambda: torch.randn(7, 11, 13),
    "cnn-4d": lambda: torch.randn(2, 3, 17, 19),
    "transposed": lambda: torch.randn(33, 65).t(),
    "sliced": lambda: torch.randn(40, 50)[3:, ::3],
    "expanded": lambda: torch.randn(1, 37).expand(5, 37),
    "channels_last": lambda: torch.randn(2, 5, 9, 7).to(memory_format=torch.channels_last),
    "permuted-4d": lambda: torch.randn(3, 4, 5, 6).permute(0, 2, 3, 1),
}


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_shapes_and_layouts(spec, shape, backend_name):
    x = SHAPES[shape]().mul(3).to(_device(backend_name))
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)
    check(spec, x, spec.defaults, backend_name, dy=dy)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_dense_layouts_keep_their_memory_format(spec, dtype):
    """channels_last in, channels_last out, with no copy of the input on the Triton path."""
    x = torch.randn(2, 6, 5, 4, dtype=dtype, device=KERNEL_DEVICE).to(memory_format=torch.channels_last)
    with backend("triton"):
        y = actkit.functional.apply(spec.name, x)
    assert y.stride() == x.stride()
    assert y.is_contiguous(memory_format=torch.channels_last)


PARAM_POLICY_CASES = [(n, p, saves) for n, p in PARAM_CASES
                      for saves in _policies(actkit.get(n), {**actkit.get(n).defaults, **p})]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name, params, saves", PARAM_POLICY_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v:g}' for k, v in p.items())}" + ("" if s == "torch" else "-saves=y")
                              for n, p, s in PARAM_POLICY_CASES])
def test_parameters_reach_the_kernels(name, params, saves, dtype, backend_name):
    """Non-default parameters, including those that make an activation save x instead of y."""
    spec = actkit.get(name)
    values = SPECIAL_VALUES + [params.get("max_val", 0.0), params.get("min_val", 0.0), 2.5, 2.6, -0.7]
    x = torch.tensor(values, dtype=dtype, device=_device(backend_name))
    check(spec, x, params, backend_name, saves=saves)


@pytest.mark.filterwarnings("ignore:Input #0 requires gradient and is not a double")  # fp32 on purpose
@pytest.mark.parametrize("spec", [s for s in SPECS if s.differentiable], ids=[s.name for s in SPECS if s.differentiable])
def test_triton_gradient_matches_finite_differences(spec):
    """The kernels' derivative against numerical differentiation of the kernels' own forward
    (fp32, so a loose tolerance), away from kinks: a check independent of torch."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, generator=g) * 7 - 3.5
    x = x[(x - torch.tensor([[0.0], [3.0], [-3.0], [6.0], [1.0], [-1.0]])).abs().min(0).values > 0.05]
    x = x.to(KERNEL_DEVICE).requires_grad_(True)
    with backend("triton"):
        assert torch.autograd.gradcheck(lambda t: actkit.functional.apply(spec.name, t), (x,), eps=1e-3,
                                        atol=2e-3, rtol=1e-2, fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="needs a CUDA GPU with 40 GB: 2^31 + 4099 fp16 elements for x, y, dy and dx")
def test_int64_offsets_past_two_to_the_31_elements():
    """Elements beyond index 2^31 are computed (a 32-bit offset would wrap and miss or corrupt them)."""
    n, tail = 2**31 + 4099, 4099
    x = torch.full((n,), -1.0, dtype=torch.float16, device="cuda")
    x[-tail:] = torch.linspace(-2, 2, tail, device="cuda")
    with backend("triton"):
        x.requires_grad_(True)
        y = actkit.functional.leaky_relu(x, 0.5)
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    expected_tail = torch.nn.functional.leaky_relu(x.detach()[-tail:], 0.5)
    torch.testing.assert_close(y[-tail:], expected_tail, rtol=0, atol=0)
    assert torch.all(y[: n - tail] == -0.5)
    torch.testing.assert_close(dx[-tail:], torch.where(x.detach()[-tail:] > 0, 1.0, 0.5).half(), rtol=0, atol=0)
    assert torch.all(dx[: n - tail] == 0.5)
