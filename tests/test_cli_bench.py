"""`actkit bench` and `actkit bench-table` through Typer's CliRunner."""
from __future__ import annotations

import csv
import dataclasses
import json
import shlex

import pytest
import torch
from typer.testing import CliRunner

from actkit import bench
from actkit.cli.main import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def assert_usage_error(result, *fragments):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("args,fragments", [
    (["--act", "mishh"], ["unknown activation 'mishh'", "Did you mean 'mish'"]),
    (["--act", "relu,nosuch"], ["unknown activation 'nosuch'", "Valid names:"]),
    (["--dtype", "fp64"], ["unsupported dtype 'fp64'", "fp32, bf16, fp16"]),
    (["--dtype", "int8"], ["unsupported dtype 'int8'"]),
    (["--sizes", "abc"], ["bad size 'abc'", "2^20"]),
    (["--sizes", "0"], ["bad size '0'"]),
    (["--sizes", "2^99"], ["larger than 2^34"]),
    (["--mode", "sideways"], ["unsupported mode 'sideways'", "fwd, bwd, fwd+bwd"]),
    (["--providers", "jax"], ["unsupported provider 'jax'", "actkit, eager, compile"]),
    (["--device", "tpu"], ["unsupported device 'tpu'"]),
    (["--threads", "0"], ["bad --threads '0'"]),
    (["--threads", "many"], ["bad --threads 'many'"]),
])
def test_bad_options_are_one_line_exit_2(args, fragments):
    result = runner.invoke(app, ["bench", "--quick", "--device", "cpu", *args])
    assert_usage_error(result, *fragments)


@pytest.mark.parametrize("args,fragments", [
    (["--mode", "bwd"], ["unsupported mode 'bwd'", "with --host-cost choose from nograd, grad, fwd+bwd"]),
    (["--providers", "jax"], ["unsupported provider 'jax'", "actkit, module, eager, function, compile"]),
    (["--sizes", "0"], ["bad size '0'"]),
])
def test_bad_host_cost_options_are_one_line_exit_2(args, fragments):
    assert_usage_error(runner.invoke(app, ["bench", "--host-cost", "--device", "cpu", *args]), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu():
    result = runner.invoke(app, ["bench", "--act", "mish", "--device", "cuda", "--quick"])
    assert_usage_error(result, "'cuda'", "no CUDA GPU", "--device cpu")


def test_help_shows_the_defaults():
    result = runner.invoke(app, ["bench", "--help"], env=WIDE)
    assert result.exit_code == 0
    assert "[default: cuda if available]" in result.stdout and "--quick" in result.stdout


def test_json_path_that_is_a_directory(tmp_path):
    result = runner.invoke(app, ["bench", "--act", "relu", "--device", "cpu", "--json", str(tmp_path)])
    assert_usage_error(result, "is a directory")


def test_mish_quick_shows_all_three_providers(tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = runner.invoke(app, ["bench", "--act", "mish", "--device", "cpu", "--quick", "--sizes", "4096",
                                 "--json", str(out_json), "--csv", str(out_csv), "--markdown"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "mish" in text and "actkit backend: torch" in text and "eager = ATen" in text
    for provider in ("actkit", "eager", "compile"):
        assert provider in text
    for mode in ("fwd", "bwd", "fwd+bwd"):
        assert f"fp32 2^12 {mode}" in text
    summary = [line for line in text.splitlines() if line.startswith("mish fwd fp32 2^12: ")]
    assert len(summary) == 1 and "of copy" in summary[0] and "x ATen" in summary[0] and "x compile" in summary[0]
    assert "| activation | dtype | elements | GB/s (fwd / bwd / fwd+bwd) |" in text  # --markdown
    assert f"wrote {out_json}" in text and f"wrote {out_csv}" in text

    data = json.loads(out_json.read_text())
    assert {(r["provider"], r["mode"]) for r in data["records"]} == \
        {(p, m) for p in bench.PROVIDERS for m in bench.MODES}
    with open(out_csv, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 9

    table = runner.invoke(app, ["bench-table", str(out_json), "--mode", "fwd", "--layout", "long"])
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if line.startswith("| mish |")]
    assert len(rows) == 1 and "| fwd | fp32 | 2^12 |" in rows[0]
    assert data["environment"]["device_name"] in table.stdout


def test_forward_only_activation_is_noted(tmp_path):
    result = runner.invoke(app, ["bench", "--act", "step", "--device", "cpu", "--quick", "--sizes", "1024",
                                 "--providers", "actkit,eager"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "skipped step bwd: forward-only activation" in result.stdout
    assert "step fwd fp32 2^10:" in result.stdout


def test_bench_table_errors(tmp_path):
    assert_usage_error(runner.invoke(app, ["bench-table", str(tmp_path / "missing.json")]), "no such file")
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert_usage_error(runner.invoke(app, ["bench-table", str(other)]), "not an actkit bench result")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    assert_usage_error(runner.invoke(app, ["bench-table", str(garbage)]), "is not JSON")


# -- checkpoints, --resume and --overwrite ---------------------------------------------------------
SMALL = ["bench", "--act", "mish,relu", "--device", "cpu", "--quick", "--sizes", "1024",
         "--providers", "actkit,eager", "--mode", "fwd"]
SMALL_HOST = ["bench", "--host-cost", "--act", "mish,relu", "--device", "cpu", "--quick", "--sizes", "1024",
              "--providers", "actkit,eager", "--mode", "nograd"]


@pytest.fixture
def cases(monkeypatch):
    """Short timing, and the cases the per-case runner was called for (``cases.interrupt_at``: raise
    KeyboardInterrupt on that call, as Ctrl-C would)."""
    real_run_case = bench.sweep._run_case
    fast = dict(min_run_time=0.001, min_blocks=3, block_s=0.0002, warmup_calls=1)

    class Calls(list):
        interrupt_at = None

    calls = Calls()

    def run_case(config, spec, dtype_name, numel, env, tick):
        calls.append(spec.name)
        if len(calls) == calls.interrupt_at:
            raise KeyboardInterrupt
        return real_run_case(dataclasses.replace(config, **fast), spec, dtype_name, numel, env, tick)

    monkeypatch.setattr(bench.sweep, "_run_case", run_case)
    return calls


@pytest.mark.parametrize("small", [SMALL, SMALL_HOST], ids=["bandwidth", "host-cost"])
def test_ctrl_c_saves_finished_cases_and_the_printed_command_resumes(tmp_path, cases, small):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    cases.interrupt_at = 2
    result = runner.invoke(app, [*small, "--json", str(out_json), "--csv", str(out_csv)])
    assert result.exit_code == 130, result.output
    line, = result.stderr.strip().splitlines()
    assert line.startswith(f"Interrupted: 1 of 2 cases saved in {out_json}; resume with: actkit bench ")
    partial = json.loads(out_json.read_text())
    assert partial["complete"] is False and {r["activation"] for r in partial["records"]} == {"mish"}
    with open(out_csv, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(partial["records"]) == 2

    command = shlex.split(line.split("resume with: ")[1])
    assert command[:2] == ["actkit", "bench"] and command[-1] == "--resume"
    assert ("--host-cost" in command) == ("--host-cost" in small)
    cases.clear()
    cases.interrupt_at = None
    result = runner.invoke(app, command[1:], env=WIDE)
    assert result.exit_code == 0, result.output
    assert cases == ["relu"]  # mish was saved: not run again
    final = json.loads(out_json.read_text())
    assert final["complete"] is True and final["records"][:2] == partial["records"]
    assert [r["activation"] for r in final["records"]] == ["mish", "mish", "relu", "relu"]
    with open(out_csv, newline="") as fh:
        assert [row["activation"] for row in csv.DictReader(fh)] == ["mish", "mish", "relu", "relu"]
    table = runner.invoke(app, ["bench-table", str(out_json)])
    assert table.exit_code == 0 and "| relu | fp32 | 2^10 |" in table.stdout

    result = runner.invoke(app, command[1:], env=WIDE)  # resuming a finished file runs nothing
    assert result.exit_code == 0 and cases == ["relu"]
    assert json.loads(out_json.read_text())["records"] == final["records"]


def test_existing_json_is_not_overwritten_without_a_flag(tmp_path, cases):
    out_json = tmp_path / "r.json"
    out_json.write_text("precious")
    assert_usage_error(runner.invoke(app, [*SMALL, "--json", str(out_json)]),
                       f"{out_json} already exists", "--resume", "--overwrite")
    assert out_json.read_text() == "precious" and cases == []
    result = runner.invoke(app, [*SMALL, "--json", str(out_json), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads(out_json.read_text())["complete"] is True


def test_resume_with_other_settings_refuses(tmp_path, cases):
    out_json = tmp_path / "r.json"
    assert runner.invoke(app, [*SMALL, "--json", str(out_json)]).exit_code == 0
    before = out_json.read_text()
    cases.clear()
    result = runner.invoke(app, [*SMALL, "--sizes", "2048", "--json", str(out_json), "--resume"])
    assert_usage_error(result, "cannot resume", "sizes [1024]", "[2048]")
    assert cases == [] and out_json.read_text() == before


@pytest.mark.parametrize("args,fragment", [
    (["--resume"], "--resume needs --json FILE"),
    (["--resume", "--overwrite", "--json", "x.json"], "contradict"),
])
def test_resume_usage_errors(args, fragment):
    assert_usage_error(runner.invoke(app, [*SMALL, *args]), fragment)


def test_resume_refuses_a_file_that_is_not_a_bench_result(tmp_path):
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert_usage_error(runner.invoke(app, [*SMALL, "--json", str(other), "--resume"]), "not an actkit bench result")


def test_host_cost_table_json_and_markdown(tmp_path, cases):
    out_json, out_csv = tmp_path / "host.json", tmp_path / "host.csv"
    result = runner.invoke(app, ["bench", "--host-cost", "--act", "mish,step", "--device", "cpu", "--quick",
                                 "--providers", "actkit,module,eager,function", "--threads", "1",
                                 "--json", str(out_json), "--csv", str(out_csv), "--markdown"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Host cost per call" in text and "fp32, 16 elements" in text
    for call in ("actkit.functional.mish(x)", "actkit.nn.Mish()(x)", "F.mish(x)",
                 "autograd.Function(F.mish, aten.mish_backward)", "actkit.nn.Step()(x)"):
        assert call in text
    summary = [line for line in text.splitlines() if line.startswith("mish fp32 2^4: ")]
    assert len(summary) == 1 and "no grad: actkit.functional " in summary[0]
    assert "x eager (target <= 3x: " in summary[0] and "x autograd.Function (target <= 2x: " in summary[0]
    assert "skipped step grad: forward-only activation" in text and "skipped step function: no minimal" in text
    assert "| µs per call (no grad / grad / fwd+bwd) |" in text  # --markdown
    assert f"wrote {out_json}" in text and f"wrote {out_csv}" in text

    data = json.loads(out_json.read_text())
    assert data["schema"] == bench.HOST_SCHEMA and data["config"]["measure"] == "host"
    assert data["environment"]["cpu_threads"] == 1
    assert {(r["activation"], r["provider"], r["mode"]) for r in data["records"]} == \
        {("mish", p, m) for p in ("actkit", "module", "eager", "function") for m in bench.HOST_MODES} | \
        {("step", p, "nograd") for p in ("actkit", "module", "eager")}
    with open(out_csv, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(data["records"]) == 15

    table = runner.invoke(app, ["bench-table", str(out_json), "--mode", "grad", "--layout", "long"])
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if line.startswith("| mish |")]
    assert len(rows) == 4 and all(" | grad | " in row for row in rows)
    assert_usage_error(runner.invoke(app, ["bench-table", str(out_json), "--mode", "bwd"]),
                       "unsupported mode 'bwd'", "with --host-cost")


def test_a_file_of_the_other_measurement_is_refused(tmp_path, cases):
    out_json = tmp_path / "r.json"
    assert runner.invoke(app, [*SMALL, "--json", str(out_json)]).exit_code == 0
    before = out_json.read_text()
    cases.clear()
    result = runner.invoke(app, [*SMALL_HOST, "--json", str(out_json), "--resume"])
    assert_usage_error(result, "cannot resume", "measure 'bandwidth'", "'host'")
    assert cases == [] and out_json.read_text() == before

    host_json = tmp_path / "host.json"
    assert runner.invoke(app, [*SMALL_HOST, "--json", str(host_json)]).exit_code == 0
    for command in (["plot", "bench", str(host_json)], ["report", str(host_json), "--out", str(tmp_path / "r.md")]):
        refused = runner.invoke(app, command)  # a GB/s plot or report needs a bandwidth sweep
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "holds host-cost results" in refused.stderr


def test_bench_glu_block_compares_the_compile_paths(tmp_path, monkeypatch):
    """The Liger-Kernel#1330 case on a tiny block: every variant in both modes, the bytes autograd keeps
    (the eager composite keeps silu(a) on top of a, b and the down projection's input), the JSON file,
    and one-line errors for what is not a GLU block."""
    from actkit.bench import glublock

    monkeypatch.setattr(glublock, "QUICK_TIMING", dict(min_run_time=0.001, min_blocks=3, block_s=0.0002,
                                                        warmup_calls=1))
    out = tmp_path / "block.json"
    result = runner.invoke(app, ["bench-glu-block", "--device", "cpu", "--tokens", "16", "--hidden", "8", "--ffn", "12",
                                 "--layout", "split", "--compile-backend", "eager", "--threads", "1", "--quick",
                                 "--json", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "compiled block with actkit's opaque kernel" in result.output and "default compile path: composite" \
        in result.output
    payload = json.loads(out.read_text())
    records = {(r["variant"], r["mode"]): r for r in payload["records"]}
    assert set(records) == {(v, m) for v in glublock.VARIANTS for m in glublock.MODES}
    half = 16 * 12 * 4  # one tokens x ffn fp32 tensor
    assert records[("eager composite", "fwd")]["saved_bytes"] == 4 * half
    assert records[("eager actkit", "fwd")]["saved_bytes"] == 3 * half
    assert records[("compile actkit (kernel path)", "fwd")]["saved_bytes"] == 3 * half
    assert all(r["max_abs_diff"] < 1e-5 for r in payload["records"])
    assert records[("compile composite", "fwd+bwd")]["vs_compile_composite"] == 1.0
    again = runner.invoke(app, ["bench-glu-block", "--device", "cpu", "--json", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    for args, message in ((["--act", "mish"], "mish is not a gated linear unit (its kind is elementwise)"),
                          (["--layout", "diagonal"], "unknown layout 'diagonal'; choose from pair, split"),
                          (["--dtype", "fp64"], "unsupported dtype 'fp64'")):
        bad = runner.invoke(app, ["bench-glu-block", "--device", "cpu", *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
