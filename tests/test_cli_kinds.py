"""The CLI shows and benchmarks the learnable, row-wise and gated-linear-unit activations."""
import json

from typer.testing import CliRunner

import actkit
from actkit.cli.main import app

runner = CliRunner()
NEW = {"prelu": "learnable", "swish_beta": "learnable", "softmax": "rowwise", "log_softmax": "rowwise",
       "swiglu": "glu", "glu": "glu"}


def test_list_includes_the_new_kinds():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    kinds = {a["name"]: a["kind"] for a in json.loads(result.output)["activations"]}
    assert {name: kinds[name] for name in NEW} == NEW
    assert kinds["mish"] == "elementwise"
    table = runner.invoke(app, ["list"], env={"COLUMNS": "240"})
    assert table.exit_code == 0
    prelu_row = next(line for line in table.output.splitlines() if "│ prelu" in line)
    assert "weight=0.25 (learnable)" in prelu_row and "x + weight" in prelu_row
    swiglu_row = next(line for line in table.output.splitlines() if "│ swiglu" in line)
    assert "silu(a) * b" in swiglu_row and "a, b" in swiglu_row


def test_bench_runs_the_new_kinds_on_cpu():
    result = runner.invoke(app, ["bench", "--act", ",".join(NEW), "--device", "cpu", "--quick", "--sizes", "4096",
                                 "--providers", "actkit,eager", "--mode", "fwd+bwd"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "not benchmarked yet" not in result.output
    for name in NEW:
        assert f"{name} fwd+bwd fp32" in result.output  # the summary line of a measured activation
    assert actkit.get("softmax").kind is actkit.kinds.ROWWISE
