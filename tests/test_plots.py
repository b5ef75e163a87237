"""Figures: the PNG exists, has the requested pixel size, and is not blank; the data behind them is right."""
import numpy as np
import pytest
import torch
from PIL import Image

from actkit import plots, toy


def assert_png(path, size=None):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        if size is not None:
            assert img.size == tuple(size)
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    # not blank: many pixels differ from the background (the corner) and there are several colours
    background = pixels[0, 0]
    inked = np.abs(pixels - background).sum(axis=2) > 30
    assert inked.mean() > 0.01, f"{path} looks blank ({inked.mean():.4f} inked)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_curve_derivative_comes_from_backward():
    relu = plots.activation_curve("relu", -2, 2, 401)
    np.testing.assert_array_equal(relu["dy"], (relu["x"] > 0).astype(np.float32))
    assert relu["backend"] == "torch"
    gelu = plots.activation_curve("gelu", -4, 4, 801)
    numeric = np.gradient(gelu["y"].astype(np.float64), gelu["x"].astype(np.float64))
    np.testing.assert_allclose(gelu["dy"][1:-1], numeric[1:-1], atol=2e-3)
    step = plots.activation_curve("step", -1, 1, 11)
    assert not step["differentiable"] and not step["dy"].any()


def test_curve_rejects_bad_range():
    with pytest.raises(ValueError, match="low < high"):
        plots.activation_curve("relu", 1, -1)
    with pytest.raises(ValueError, match="unknown activation"):
        plots.activation_curve("nope")
    with pytest.raises(ValueError, match="row-wise"):
        plots.activation_curve("softmax")
    prelu = plots.activation_curve("prelu", -2, 2, 5)  # learnable: its initial slope 0.25 below 0
    np.testing.assert_allclose(prelu["dy"], [0.25, 0.25, 0.25, 1.0, 1.0])


def test_curves_png(tmp_path):
    out = plots.curves(["relu", "elu", "gelu"], tmp_path / "sub" / "curves.png", size=(900, 600), points=201)
    assert out == tmp_path / "sub" / "curves.png"
    assert_png(out, (900, 600))
    assert_png(plots.curves(["mish"], tmp_path / "one.png", points=101))


def test_curves_rejects_non_png(tmp_path):
    with pytest.raises(ValueError, match="PNG"):
        plots.curves(["relu"], tmp_path / "c.jpg", points=11)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", toy.DATASETS)
def test_toy_datasets_are_seeded_and_balanced(name):
    x, y = toy.make_dataset(name, 101, seed=3)
    x2, y2 = toy.make_dataset(name, 101, seed=3)
    assert x.shape == (101, 2) and x.dtype == torch.float32
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, toy.make_dataset(name, 101, seed=4)[0])
    assert int(y.sum()) == 51 and set(y.tolist()) == {0, 1}


def test_toy_training_learns_and_boundary_png(tmp_path):
    x, y = toy.make_dataset("moons", 200, seed=0)
    xt, yt = toy.make_dataset("moons", 200, seed=1)
    results = [toy.train_toy(a, x, y, xt, yt, steps=150, hidden=16, depth=2) for a in ("relu", "tanh")]
    for r in results:
        assert r.train_accuracy > 0.85 and r.test_accuracy > 0.8, r
        assert r.losses[-1] < r.losses[0]
    out = plots.boundaries(results, x, y, tmp_path / "b.png", dataset="moons", resolution=60, size=(700, 380))
    assert_png(out, (700, 380))


def test_unknown_toy_dataset():
    with pytest.raises(ValueError, match="moons, circles, spirals"):
        toy.make_dataset("swirls")


# -- runs and bench figures, from real (tiny) result files ----------------------------------------------
import plotdata  # noqa: E402

from actkit import bench, runs  # noqa: E402


@pytest.fixture(scope="module")
def run_set(tmp_path_factory):
    return runs.load(plotdata.make_runs(tmp_path_factory.mktemp("sweep") / "sweep", seeds=(0, 1)))


def test_runset_aggregates(run_set):
    assert run_set.labels == ["relu", "sigmoid"] and run_set.impls == ["actkit"] and run_set.seeds == [0, 1]
    assert run_set.baseline == "relu"
    c = run_set.curves("relu", "actkit", "val_acc")
    values = [[r["history"]["val_acc"][i] for r in run_set.select("relu", "actkit")] for i in range(2)]
    assert c["epoch"] == [1, 2] and c["n"] == [2, 2]
    assert c["mean"] == pytest.approx([sum(v) / 2 for v in values])
    assert all(lo <= m <= hi for lo, m, hi in zip(c["low"], c["mean"], c["high"]))
    flow = run_set.gradient_flow("sigmoid", epoch="last")
    assert list(flow) == ["features.0", "features.3", "head.1", "head.3"]
    assert set(run_set.dead_units("relu")) == {"start", "middle", "end"}


def test_run_figures(run_set, tmp_path):
    made = plots.run_figures(run_set, tmp_path / "figs")
    assert set(made) == set(plots.RUN_FIGURES)
    for path in made.values():
        plotdata.assert_png(path)
    plotdata.assert_png(plots.learning_curves(run_set, tmp_path / "lc.png", size=(640, 480)), (640, 480))
    plotdata.assert_png(plots.accuracy_bars(run_set, tmp_path / "acc.png", size=(400, 300)), (400, 300))


def test_run_figures_without_diagnostics(run_set, tmp_path):
    stripped = runs.RunSet(run_set.source, [{**r, "diagnostics": {}} for r in run_set.records], "relu")
    made = plots.run_figures(stripped, tmp_path)
    assert set(made) == {"learning_curves", "accuracy", "throughput"}
    with pytest.raises(ValueError, match="--diagnostics"):
        plots.gradient_flow(stripped, tmp_path / "g.png")


def test_bench_figure(tmp_path):
    payload = bench.load(plotdata.make_bench(tmp_path / "bench.json"))
    assert plots.bench_panels(payload) == [("relu", "fp32", "fwd"), ("relu", "fp32", "fwd+bwd"),
                                           ("tanh", "fp32", "fwd"), ("tanh", "fp32", "fwd+bwd")]
    plotdata.assert_png(plots.bench(payload, tmp_path / "b.png", size=(900, 700)), (900, 700))
    plotdata.assert_png(plots.bench(payload, tmp_path / "b1.png", activations=["tanh"], modes=["fwd"]))
    with pytest.raises(ValueError, match="no records"):
        plots.bench(payload, tmp_path / "none.png", dtypes=["bf16"])
