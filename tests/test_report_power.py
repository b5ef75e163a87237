"""actkit report: power of each comparison (--detect), reports from runs.csv alone, busy-host flags.

The committed sweep docs/results/fewbit-fashion-mnist has runs.csv, summary.json and config.json but
not its run records: the report must work from those (on a copy, so the test never writes there).
Power figures are checked against statsmodels' TTestPower, computed here from runs.csv itself.
"""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import plotdata
from actkit import report, runs
from actkit.cli.main import app

smp = pytest.importorskip("statsmodels.stats.power")
COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "results" / "fewbit-fashion-mnist"
runner = CliRunner()


@pytest.fixture
def table_dir(tmp_path):
    target = tmp_path / "fewbit"
    shutil.copytree(COMMITTED, target)
    assert not (target / "runs").exists()
    return target


def _accuracies(path):
    """{act_label: {seed: test_acc}} straight from runs.csv."""
    out = {}
    with open(path / "runs.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["act_label"], {})[int(row["seed"])] = float(row["test_acc"])
    return out


def _sd(acc, label, baseline):
    seeds = sorted(acc[baseline])
    return float(np.std([acc[label][s] - acc[baseline][s] for s in seeds], ddof=1)), len(seeds)


def _row(text, first_cell):
    line = next(l for l in text.splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _section(text, heading):
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_report_from_runs_csv_only(table_dir, tmp_path):
    rs = runs.load(table_dir)
    assert rs.from_table and len(rs.records) == 18 and rs.baseline == "gelu"
    written = report.write(rs, [], tmp_path / "r.md")
    text = written["markdown"].read_text()
    assert "holds no run records" in text and "runs.csv" in text
    assert set(written) == {"markdown", "runs_accuracy", "runs_throughput"}  # no learning curves: no histories
    saved = {r["act_label"]: r for r in json.loads((table_dir / "summary.json").read_text())["rows"]}
    acc = _accuracies(table_dir)
    for label in ("gelu_saved_bits=2", "gelu_saved_bits=3"):
        row = _row(_section(text, "Accuracy"), label)
        assert row[3].startswith(f"{100 * saved[label]['test_acc_mean']:.2f} ± {100 * saved[label]['test_acc_ci']:.2f}")
        assert row[8] == f"{100 * saved[label]['diff']:+.2f}" and row[9] == f"{saved[label]['p_holm']:.3f}"
        sd, n = _sd(acc, label, "gelu")
        detectable = smp.TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8) * sd
        assert row[10] == f"{100 * detectable:.2f}"
        assert _row(_section(text, "Power"), label)[4] == f"{100 * detectable:.2f}"
    cost = _section(text, "Cost")
    assert _row(cost, "gelu")[2].endswith("?") and "load not recorded" in cost
    assert "not recorded" in _section(text, "Findings")


def test_report_cli_on_runs_csv_only_with_detect(table_dir, tmp_path):
    out = tmp_path / "r.md"
    result = runner.invoke(app, ["report", str(table_dir), "--out", str(out), "--no-figures", "--detect", "0.2"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "planned runs finished" not in flat and "has no run records" in flat
    acc = _accuracies(table_dir)
    for label in ("gelu_saved_bits=2", "gelu_saved_bits=3"):
        sd, _ = _sd(acc, label, "gelu")
        needed = max(2, math.ceil(smp.TTestPower().solve_power(effect_size=0.002 / sd, alpha=0.05, power=0.8)))
        assert f"{label} vs gelu: {needed} seeds to detect 0.2 pp with 80% power" in flat
        assert _row(_section(out.read_text(), "Power"), label)[5] == str(needed)
    assert not (table_dir / "runs").exists()  # the report reads the directory, it does not rebuild it


@pytest.mark.parametrize("value", ["-0.2", "0", "abc", "nan", "inf", "100"])
def test_detect_bad_values_are_one_line_errors(table_dir, tmp_path, value):
    result = runner.invoke(app, ["report", str(table_dir), "--out", str(tmp_path / "r.md"), f"--detect={value}"])
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "--detect" in lines[0], result.output
    assert not (tmp_path / "r.md").exists()


def test_detect_needs_a_run_directory(tmp_path):
    bench_file = plotdata.make_bench(tmp_path / "b.json")
    result = runner.invoke(app, ["report", str(bench_file), "--out", str(tmp_path / "r.md"), "--detect", "0.2"])
    assert result.exit_code == 2 and "--detect" in result.output


def test_baseline_missing_from_the_directory_names_what_it_has(table_dir, tmp_path):
    result = runner.invoke(app, ["report", str(table_dir), "--out", str(tmp_path / "r.md"), "--baseline", "relu"])
    assert result.exit_code == 2
    assert "'relu'" in result.output and "gelu, gelu_saved_bits=2, gelu_saved_bits=3" in result.output
    # the sweep's own baseline without runs: an error naming it and what is there, not a silent other baseline
    config = json.loads((table_dir / "config.json").read_text())
    config["sweep"]["baseline"] = "relu"
    (table_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(runs.RunsError, match="baseline 'relu' has no runs .* gelu, gelu_saved_bits=2"):
        runs.load(table_dir)
    result = runner.invoke(app, ["report", str(table_dir), "--out", str(tmp_path / "r.md"), "--detect", "0.2"])
    assert result.exit_code == 2 and "--baseline" in result.output
    # naming one that is there works
    result = runner.invoke(app, ["report", str(table_dir), "--out", str(tmp_path / "r.md"), "--no-figures",
                                 "--baseline", "gelu", "--detect", "0.2"])
    assert result.exit_code == 0, result.output


def test_runs_csv_and_summary_must_agree(table_dir):
    saved = json.loads((table_dir / "summary.json").read_text())
    saved["rows"][1]["test_acc_mean"] += 0.01
    (table_dir / "summary.json").write_text(json.dumps(saved))
    with pytest.raises(runs.RunsError, match="disagree"):
        runs.load(table_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return plotdata.make_runs(tmp_path_factory.mktemp("sweep") / "sweep")


def _set_load(run_dir, label, loads):
    for path in (run_dir / "runs").glob(f"{label}-*.json"):
        record = json.loads(path.read_text())
        if loads is None:
            for key in ("load_average", "threads", "cpu_count"):
                record["timing"].pop(key, None)
        else:
            record["timing"].update(load_average=loads, threads=1, cpu_count=2)
        path.write_text(json.dumps(record))


def test_report_flags_busy_and_unrecorded_throughput(run_dir, tmp_path):
    busy = tmp_path / "busy"
    shutil.copytree(run_dir, busy)
    _set_load(busy, "relu", [1.0, 3.5])  # 2.5 cores of other work at the second epoch's end
    _set_load(busy, "sigmoid", [0.9, 1.1])
    text = report.write(runs.load(busy), [], tmp_path / "r.md", figures=False)["markdown"].read_text()
    cost = _section(text, "Cost")
    assert _row(cost, "relu")[2].endswith("*") and _row(cost, "relu")[3].endswith("*")
    assert not _row(cost, "sigmoid")[2].endswith(("*", "?"))
    assert "busy host: other processes took up to 2.5 cores" in cost and "load average up to 3.5" in cost
    ratio = next(l for l in _section(text, "Findings").splitlines() if "the time per image" in l)
    assert "**Warning:**" in ratio and "busy host" in ratio
    # every run quiet: no mark, no warning
    _set_load(busy, "relu", [1.0, 1.2])
    text = report.write(runs.load(busy), [], tmp_path / "q.md", figures=False)["markdown"].read_text()
    assert "Warning" not in text and "busy host" not in text and "not recorded" not in text
    # records made before the load was kept: said, not taken for quiet
    _set_load(busy, "sigmoid", None)
    text = report.write(runs.load(busy), [], tmp_path / "o.md", figures=False)["markdown"].read_text()
    assert _row(_section(text, "Cost"), "sigmoid")[2].endswith("?") and "load not recorded" in text
    ratio = next(l for l in _section(text, "Findings").splitlines() if "the time per image" in l)
    assert "**Warning:**" in ratio and "not recorded" in ratio


def test_runs_csv_keeps_the_load_so_a_table_only_report_still_flags_it(run_dir, tmp_path):
    from actkit import train

    sweep = tmp_path / "sweep"
    shutil.copytree(run_dir, sweep)
    _set_load(sweep, "relu", [1.0, 3.5])
    _set_load(sweep, "sigmoid", [0.9, 1.1])
    train.assemble(sweep)  # rewrites runs.csv and the summaries from the records
    with open(sweep / "runs.csv", newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["relu-actkit-seed0"]["load_average_max"] == "3.5" and rows["relu-actkit-seed0"]["threads"] == "1"
    shutil.rmtree(sweep / "runs")
    rs = runs.load(sweep)
    assert rs.from_table
    text = report.write(rs, [], tmp_path / "r.md", figures=False)["markdown"].read_text()
    cost = _section(text, "Cost")
    assert _row(cost, "relu")[2].endswith("*") and not _row(cost, "sigmoid")[2].endswith(("*", "?"))
    assert "2.5 cores" in cost
    assert _row(_section(text, "Runs"), "relu-actkit-seed1")[7].endswith("*")
