"""actkit.patch / actkit.unpatch on real models: torchvision's ResNet-18, a transformer block,
nn.TransformerEncoderLayer; parameters kept, originals restored, torch.compile(fullgraph=True)."""
import copy

import pytest
import torch
import torchvision
from torch import nn

import actkit
from actkit.nn import ReferenceActivation
from actkit.patch import patched
from refcheck import KERNEL_DEVICE, backend

BACKENDS = ["torch", "triton"]


def device_for(be):
    return KERNEL_DEVICE if be == "triton" else "cpu"


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


class Block(nn.Module):
    """A pre-norm transformer block written with activation modules: softmax attention,
    GELU MLP with a PReLU gate, and a log-softmax head."""

    def __init__(self, d=16, heads=2, vocab=11):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.softmax = nn.Softmax(dim=-1)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.PReLU())
        self.head = nn.Sequential(nn.Linear(d, vocab), nn.LogSoftmax(dim=-1))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp(self.norm2(x))
        return self.head(x)


def block():
    torch.manual_seed(0)
    return Block()


# -- ResNet-18 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("be", BACKENDS)
def test_resnet18_same_activation_matches_and_unpatch_restores(be):
    device = device_for(be)
    model = resnet18().to(device)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    originals = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(x)
    report = actkit.patch(model)
    assert patched(model)
    assert report.counts() == {"nn.ReLU -> actkit.nn.ReLU": 9}
    assert [r.path for r in report.replaced] == list(originals)
    assert all(isinstance(model.get_submodule(p), actkit.nn.ReLU) for p in originals)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert list(model.state_dict()) == keys
    with backend(be), torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    assert actkit.unpatch(model) == list(originals)
    for path, original in originals.items():
        assert model.get_submodule(path) is original
    assert not patched(model)
    assert actkit.unpatch(model) == []  # nothing left to restore


def test_resnet18_swapped_to_mish_equals_a_hand_built_mish_resnet():
    model = resnet18()
    by_hand = copy.deepcopy(model)
    for name, m in list(by_hand.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(m, child_name, nn.Mish())
    report = actkit.patch(model, "mish")
    assert report.counts() == {"nn.ReLU -> actkit.nn.Mish": 9}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), by_hand(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x), resnet18()(x))  # really a different activation


# -- transformer blocks ------------------------------------------------------------------------
def grads(model, x):
    model.zero_grad()
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    # (a compiled model names its parameters "_orig_mod.<name>")
    return out.detach(), {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("be", BACKENDS)
def test_transformer_block_matches_in_values_and_parameter_gradients(be):
    device = device_for(be)
    model = block().to(device)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3)).to(device)
    report = actkit.patch(model)
    assert {r.path: r.after for r in report.replaced} == {
        "softmax": "actkit.nn.Softmax(dim=-1)", "mlp.1": "actkit.nn.GELU()",
        "mlp.3": "actkit.nn.PReLU(num_parameters=1)", "head.1": "actkit.nn.LogSoftmax(dim=-1)"}
    with backend(be):
        out, g = grads(model, x)
    out_ref, g_ref = grads(reference, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    assert g.keys() == g_ref.keys() and "mlp.3.weight" in g
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-4, atol=1e-5, msg=name)


def test_prelu_parameters_are_kept_not_copied():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4, init=0.1))
    weight = model[1].weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    actkit.patch(model)
    assert isinstance(model[1], actkit.nn.PReLU) and model[1].weight is weight
    assert model[1].num_parameters == 4
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    before = weight.detach().clone()
    opt.step()  # the optimiser built before patching still updates the module's slope
    assert not torch.equal(model[1].weight.detach(), before)


def test_encoder_layer_fast_path_is_switched_off():
    """nn.TransformerEncoderLayer's inference fast path runs a fused native kernel with
    relu/gelu and ignores self.activation; a patched layer must not take it."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.GELU(), batch_first=True).eval()
    mish_layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.Mish(), batch_first=True).eval()
    mish_layer.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        gelu_out = layer(x)
        report = actkit.patch(layer, "mish")
        assert [r.path for r in report.replaced] == ["activation"]
        assert any(s.what == "MultiheadAttention softmax" for s in report.skipped)
        torch.testing.assert_close(layer(x), mish_layer(x), rtol=1e-5, atol=1e-5)
        # the flag that patch cleared is what routes around the module (else this test proves nothing)
        layer.activation_relu_or_gelu = 2
        torch.testing.assert_close(layer(x), gelu_out, rtol=1e-5, atol=1e-5)
        layer.activation_relu_or_gelu = 0
        actkit.unpatch(layer)
        assert isinstance(layer.activation, nn.GELU) and layer.activation_relu_or_gelu == 2
        torch.testing.assert_close(layer(x), gelu_out)


def test_functional_activations_are_reported_not_patched():
    layer = nn.TransformerEncoderLayer(16, 2, 32, activation="gelu")
    report = actkit.patch(layer)
    assert len(report) == 0
    assert any(s.path == "activation" and "not a module" in s.reason for s in report.skipped)
    assert "left as is" in str(report)


# -- report, sharing, options ------------------------------------------------------------------
class MyReLU(nn.ReLU):
    def forward(self, x):
        return super().forward(x) * 2


def test_shared_modules_stay_shared_and_unsupported_ones_are_reported():
    shared = nn.Tanh()
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, MyReLU(), nn.RReLU(), nn.Softmax2d())
    report = actkit.patch(model)
    assert [r.path for r in report.replaced] == ["1", "3", "6"]
    assert model[1] is model[3] and isinstance(model[1], actkit.nn.Tanh)
    assert type(model[4]) is MyReLU and type(model[5]) is nn.RReLU
    reasons = {s.path: s.reason for s in report.skipped}
    assert "subclass" in reasons["4"] and reasons["5"] == "no actkit equivalent"
    assert model[6].dim == -3
    actkit.unpatch(model)
    assert model[1] is shared and model[3] is shared


def test_parameters_carry_over_for_every_supported_module():
    model = nn.Sequential(nn.LeakyReLU(0.2), nn.ELU(0.5), nn.Softplus(2.0, 5.0), nn.Hardtanh(-2.0, 0.5),
                          nn.GELU(approximate="tanh"), nn.CELU(2.0), nn.ReLU6(), nn.LogSoftmax(dim=0))
    x = torch.linspace(-3, 3, 24).reshape(4, 6)
    expected = model(x)
    report = actkit.patch(model)
    assert len(report) == 8
    assert model[0].params == {"negative_slope": 0.2} and model[3].params == {"min_val": -2.0, "max_val": 0.5}
    assert type(model[4]) is actkit.nn.GELUTanh and type(model[6]) is actkit.nn.ReLU6
    torch.testing.assert_close(model(x), expected)


def test_act_replaces_pointwise_activations_and_keeps_softmax():
    model = block()
    report = actkit.patch(model, "leaky_relu", negative_slope=0.3)
    assert report.act == "leaky_relu"
    assert type(model.mlp[1]) is actkit.nn.LeakyReLU and model.mlp[1].params == {"negative_slope": 0.3}
    assert type(model.mlp[3]) is actkit.nn.LeakyReLU  # the PReLU too: act is for every pointwise activation
    assert type(model.softmax) is actkit.nn.Softmax and type(model.head[1]) is actkit.nn.LogSoftmax


def test_act_with_a_learnable_activation_adds_parameters_on_the_model_dtype():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.SiLU()).double()
    actkit.patch(model, "swish_beta")
    assert type(model[1]) is actkit.nn.SwishBeta and model[1].beta.dtype == torch.float64
    assert any(p is model[1].beta for p in model.parameters())
    out = model(torch.randn(5, 4, dtype=torch.float64))
    out.sum().backward()
    assert model[1].beta.grad is not None and model[3].beta.grad is not None


def test_impl_torch_uses_the_pytorch_reference():
    model = block()
    reference = copy.deepcopy(model)
    report = actkit.patch(model, impl="torch")
    assert all(isinstance(model.get_submodule(r.path), ReferenceActivation) for r in report.replaced)
    assert len(report) == 4
    x = torch.randn(2, 8, 16)
    out, g = grads(model, x)
    out_ref, g_ref = grads(reference, x)
    torch.testing.assert_close(out, out_ref)
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], msg=name)


def test_patching_twice_then_unpatch_restores_the_true_originals():
    model = block()
    gelu, prelu = model.mlp[1], model.mlp[3]
    actkit.patch(model)
    assert len(actkit.patch(model)) == 0  # already actkit: nothing to do
    actkit.patch(model, "mish")
    assert type(model.mlp[1]) is actkit.nn.Mish
    restored = actkit.unpatch(model)
    assert set(restored) == {"softmax", "mlp.1", "mlp.3", "head.1"}
    assert model.mlp[1] is gelu and model.mlp[3] is prelu and type(model.softmax) is nn.Softmax


@pytest.mark.parametrize("call, error, match", [
    (lambda m: actkit.patch(m, "softmax"), ValueError, "cannot stand in for pointwise activations"),
    (lambda m: actkit.patch(m, impl="cuda"), ValueError, "unknown impl 'cuda'; choose one of: actkit, torch"),
    (lambda m: actkit.patch(m, negative_slope=0.1), TypeError, "need act=<name>"),
    (lambda m: actkit.patch(m, "leaky_relu", slope=0.1), TypeError, "no parameter 'slope'"),
    (lambda m: actkit.patch(m, "mihs"), ValueError, "Did you mean 'mish'"),
    (lambda m: actkit.patch(lambda x: x), TypeError, "expects a torch.nn.Module"),
])
def test_clear_errors_leave_the_model_untouched(call, error, match):
    model = block()
    with pytest.raises(error, match=match):
        call(model)
    assert type(model.mlp[1]) is nn.GELU


# -- torch.compile -----------------------------------------------------------------------------
# AOTAutograd's on-disk cache is keyed on the forward graph, so a changed custom-op schema in a
# backward op (e.g. after an upgrade of actkit) can replay a stale backward graph. Inductor's
# own cache (keyed on the code it compiles) stays on, so repeated runs are still quick.
no_stale_backward = (torch._functorch.config.patch(enable_autograd_cache=False)
                     if hasattr(torch._functorch.config, "enable_autograd_cache") else (lambda test: test))


@pytest.mark.slow
@no_stale_backward
@pytest.mark.parametrize("be", BACKENDS)
def test_compiled_patched_transformer_block_fullgraph(be):
    """fullgraph=True raises on any graph break: the custom ops (rowwise, learnable, activation)
    trace with their fake kernels and registered autograd, forward and backward."""
    torch._dynamo.reset()
    device = device_for(be)
    model = block().to(device)
    actkit.patch(model)
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(4)).to(device)
    with backend(be):
        out_eager, g_eager = grads(model, x)
        compiled = torch.compile(model, fullgraph=True)
        out, g = grads(compiled, x)
    torch.testing.assert_close(out, out_eager, rtol=1e-5, atol=1e-5)
    assert g.keys() == g_eager.keys()
    for name in g_eager:
        torch.testing.assert_close(g[name], g_eager[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
@no_stale_backward
def test_compiled_conv_net_with_per_channel_parameters():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4), nn.Conv2d(4, 6, 3), actkit.nn.SwishBeta(6, init=0.7),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 5), nn.Softmax(dim=1))
    reference = copy.deepcopy(model)
    reference[3] = ReferenceActivation("swish_beta", 6, init=0.7)
    actkit.patch(model)
    x = torch.randn(3, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)
    out, g = grads(compiled, x)
    out_ref, g_ref = grads(reference, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    assert g.keys() == g_ref.keys()
    for name, grad in g_ref.items():
        torch.testing.assert_close(g[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_saved_bits_reach_the_activations_that_keep_x():
    """patch(model, saved_bits=2): GELU (keeps x) gets a few-bit backward; ReLU keeps its free y; the
    forward is unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2))
    x = torch.randn(4, 6)
    before = model(x)
    report = actkit.patch(model, saved_bits=2)
    assert model[1].saved_bits == 2 and "saved_bits=2" in str(report)
    assert model[3].saved_bits is None
    torch.testing.assert_close(model(x), before)
    actkit.unpatch(model)
    with pytest.raises(ValueError, match="saved_bits needs impl='actkit'"):
        actkit.patch(model, impl="torch", saved_bits=2)
    with pytest.raises(ValueError, match="saved_bits must be an integer from 1 to 8"):
        actkit.patch(model, saved_bits=12)
    assert type(model[1]) is torch.nn.GELU  # nothing was touched by the refused calls
