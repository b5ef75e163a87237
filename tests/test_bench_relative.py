"""actkit bench-table --relative-to: each activation's time over the reference's, from the file's records."""
import json
import re

import pytest
from typer.testing import CliRunner

import plotdata
from actkit import bench
from actkit.bench.relative import predicted_ratios, relative_rows, relative_table
from actkit.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    return plotdata.make_bench(tmp_path_factory.mktemp("bench") / "bench.json")


def _record(payload, act, numel, mode, provider):
    return next(r for r in payload["records"] if (r["activation"], r["numel"], r["mode"], r["provider"])
                == (act, numel, mode, provider))


def test_ratios_are_medians_over_the_reference(bench_file):
    payload = bench.load(bench_file)
    rows = relative_rows(payload, "relu")
    assert {(r["activation"], r["numel"], r["mode"]) for r in rows} == {
        (a, n, m) for a in ("relu", "tanh") for n in (1024, 4096) for m in ("fwd", "fwd+bwd")}
    for row in rows:
        for provider in ("actkit", "eager"):
            mine = _record(payload, row["activation"], row["numel"], row["mode"], provider)
            ref = _record(payload, "relu", row["numel"], row["mode"], provider)
            cell = row["providers"][provider]
            assert cell["ratio"] == pytest.approx(mine["median_ms"] / ref["median_ms"], rel=1e-12)
            assert cell["low"] == pytest.approx(mine["p20_ms"] / ref["p80_ms"], rel=1e-12)
            assert cell["high"] == pytest.approx(mine["p80_ms"] / ref["p20_ms"], rel=1e-12)
            assert cell["low"] <= cell["ratio"] <= cell["high"]
            if row["activation"] == "relu":
                assert cell["ratio"] == 1.0


def test_table_text_load_note_and_the_predicted_column(bench_file):
    payload = bench.load(bench_file)
    payload["host"] = {"cpu_count": 2, "load_average_start": 3.0, "load_average_end": 4.2}
    text = relative_table(payload, "relu", modes=["fwd+bwd"])
    row = next(l for l in text.splitlines() if l.startswith("| tanh | fp32 | 2^12 | fwd+bwd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    r = relative_rows(payload, "relu", modes=["fwd+bwd"])
    tanh = next(x for x in r if x["activation"] == "tanh" and x["numel"] == 4096)["providers"]["actkit"]
    assert cells[5] == f"{tanh['ratio']:.2f}x ({tanh['low']:.2f}-{tanh['high']:.2f})"
    assert cells[-1] == "-" and "not computed here" in text
    assert "load average 3.0-4.2 on 2 CPUs" in text and "the host was busy" in text
    assert "| fwd |" not in text
    given = relative_table(payload, "relu", predicted={("tanh", "fp32", "fwd+bwd"): 1.25,
                                                       ("relu", "fp32", "fwd+bwd"): 1.0})
    assert re.search(r"\| tanh \| fp32 \| 2\^12 \| fwd\+bwd \|.*\| 1\.25x \|$", given, re.M)
    assert "not computed here" not in given
    with pytest.raises(bench.BenchError, match="--relative-to gelu: .* no records of it; it has: relu, tanh"):
        relative_rows(payload, "gelu")


def test_cli_relative_to(bench_file, tmp_path):
    result = runner.invoke(app, ["bench-table", str(bench_file), "--relative-to", "relu", "--mode", "fwd+bwd"])
    assert result.exit_code == 0, result.output
    assert "actkit x relu" in result.output and "| tanh | fp32 | 2^10 | fwd+bwd |" in result.output
    result = runner.invoke(app, ["bench-table", str(bench_file), "--relative-to", "gelu"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "it has: relu, tanh" in result.output
    host = tmp_path / "host.json"
    payload = json.loads(bench_file.read_text())
    payload["schema"] = bench.HOST_SCHEMA
    host.write_text(json.dumps(payload))
    result = runner.invoke(app, ["bench-table", str(host), "--relative-to", "relu"])
    assert result.exit_code == 2 and "--host-cost" in result.output


def _static_row(act, what, ps, dtype="fp32", kind="elementwise"):
    return {"activation": act, "kind": kind, "dtype": dtype, "what": what,
            "gpus": {"H100": {"ps_per_element": ps}}}


def test_predicted_ratios_add_forward_and_the_saved_tensors_backward():
    # relu saves y, elu and gelu save x by default (torch's choice): the backward launch autograd runs is that one
    static = {"schema": "actkit-static-roofline/1", "rows": [
        _static_row("relu", "forward", {"memory": 2.0, "issue": 0.5}),
        _static_row("relu", "backward from y", {"memory": 3.0, "issue": 0.5}),
        _static_row("relu", "backward from x", {"memory": 30.0, "issue": 0.5}),
        _static_row("gelu", "forward", {"memory": 2.0, "issue": 4.0}),
        _static_row("gelu", "backward from x", {"memory": 3.0, "issue": 2.0}),
        _static_row("gelu", "backward from y", {"memory": 99.0}),
        _static_row("elu", "forward", {"memory": 2.0}),
        _static_row("elu", "backward from x", {"memory": 4.0}),
        _static_row("elu", "backward from y", {"memory": 99.0}),
        _static_row("swiglu", "split last dim forward", {"memory": 9.0}, kind="glu")]}
    ratios = predicted_ratios(static, "relu")
    assert ratios[("gelu", "fp32", "fwd")] == pytest.approx(4.0 / 2.0)
    assert ratios[("gelu", "fp32", "bwd")] == pytest.approx(3.0 / 3.0)
    assert ratios[("gelu", "fp32", "fwd+bwd")] == pytest.approx((4.0 + 3.0) / (2.0 + 3.0))
    assert ratios[("relu", "fp32", "fwd+bwd")] == 1.0
    assert ratios[("elu", "fp32", "bwd")] == pytest.approx(4.0 / 3.0)
    assert not any(a == "swiglu" for a, _, _ in ratios)
    with pytest.raises(bench.BenchError, match="no A100 model; it has: H100"):
        predicted_ratios(static, "relu", "A100")


def test_cli_static_column(bench_file, tmp_path):
    static = tmp_path / "static.json"
    static.write_text(json.dumps({"schema": "actkit-static-roofline/1", "rows": [
        _static_row("relu", "forward", {"memory": 2.0}), _static_row("relu", "backward from y", {"memory": 3.0}),
        _static_row("tanh", "forward", {"memory": 2.0, "issue": 3.0}),
        _static_row("tanh", "backward from y", {"memory": 3.0})]}))
    result = runner.invoke(app, ["bench-table", str(bench_file), "--relative-to", "relu", "--mode", "fwd+bwd",
                                 "--static", str(static)])
    assert result.exit_code == 0, result.output
    assert re.search(r"\| tanh \| fp32 \| 2\^12 \| fwd\+bwd \|.*\| 1\.20x \|$", result.output, re.M)
    for words, message in ((["--static", str(bench_file)], "is not a static roofline file"),
                           (["--static", str(tmp_path / "none.json")], "cannot read the static roofline file"),
                           (["--static", str(static), "--gpu", "A100"], "no A100 model")):
        result = runner.invoke(app, ["bench-table", str(bench_file), "--relative-to", "relu", *words])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["bench-table", str(bench_file), "--static", str(static)])
    assert result.exit_code == 2 and "--static goes with --relative-to" in result.output
