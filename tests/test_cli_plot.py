"""``actkit plot ...`` and ``actkit boundary`` through Typer's CliRunner: files, exit codes, errors."""
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from actkit.cli.main import app

runner = CliRunner()


def assert_png(path, size=None):
    assert path.exists()
    with Image.open(path) as img:
        if size is not None:
            assert img.size == tuple(size)
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert (np.abs(pixels - pixels[0, 0]).sum(axis=2) > 30).mean() > 0.01


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plot_curves_writes_png_and_says_where(tmp_path):
    out = tmp_path / "curves.png"
    result = run("plot", "curves", "--act", "relu,Swish,gelu", "--range", "-3", "3", "--points", "101",
                 "--out", out, "--width", "800", "--height", "500")
    assert result.exit_code == 0, result.output
    assert "curves.png" in result.output.replace("\n", "")
    assert_png(out, (800, 500))


def test_plot_curves_errors(tmp_path):
    result = run("plot", "curves", "--act", "relu,nope", "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and "unknown activation 'nope'" in result.output
    result = run("plot", "curves", "--range", "2", "-2", "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and "LOW < HIGH" in result.output
    result = run("plot", "curves", "--out", tmp_path / "c.svg")
    assert result.exit_code == 2 and ".png" in result.output
    result = run("plot", "curves", "--width", "300", "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and "--height" in result.output
    assert not list(tmp_path.iterdir())


def test_boundary_command(tmp_path):
    out = tmp_path / "b.png"
    result = run("boundary", "--act", "relu,leaky_relu", "--dataset", "circles", "--samples", "120",
                 "--steps", "60", "--hidden", "8", "--depth", "2", "--out", out, "--width", "640", "--height", "360")
    assert result.exit_code == 0, result.output
    assert "relu" in result.output and "leaky_relu" in result.output and "b.png" in result.output
    assert_png(out, (640, 360))


def test_boundary_errors(tmp_path):
    result = run("boundary", "--dataset", "swirls", "--out", tmp_path / "b.png")
    assert result.exit_code == 2 and "moons, circles, spirals" in result.output
    result = run("boundary", "--act", "reluu", "--out", tmp_path / "b.png")
    assert result.exit_code == 2 and "Did you mean 'relu'" in result.output
    result = run("boundary", "--act", "relu,step", "--out", tmp_path / "b.png")
    assert result.exit_code == 2 and "no gradient" in result.output
    result = run("boundary", "--act", "softmax", "--out", tmp_path / "b.png")
    assert result.exit_code == 2 and "row-wise" in result.output
    result = run("plot", "curves", "--act", "relu,log_softmax", "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and "row-wise" in result.output
    assert not list(tmp_path.iterdir())


def test_plot_curves_learnable_activations(tmp_path):
    result = run("plot", "curves", "--act", "prelu,swish_beta", "--points", "51", "--out", tmp_path / "l.png")
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "l.png")


def test_plot_runs_and_bench(tmp_path):
    import plotdata

    run_dir = plotdata.make_runs(tmp_path / "sweep", acts="relu,tanh", seeds=(0,), epochs=1)
    result = run("plot", "runs", run_dir, "--width", "500", "--height", "400")
    assert result.exit_code == 0, result.output
    flat = result.output.replace("\n", "")
    for name in ("learning_curves", "accuracy", "throughput", "gradient_flow", "dead_units"):
        assert f"{name}.png" in flat
        assert_png(run_dir / "figures" / f"{name}.png", (500, 400))
    bench_json = plotdata.make_bench(tmp_path / "bench.json")
    result = run("plot", "bench", bench_json, "--mode", "fwd")
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "bench.png")
    result = run("plot", "bench", bench_json, "--act", "gelu", "--out", tmp_path / "g.png")
    assert result.exit_code == 2 and "no records" in result.output


def test_plot_runs_and_bench_errors(tmp_path):
    result = run("plot", "runs", tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = run("plot", "runs", tmp_path)
    assert result.exit_code == 2 and "no training run records" in result.output
    result = run("plot", "bench", tmp_path / "missing.json")
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/1"}')
    result = run("plot", "bench", bad)
    assert result.exit_code == 2 and "not an actkit bench result" in result.output
