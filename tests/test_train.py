"""actkit.train: paired-seed determinism, resume after an interruption, result files, real-data training."""
import csv
import json
from pathlib import Path

import pytest
import torch

from actkit import data as D
from actkit import results
from actkit import selection
from actkit import train as T
from actkit.train import loop
from actkit.models import build_model
from actkit.runs import HISTORY_KEYS

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
SMALL = dict(dataset="synthetic", model="simple", epochs=2, batch_size=64, val_size=200, subset=640)


@pytest.fixture(scope="module")
def small_data():
    return D.load("synthetic", val_size=200, subset=640)


def sweep(**overrides):
    options = {**SMALL, **overrides}
    acts = options.pop("acts", "relu")
    return T.Sweep(activations=T.parse_activations(acts), **options)


class Recorder(T.Callback):
    """Captures what a paired design must keep equal: initial weights, batch order, dropout-free losses."""

    name = "recorder"

    def __init__(self):
        self.init = None
        self.labels = []

    def on_train_start(self, ctx):
        self.init = {k: v.clone() for k, v in ctx.model.state_dict().items()}
        return {"probe_size": int(ctx.probe[0].shape[0])}

    def on_step(self, ctx):
        self.labels.append(ctx.batch[1].clone())
        assert all(p.grad is not None for p in ctx.model.parameters())  # after backward

    def on_epoch_end(self, ctx):
        return {"steps": ctx.step}

    def on_train_end(self, ctx):
        return {"activations": len(ctx.model.activation_layers())}


def test_same_seed_same_activation_gives_the_same_curves(small_data):
    cfg = sweep(model="convnet", epochs=2).runs()[0]
    a = T.train_run(cfg, small_data)
    b = T.train_run(cfg, small_data)
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["history"]["val_loss"] == b["history"]["val_loss"]
    assert a["final"]["confusion"] == b["final"]["confusion"]
    other_seed = T.train_run(sweep(model="convnet", epochs=2, seeds=[1]).runs()[0], small_data)
    assert other_seed["history"]["train_loss"] != a["history"]["train_loss"]


def test_seeds_are_paired_across_activations(small_data):
    recorders = {}
    runs = sweep(acts="relu,gelu", seeds=[0], epochs=1).runs()
    assert [r.activation for r in runs] == ["relu", "gelu"]
    for cfg in runs:
        recorders[cfg.activation] = rec = Recorder()
        T.train_run(cfg, small_data, callbacks=[rec])
    relu, gelu = recorders["relu"], recorders["gelu"]
    assert relu.init.keys() == gelu.init.keys()
    assert all(torch.equal(relu.init[k], gelu.init[k]) for k in relu.init)
    assert len(relu.labels) == len(gelu.labels) == 10
    assert all(torch.equal(x, y) for x, y in zip(relu.labels, gelu.labels))  # same data order


@pytest.mark.parametrize("act", ["silu", "prelu"])
def test_actkit_and_torch_impls_agree_on_cpu(small_data, act):
    """On CPU actkit's op runs the PyTorch reference: training must be the same computation."""
    ours, ref = (T.train_run(c, small_data) for c in sweep(acts=act, impls=["actkit", "torch"], epochs=1).runs())
    assert ours["backend"] == "torch" and ref["backend"] == "torch-eager"
    assert ours["history"]["train_loss"] == pytest.approx(ref["history"]["train_loss"], rel=1e-5)


def test_run_record_schema_and_callback_events(small_data):
    rec = T.train_run(sweep(acts="leaky_relu:negative_slope=0.2").runs()[0], small_data, callbacks=[Recorder()])
    assert rec["schema"] == T.RUN_SCHEMA and rec["id"] == "leaky_relu_negative_slope=0.2-actkit-seed0"
    assert rec["status"] == "finished" and rec["resumed_from_epoch"] == 0
    assert rec["config"]["act_params"] == {"negative_slope": 0.2}
    assert set(rec["history"]) == set(HISTORY_KEYS)
    assert rec["history"]["epoch"] == [1, 2] and all(len(v) == 2 for v in rec["history"].values())
    f = rec["final"]
    assert f["test_n"] == 1000 and 0 <= f["test_acc"] <= 1
    assert sum(map(sum, f["confusion"])) == 1000
    assert f["test_acc"] == pytest.approx(sum(f["confusion"][i][i] for i in range(10)) / 1000)
    assert len(f["f1_per_class"]) == 10 and f["best_val_epoch"] in (1, 2)
    t = rec["timing"]
    assert t["steps"] == 20 and t["images"] == 1280 and t["warmup_steps"] == loop.WARMUP_STEPS
    assert t["train_images_per_s"] > 0 and t["step_time_ms"] > 0
    assert rec["memory"]["peak_bytes"] is None and rec["memory"]["peak_rss_bytes"] > 0
    assert rec["env"]["device"] == "cpu" and rec["env"]["torch"] == torch.__version__
    assert rec["model"]["activation_layers"] == ["features.1", "features.4", "head.2"]
    assert rec["data"]["train"] == 640 and rec["data"]["source"] == "generated"
    events = rec["diagnostics"]["recorder"]
    assert [(e["event"], e["epoch"]) for e in events] == [("start", 0), ("epoch", 1), ("epoch", 2), ("end", 2)]
    assert events[0]["probe_size"] == 200 and events[2]["steps"] == 20 and events[3]["activations"] == 3
    json.dumps(rec, allow_nan=False)  # strictly valid JSON


def test_evaluate_against_known_predictions():
    class Fixed(torch.nn.Module):  # predicts class (index % 3) with a margin, whatever the input
        def forward(self, x):
            pred = x[:, 0, 0, 0].long() % 3
            return torch.nn.functional.one_hot(pred, 3).float() * 10
    x = torch.arange(6.0).view(6, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 1, 1, 0])  # predictions 0 1 2 0 1 2
    out = T.evaluate(Fixed(), [(x[:4], y[:4]), (x[4:], y[4:])], 3, torch.device("cpu"))
    assert out["n"] == 6 and out["acc"] == pytest.approx(4 / 6)
    assert out["confusion"] == [[1, 0, 1], [1, 2, 0], [0, 0, 1]]
    expected = torch.nn.functional.cross_entropy(Fixed()(x), y).item()
    assert out["loss"] == pytest.approx(expected, rel=1e-6)


class Interrupt(T.Callback):
    """Simulates Ctrl-C in the middle of an epoch of one run."""

    def __init__(self, act, epoch):
        self.act, self.epoch = act, epoch

    def __call__(self, cfg):
        return [self] if cfg.activation == self.act else []

    def on_step(self, ctx):
        if ctx.epoch == self.epoch and ctx.step % 10 == 3:
            raise KeyboardInterrupt


def test_resume_after_an_interrupted_sweep_loses_nothing(tmp_path, small_data):
    sw = sweep(acts="relu,gelu", epochs=3)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        T.run_sweep(sw, out, data=small_data, callbacks=Interrupt("gelu", epoch=2))
    relu_file = out / "runs" / "relu-actkit-seed0.json"
    assert relu_file.is_file() and not (out / "runs" / "gelu-actkit-seed0.json").exists()
    assert (out / "checkpoints" / "gelu-actkit-seed0.pt").is_file()
    relu_before = relu_file.read_bytes()

    with pytest.raises(T.ResultsExistError, match="--resume"):
        T.run_sweep(sw, out, data=small_data)
    result = T.run_sweep(sw, out, data=small_data, resume=True)
    assert result.skipped == ["relu-actkit-seed0"] and result.ran == ["gelu-actkit-seed0"]
    assert relu_file.read_bytes() == relu_before
    assert not (out / "checkpoints" / "gelu-actkit-seed0.pt").exists()
    resumed = results.read_json(out / "runs" / "gelu-actkit-seed0.json")
    assert resumed["resumed_from_epoch"] == 1

    # the resumed run is the run an uninterrupted sweep gives (RNG states restored with the checkpoint)
    clean = T.train_run(sw.runs()[1], small_data)
    assert resumed["history"]["train_loss"] == clean["history"]["train_loss"]
    assert resumed["history"]["val_acc"] == clean["history"]["val_acc"]
    assert resumed["final"]["confusion"] == clean["final"]["confusion"]

    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["id"] for r in rows) == ["gelu-actkit-seed0", "relu-actkit-seed0"]
    summary = results.read_json(out / "summary.json")
    assert {r["act_label"] for r in summary["rows"]} == {"relu", "gelu"} and summary["baseline"] == "relu"
    assert (out / "summary.csv").is_file() and results.read_json(out / "config.json")["schema"] == T.SWEEP_SCHEMA

    # everything finished: a second resume trains nothing
    again = T.run_sweep(sw, out, data=small_data, resume=True)
    assert again.ran == [] and len(again.records) == 2


def test_resume_refuses_a_different_configuration(tmp_path, small_data):
    out = tmp_path / "out"
    T.run_sweep(sweep(epochs=1), out, data=small_data)
    with pytest.raises(T.TrainError, match="different configuration"):
        T.run_sweep(sweep(epochs=2), out, data=small_data, resume=True)
    # adding activations or seeds to a finished sweep is fine: only the new runs train
    grown = T.run_sweep(sweep(epochs=1, seeds=[0, 1]), out, data=small_data, resume=True)
    assert grown.skipped == ["relu-actkit-seed0"] and grown.ran == ["relu-actkit-seed1"]


def test_find_resumable_picks_the_newest_matching_directory(tmp_path, small_data):
    base = tmp_path / "runs"
    sw = sweep(epochs=1)
    T.run_sweep(sw, base / "20240101-000000", data=small_data)
    T.run_sweep(sweep(epochs=1, lr=0.01), base / "20240102-000000", data=small_data)
    assert T.find_resumable(sw, base) == base / "20240101-000000"
    assert T.find_resumable(sweep(epochs=5), base) is None


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "imagenet"}, "unknown dataset"),
    ({"model": "vgg"}, "unknown model"),
    ({"impls": ["jit"]}, "unknown implementation"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": -1.0}, "learning rate"),
    ({"baseline": "mish"}, "baseline 'mish' is not one of the activations run: relu"),
])
def test_sweep_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(T.TrainError, match="CUDA is not available"):
        selection.parse_device("cuda", error=T.TrainError)


def test_parse_activations():
    acts = T.parse_activations("relu, Swish,leaky_relu:negative_slope=0.1,relu")
    assert [a.label for a in acts] == ["relu", "silu", "leaky_relu_negative_slope=0.1"]
    assert acts[2].params == {"negative_slope": 0.1}
    assert "step" not in [a.name for a in T.parse_activations("all")]
    with pytest.raises(ValueError, match="Did you mean .*'gelu'"):  # 'glu' is as close a match
        T.parse_activations("gleu")
    with pytest.raises(T.TrainError, match="name=value"):
        T.parse_activations("elu:1.0")


def test_parse_activations_with_a_few_bit_backward():
    acts = T.parse_activations("gelu:saved_bits=2,relu,elu:saved_bits=0", saved_bits=3)
    assert [a.label for a in acts] == ["gelu_saved_bits=2", "relu_saved_bits=3", "elu"]
    assert acts[0].params == {"saved_bits": 2} and acts[1].saved_bits == 3
    assert acts[2].params == {"alpha": 1.0} and acts[2].saved_bits is None  # 0: the exact backward
    for text, bits, match in [("gelu:saved_bits=9", None, "from 1 to 8"), ("gelu:saved_bits=two", None, "from 1 to 8"),
                              ("prelu:saved_bits=2", None, "prelu is a learnable activation"),
                              ("relu,prelu", 2, "prelu is a learnable activation")]:
        with pytest.raises(T.TrainError, match=match):
            T.parse_activations(text, bits)
    with pytest.raises(T.TrainError, match="gelu_saved_bits=2: a few-bit backward is actkit's; run it with "
                                           "--impl actkit .*not torch"):
        sweep(acts="gelu:saved_bits=2", impls=["actkit", "torch"])


def test_run_records_the_bytes_saved_for_backward(small_data):
    """The record's saved bytes, exact against 2-bit GELU: the difference is what the activations' saved
    inputs weigh (4 bytes per element in fp32) less their packed 2-bit codes (one int32 per 16 elements),
    counted from the activation layers' input sizes, an independent account."""
    exact, few = (T.train_run(c, small_data) for c in sweep(acts="gelu,gelu:saved_bits=2", epochs=1).runs())
    assert exact["config"]["act_params"] == {} and few["config"]["act_params"] == {"saved_bits": 2}
    sizes = []
    model = build_model("simple", "gelu", "actkit", {}, small_data.info.shape, small_data.info.num_classes)
    for _, layer in model.activation_layers():
        layer.register_forward_hook(lambda m, inputs, out: sizes.append(inputs[0].numel()))
    model(torch.zeros(SMALL["batch_size"], *small_data.info.shape))
    assert len(sizes) == 3
    expected = sum(4 * n - 4 * -(-n // 16) for n in sizes)
    assert exact["memory"]["saved_bytes"] - few["memory"]["saved_bytes"] == expected
    parameters = sum(p.numel() * 4 for p in model.parameters() if p.dim() > 1)  # weights; linear/conv keep them
    assert exact["memory"]["saved_parameter_bytes"] == parameters
    assert T.run_row(few)["saved_bytes"] == few["memory"]["saved_bytes"]
    rows = {r["act_label"]: r for r in T.summarise([exact, few], "gelu")}
    assert rows["gelu_saved_bits=2"]["saved_bytes"] == few["memory"]["saved_bytes"]


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(),
                    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_short_training_on_real_fashion_mnist(tmp_path):
    """End to end on the real files: 10,000 training images, 2 epochs of the simple CNN, the full test set."""
    sw = T.Sweep(dataset="fashion-mnist", model="simple", epochs=2, subset=10000, val_size=1000)
    result = T.run_sweep(sw, tmp_path / "out", data_dir=tmp_path / "data")
    rec = result.records[0]
    assert rec["data"]["source"] == str(DEBIAN_FASHION) and rec["final"]["test_n"] == 10000
    assert rec["history"]["train_loss"][1] < rec["history"]["train_loss"][0]
    assert rec["final"]["test_acc"] > 0.75
