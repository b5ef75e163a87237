"""Dead units and gradient flow on constructed cases whose answers are known in advance."""
import math

import pytest
import torch
from torch import nn

import actkit
from actkit import diagnostics


def _linear(in_f, out_f, weight, bias):
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


def test_layer_forced_dead_reports_100_percent():
    torch.manual_seed(0)
    dead = nn.Linear(4, 6)
    with torch.no_grad():  # every pre-activation is negative for inputs in [0, 1)
        dead.weight.fill_(-1.0)
        dead.bias.fill_(-0.5)
    model = nn.Sequential(nn.Linear(4, 4), actkit.nn.ReLU(), dead, actkit.nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():  # keep the first layer alive: identity weights, positive bias
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.fill_(0.1)
    result = diagnostics.dead_units(model, torch.rand(32, 4))
    assert list(result) == ["1", "3"]
    assert result["3"] == {**result["3"], "units": 6, "dead": 6, "fraction": 1.0, "unit": "feature"}
    assert result["1"]["dead"] == 0 and result["1"]["fraction"] == 0.0
    assert diagnostics.dead_fraction(result) == pytest.approx(6 / 10)


def test_partially_dead_features_counted_exactly():
    # 4 units: unit 0 and 2 forced negative, unit 1 positive, unit 3 sign follows the input
    lin = _linear(1, 4, [[0.0], [0.0], [0.0], [1.0]], [-1.0, 1.0, -2.0, 0.0])
    model = nn.Sequential(lin, actkit.nn.Activation("relu"))
    probe = torch.tensor([[-1.0], [2.0], [0.5]])
    result = diagnostics.dead_units(model, probe)
    assert result["1"]["dead"] == 2 and result["1"]["fraction"] == 0.5
    # a unit alive on a single probe example is not dead
    result = diagnostics.dead_units(model, probe[:1])
    assert result["1"]["dead"] == 3


def test_conv_units_are_channels_and_mode_is_restored():
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -0.1, -1.0]))
    model = nn.Sequential(conv, nn.Identity(), actkit.nn.ReLU())
    model.train()
    x = torch.rand(5, 1, 4, 4) + 0.1  # positive everywhere: channel 0 alive, 1 and 2 dead
    result = diagnostics.dead_units(model, x)
    assert result["2"]["unit"] == "channel"
    assert result["2"]["units"] == 3 and result["2"]["dead"] == 2
    assert model.training
    # one live pixel in one example of one probe chunk keeps channel 1 (weight -1) alive
    x2 = x.clone()
    x2[3, 0, 2, 1] = -5.0
    assert diagnostics.dead_units(model, [x, x2])["2"]["dead"] == 1
    assert diagnostics.dead_units(model, [x2, x])["2"]["dead"] == 1


def test_saturated_sigmoid_counts_as_dead_by_derivative():
    # pre-activations of +-30 put sigmoid on its flat parts: f' ~ 1e-13 < 1e-3, output != 0
    lin = _linear(1, 3, [[0.0], [0.0], [1.0]], [30.0, -30.0, 0.0])
    for act in (actkit.nn.Sigmoid(), nn.Sigmoid(), actkit.nn.Tanh()):
        model = nn.Sequential(lin, act)
        result = diagnostics.dead_units(model, torch.linspace(-1, 1, 9).unsqueeze(1))
        assert result["1"]["dead"] == 2, act
        assert "f'(x)" in result["1"]["criterion"]


def test_leaky_relu_never_dead_and_threshold_is_respected():
    lin = _linear(1, 2, [[0.0], [0.0]], [-5.0, -5.0])
    model = nn.Sequential(lin, actkit.nn.LeakyReLU(negative_slope=0.01))
    assert diagnostics.dead_units(model, torch.zeros(4, 1))["1"]["dead"] == 0
    assert diagnostics.dead_units(model, torch.zeros(4, 1), threshold=0.02)["1"]["dead"] == 2


def test_model_activation_layers_method_is_used():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.a = actkit.nn.ReLU()
            self.b = actkit.nn.ReLU()

        def activation_layers(self):
            return [self.b]

        def forward(self, x):
            return self.b(self.a(self.fc(x)))

    result = diagnostics.dead_units(Net(), torch.randn(4, 2))
    assert list(result) == ["b"]


def test_linear_net_gradient_norms_match_hand_computation():
    # y = w2 . (W1 x + b1) + b2, loss = y for a single example x (no activation: a linear net)
    x = torch.tensor([[1.0, 2.0]])
    w1 = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.5, 0.5]])
    b1 = torch.tensor([0.0, 1.0, -1.0])
    w2 = torch.tensor([[3.0, -2.0, 1.0]])
    model = nn.Sequential(_linear(2, 3, w1, b1), _linear(3, 1, w2, [0.5]))
    model(x).sum().backward()
    # hand computation: dL/dW1 = w2^T x, dL/db1 = w2^T, dL/dW2 = h^T, dL/db2 = 1, h = W1 x + b1
    h = [1.0 * 1 + 0.0 * 2 + 0.0, 2.0 * 1 - 1.0 * 2 + 1.0, 0.5 * 1 + 0.5 * 2 - 1.0]  # [1, 1, 0.5]
    layer0 = math.sqrt(sum((w * xi) ** 2 for w in (3.0, -2.0, 1.0) for xi in (1.0, 2.0)) + 9 + 4 + 1)
    layer1 = math.sqrt(sum(v * v for v in h) + 1.0)
    flow = diagnostics.GradientFlow()
    flow.update(model)
    assert flow.summary() == pytest.approx({"0": layer0, "1": layer1})

    flow.update(model)  # step 1: grads g
    model(x).sum().backward()  # accumulates: grads 2g
    flow.update(model)
    assert flow.steps == 2
    assert flow.summary() == pytest.approx({"0": 1.5 * layer0, "1": 1.5 * layer1})
    assert flow.summary() == {}  # reset after a summary


def test_gradient_flow_skips_frozen_and_gradless_layers():
    model = nn.Sequential(nn.Linear(2, 2), actkit.nn.ReLU(), nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    assert [n for n, _ in diagnostics.parameterised_layers(model)] == ["2"]
    flow = diagnostics.GradientFlow()
    flow.update(model)  # no backward yet: no gradient anywhere
    assert flow.steps == 0 and flow.summary() == {}


def _tiny_data(n_train=96, n_val=64, n_test=32):
    from actkit import data as data_mod

    train, test = data_mod.synthetic(n_train + n_val, n_test, seed=0)
    val = train.take(torch.arange(n_val))
    train = train.take(torch.arange(n_val, n_train + n_val))
    sizes = {"train": n_train, "val": n_val, "test": n_test, "train_full": n_train + n_val}
    return data_mod.Dataset(data_mod.dataset_info("synthetic"), train, val, test, "generated", sizes)


@pytest.mark.parametrize("epochs, phases", [(3, ["start", "middle", "end"]), (1, ["start", "end"])])
def test_training_callbacks_record_diagnostics(epochs, phases):
    from actkit import train as tr

    config = tr.Sweep(dataset="synthetic", model="simple", activations=tr.parse_activations("relu"), epochs=epochs,
                      batch_size=32, device="cpu").runs()[0]
    record = tr.train_run(config, _tiny_data(), callbacks=diagnostics.training_callbacks(config))
    dead = record["diagnostics"]["dead_units"]
    assert [e["phase"] for e in dead] == phases
    assert [e["epoch"] for e in dead][0] == 0 and dead[-1]["epoch"] == epochs
    assert list(dead[0]["layers"]) == record["model"]["activation_layers"]
    assert dead[0]["probe_size"] == 64
    for event in dead:
        assert 0.0 <= event["fraction"] <= 1.0
        assert event["layers"]["features.1"]["unit"] == "channel"
        assert event["layers"]["head.2"]["unit"] == "feature"
    flow = record["diagnostics"]["gradient_flow"]
    assert [e["epoch"] for e in flow] == list(range(1, epochs + 1))
    assert all(e["steps"] == 3 for e in flow)  # 96 images / batch 32
    assert list(flow[0]["layers"]) == ["features.0", "features.3", "head.1", "head.3"]
    assert all(v > 0 and math.isfinite(v) for e in flow for v in e["layers"].values())
