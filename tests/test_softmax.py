"""softmax / log_softmax over any dim: values and gradients against torch.softmax /
torch.log_softmax in float64, through the Triton kernels (the interpreter on CPU) and the
PyTorch fallback; long rows, non-finite rows, layouts, errors."""
import pytest
import torch
import triton
import triton.language as tl

import actkit
from actkit.kernels import rowwise as kernels
from refcheck import DTYPES, KERNEL_DEVICE, TORCH_TOLERANCE, assert_within, backend, sum_error_bound

NAMES = ["softmax", "log_softmax"]
BACKENDS = ["triton", "torch"]
TORCH_FN = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}

# The elementwise part of the error: fp32 math inside, one rounding to the storage dtype. What the
# row sums add (the normaliser in forward, sum(dy * y) or sum(dy) in backward) grows with the row's
# length and magnitude and comes on top, from reduction_bounds.
TOLERANCE = {
    torch.float32: dict(rtol=1e-5, atol=2e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-4),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-3),
}


def device_for(be):
    return KERNEL_DEVICE if be == "triton" else "cpu"


def inputs(shape, dtype, device, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale).to(dtype).to(device)
    dy = torch.randn(shape, generator=g).to(dtype).to(device)
    return x, dy


def run(name, x, dy, dim):
    x = x.detach().clone().requires_grad_(True) if x.is_contiguous() else x.detach().requires_grad_(True)
    y = actkit.functional.apply(name, x, dim)
    y.backward(dy)
    return y.detach(), x.grad


def reference(name, x, dy, dim):
    x64 = x.detach().double().requires_grad_(True)
    y = TORCH_FN[name](x64, dim)
    y.backward(dy.double())
    return y.detach(), x64.grad


def grad_from_output(name, y, dy, dim):
    """The backward formula in float64 on the saved (rounded) output."""
    y, dy = y.double(), dy.double()
    if name == "softmax":
        return y * (dy - (dy * y).sum(dim, keepdim=True))
    return dy - y.exp() * dy.sum(dim, keepdim=True)


def reduction_bounds(name, x, dy, dim):
    """Per element, the error that fp32 row sums can add to y and to dx, from float64 math on the inputs.

    Forward normalises by L = sum_j exp(x_j - max): an fp32 sum of positive terms, so its relative error
    is eps_L = sum_error_bound / L, plus u for rounding each exp. softmax y = e / L carries y * eps_L;
    log_softmax y = x - max - log L carries eps_L (absolute). Backward uses that stored y and one more sum:
    softmax dx = y * (dy - S), S = sum(dy * y), errs by y * (|dS| + eps_L * |dy - S|), where dS covers the
    sum, the rounding of each product and the error of y; log_softmax dx = dy - exp(y) * S, S = sum(dy),
    errs by exp(y) * (|dS| + eps_L * |S|). (First order in u; the rest is within the elementwise tolerance.)
    """
    x64, dy64 = x.detach().cpu().double(), dy.detach().cpu().double()
    u = torch.finfo(torch.float32).eps / 2
    e = torch.exp(x64 - x64.amax(dim, keepdim=True))
    norm = e.sum(dim, keepdim=True)
    eps_norm = sum_error_bound(e, dim, keepdim=True) / norm + u
    p = e / norm
    if name == "softmax":
        s = (dy64 * p).sum(dim, keepdim=True)
        ds = sum_error_bound(dy64 * p, dim, keepdim=True) + (eps_norm + u) * (dy64.abs() * p).sum(dim, keepdim=True)
        return p * eps_norm, p * (ds + eps_norm * (dy64 - s).abs())
    s = dy64.sum(dim, keepdim=True)
    return eps_norm.expand_as(p), p * (sum_error_bound(dy64, dim, keepdim=True) + eps_norm * s.abs())


def check(name, x, dy, dim, be):
    with backend(be):
        y, dx = run(name, x, dy, dim)
    y_ref, dx_ref = reference(name, x, dy, dim)
    tol = (TOLERANCE if be == "triton" else TORCH_TOLERANCE)[x.dtype]
    y_sums, dx_sums = reduction_bounds(name, x, dy, dim)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and y.shape == x.shape
    assert_within(y, y_ref, tol["atol"] + tol["rtol"] * y_ref.abs() + y_sums, f"{name} y")
    if x.dtype == torch.float32:
        assert_within(dx, dx_ref, tol["atol"] + tol["rtol"] * dx_ref.abs() + dx_sums, f"{name} dx")
    else:
        # Backward sees y rounded to fp16/bf16 (as torch's does): hold it to the exact formula
        # on that y, and to float64 autograd only within the rounding of y.
        exact = grad_from_output(name, y, dy, dim)
        assert_within(dx, exact, tol["atol"] + tol["rtol"] * exact.abs() + dx_sums, f"{name} dx from its y")
        eps = torch.finfo(x.dtype).eps
        assert_within(dx, dx_ref, 4 * eps * dy.double().abs().amax() + tol["atol"] + dx_sums, f"{name} dx")
    return y, dx


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [0, 1, 2, 3, -1, -3])
def test_every_dim_of_a_4d_tensor(name, dim, dtype, be):
    x, dy = inputs((3, 5, 6, 7), dtype, device_for(be))
    check(name, x, dy, dim, be)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded_grad"])
def test_layouts(name, layout, be):
    x, dy = inputs((2, 6, 5, 4), torch.float32, device_for(be))
    if layout == "channels_last":
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x, dy = x.transpose(1, 3), dy.transpose(1, 3)
    elif layout == "sliced":
        x, dy = x[:, 1:5, :, ::2], dy[:, 1:5, :, ::2]
    else:
        dy = torch.ones(1, 1, 1, 4, device=x.device).expand_as(x)
    for dim in range(4):
        check(name, x, dy, dim, be)
    with backend(be):
        y = actkit.functional.apply(name, x, 1)
    if layout in ("channels_last", "transposed"):
        assert y.stride() == x.stride()  # the reduced dim is read in place, never moved


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_long_rows_beyond_one_block(name, be):
    """Rows of 70 000 (> 64k) elements: the looped online-softmax path."""
    x, dy = inputs((2, 70_000), torch.float32, device_for(be), seed=1)
    assert not kernels.config(70_000, 2)["SINGLE"]
    check(name, x, dy, 1, be)  # the 70k-term row sums are held to their error bound (reduction_bounds)


@pytest.mark.parametrize("name", NAMES)
def test_long_reduced_dim_that_is_not_innermost(name):
    x, dy = inputs((9_000, 3), torch.float32, KERNEL_DEVICE, seed=2, scale=2.0)
    assert not kernels.config(9_000, 3, 3)["SINGLE"]
    check(name, x, dy, 0, "triton")


def test_rows_that_fit_are_normalised_in_one_pass():
    assert kernels.config(8192, 4)["SINGLE"] and kernels.config(1000, 100)["SINGLE"]
    assert kernels.config(1000, 4, inner=49)["SINGLE"]
    assert not kernels.config(8193, 4)["SINGLE"]


def nonfinite_rows(n):
    """Rows with NaN, +inf, -inf, only -inf, and -inf before any finite value (long rows: a
    whole chunk of -inf first, which the online maximum must not turn into NaN)."""
    rows = torch.randn(8, n, generator=torch.Generator().manual_seed(0)) * 3
    rows[0, n // 3] = float("nan")
    rows[1, n // 2] = float("inf")
    rows[2, : n // 2] = float("-inf")
    rows[3, :] = float("-inf")
    rows[4, 1] = float("-inf")
    rows[5, -1] = float("inf")
    rows[5, 0] = float("-inf")
    rows[6, :] = -1e4
    rows[7, n - 1] = 1e4
    return rows


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [7, 20_000], ids=["short", "long"])
def test_nonfinite_rows_match_torch(name, n, be):
    x = nonfinite_rows(n).to(device_for(be))
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)
    with backend(be):
        y, dx = run(name, x, dy, 1)
    xr = x.clone().requires_grad_(True)
    yr = TORCH_FN[name](xr, 1)
    yr.backward(dy)
    # actkit and torch are two fp32 results, each within the rows' sum bounds of exact math (added in
    # other orders, on other CPUs in other ones again), so up to twice the bound apart. Rows with NaN or
    # +inf give NaN bounds: there both must be torch's non-finite values exactly.
    y_sums, dx_sums = reduction_bounds(name, x, dy, 1)
    yr, dxr = yr.detach(), xr.grad
    assert_within(y, yr, 1e-6 + 1e-5 * yr.abs() + 2 * y_sums, f"{name} y")
    assert_within(dx, dxr, 1e-5 + 1e-5 * dxr.abs() + 2 * dx_sums, f"{name} dx")
    # and the same along a dim that is not innermost
    with backend(be):
        yt, _ = run(name, x.t().contiguous(), dy.t().contiguous(), 0)
    assert_within(yt.t(), yr, 1e-6 + 1e-5 * yr.abs() + 2 * y_sums, f"{name} y along dim 0")


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_dy_matches_torch(value, name, be):
    """dy NaN or +-inf in one element of a row: it reaches every element of that row through the row's
    sum (sum(dy * y), sum(dy)) as in torch, also where y underflows to 0 (inf * 0 = NaN); a row whose
    y is 0 at the non-finite dy (x = -inf there) and the rows without one stay as torch has them."""
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, -200.0, 2.0, 3.0], [0.0, float("-inf"), 2.0, 3.0],
                      [0.5, 1.0, -1.0, 3.0]], device=device_for(be))
    dy = torch.full_like(x, 0.5)
    dy[:3, 1] = value
    with backend(be):
        y, dx = run(name, x, dy, 1)
    xr = x.cpu().clone().requires_grad_(True)
    TORCH_FN[name](xr, 1).backward(dy.cpu())
    assert dx[3].isfinite().all()
    torch.testing.assert_close(dx.cpu(), xr.grad, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_gradcheck_float64(name, dim):
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: actkit.functional.apply(name, t, dim), (x,))


@pytest.mark.parametrize("name", NAMES)
def test_fallback_is_torch_exactly(name):
    x, dy = inputs((4, 9, 3), torch.bfloat16, "cpu")
    with backend("torch"):
        y, dx = run(name, x, dy, 1)
    xr = x.clone().requires_grad_(True)
    yr = TORCH_FN[name](xr, 1)
    yr.backward(dy)
    torch.testing.assert_close(y, yr.detach(), rtol=0, atol=0)
    torch.testing.assert_close(dx, xr.grad, rtol=0, atol=0)


@pytest.mark.parametrize("be", BACKENDS)
def test_zero_dim_and_empty(be):
    device = device_for(be)
    with backend(be):
        for name in NAMES:
            s = torch.tensor(3.0, device=device, requires_grad=True)
            out = actkit.functional.apply(name, s, 0)
            out.backward()
            assert out.shape == () and out.item() == (1.0 if name == "softmax" else 0.0) and s.grad.item() == 0.0
            e = torch.empty(0, 5, device=device, requires_grad=True)
            assert actkit.functional.apply(name, e, 1).shape == (0, 5)


def test_modules_and_defaults():
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(actkit.functional.softmax(x), torch.softmax(x, -1))
    torch.testing.assert_close(actkit.nn.Softmax(dim=1)(x), torch.nn.Softmax(dim=1)(x))
    torch.testing.assert_close(actkit.nn.LogSoftmax(0)(x), torch.log_softmax(x, 0))
    torch.testing.assert_close(actkit.functional.log_softmax(x, dim=1, dtype=torch.float64),
                               torch.log_softmax(x, 1, dtype=torch.float64))
    # No dim: torch.nn.Softmax's (deprecated) implicit rule, 0 for 3-d input and 1 for 4-d.
    with pytest.warns(UserWarning):
        expected3 = torch.nn.Softmax()(x)
    torch.testing.assert_close(actkit.nn.Softmax()(x), expected3)
    x4 = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(actkit.nn.Softmax()(x4), torch.softmax(x4, 1))
    assert repr(actkit.nn.Softmax(dim=-1)) == "Softmax(dim=-1)"
    assert isinstance(actkit.nn.Activation("log_softmax", 1), actkit.nn.Activation)
    assert actkit.get("logsoftmax") is actkit.get("log_softmax")


@pytest.mark.parametrize("call, error, match", [
    (lambda: actkit.functional.softmax(torch.randn(2, 3, 4, 5), 4), IndexError,
     r"softmax: dim 4 is out of range for a 4-d tensor; valid dims are -4 to 3"),
    (lambda: actkit.functional.log_softmax(torch.randn(2, 3), dim=-3), IndexError, "valid dims are -2 to 1"),
    (lambda: actkit.nn.Softmax(dim=2)(torch.randn(4, 5)), IndexError, "dim 2 is out of range for a 2-d"),
    (lambda: actkit.functional.softmax(torch.randn(3), 1.0), TypeError, "dim must be an integer"),
    (lambda: actkit.nn.Softmax(dim="last"), TypeError, "dim must be an integer"),
    (lambda: actkit.functional.softmax(torch.ones(3, dtype=torch.int64)), TypeError, "floating-point"),
    (lambda: actkit.functional.softmax(torch.ones(3), 0, axis=1), TypeError, "no parameter 'axis'"),
])
def test_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_saves_only_the_output():
    x = torch.randn(4, 6, device=KERNEL_DEVICE, requires_grad=True)
    packed = []
    with backend("triton"), torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = actkit.functional.softmax(x, 1)
    assert [t.data_ptr() for t in packed] == [y.data_ptr()]


@pytest.mark.parametrize("name", NAMES)
def test_size_one_dims_and_odd_strides(name):
    """Size-1 dims (whose strides are arbitrary) and a dim of size 1 (every element its own row)."""
    x, dy = inputs((2, 1, 3, 1), torch.float32, KERNEL_DEVICE)
    odd = torch.randn(3, 2, device=KERNEL_DEVICE).t().unsqueeze(1)  # (2, 1, 3), dense but transposed
    for t, g in ((x, dy), (x.to(memory_format=torch.channels_last), dy), (odd, torch.ones_like(odd))):
        for dim in range(t.dim()):
            check(name, t, g, dim, "triton")


def ulps_apart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in units in the last place of their 16-bit dtype: the distance of their bit patterns
    mapped to integers in the order of the values (-0 and +0 the same)."""
    def ordered(t):
        bits = t.cpu().view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -(bits & 0x7FFF), bits)
    return (ordered(a) - ordered(b)).abs()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(3, 20_000), (2, 1500, 8)], ids=["innermost", "strided"])
def test_16_bit_rows_of_two_sweeps(name, dtype, shape):
    """fp16/bf16 rows too long for one tile, over the innermost dim and another: values and gradients
    as everywhere. softmax's second sweep rounds to the dtype in integers (fp16 subnormals too): y is
    within one ulp of the float64 result rounded to the dtype everywhere, and equal to it on at least
    99% of the elements (a mismatch needs the exact value within the fp32 result's error, a few
    2^-24 relative, of a rounding boundary: about 2^-9 of the time for fp16's 2^-11 half-ulp)."""
    x, dy = inputs(shape, dtype, KERNEL_DEVICE, seed=4)
    assert not kernels.config(shape[1], x.numel() // shape[1], x.stride(1), x.element_size())["SINGLE"]
    y, _ = check(name, x, dy, 1, "triton")
    if name == "softmax":
        exact = torch.softmax(x.double(), 1).to(dtype)
        apart = ulps_apart(y, exact)
        assert apart.max().item() <= 1
        assert (apart == 0).double().mean().item() >= 0.99
        if dtype == torch.float16:
            assert ((exact > 0) & (exact < 2 ** -14)).sum().item() > 1000  # subnormal results were made


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_nonfinite_rows_of_two_sweeps_in_16_bit(name, dtype):
    """NaN, +inf and -inf rows through the 16-bit two-sweep path (whose integer rounding must keep a
    NaN a NaN), along the innermost dim and another, against float64 on the same inputs."""
    x = nonfinite_rows(20_000).to(dtype).to(KERNEL_DEVICE)
    y_sums, _ = reduction_bounds(name, x, x, 1)
    expected = TORCH_FN[name](x.double(), 1)
    bound = TOLERANCE[dtype]["atol"] + TOLERANCE[dtype]["rtol"] * expected.abs() + y_sums
    with backend("triton"):
        along_rows = actkit.functional.apply(name, x, 1)
        along_dim_0 = actkit.functional.apply(name, x.t().contiguous(), 0).t()
    for y in (along_rows, along_dim_0):
        assert torch.equal(y.isnan().cpu(), expected.isnan())
        assert_within(y, expected, bound, f"{name} {dtype} y")


@pytest.mark.parametrize("one_row", [True, False], ids=["G=1", "G>1"])
@pytest.mark.parametrize("name", NAMES)
def test_wide_offsets_and_many_o_blocks(name, one_row, monkeypatch):
    """Paths that real sizes reach, on small tensors: offsets in 64 bits (WIDE: more than 2^31
    elements), and more blocks of o than a grid axis takes (spread over axes 1 and 2; the programs
    past the last read the last row and store nothing), here with the axis limit lowered to 3, with
    one row (value of o) per program and with the configured several."""
    real = kernels.config
    forced = {"WIDE": True, "G": 1} if one_row else {"WIDE": True}
    monkeypatch.setattr(kernels, "config", lambda *args: {**real(*args), **forced})
    monkeypatch.setattr(kernels, "GRID_YZ", 3)
    for shape in ((7, 50, 6), (2, 3000, 8), (10, 3)):
        x, dy = inputs(shape, torch.float32, KERNEL_DEVICE)
        check(name, x, dy, 0 if len(shape) == 2 else 1, "triton")
    if not one_row:
        assert real(50, 7 * 6, 6)["G"] > 1


@triton.jit
def _probability_of(x_ptr, m_ptr, s_ptr, y_ptr, n, BLOCK: tl.constexpr):
    at = tl.arange(0, BLOCK)
    ok = at < n
    x, m, s = (tl.load(p + at, mask=ok, other=1.0) for p in (x_ptr, m_ptr, s_ptr))
    tl.store(y_ptr + at, kernels._probability(x, m, s, y_ptr.dtype.element_ty), mask=ok)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_integer_rounding_keeps_every_nan_a_nan(dtype):
    """The second sweep's integer rounding adds half an ulp to the bits of exp(x - m) / s: for a NaN
    like the GPU's 0x7fffffff (or its negative) that would carry into the sign and make a number.
    A row whose sum s is NaN gets no half ulp; every NaN pattern stays NaN, finite rows round."""
    nan_bits = [0x7FFFFFFF, 0xFFFFFFFF - 2 ** 32, 0x7FC00000, 0xFFC00000 - 2 ** 32, 0x7F800001]
    s = torch.cat([torch.tensor(nan_bits, dtype=torch.int32).view(torch.float32), torch.tensor([1.0, 3.0, 7.5])])
    x = torch.tensor([0.0] * len(nan_bits) + [-1.0, 2.0, -20.0])
    m = torch.tensor([0.0] * len(nan_bits) + [0.5, 2.0, 0.0])
    y = torch.empty(len(s), dtype=dtype, device=KERNEL_DEVICE)
    _probability_of[(1,)](x.to(y.device), m.to(y.device), s.to(y.device), y, len(s), BLOCK=16)
    assert y[:len(nan_bits)].isnan().all(), y
    exact = (torch.exp(x.double() - m.double()) / s.double())[len(nan_bits):].to(dtype)
    assert ulps_apart(y[len(nan_bits):], exact).max().item() <= 1
