"""The autograd wiring: gradcheck in float64, one saved tensor, torch.compile without graph breaks."""
import pytest
import torch

import actkit
from refcheck import KERNEL_DEVICE, PARAM_CASES, SAVES_X_PARAMS, backend, elementwise_specs

SPECS = elementwise_specs()
DIFFERENTIABLE = [s for s in SPECS if s.differentiable]
KINKS = torch.tensor([0.0, 3.0, -3.0, 6.0, 1.0, -1.0, 2.0, 0.5, -2.0])


def smooth_points(n=16, seed=0, dtype=torch.float64):
    """Random points at least 0.05 away from every kink of the piecewise activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4 * n, generator=g, dtype=dtype) * 12 - 6
    x = x[(x[None, :] - KINKS[:, None].to(dtype)).abs().min(0).values > 0.05]
    return x[:n]


@pytest.mark.parametrize("spec", DIFFERENTIABLE, ids=[s.name for s in DIFFERENTIABLE])
def test_gradcheck_float64(spec):
    x = smooth_points().requires_grad_(True)
    fn = getattr(actkit.functional, spec.name)
    assert torch.autograd.gradcheck(fn, (x,))
    for name, params in PARAM_CASES:
        if name == spec.name:
            assert torch.autograd.gradcheck(lambda t: fn(t, **params), (x,))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("name", sorted(SAVES_X_PARAMS))
def test_the_saved_tensor_follows_the_parameters(name, backend_name):
    """saves="y": y at the defaults (f' readable from y); x once a parameter makes it unreadable (a negative
    slope)."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x = torch.randn(64, device=device, requires_grad=True)
    for params, expected in (({}, "y"), (SAVES_X_PARAMS[name], "x")):
        packed = []
        with backend(backend_name), torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t,
                                                                             lambda t: t):
            y = actkit.functional.apply(name, x, **params, saves="y")
        assert actkit.get(name).saves_for({**actkit.get(name).defaults, **params}) == expected
        assert len(packed) == 1 and packed[0].data_ptr() == (y if expected == "y" else x).data_ptr(), (params, expected)


def test_step_is_forward_only_with_zero_gradient():
    x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    y = actkit.functional.step(x)
    assert y.tolist() == [0.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("policy", actkit.registry.SAVE_POLICIES)
@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_saves_exactly_one_tensor(spec, backend_name, policy):
    """x is saved, or y where the policy asks for it and the derivative can be computed from the
    output (by default only where torch keeps y too); step and identity save nothing."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x = torch.randn(64, device=device, requires_grad=True)
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with backend(backend_name), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = actkit.functional.apply(spec.name, x, saves=policy)
    saves = spec.saves_under(policy, spec.defaults)
    assert saves == {"y": spec.saves_for(spec.defaults), "x": "x" if spec.saves_for(spec.defaults) != "none" else "none",
                     "torch": "y" if spec.torch_saves == "y" else spec.saves_for(spec.defaults).replace("y", "x")}[policy]
    if saves == "none":
        assert packed == []
        return
    assert len(packed) == 1
    expected = y if saves == "y" else x
    assert packed[0].data_ptr() == expected.data_ptr()


def _small_net(act: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), actkit.nn.Activation(act), torch.nn.Linear(16, 4),
                               actkit.nn.Activation("silu"))


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["torch", "triton"])
def test_torch_compile_fullgraph_on_cpu(backend_name):
    """The custom ops trace into one graph (fullgraph=True raises on a graph break) and match eager,
    with the PyTorch fallback and with the Triton kernels (interpreter on CPU)."""
    torch._dynamo.reset()
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    net = _small_net("mish").to(device)
    x = torch.randn(5, 8, device=device, requires_grad=True)
    with backend(backend_name):
        eager_y = net(x)
        eager_grad = torch.autograd.grad(eager_y.sum(), x)[0]
        compiled = torch.compile(net, fullgraph=True)
        y = compiled(x)
        grad = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(y, eager_y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-6)


def test_modules_match_functional_and_keep_parameters():
    x = torch.randn(4, 5)
    m = actkit.nn.LeakyReLU(0.2)
    assert m.params == {"negative_slope": 0.2}
    torch.testing.assert_close(m(x), torch.nn.functional.leaky_relu(x, 0.2))
    torch.testing.assert_close(actkit.nn.Activation("softplus", beta=2.0)(x), torch.nn.functional.softplus(x, 2.0))
    assert isinstance(actkit.nn.Mish(), actkit.nn.Activation)
    assert actkit.nn.Swish is actkit.nn.SiLU
    assert "negative_slope=0.2" in repr(m)


def test_modules_survive_deepcopy_and_torch_save(tmp_path):
    import copy

    model = torch.nn.Sequential(actkit.nn.CELU(alpha=2.0), actkit.nn.Activation("softplus", beta=3.0),
                                actkit.nn.PReLU(3))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(loaded(x), model(x))
    torch.testing.assert_close(copy.deepcopy(model)(x), model(x))
    assert loaded[1].params == {"beta": 3.0, "threshold": 20.0}


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
def test_output_layout_matches_the_fake_implementation(backend_name):
    """What torch.compile is promised (torch.empty_like of the input) is what eager returns."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    for x in (torch.randn(4, 6, 5, 3, device=device).to(memory_format=torch.channels_last),
              torch.randn(40, 50, device=device).t()[::2],
              torch.randn(3, 8, 5, device=device).permute(2, 0, 1)[:, :, ::3]):
        x = x.requires_grad_(True)
        with backend(backend_name):
            y = actkit.functional.gelu_sigmoid(x)
            dx = torch.autograd.grad(y, x, torch.ones_like(y))[0]
        assert y.stride() == torch.empty_like(x).stride()
        assert dx.stride() == torch.empty_like(x).stride()
