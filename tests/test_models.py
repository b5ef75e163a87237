"""actkit.models: the reference CNNs, their activation slots and implementations."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import actkit
from actkit.models import MODELS, build_model, make_activation, maybe_compile
from actkit.nn import ReferenceActivation


def assert_same_outputs_and_gradients(ours, ref, x):
    """Both models in eval mode give the same output and the same parameter gradients on x."""
    ours.eval(), ref.eval()
    y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref)
    y_ours.square().sum().backward()
    y_ref.square().sum().backward()
    for (k, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=k)


# Parametrised over the registered models, so a model added with register_model is tested as these are.
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("shape, classes", [((1, 28, 28), 10), ((3, 32, 32), 7)])
def test_models_adapt_to_the_input_shape(model, shape, classes):
    net = build_model(model, "relu", in_shape=shape, num_classes=classes)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, classes)


def test_convnet_architecture():
    net = build_model("convnet", "relu")
    assert net.features[0].in_channels == 1
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Dropout"] * 3
    assert [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)] == [32, 64, 128]
    assert all(m.p == 0.15 for m in net.features if isinstance(m, nn.Dropout))
    assert [m.out_features for m in net.head if isinstance(m, nn.Linear)] == [128, 10]
    assert net.head[1].in_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3


def test_simple_architecture():
    net = build_model("simple", "relu", in_shape=(3, 32, 32))
    assert net.features[0].in_channels == 3
    assert [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)] == [32, 64]
    assert net.head[1].in_features == 64 * 6 * 6  # 32 -> 30 -> 15 -> 13 -> 6 (unpadded, as the tutorials)


SLOTS = {"convnet": 4, "simple": 3}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("depth", [0, 2])
def test_activation_layers_in_forward_order(model, depth):
    """Every slot holds the activation asked for, listed in forward order; depth adds one slot per block."""
    net = build_model(model, "mish", depth=depth)
    layers = net.activation_layers()
    assert len(layers) == len(build_model(model, "mish").activation_layers()) + depth
    assert model not in SLOTS or len(layers) == SLOTS[model] + depth
    assert all(isinstance(m, actkit.nn.Activation) and m.name == "mish" for _, m in layers)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: seen.append(name)) for name, m in layers]
    net(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert seen == [name for name, _ in layers]


def test_depth_keeps_resolution_and_adds_blocks():
    shallow, deep = build_model("convnet", "relu"), build_model("convnet", "relu", depth=3)
    assert deep.head[1].in_features == shallow.head[1].in_features
    extra = [m for m in deep.features[15:] if isinstance(m, nn.Conv2d)]
    assert len(extra) == 3 and all(m.in_channels == m.out_channels == 128 for m in extra)
    with pytest.raises(ValueError, match="depth"):
        build_model("convnet", "relu", depth=-1)


def test_impls_pick_the_module():
    assert isinstance(make_activation("gelu", "actkit"), actkit.nn.Activation)
    assert isinstance(make_activation("gelu", "torch"), ReferenceActivation)
    assert isinstance(make_activation("gelu", "compile"), ReferenceActivation)
    layer = make_activation("leaky_relu", "torch", {"negative_slope": 0.2})
    x = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(layer(x), F.leaky_relu(x, 0.2), rtol=0, atol=0)


@pytest.mark.parametrize("name,params", [("gelu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {}),
                                         ("mish", {}), ("softplus", {"beta": 2.0})])
def test_same_seed_same_init_and_actkit_matches_the_reference(name, params):
    torch.manual_seed(3)
    ours = build_model("convnet", name, "actkit", params)
    torch.manual_seed(3)
    ref = build_model("convnet", name, "torch", params)
    torch.manual_seed(3)
    relu = build_model("convnet", "relu", "actkit")
    for (k, a), (_, b), (_, c) in zip(ours.state_dict().items(), ref.state_dict().items(), relu.state_dict().items()):
        assert torch.equal(a, b) and torch.equal(a, c), k  # init does not depend on activation or impl
    assert_same_outputs_and_gradients(ours, ref, torch.randn(6, 1, 28, 28))


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_gives_the_reference_model_results_with_actkit_slots(model):
    """The same seed gives the same weights with actkit's slots and with the eager PyTorch reference's, and
    the same outputs and parameter gradients."""
    torch.manual_seed(3)
    ours = build_model(model, "gelu", "actkit", depth=1)
    torch.manual_seed(3)
    ref = build_model(model, "gelu", "torch", depth=1)
    assert all(isinstance(m, actkit.nn.GELU) for _, m in ours.activation_layers())
    assert all(isinstance(m, ReferenceActivation) for _, m in ref.activation_layers())
    for (k, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    assert_same_outputs_and_gradients(ours, ref, torch.randn(5, 1, 28, 28))


@pytest.mark.parametrize("name,pname,init", [("prelu", "weight", 0.1), ("swish_beta", "beta", 1.5)])
def test_learnable_activations_get_one_parameter_per_channel(name, pname, init):
    torch.manual_seed(5)
    ours = build_model("convnet", name, "actkit", {pname: init})
    torch.manual_seed(5)
    ref = build_model("convnet", name, "torch", {pname: init})
    torch.manual_seed(5)
    relu = build_model("convnet", "relu")
    slots = ours.activation_layers()
    assert [getattr(m, pname).shape[0] for _, m in slots] == [32, 64, 128, 128]
    assert all(torch.equal(getattr(m, pname), torch.full_like(getattr(m, pname), init)) for _, m in slots)
    # the constant-initialised slopes do not shift the random init of the other layers
    relu_state = relu.state_dict()
    for key, value in ours.state_dict().items():
        if key in relu_state:
            assert torch.equal(value, relu_state[key]), key
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert_same_outputs_and_gradients(ours, ref, torch.randn(4, 1, 28, 28))
    assert slots[0][1].__getattr__(pname).grad.abs().sum() > 0


@pytest.mark.parametrize("bad,match", [
    (lambda: build_model("resnet", "relu"), "unknown model 'resnet'; choose one of: convnet, simple"),
    (lambda: build_model("convnet", "rleu"), "unknown activation 'rleu'. Did you mean 'relu'"),
    (lambda: make_activation("relu", "jax"), "unknown implementation 'jax'"),
    (lambda: make_activation("step", "actkit"), "no gradient"),
    (lambda: make_activation("softmax", "actkit"), "not a pointwise activation"),
    (lambda: make_activation("leaky_relu", "actkit", {"slope": 1}), "no parameter 'slope'"),
])
def test_bad_choices_have_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


@pytest.mark.slow
def test_compile_impl_matches_eager():
    torch.manual_seed(0)
    model = build_model("simple", "silu", "compile")
    compiled = maybe_compile(model, "compile")
    assert compiled is not model and compiled._orig_mod is model
    assert maybe_compile(model, "torch") is model
    x = torch.randn(4, 1, 28, 28)
    y = compiled(x)
    torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
