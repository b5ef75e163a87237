"""actkit report: the tables carry the numbers of the run files; findings follow from the statistics."""
import json
import math
import re
import shutil

import pytest
from scipy import stats as st
from typer.testing import CliRunner

import plotdata
from actkit import bench, hostload, report, runs
from actkit.cli.main import app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return plotdata.make_runs(tmp_path_factory.mktemp("sweep") / "sweep")


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    return plotdata.make_bench(tmp_path_factory.mktemp("bench") / "bench.json")


@pytest.fixture(scope="module")
def constructed(run_dir, tmp_path_factory):
    """The real records with known accuracies: gelu (a copy of relu's runs) tied with relu, sigmoid worse."""
    target = tmp_path_factory.mktemp("constructed") / "sweep"
    shutil.copytree(run_dir, target)
    plotdata.set_accuracies(target, "relu", {0: 0.90, 1: 0.91, 2: 0.92})
    plotdata.relabel(target, "relu", "gelu", {0: 0.899, 1: 0.912, 2: 0.918})
    plotdata.set_accuracies(target, "sigmoid", {0: 0.80, 1: 0.82, 2: 0.81})
    return target


def _records(run_dir):
    return [json.loads(p.read_text()) for p in sorted((run_dir / "runs").glob("*.json"))]


def _row(text, first_cell):
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no table row for {first_cell!r}")


def _section(text, heading):
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_tables_carry_the_numbers_of_the_run_files(run_dir, tmp_path):
    out = tmp_path / "report.md"
    written = report.write(runs.load(run_dir), [], out)
    text = out.read_text()
    records = _records(run_dir)
    assert len(records) == 6
    runs_table = _section(text, "Runs")
    for r in records:
        row = _row(runs_table, r["id"])
        assert row[1] == str(r["config"]["seed"])
        assert row[3] == f"{100 * r['final']['test_acc']:.2f}"
        assert row[4] == f"{r['final']['test_loss']:.4f}"
        assert row[5] == f"{r['final']['f1_macro']:.4f}"
        assert row[7].rstrip("*?") == f"{r['timing']['train_images_per_s']:,.0f}"  # marked when the host was busy
        assert row[7].endswith("*") == (hostload.busy_run(r) is not None)
    accuracy = _section(text, "Accuracy")
    for label in ("relu", "sigmoid"):
        accs = [r["final"]["test_acc"] for r in records if r["config"]["act_label"] == label]
        mean = sum(accs) / 3
        sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
        half = st.t.ppf(0.975, 2) * sd / math.sqrt(3)
        row = _row(accuracy, label)
        assert row[2] == "3"
        assert row[3] == f"{100 * mean:.2f} ± {100 * half:.2f}"
        assert row[4] == f"{100 * max(accs):.2f} / {100 * min(accs):.2f}"
    cost = _section(text, "Cost")
    for label in ("relu", "sigmoid"):
        tps = [r["timing"]["train_images_per_s"] for r in records if r["config"]["act_label"] == label]
        assert _row(cost, label)[2].startswith(f"{sum(tps) / 3:,.0f} ± ")
    diag = _section(text, "Diagnostics")
    for label in ("relu", "sigmoid"):
        ends = [e["fraction"] for r in records if r["config"]["act_label"] == label
                for e in r["diagnostics"]["dead_units"] if e["phase"] == "end"]
        assert _row(diag, label)[3] == f"{100 * sum(ends) / len(ends):.1f}"
    # the setup names the device and the figures are linked relative to the document
    assert "synthetic" in text and "(cpu)" in text
    for name in ("accuracy", "learning_curves", "throughput", "gradient_flow", "dead_units"):
        assert f"](report_figures/{name}.png)" in text
        plotdata.assert_png(written[f"runs_{name}"])


def test_findings_tied_and_significantly_worse(constructed, tmp_path):
    text = report.write(runs.load(constructed), [], tmp_path / "r.md", figures=False)["markdown"].read_text()
    findings = _section(text, "Findings")
    assert "Best mean test accuracy: **relu**, 91.00%" in findings
    tied = next(line for line in findings.splitlines() if "Statistically tied with relu" in line)
    assert "gelu (-0.03 pp" in tied and "sigmoid" not in tied
    worse = next(line for line in findings.splitlines() if "Significantly worse than relu" in line)
    # paired t-test by hand: differences -0.10, -0.09, -0.11; Holm over 2 comparisons
    p = st.ttest_rel([0.80, 0.82, 0.81], [0.90, 0.91, 0.92]).pvalue
    p_gelu = st.ttest_rel([0.899, 0.912, 0.918], [0.90, 0.91, 0.92]).pvalue
    holm = max(2 * min(p, p_gelu), 0) if p < p_gelu else p
    assert f"sigmoid (-10.00 pp" in worse and f"p = {holm:.3f}" in worse
    row = _row(_section(text, "Accuracy"), "sigmoid")
    assert row[5] == "-10.00" and row[7] == "worse"
    assert _row(_section(text, "Accuracy"), "gelu")[7] == "tied"
    assert "Training cost (actkit): fastest is" in findings
    assert "Dead units at the end of training" in findings or "No activation layer has dead units" in findings
    assert "Gradient flow in the last epoch" in findings


def test_one_seed_says_no_test_is_possible(run_dir, tmp_path):
    one = tmp_path / "one"
    (one / "runs").mkdir(parents=True)
    for path in (run_dir / "runs").glob("*-seed0.json"):
        shutil.copy(path, one / "runs" / path.name)
    text = report.write(runs.load(one), [], tmp_path / "r.md", figures=False)["markdown"].read_text()
    assert "no significance test is possible" in text
    assert "Statistically tied" not in text and "Significantly worse" not in text


def test_bench_section_and_html(run_dir, bench_file, tmp_path):
    out = tmp_path / "full.md"
    payload = bench.load(bench_file)
    written = report.write(runs.load(run_dir), [("bench.json", payload)], out, as_html=True)
    text = out.read_text()
    section = _section(text, "Benchmark: bench.json")
    for r in payload["records"]:
        if r["provider"] == "actkit" and r["numel"] == 4096:
            line = next(l for l in section.splitlines() if l.startswith(f"| {r['activation']} | {r['mode']} | fp32 |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[3] == "2^12" and cells[6] == f"{r['gbps']:.1f}"
            assert cells[8] == f"{r['speedup_vs_eager']:.2f}"
    assert "Against eager: actkit is faster" in text
    plotdata.assert_png(written["bench_1"])
    page = written["html"].read_text()
    assert page.count("<table>") >= 6 and "data:image/png;base64," in page
    assert 'src="full_figures/' not in page  # every figure embedded


def test_report_cli(run_dir, bench_file, tmp_path):
    runner = CliRunner()
    out = tmp_path / "doc" / "r.md"
    result = runner.invoke(app, ["report", str(run_dir), str(bench_file), "--out", str(out), "--html"])
    assert result.exit_code == 0, result.output
    flat = result.output.replace("\n", "")
    assert "r.md" in flat and "r.html" in flat
    assert out.exists() and out.with_suffix(".html").exists()
    result = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and ".md" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--out", str(out)])
    assert result.exit_code == 2 and "no training run records" in result.output
