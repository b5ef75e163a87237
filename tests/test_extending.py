"""README "Extending actkit", held to its word: an activation, a kind and a model added at runtime (tests/toys.py)
are listed, tested by the suite's own registry-parametrised tests, and benchmarked, with nothing else edited.

"Tested" runs pytest in a fresh process with the toys registered by a plugin (``-p toys``) before the test
modules collect their parameters, selects the toy's test ids and requires that they exist and pass; the
pytest-benchmark suite (benchmarks/) runs in the same process, each case once untimed (``--benchmark-disable``).
"Benchmarked" is ``actkit bench`` (an activation, a kind) and ``actkit train`` (a model) in this process.
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import actkit
import toys
from actkit import functional, kinds, models, registry
from actkit import nn as actkit_nn
from actkit.bench import cases
from actkit.cli.main import app
from actkit.kernels import activations
from actkit.kinds import elementwise

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def restored_tables():
    """Every table a registration writes (and the caches keyed by activation name), as they were after the test."""
    tables = [registry.REGISTRY, registry._LOOKUP, activations.TABLE, kinds.KINDS, cases.KINDS, models.MODELS,
              actkit_nn.CLASSES, functional._LATE, elementwise._BY_CALL, elementwise._BY_VALUES]
    saved = [dict(table) for table in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def suite_outcomes(tmp_path: Path, select: str, *paths: str) -> dict[str, dict[str, str]]:
    """Run ``paths`` with the toys registered, ``-k select``: {test file: {test id: outcome}}."""
    report = tmp_path / "junit.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           # the benchmark suite's sweep, narrowed to one small case per mode (the compile provider alone takes
           # longer than everything else here)
           "ACTKIT_BENCH_SIZES": "4096", "ACTKIT_BENCH_PROVIDERS": "actkit,eager",
           "ACTKIT_BENCH_HOST_PROVIDERS": "actkit,module,eager"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "toys", "-p", "no:cacheprovider", "-q",
                           "--benchmark-disable", "-k", select, f"--junitxml={report}", *paths],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    outcomes: dict[str, dict[str, str]] = {}
    for case in ET.parse(report).iter("testcase"):
        found = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        module = case.get("classname").rpartition(".")[2] + ".py"
        outcomes.setdefault(module, {})[case.get("name")] = found[0] if found else "passed"
    return outcomes


def passed_tests(outcomes: dict[str, str]) -> set[str]:
    """The test functions behind the ids that passed."""
    return {name.partition("[")[0] for name, outcome in outcomes.items() if outcome == "passed"}


def listed(name: str) -> dict:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    table = runner.invoke(app, ["list"], env={"COLUMNS": "200"}).output
    assert any(line.startswith(f"│ {name} ") for line in table.splitlines())
    return next(a for a in json.loads(result.output)["activations"] if a["name"] == name)


def bench_records(tmp_path: Path, name: str) -> list[dict]:
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--act", name, "--device", "cpu", "--quick", "--sizes", "4096",
                                 "--providers", "actkit,eager", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{name} fwd fp32 2^12: " in " ".join(result.output.split())
    return [r for r in json.loads(out.read_text())["records"] if r["activation"] == name]


def test_an_activation_is_two_entries(restored_tables, tmp_path):
    """A spec (actkit.register) and its device functions (kernels.activations.TABLE), nothing else."""
    toys.add_activation()
    assert listed("toy_shrink")["kind"] == "elementwise"
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(actkit.functional.toy_shrink(x, lambd=0.5), F.softshrink(x, 0.5), rtol=0, atol=0)
    assert isinstance(actkit.nn.ToyShrink(), actkit.nn.Activation)

    outcomes = suite_outcomes(tmp_path, "toy_shrink", "tests/test_kernels.py", "tests/test_autograd.py",
                              "tests/test_eager.py", "tests/test_fewbit.py", "tests/test_kinds.py",
                              "benchmarks/test_activations.py")
    assert {"test_special_values", "test_shapes_and_layouts", "test_triton_gradient_matches_finite_differences",
            "test_gradcheck_float64", "test_saves_exactly_one_tensor", "test_eager_route_matches_the_custom_ops",
            "test_every_activation_computes_its_reference_in_float64"} <= passed_tests(
        {k: v for file, ids in outcomes.items() if file != "test_activations.py" for k, v in ids.items()})
    assert len(outcomes["test_kernels.py"]) >= 20 and "test_fewbit.py" in outcomes
    assert passed_tests(outcomes["test_activations.py"]) == {"test_activation", "test_host_cost"}

    records = bench_records(tmp_path, "toy_shrink")
    assert {(r["provider"], r["mode"]) for r in records} >= {("actkit", "fwd+bwd"), ("eager", "fwd+bwd")}
    assert all(r["median_ms"] > 0 and r["gbps"] > 0 and r["kind"] == "elementwise" for r in records)


def test_a_kind_is_one_module(restored_tables, tmp_path):
    """A kind module with its math, what it saves and its custom ops (tests/toys.py), its Kind registered, one
    activation of it registered, and its byte model for the benchmarks."""
    toys.add_kind()
    assert listed("toy_maxout")["kind"] == "toy_pairmax"
    x = torch.randn(4, 6)
    assert torch.equal(actkit.functional.toy_maxout(x), torch.maximum(x[:, :3], x[:, 3:]))
    assert torch.equal(actkit.nn.ToyMaxout()(x), actkit.functional.toy_maxout(x))
    with pytest.raises(ValueError, match="'toy_maxout' is a toy_pairmax function, not a pointwise activation"):
        models.make_activation("toy_maxout")

    outcomes = suite_outcomes(tmp_path, "toy_maxout or toy_pairmax", "tests/test_eager.py", "tests/test_kinds.py",
                              "benchmarks/test_activations.py")
    assert passed_tests(outcomes["test_eager.py"]) == {"test_eager_route_matches_the_custom_ops"}
    assert len(outcomes["test_eager.py"]) == 2  # the Triton kernel and the PyTorch fallback
    assert passed_tests(outcomes["test_kinds.py"]) == {"test_kind_module_provides_the_protocol",
                                                    "test_every_activation_computes_its_reference_in_float64"}
    assert passed_tests(outcomes["test_activations.py"]) == {"test_activation", "test_host_cost"}

    records = bench_records(tmp_path, "toy_maxout")
    assert {(r["provider"], r["mode"]) for r in records} >= {("actkit", "fwd+bwd"), ("eager", "fwd+bwd")}
    assert all(r["shape"] == [4, 1024] and r["kind"] == "toy_pairmax" and r["median_ms"] > 0 for r in records)


def test_a_model_is_one_registered_class(restored_tables, tmp_path):
    """A subclass of models.ActivationModel under models.register_model: build_model and actkit train take it."""
    toys.add_model()
    unknown = runner.invoke(app, ["train", "--model", "nope", "--dataset", "synthetic"])
    assert unknown.exit_code == 2 and "choose one of: convnet, simple, toymlp" in unknown.output

    outcomes = suite_outcomes(tmp_path, "toymlp", "tests/test_models.py")
    assert passed_tests(outcomes["test_models.py"]) == {
        "test_models_adapt_to_the_input_shape", "test_activation_layers_in_forward_order",
        "test_every_model_gives_the_reference_model_results_with_actkit_slots"}

    out = tmp_path / "train"
    result = runner.invoke(app, ["train", "--model", "toymlp", "--act", "relu,prelu", "--dataset", "synthetic",
                                 "--epochs", "1", "--subset", "256", "--val-size", "200", "--batch-size", "64",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    for act in ("relu", "prelu"):
        record = json.loads((out / "runs" / f"{act}-actkit-seed0.json").read_text())
        assert record["model"]["name"] == "toymlp" and record["model"]["activation_layers"] == ["features.2"]
        assert 0 <= record["final"]["test_acc"] <= 1
