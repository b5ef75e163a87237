"""Every table the commands print reads in an 80-column terminal: no column squeezed to nothing, no cell
or header cut to "…"; the minor columns move under each row, and in a wide terminal nothing moves.
Rendered from the result files committed with the project."""
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from actkit import bench
from actkit.cli import bench_view, roofline, train_view
from actkit.cli.common import Col, fitted_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def render(table, width: int) -> str:
    console = Console(width=width, force_terminal=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def words(text: str) -> set[str]:
    """The words of a rendered table, its rules and borders left out."""
    return {w for w in re.sub(r"[│┃]", " ", text).split() if not re.fullmatch(r"[\u2500-\u257f]+", w)}


def tables():
    quick = bench.load(RESULTS / "cpu-quick.json", measures=bench.MEASURES)["records"]
    host = bench.load(RESULTS / "cpu-host-cost.json", measures=bench.MEASURES)["records"]
    glu = json.loads((RESULTS / "cpu-glu-block-pair.json").read_text())
    summary = json.loads((ROOT / "docs/results/fewbit-fashion-mnist/summary.json").read_text())
    static = [json.loads((RESULTS / f"static-sm{arch}.json").read_text()) for arch in (80, 90)]
    return {
        "bench": lambda w: bench_view.activation_table(quick[0]["activation"], quick, w),
        "host cost": lambda w: bench_view.host_table(host, w),
        "glu block": lambda w: bench_view.glu_block_table(glu, w),
        "train summary": lambda w: train_view.summary_table(summary["rows"], summary["baseline"], "cpu", w),
        "roofline": lambda w: roofline.result_table(static, None, w),
    }


@pytest.mark.parametrize("name", ["bench", "host cost", "glu block", "train summary", "roofline"])
def test_tables_fit_80_columns_and_keep_every_value(name):
    make = tables()[name]
    narrow, wide = render(make(80), 80), render(make(None), 400)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "…" not in narrow and "…" not in wide
    # Nothing is lost: every word of the wide table (headers and values) is in the narrow one, whole or
    # folded over lines (then pieced together from words of the narrow table).
    pool = words(narrow)

    def pieced(word: str) -> bool:
        return word in pool or any(word.startswith(p) and pieced(word[len(p):]) for p in pool if len(p) > 1)

    lost = {w for w in words(wide) - pool if not pieced(w)}
    assert not lost, lost


def test_fitted_table_stacks_only_when_it_must():
    columns = [Col("name", "left"), Col("value"), Col("detail", stack=True, label="d")]
    rows = [["alpha", "1.00", "a long detail that takes room"], ["beta", "2.00", "-"]]
    wide = render(fitted_table(columns, rows, 120), 120)
    assert "detail" in wide.splitlines()[1]  # a column of its own, in the header
    narrow = render(fitted_table(columns, rows, 30), 30)
    header = narrow.splitlines()[1]
    assert "detail" not in header and "value" in header
    assert "d a long" in " ".join(narrow.split()) and "d -" not in narrow  # an empty value is left out
