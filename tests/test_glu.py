"""Gated linear units (kind "glu"): act(a) * b against the PyTorch composite, float64 math and
gradcheck; the Triton kernels under the interpreter per dtype; layouts, errors, modules, saved
tensors and torch.compile on both of its paths."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import actkit
from actkit.kinds import glu
from refcheck import DTYPES, KERNEL_DEVICE, KERNEL_TOLERANCE, SPECIAL_VALUES, assert_matches, backend

GLU_SPECS = [s for s in actkit.registry.REGISTRY.values() if s.kind.gated]
# The generic glu with gates of every sort: saved-y ATen backward (sigmoid, relu), saved-x ATen
# backward with parameters (elu, softplus), a composite without an ATen backward (gelu_sigmoid)
# and identity (the bilinear GLU, derivative 1).
GENERIC = [("sigmoid", {}), ("relu", {}), ("elu", {"alpha": 0.5}), ("softplus", {"beta": 2.0, "threshold": 5.0}),
           ("gelu_sigmoid", {}), ("identity", {}), ("leaky_relu", {"negative_slope": -0.1})]
CASES = [(s.name, {}) for s in GLU_SPECS] + [("glu", {"act": act, **params}) for act, params in GENERIC]
IDS = [name if not kw else f"glu-{kw['act']}" for name, kw in CASES]


def composite(name: str, kwargs: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference a model would write: the gate's own torch op on a, times b."""
    spec = actkit.get(name)
    if spec.gate is None:
        params = dict(kwargs)
        return actkit.get(params.pop("act", "sigmoid")).reference(a, **params) * b
    return actkit.get(spec.gate).reference(a) * b


def _pair(shape, dtype=torch.float32, device="cpu", seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(shape, generator=g) * scale).to(dtype).to(device)
    b = (torch.randn(shape, generator=g) * scale).to(dtype).to(device)
    return a, b


def _grads(y, inputs, dy):
    return torch.autograd.grad(y, inputs, dy)


def _composite_with_grads(name, kwargs, a, b, dy):
    a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    y = composite(name, kwargs, a, b)
    return (y.detach(), *_grads(y, (a, b), dy))


# -- the PyTorch path: the composite's own values and gradients ----------------------------------------
@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_torch_path_is_the_composite_to_the_bit(name, kwargs):
    """Forward f(a) * b and backward (dy * b) * f'(a), dy * f(a) are the very ops autograd of the
    composite runs, so fp32 and bf16 results agree exactly (split form and two-tensor form; the
    composite on the same views, as torch's CPU kernels round strided and contiguous inputs apart)."""
    for dtype in (torch.float32, torch.bfloat16):
        a, b = _pair((6, 10), dtype)
        x = torch.cat((a, b), -1).requires_grad_(True)
        dy = torch.randn(6, 10).to(dtype)
        with backend("torch"):
            y = actkit.functional.apply(name, x, **kwargs)
            (dx,) = _grads(y, x, dy)
        xr = x.detach().clone().requires_grad_(True)
        ref_split = composite(name, kwargs, *xr.chunk(2, -1))
        torch.testing.assert_close(y, ref_split, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(dx, _grads(ref_split, xr, dy)[0], rtol=0, atol=0, equal_nan=True)
        ar, br = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        ref = composite(name, kwargs, ar, br)
        da, db = _grads(ref, (ar, br), dy)
        with backend("torch"):
            a2, b2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
            y2 = actkit.functional.apply(name, a2, b2, **kwargs)
            torch.testing.assert_close(y2, ref, rtol=0, atol=0)
            for ours, theirs in zip(_grads(y2, (a2, b2), dy), (da, db)):
                torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_gradcheck_float64_on_the_torch_path(name, kwargs):
    a, b = _pair((3, 4), torch.float64, seed=1, scale=1.5)
    # Away from relu's and leaky_relu's kink at 0, where the finite difference straddles two slopes.
    a = torch.where(a.abs() < 0.1, a + 0.3, a)
    x = torch.cat((a, b), 0).requires_grad_(True)
    a, b = a.requires_grad_(True), b.requires_grad_(True)
    with backend("torch"):
        assert torch.autograd.gradcheck(lambda t: actkit.functional.apply(name, t, dim=0, **kwargs), (x,))
        assert torch.autograd.gradcheck(lambda p, q: actkit.functional.apply(name, p, q, **kwargs), (a, b))


# -- the Triton kernels (interpreter on CPU) against float64 math ------------------------------------------
def _product_tolerance(dtype: torch.dtype, *factors: torch.Tensor) -> dict:
    """KERNEL_TOLERANCE is for one activation value: a few fp32 ulp of f, or half an ulp of the
    storage dtype, relative, and an absolute floor near f's zero crossings. A GLU multiplies f(a)
    (or f'(a)) by b (and dy): the relative error is unchanged to first order (fp32 products add
    2^-24 each), while the absolute floor scales with the multipliers' magnitude."""
    tol = dict(KERNEL_TOLERANCE[dtype])
    scale = 1.0
    for t in factors:
        finite = t[torch.isfinite(t)].double()
        scale *= max(float(finite.abs().max()) if finite.numel() else 1.0, 1.0)
    tol["atol"] *= scale
    return tol


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_triton_kernels_against_float64(name, kwargs, dtype_name):
    dtype = DTYPES[dtype_name]
    special = torch.tensor(SPECIAL_VALUES)
    g = torch.Generator().manual_seed(2)
    # a: the special values (branch points, +-88, +-1e4, inf, nan) and a spread; b and dy finite and
    # moderate, so that every non-finite result comes from the gate.
    a = torch.cat((special, torch.randn(38, generator=g) * 4)).to(dtype)
    b = (torch.randn(64, generator=g) * 2).to(dtype)
    dy = torch.randn(64, generator=g).to(dtype)
    x = torch.stack((a, b)).to(KERNEL_DEVICE).requires_grad_(True)  # split along dim 0: one row each
    with backend("triton"):
        y = actkit.functional.apply(name, x, dim=0, **kwargs)
        (dx,) = _grads(y, x, dy.to(KERNEL_DEVICE).unsqueeze(0))
    # The references: float64 math, and torch in the storage dtype (for the non-finite results). The
    # special values go one at a time, as torch's scalar CPU loop takes them, since its vectorised loop
    # differs at some (ELU's gradient at NaN is NaN there and 1 in the scalar loop, which the Triton
    # device function gives).
    n = len(SPECIAL_VALUES)

    def reference(dtype):
        args = [t.to(dtype) for t in (a, b, dy)]
        singles = [_composite_with_grads(name, kwargs, *(t[i:i + 1] for t in args)) for i in range(n)]
        rest = _composite_with_grads(name, kwargs, *(t[n:] for t in args))
        return [torch.cat([*(one[k] for one in singles), rest[k]]) for k in range(3)]

    ref64, da64, db64 = reference(torch.float64)
    ref, da, db = reference(dtype)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == (1, 64) and dx.shape == (2, 64)
    # f(a) is at most |a| + 1 in size for every gate here; beyond that only inf/nan, compared exactly.
    f_scale = torch.where(a.isfinite(), a.abs().clamp(max=88.0) + 1, torch.ones(()))
    assert_matches(y[0], ref, ref64, a, f"{name} {kwargs} {dtype_name} forward",
                   tolerance={dtype: _product_tolerance(dtype, b)})
    assert_matches(dx[0], da, da64, a, f"{name} {kwargs} {dtype_name} da",
                   tolerance={dtype: _product_tolerance(dtype, b, dy)})
    assert_matches(dx[1], db, db64, a, f"{name} {kwargs} {dtype_name} db",
                   tolerance={dtype: _product_tolerance(dtype, dy, f_scale)})


# Gates whose ATen backward selects 0 beyond their clamps (relu is among CASES already).
SELECTING = [("relu6", {}), ("hardtanh", {"min_val": -2.0, "max_val": 0.5}), ("hardsigmoid", {}), ("hardswish", {})]
NON_FINITE_CASES = CASES + [("glu", {"act": act, **params}) for act, params in SELECTING]
# (b, dy) pairs: non-finite dy, non-finite b (dy * b is what reaches f'(a)), both.
NON_FINITE_PAIRS = [(1.0, float("nan")), (1.0, float("inf")), (-1.0, float("-inf")), (float("inf"), 1.0),
                    (float("nan"), 1.0), (float("inf"), float("-inf"))]


def _same_or_close(ours: torch.Tensor, *references: torch.Tensor) -> torch.Tensor:
    """Elementwise: ``ours`` is one of the references exactly (NaN equal to NaN), or finite and within
    a few fp32 ulp of the float64 one (the last)."""
    o = ours.double()
    match = torch.zeros_like(o, dtype=torch.bool)
    for r in references:
        r = r.double()
        match |= (o == r) | (o.isnan() & r.isnan())
    r64 = references[-1].double()
    return match | (o.isfinite() & r64.isfinite() & torch.isclose(o, r64, rtol=1e-5, atol=1e-30))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("name,kwargs", NON_FINITE_CASES,
                         ids=[name if not kw else f"glu-{kw['act']}" for name, kw in NON_FINITE_CASES])
def test_non_finite_b_and_dy_match_torch(name, kwargs, backend_name):
    """a at every special value with dy or b NaN or +-inf: da and db are the composite's, torch's own
    (fp32, or float64 where fp32 rounds f(a) or f'(a) to 0 and float64 does not). Where the gate's ATen
    backward selects 0 (ReLU's a <= 0) da is 0 whatever dy * b is. For the kernels the reference runs
    one element at a time, in torch's scalar CPU loop, which computes what its CUDA kernels do (its
    vectorised loop differs at NaN for some gates: hardtanh's gradient is 0 there, ELU's NaN); the
    PyTorch fallback is held to the composite on the same tensors, vectorised loop and all.

    A composite gate (gelu_sigmoid: autograd of x * sigmoid(1.702 x)) turns dy * b = inf into NaN
    through ``inf - inf`` in its chain rule where f'(a) is finite; the kernels give (dy * b) * f'(a) as
    torch's native gates do, so on the Triton path its da is held to that (see tests/test_kernels.py)."""
    n = len(SPECIAL_VALUES)
    a = torch.tensor(SPECIAL_VALUES * len(NON_FINITE_PAIRS))
    b = torch.tensor([pair[0] for pair in NON_FINITE_PAIRS for _ in range(n)])
    dy = torch.tensor([pair[1] for pair in NON_FINITE_PAIRS for _ in range(n)])
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x, y = a.to(device).requires_grad_(True), b.to(device).requires_grad_(True)
    with backend(backend_name):
        da, db = _grads(actkit.functional.apply(name, x, y, **kwargs), (x, y), dy.to(device))
    if backend_name == "torch":  # the fallback is the composite itself, on the same (vectorised) tensors
        for ours, theirs in zip((da, db), _composite_with_grads(name, kwargs, a, b, dy)[1:]):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
        return
    chain_rule = not actkit.get(kwargs.get("act") or actkit.get(name).gate or actkit.registry.GLU_DEFAULT_ACT).native
    for k, ours in ((1, da.cpu()), (2, db.cpu())):
        refs = []
        for dtype in (torch.float32, torch.float64):
            ones = torch.ones(1, dtype=dtype)
            per_element = []
            for i in range(len(a)):
                one = [t[i:i + 1].to(dtype) for t in (a, b, dy)]
                if chain_rule and k == 1:  # (dy * b) * f'(a), f'(a) from autograd of the gate alone
                    per_element.append(one[2] * one[1] * _composite_with_grads(name, kwargs, one[0], ones, ones)[1])
                else:
                    per_element.append(_composite_with_grads(name, kwargs, *one)[k])
            refs.append(torch.cat(per_element))
        ok = _same_or_close(ours, *refs)
        assert ok.all(), f"{name} {kwargs} [{backend_name}] {'da' if k == 1 else 'db'}: " + ", ".join(
            f"a={a[i].item()} b={b[i].item()} dy={dy[i].item()}: actkit {ours[i].item()}, torch {refs[0][i].item()}, "
            f"float64 {refs[1][i].item()}" for i in (~ok).nonzero().flatten().tolist()[:6])


@pytest.mark.parametrize("layout", ["split last dim", "split middle dim", "non-contiguous x", "chunked halves",
                                    "transposed pair", "contiguous pair", "expanded grad"])
def test_triton_layouts_match_the_torch_path(layout):
    """Every way the kernels address their operands (one flat row, rows at a stride, halves of one
    buffer, copies of layouts with no row stride) gives the PyTorch path's values and gradients."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 10, generator=g)
    dim, pair = -1, None
    if layout == "split middle dim":
        dim = 1
    elif layout == "non-contiguous x":
        x = torch.randn(10, 3, 6, generator=g).permute(1, 2, 0)
    elif layout == "chunked halves":
        pair = x.chunk(2, -1)
    elif layout == "transposed pair":
        pair = (torch.randn(7, 5, generator=g).t(), torch.randn(7, 5, generator=g).t())
    elif layout == "contiguous pair":
        pair = (torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g))

    def run(device, name):
        with backend(name):
            if pair is None:
                xi = x.detach().to(device).requires_grad_(True)
                y = actkit.functional.geglu_tanh(xi, dim=dim)
                inputs = (xi,)
            else:
                inputs = tuple(t.detach().to(device).requires_grad_(True) for t in pair)
                y = actkit.functional.geglu_tanh(*inputs)
            dy = torch.linspace(-2, 2, y.numel(), device=device).reshape(y.shape)
            if layout == "expanded grad":
                dy = torch.ones((), device=device).expand(y.shape)
            return y, _grads(y, inputs, dy)

    y_k, grads_k = run(KERNEL_DEVICE, "triton")
    y_t, grads_t = run("cpu", "torch")
    torch.testing.assert_close(y_k.cpu(), y_t, rtol=2e-5, atol=2e-6)
    for ours, theirs in zip(grads_k, grads_t):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours.cpu(), theirs, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
def test_implementations_take_negative_dims(backend_name):
    """The public calls wrap dim; the implementations (which the compile probe drives) need not be given it so."""
    op = glu.op_for(actkit.get("swiglu"))
    impl = op.impl("torch" if backend_name == "torch" else "triton")
    x = torch.randn(3, 4, 6, device=KERNEL_DEVICE if backend_name == "triton" else "cpu")
    dy = torch.randn(3, 4, 3, device=x.device)
    for dim, positive in ((-1, 2), (-2, 1)):
        dy_dim = dy if dim == -1 else dy.reshape(3, 2, 6)
        torch.testing.assert_close(impl.forward(x, dim), impl.forward(x, positive), rtol=0, atol=0)
        torch.testing.assert_close(impl.input_grads((x, None), dy_dim, (dim,))[0],
                                   impl.input_grads((x, None), dy_dim, (positive,))[0],
                                   rtol=0, atol=0)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
def test_empty_and_long_rows(backend_name):
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    with backend(backend_name):
        for shape in ((0, 8), (4, 0), (5, 0, 6)):
            x = torch.randn(shape, device=device, requires_grad=True)
            y = actkit.functional.swiglu(x, dim=-1)
            assert y.shape == (*shape[:-1], shape[-1] // 2)
            assert _grads(y, x, torch.ones_like(y))[0].shape == shape
        # A row longer than a program's tile (2048) with a ragged end; a tail of the row checks the
        # program boundaries.
        x = torch.randn(2, 2 * 2500, device=device)
        a, b = x.chunk(2, -1)
        torch.testing.assert_close(actkit.functional.reglu(x), F.relu(a) * b, rtol=1e-6, atol=0)


# -- what autograd keeps ------------------------------------------------------------------------------------
def _saved(fn):
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        out = fn()
    return out, packed


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
def test_autograd_keeps_a_and_b_only(backend_name):
    """Two tensors, a and b themselves (no copy, no act(a)); the one-tensor form keeps x, which is
    exactly a and b. The eager composite keeps three half-size tensors: a, silu(a) and b."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    a, b = (t.requires_grad_(True) for t in _pair((4, 16), device=device))
    with backend(backend_name):
        _, packed = _saved(lambda: actkit.functional.swiglu(a, b))
        assert len(packed) == 2 and {t.data_ptr() for t in packed} == {a.data_ptr(), b.data_ptr()}
        x = torch.randn(4, 32, device=device, requires_grad=True)
        _, packed = _saved(lambda: actkit.nn.SwiGLU()(x))
        assert len(packed) == 1 and packed[0] is x
    _, packed = _saved(lambda: F.silu(a) * b)
    assert len(packed) == 3


# -- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: actkit.functional.swiglu(torch.randn(3, 5)), ValueError, "dim -1 of x has odd size 5"),
    (lambda: actkit.functional.swiglu(torch.randn(4, 6), dim=2), IndexError, "valid dims are -2 to 1"),
    (lambda: actkit.functional.swiglu(torch.tensor(1.0)), ValueError, "0-d tensor has no dim to split"),
    (lambda: actkit.functional.swiglu(torch.randn(3, 4), torch.randn(1, 4)), ValueError,
     r"same shape, got \(3, 4\) and \(1, 4\) \(no broadcasting\)"),
    (lambda: actkit.functional.geglu(torch.randn(4), torch.randn(4, dtype=torch.float64)), TypeError, "same dtype"),
    (lambda: actkit.functional.swiglu(torch.randn(4), [1.0]), TypeError, "y must be a tensor"),
    (lambda: actkit.functional.swiglu(torch.randn(4), torch.randn(4), dim=0), TypeError, "one-tensor form only"),
    (lambda: actkit.functional.swiglu(torch.randn(4), alpha=1.0), TypeError, "swiglu has no parameter 'alpha'"),
    (lambda: actkit.functional.swiglu([1.0, 2.0]), TypeError, "expects a torch.Tensor"),
    (lambda: actkit.functional.swiglu(torch.randn(4), dim=0.5), TypeError, "dim must be an integer"),
    (lambda: actkit.functional.glu(torch.randn(4), act="softmax"), ValueError, "rowwise activation; the gate"),
    (lambda: actkit.functional.glu(torch.randn(4), act="step"), ValueError, "has no gradient"),
    (lambda: actkit.functional.glu(torch.randn(4), act="mihs"), ValueError, "Did you mean 'mish'"),
    (lambda: actkit.functional.glu(torch.randn(4), act=F.silu), TypeError, "act must be an activation name"),
    (lambda: actkit.functional.glu(torch.randn(4), act="elu", beta=1.0), TypeError, "elu has no parameter 'beta'"),
    (lambda: actkit.functional.glu(torch.randn(4), act="gelu", saved_bits=2), TypeError, "saved_bits is not"),
    (lambda: actkit.nn.SwiGLU(act="relu"), TypeError, "SwiGLU has no parameter 'act'"),
    (lambda: actkit.nn.SwiGLU(-1, 2), TypeError, "takes 1 positional argument"),
])
def test_bad_input_gets_one_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- API: functional forms, modules ------------------------------------------------------------------------
def test_functional_forms_and_the_f_glu_convention():
    x = torch.randn(3, 4, 8)
    a, b = x.chunk(2, -1)
    torch.testing.assert_close(actkit.functional.swiglu(x), F.silu(a) * b)
    torch.testing.assert_close(actkit.functional.swiglu(a, b), F.silu(a) * b)
    torch.testing.assert_close(actkit.functional.apply("swiglu", a, y=b), F.silu(a) * b)
    a1, b1 = x.chunk(2, 1)
    torch.testing.assert_close(actkit.functional.geglu(x, dim=1), F.gelu(a1) * b1)
    torch.testing.assert_close(actkit.functional.geglu_approx(x), F.gelu(a, approximate="tanh") * b)
    torch.testing.assert_close(actkit.functional.glu(x, act="gelu_tanh"), actkit.functional.geglu_tanh(x))
    torch.testing.assert_close(actkit.functional.glu(x, act="leaky_relu", negative_slope=0.3),
                               F.leaky_relu(a, 0.3) * b)
    # torch's F.glu gates the second half: a * sigmoid(b) is actkit's glu with the halves swapped.
    torch.testing.assert_close(F.glu(x), actkit.functional.glu(torch.cat((b, a), -1)))


def test_modules_take_one_or_two_tensors_pickle_and_copy(tmp_path):
    x = torch.randn(2, 3, 12, requires_grad=True)
    a, b = x.detach().chunk(2, -1)
    for module, expected in ((actkit.nn.SwiGLU(), F.silu(a) * b),
                             (actkit.nn.GLU(act="elu", alpha=0.5), F.elu(a, 0.5) * b),
                             (actkit.nn.Activation("geglu", dim=0), None)):
        for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
            assert repr(clone) == repr(module)
            torch.testing.assert_close(clone(x), module(x))
            torch.testing.assert_close(torch.autograd.grad(clone(x).sum(), x)[0],
                                       torch.autograd.grad(module(x).sum(), x)[0])
        if expected is not None:
            torch.testing.assert_close(module(x), expected)
            torch.testing.assert_close(module(a, b), expected)
    assert repr(actkit.nn.GLU(act="elu", alpha=0.5)) == "GLU(act='elu', alpha=0.5, dim=-1)"
    assert actkit.nn.GLU("relu").act == "relu" and actkit.nn.GEGLU(dim=1).dim == 1
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), actkit.nn.ReGLU(), torch.nn.Linear(4, 2))
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), model(x))


# -- torch.compile -------------------------------------------------------------------------------------------
class _Block(torch.nn.Module):
    """x + down(glu(gate_up(x))): a GLU between the layers Inductor would fuse it with."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gate_up, self.down = torch.nn.Linear(8, 12), torch.nn.Linear(6, 8)
        self.glu = actkit.nn.SwiGLU()

    def forward(self, x):
        return x + self.down(self.glu(self.gate_up(x)))


@pytest.mark.parametrize("path,backend_name", [("composite", "torch"), ("kernel", "torch"), ("kernel", "triton")])
def test_torch_compile_fullgraph_matches_eager(path, backend_name):
    """Both compile paths trace without a graph break and match eager values and gradients; the
    compiled graph holds actkit's custom op on the kernel path and plain torch ops on the composite one."""
    import torch._functorch.config as functorch_config

    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    block = _Block().to(device)
    x = torch.randn(5, 8, device=device, requires_grad=True)
    a, b = (torch.randn(5, 6, device=device, requires_grad=True) for _ in range(2))
    graphs = []

    def inductor_recording(gm, example_inputs):
        graphs.append(str(gm.graph))
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)

    def step(fn):
        y = fn(x) + actkit.functional.geglu(a, b).sum()
        return y, torch.autograd.grad(y.sum(), [x, a, b, *block.parameters()])

    before = glu.get_compile_path()
    with backend(backend_name):
        y, grads = step(block)
        torch._dynamo.reset()
        glu.set_compile_path(path)
        cache_off = functorch_config.patch(enable_autograd_cache=False) if hasattr(
            functorch_config, "enable_autograd_cache") else torch._dynamo.config.patch()
        try:
            with cache_off:
                y_c, grads_c = step(torch.compile(block, fullgraph=True, backend=inductor_recording))
        finally:
            glu.set_compile_path(before)
            torch._dynamo.reset()
    torch.testing.assert_close(y_c, y, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(grads_c, grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1 and ("actkit.glu" in graphs[0]) == (path == "kernel")


def test_compile_path_choice_and_errors(monkeypatch):
    assert glu.get_compile_path() in glu.COMPILE_PATHS
    with pytest.raises(ValueError, match="unknown GLU compile path 'fast'.*composite, kernel"):
        glu.set_compile_path("fast")
    before = glu.get_compile_path()
    try:
        monkeypatch.setenv(glu.COMPILE_ENV_VAR, "Kernel")
        glu.set_compile_path(None)
        assert glu.get_compile_path() == "kernel"
        monkeypatch.setenv(glu.COMPILE_ENV_VAR, "bogus")
        with pytest.raises(ValueError, match=r"from \$ACTKIT_GLU_COMPILE"):
            glu.set_compile_path(None)
    finally:
        glu.set_compile_path(before)


def test_what_needs_a_pointwise_activation_refuses_a_glu_in_one_line():
    """Curves, network slots and patching need f(x) of one element; a GLU halves its input."""
    from actkit import memory, plots, toy, train

    for call, error in ((lambda: plots.activation_curve("swiglu"), ValueError),
                        (lambda: toy.train_toy("geglu", torch.randn(4, 2), torch.zeros(4, dtype=torch.long),
                                               torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), ValueError),
                        (lambda: actkit.patch(torch.nn.Sequential(torch.nn.ReLU()), "swiglu"), ValueError),
                        (lambda: train.parse_activations("reglu"), train.TrainError),
                        (lambda: memory.network_memory("glu", "torch"), ValueError)):
        with pytest.raises(error) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and ("gated linear unit" in message or "is a glu function" in message), message


def test_changing_the_compile_path_recompiles():
    """Dynamo guards on the compile path: a function compiled under one path is traced again under the
    other, and the first graph is reused when the path comes back."""
    graphs = []

    def recording(gm, example_inputs):
        graphs.append("actkit.glu" in str(gm.graph))
        return gm.forward

    compiled = torch.compile(lambda t: actkit.functional.swiglu(t) + 1, backend=recording, fullgraph=True)
    x = torch.randn(4, 8)
    before = glu.get_compile_path()
    try:
        torch._dynamo.reset()
        for path in ("composite", "kernel", "composite"):
            glu.set_compile_path(path)
            torch.testing.assert_close(compiled(x), F.silu(x[:, :4]) * x[:, 4:] + 1)
    finally:
        glu.set_compile_path(before)
        torch._dynamo.reset()
    assert graphs == [False, True]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="needs a CUDA GPU with 40 GB: a, b, y, dy, da and db of 2^31 + 4099 fp16 elements")
def test_int64_offsets_past_two_to_the_31_elements():
    """Elements beyond index 2^31 are computed (a 32-bit offset would wrap and miss or corrupt them)."""
    n, tail = 2**31 + 4099, 4099
    a = torch.full((n,), -1.0, dtype=torch.float16, device="cuda")
    a[-tail:] = torch.linspace(-2, 2, tail, device="cuda")
    b = torch.full((n,), 2.0, dtype=torch.float16, device="cuda")
    with backend("triton"):
        a.requires_grad_(True)
        y = actkit.functional.reglu(a, b)  # relu(a) * 2: exact in fp16
        (da,) = torch.autograd.grad(y, a, torch.ones_like(y))
    a = a.detach()
    torch.testing.assert_close(y[-tail:], F.relu(a[-tail:]) * 2, rtol=0, atol=0)
    assert torch.all(y[: n - tail] == 0)
    torch.testing.assert_close(da[-tail:], torch.where(a[-tail:] > 0, 2.0, 0.0).half(), rtol=0, atol=0)
    assert torch.all(da[: n - tail] == 0)
