"""Few-bit backward (actkit.kinds.fewbit): the quantised derivative, the packed codes, and autograd through
both backends, against independent references (numerical integration, torch.bucketize of x)."""
import copy
import pickle

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import actkit
from actkit.kinds import fewbit
from refcheck import DTYPES, KERNEL_DEVICE, SPECIAL_VALUES, backend, elementwise_specs

DIFFERENTIABLE = [s for s in elementwise_specs() if s.differentiable]
SMOOTH_X = [s for s in DIFFERENTIABLE if s.saves == "x"]  # where few-bit saves memory: f' needs x


def _expected_grad(name, params, bits, x, dy):
    """dy times the level of x's interval, found with torch.bucketize on fp32 x (x > b goes right)."""
    q = fewbit.quantizer(actkit.get(name), {**actkit.get(name).defaults, **params}, bits)
    breakpoints, levels = q.tables("cpu")
    codes = torch.bucketize(x.detach().cpu().float().contiguous(), breakpoints)
    return (dy.detach().cpu().float() * levels[codes]).to(dy.dtype)


def _mse(spec, q) -> float:
    """E[(f'(x) - q(x))^2] for x ~ N(0, 1) by adaptive quadrature on each interval, in float64:
    independent of the grid that chose the breakpoints."""
    def fprime(v):
        t = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        return torch.autograd.grad(spec.reference(t, **spec.defaults).sum(), t)[0].item()

    edges = [-np.inf, *q.breakpoints, np.inf]
    total = 0.0
    for lo, hi, level in zip(edges[:-1], edges[1:], q.levels):
        value, _ = integrate.quad(lambda v: (fprime(v) - level) ** 2 * stats.norm.pdf(v), max(lo, -12), min(hi, 12),
                                  limit=200, points=[0.0] if max(lo, -12) < 0 < min(hi, 12) else None)
        total += value
    return total


@pytest.mark.parametrize("name", ["gelu", "silu", "mish", "hardswish"])
def test_quantizer_error_matches_quadrature_and_falls_with_bits(name):
    spec = actkit.get(name)
    errors = []
    for bits in (1, 2, 3, 4):
        q = fewbit.quantizer(spec, spec.defaults, bits)
        assert len(q.breakpoints) == 2 ** bits - 1 and len(q.levels) == 2 ** bits
        assert all(a < b for a, b in zip(q.breakpoints, q.breakpoints[1:]))
        # The grid (1024 cells over [-8, 8]) places breakpoints to 1/64: its error estimate and the
        # exact integral for those breakpoints agree to a few percent.
        assert q.rms_error == pytest.approx(np.sqrt(_mse(spec, q)), rel=0.05)
        errors.append(q.rms_error)
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 4


@pytest.mark.parametrize("name", ["gelu", "silu"])
@pytest.mark.parametrize("bits", [7, 8])
def test_quantizer_error_at_7_and_8_bits_matches_quadrature(name, bits):
    """At 7 and 8 bits most intervals are one or two cells of the grid that chose them; the error
    reported must still be the quantiser's own (quadrature on each interval), not the grid's, which
    sees one value of f' per cell and missed nine tenths of it at 8 bits."""
    spec = actkit.get(name)
    q = fewbit.quantizer(spec, spec.defaults, bits)
    assert q.rms_error == pytest.approx(np.sqrt(_mse(spec, q)), rel=0.02)


def test_quantizer_breakpoints_are_locally_optimal():
    """Moving any breakpoint of GELU's 2-bit quantiser (with levels re-fitted) does not lower the error."""
    spec = actkit.get("gelu")
    q = fewbit.quantizer(spec, {}, 2)
    base = _mse(spec, q)
    for i in range(len(q.breakpoints)):
        for delta in (-0.05, 0.05):
            moved = list(q.breakpoints)
            moved[i] += delta
            edges = [-np.inf, *moved, np.inf]
            levels = []
            for lo, hi in zip(edges[:-1], edges[1:]):  # the best level of an interval is f''s mean on it
                x = torch.linspace(max(lo, -8), min(hi, 8), 4001, dtype=torch.float64, requires_grad=True)
                d = torch.autograd.grad(spec.reference(x).sum(), x)[0].numpy()
                w = stats.norm.pdf(x.detach().numpy())
                levels.append(float((d * w).sum() / w.sum()))
            other = fewbit.Quantizer(2, tuple(moved), tuple(levels), 0.0)
            assert _mse(spec, other) >= base * (1 - 1e-3)


@pytest.mark.parametrize("name, bits, breakpoints", [("relu", 1, [0.0]), ("leaky_relu", 1, [0.0]),
                                                      ("hardsigmoid", 2, [-3.0, 3.0])])
def test_piecewise_constant_derivatives_are_exact(name, bits, breakpoints):
    """One bit is exact for ReLU and Leaky ReLU; hardsigmoid's three pieces fit in two bits."""
    spec = actkit.get(name)
    q = fewbit.quantizer(spec, spec.defaults, bits)
    assert q.rms_error < 1e-12
    for b in breakpoints:
        assert min(abs(v - b) for v in q.breakpoints) < 1e-12
    x = torch.tensor([-5.0, -3.0, -1e-3, 0.0, 1e-3, 2.9, 3.0, 7.0], requires_grad=True)
    for backend_name in ("torch", "triton"):
        xd = x.detach().to(KERNEL_DEVICE if backend_name == "triton" else "cpu").requires_grad_(True)
        with backend(backend_name):
            dx = torch.autograd.grad(actkit.functional.apply(name, xd, saved_bits=bits).sum(), xd)[0]
        exact = torch.autograd.grad(spec.reference(x).sum(), x)[0]
        torch.testing.assert_close(dx.cpu(), exact, rtol=0, atol=0)


def _torch_grad_one_at_a_time(spec, params, x, dy) -> torch.Tensor:
    """torch's gradient, one element per call: its scalar CPU loop, which computes what its CUDA kernels
    do (the vectorised loop gives hardtanh's NaN x a gradient of 0, the scalar one dy)."""
    out = []
    for xi, dyi in zip(x, dy):
        t = xi.reshape(1).clone().requires_grad_(True)
        out.append(torch.autograd.grad(spec.reference(t, **params), t, dyi.reshape(1))[0])
    return torch.cat(out)


EXACT_CASES = [("relu", {}, 1), ("relu", {}, 3), ("leaky_relu", {}, 1), ("leaky_relu", {"negative_slope": -0.2}, 1),
               ("leaky_relu", {"negative_slope": 0.0}, 2), ("hardtanh", {}, 2), ("hardtanh", {}, 4), ("relu6", {}, 2),
               ("hardsigmoid", {}, 2), ("hardtanh", {"min_val": -2.0, "max_val": 0.5}, 2)]


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("name, params, bits", EXACT_CASES,
                         ids=[f"{n}{''.join(f'-{k}={v:g}' for k, v in p.items())}-{b}bit" for n, p, b in EXACT_CASES])
def test_exact_levels_keep_torchs_nan_and_inf_behaviour(name, params, bits, backend_name):
    """Where the quantised f' is f' itself (piecewise-constant activations with enough bits), the few-bit
    gradient is torch's at every special x for dy = 1, NaN, +-inf: 0 where torch's backward selects 0
    (ReLU's x <= 0) whatever dy is, and NaN x in the interval torch's f'(NaN) belongs to (Leaky ReLU's
    negative slope, hardtanh's pass-through). leaky_relu with slope 0 multiplies (dy * 0 = NaN), as torch."""
    spec = actkit.get(name)
    q = fewbit.quantizer(spec, {**spec.defaults, **params}, bits)
    assert q.rms_error < 1e-12
    x = torch.tensor(SPECIAL_VALUES)
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    for value in (1.0, float("nan"), float("inf"), float("-inf")):
        dy = torch.full_like(x, value)
        xd = x.to(device).requires_grad_(True)
        with backend(backend_name):
            dx = torch.autograd.grad(actkit.functional.apply(name, xd, saved_bits=bits, **params), xd,
                                     dy.to(device))[0]
        torch.testing.assert_close(dx.cpu(), _torch_grad_one_at_a_time(spec, params, x, dy), rtol=0, atol=0,
                                   equal_nan=True, msg=lambda m: f"{name} {params} {bits} bits, dy = {value}: {m}")


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("name, bits", [("gelu", 2), ("silu", 3), ("hardswish", 4), ("mish", 8), ("tanh", 1)])
def test_non_finite_dy_is_dy_times_the_level(name, bits, backend_name):
    """Approximate levels (a mean of f' over the interval) multiply: dx = dy * level for dy = NaN, +-inf
    at every special x, except where the level is an exact 0 of f' that torch's backward selects
    (hardswish's x <= -3), where dx is 0."""
    spec = actkit.get(name)
    q = fewbit.quantizer(spec, spec.defaults, bits)
    x = torch.tensor(SPECIAL_VALUES)
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    for value in (float("nan"), float("inf"), float("-inf")):
        dy = torch.full_like(x, value)
        xd = x.to(device).requires_grad_(True)
        with backend(backend_name):
            dx = torch.autograd.grad(actkit.functional.apply(name, xd, saved_bits=bits), xd, dy.to(device))[0]
        breakpoints, _ = q.tables("cpu")
        levels = torch.tensor(q.levels, dtype=torch.float32)[torch.bucketize(x, breakpoints)]
        torch_selects = _torch_grad_one_at_a_time(spec, {}, x, torch.full_like(x, float("nan"))) == 0
        expected = torch.where((levels == 0) & torch_selects, 0.0, dy * levels)
        torch.testing.assert_close(dx.cpu(), expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 31, 33, 1000])
def test_codes_pack_and_unpack(bits, n):
    q = fewbit.quantizer(actkit.get("gelu"), {}, bits)
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 2
    words = fewbit.pack_codes(x, q)
    assert words.dtype == torch.int32 and words.numel() == -(-n // fewbit.codes_per_word(bits))
    _, levels = q.tables("cpu")
    expected = levels[torch.bucketize(x, q.tables("cpu")[0])]
    torch.testing.assert_close(fewbit.unpack_derivative(words, n, q), expected, rtol=0, atol=0)


LAYOUTS = {
    "contiguous": lambda: torch.randn(3, 50),
    "channels_last": lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    "transposed": lambda: torch.randn(9, 7).t(),
    "sliced": lambda: torch.randn(40, 50)[3:, ::3],
    "empty": lambda: torch.randn(0, 3),
}


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("spec", SMOOTH_X, ids=[s.name for s in SMOOTH_X])
def test_backward_is_dy_times_the_level_of_x(spec, layout, dtype, backend_name):
    bits = 1 + SMOOTH_X.index(spec) % 8  # every bit width across the registry
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x = (LAYOUTS[layout]() * 3).to(dtype).to(device).requires_grad_(True)
    dy = torch.randn_like(x)
    with backend(backend_name):
        y = actkit.functional.apply(spec.name, x, saved_bits=bits)
        exact_y = actkit.functional.apply(spec.name, x)
        dx = torch.autograd.grad(y, x, dy)[0]
    torch.testing.assert_close(y, exact_y, rtol=0, atol=0)  # the forward is the activation itself
    assert dx.shape == x.shape and dx.dtype == dtype
    tol = {torch.float32: 0, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]  # one rounding of dy * level
    torch.testing.assert_close(dx.cpu(), _expected_grad(spec.name, {}, bits, x, dy), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_saves_only_the_packed_codes(bits, backend_name):
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x = torch.randn(4, 1000, device=device, requires_grad=True)
    packed = []
    with backend(backend_name), torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t,
                                                                         lambda t: t):
        actkit.nn.GELU(saved_bits=bits)(x)
    assert len(packed) == 1 and packed[0].dtype == torch.int32
    assert packed[0].untyped_storage().nbytes() == 4 * -(-x.numel() // fewbit.codes_per_word(bits))
    assert fewbit.saved_bytes_per_element(bits) == pytest.approx(packed[0].numel() * 4 / x.numel(), rel=0.01)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
def test_custom_op_route_and_torch_compile_match_eager(backend_name):
    import torch._functorch.config as functorch_config

    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), actkit.nn.SiLU(saved_bits=3), torch.nn.Linear(16, 4)).to(device)
    x = torch.randn(5, 8, device=device, requires_grad=True)
    with backend(backend_name):
        y = net(x)
        grads = torch.autograd.grad(y.sum(), [x, *net.parameters()])
        torch._dynamo.reset()
        patch = functorch_config.patch(enable_autograd_cache=False) if hasattr(
            functorch_config, "enable_autograd_cache") else torch._dynamo.config.patch()
        with patch:
            compiled = torch.compile(net, fullgraph=True)
            y_c = compiled(x)
            grads_c = torch.autograd.grad(y_c.sum(), [x, *net.parameters()])
    torch.testing.assert_close(y_c, y, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bad_saved_bits_are_one_clear_error():
    x = torch.randn(4)
    actkit.functional.gelu(x, saved_bits=1)  # cached: True == 1 must not find it
    for bad in (0.5, 9, -1, "2", True):
        with pytest.raises((ValueError, TypeError), match="saved_bits must be an integer from 1 to 8"):
            actkit.functional.gelu(x, saved_bits=bad)
    with pytest.raises(ValueError, match="step has no backward"):
        actkit.functional.step(x, saved_bits=2)
    assert actkit.functional.gelu(x, saved_bits=0).equal(actkit.functional.gelu(x))  # 0: exact, as None


def test_modules_with_saved_bits_pickle_and_show_it():
    m = actkit.nn.Activation("elu", alpha=-0.5, saved_bits=3)
    assert "saved_bits=3" in repr(m) and m.saved_bits == 3
    x = torch.randn(6, requires_grad=True)
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert clone.saved_bits == 3 and clone.params == {"alpha": -0.5}
        torch.testing.assert_close(torch.autograd.grad(clone(x).sum(), x)[0], torch.autograd.grad(m(x).sum(), x)[0])


def assert_same_codes(words, expected_words, n, bits):
    """The n codes two packings hold are equal (a word's bits past the last element are unspecified),
    and so are the words up to the last."""
    words = words.cpu()
    assert words.shape == expected_words.shape
    torch.testing.assert_close(fewbit.unpack_codes(words, n, bits), fewbit.unpack_codes(expected_words, n, bits),
                               rtol=0, atol=0)
    assert torch.equal(words[:-1], expected_words[:-1])


@pytest.mark.parametrize("how", ["CELLS", "COUNT", "SEARCH"], ids=["cell table", "comparisons", "binary search"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_kernel_codes_equal_bucketize_at_the_breakpoints_and_special_values(bits, how):
    """The Triton forward's packed codes of fp32 x are exactly the PyTorch implementation's (torch.bucketize)
    on every breakpoint, its fp32 neighbours, NaN of both signs, +-inf, huge and tiny values: the cell
    table (used from 3 bits), the comparisons with every breakpoint (1 or 2 bits) and the binary search
    (the fallback where no cell table fits) alike."""
    from actkit.kernels import fewbit as kernels

    spec = actkit.get("silu")
    q = fewbit.quantizer(spec, spec.defaults, bits)
    b, _ = q.tables("cpu")
    bf = b.numpy()
    special = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, 3.4e38, -3.4e38]
    points = np.concatenate([bf, np.nextafter(bf, np.float32(np.inf)), np.nextafter(bf, np.float32(-np.inf)),
                             special]).astype(np.float32)
    x = torch.cat([torch.from_numpy(points), torch.randn(12000, generator=torch.Generator().manual_seed(bits)) * 4])
    b = b.to(KERNEL_DEVICE)
    made = kernels.code_table(bf)
    assert made is not None and made[3] < kernels.MAX_CELLS
    entries, lo, scale, last = made
    plan = {"CELLS": (kernels.CELLS, torch.from_numpy(entries).to(KERNEL_DEVICE), lo, scale, last),
            "COUNT": (kernels.COUNT, b, 0.0, 1.0, 0), "SEARCH": (kernels.SEARCH, b, 0.0, 1.0, 0)}[how]
    kernels._TABLES[id(b), torch.float32, None, True] = (b, *plan)
    try:
        y, codes = kernels.forward(x.to(KERNEL_DEVICE), spec.triton_functions[0], 0.0, 0.0, b, bits)
    finally:
        kernels._TABLES.pop((id(b), torch.float32, None, True), None)
    assert_same_codes(codes, fewbit.pack_codes(x, q), x.numel(), bits)


@pytest.mark.parametrize("paired", [True, False], ids=["pairs", "one at a time"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name, bits", [("silu", b) for b in range(1, 9)] + [("leaky_relu", 1), ("hardtanh", 2)])
def test_kernel_codes_of_every_16_bit_value_equal_bucketize(name, bits, dtype, paired, monkeypatch):
    """16-bit x takes its code from a table indexed by its bits (3 bits and more) or from comparisons
    (1 and 2 bits: in register pairs, or one element at a time where the GPU has no paired compare
    for the dtype, bf16 before sm_90): on all 65536 values (every NaN, both infinities and zeros,
    the subnormals) the packed codes are torch.bucketize's of x in fp32, and NaN takes the
    quantiser's NaN code where it has one (Leaky ReLU's negative slope, hardtanh's pass)."""
    from actkit.kernels import fewbit as kernels

    if not paired and bits > 2:
        pytest.skip("comparisons are for 1 and 2 bits")
    monkeypatch.setattr(kernels, "_paired", lambda x: paired)
    spec = actkit.get(name)
    q = fewbit.quantizer(spec, spec.defaults, bits)
    x = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype)
    x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(bits))]  # mixed within each word
    b, _ = q.tables(KERNEL_DEVICE)
    p0, p1 = spec.kernel_args(spec.defaults)
    _, codes = kernels.forward(x.to(KERNEL_DEVICE), spec.triton_functions[0], p0, p1, b, bits, q.nan_code)
    assert_same_codes(codes, fewbit.pack_codes(x.float(), q), x.numel(), bits)


@pytest.mark.parametrize("paired", [True, False], ids=["pairs", "one at a time"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("breakpoints", [(-1 / 3, 0.1, 2.7), (-1e5, 1e-30, 7e4), (-3.5e38, -1e-40, 3.0e38), (0.3,)],
                         ids=["between 16-bit values", "past fp16's range", "past bf16's range", "one"])
def test_16_bit_comparisons_with_breakpoints_no_16_bit_value_equals(breakpoints, dtype, paired, monkeypatch):
    """16-bit x is compared with each fp32 breakpoint rounded down to x's dtype (-inf below its range):
    on every 16-bit value the codes are torch.bucketize's of x in fp32 against the fp32 breakpoints."""
    from actkit.kernels import fewbit as kernels

    monkeypatch.setattr(kernels, "_paired", lambda x: paired)
    bits = {1: 1, 3: 2}[len(breakpoints)]
    b = torch.tensor(breakpoints, dtype=torch.float32)
    x = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype)
    x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(bits))]
    _, codes = kernels.forward(x.to(KERNEL_DEVICE), actkit.get("relu").triton_functions[0], 0.0, 0.0,
                               b.to(KERNEL_DEVICE), bits)
    expected = torch.bucketize(x.float(), b, right=False).to(torch.int32)
    expected[x.float().isnan()] = len(breakpoints)
    torch.testing.assert_close(fewbit.unpack_codes(codes.cpu(), x.numel(), bits), expected, rtol=0, atol=0)


def test_cell_table_refuses_breakpoints_it_cannot_separate():
    from actkit.kernels import fewbit as kernels

    # Two breakpoints within 1e-7: a cell that narrow needs more than MAX_CELLS cells over [0, 1].
    assert kernels.code_table(np.array([0.0, 1e-7, 1.0], dtype=np.float32)) is None
    entries, lo, scale, last = kernels.code_table(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    assert entries.shape == (last + 1,) and lo * scale == int(lo * scale)


def test_code_tables_start_on_a_64_kib_boundary():
    """The 16-bit code tables' gathers add x's bits to the table address's low word without a carry into
    the high word, which holds only for a table inside one 4 GiB window: it must start on LUT_ALIGN."""
    pytest.importorskip("triton")
    from actkit.kernels import fewbit as kernels

    codes = kernels.code_lut(np.array([-1.0, 0.0, 2.0], dtype=np.float32), torch.float16, None)
    held = [torch.empty(n, dtype=torch.uint8) for n in (1, 333, 4097)]  # other allocations in between
    for _ in range(3):
        lut = kernels._aligned_lut(codes, torch.device("cpu"))
        assert lut.data_ptr() % kernels.LUT_ALIGN == 0
        assert torch.equal(lut, torch.from_numpy(codes))
        held.append(lut)
