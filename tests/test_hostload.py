"""Busy-host flags on training throughput: records with the host's load, without it (older records), on GPU."""
import pytest
from rich.console import Console

from actkit import hostload
from actkit.cli.train import summary_table
from actkit.train import summarise


def _record(label, seed, acc, loads=None, device="cpu", threads=1, cpu_count=2):
    timing = {"train_images_per_s": 500.0 + seed, "step_time_ms": 100.0}
    if loads is not None:
        timing.update(load_average=loads, threads=threads, cpu_count=cpu_count)
    return {"config": {"act_label": label, "activation": label, "impl": "actkit", "seed": seed, "device": device},
            "env": {"device": device}, "final": {"test_acc": acc, "test_loss": 0.3, "f1_macro": acc,
                                                 "precision_macro": acc, "recall_macro": acc},
            "timing": timing, "memory": {"peak_bytes": None}, "status": "finished"}


def test_group_load_busy_quiet_and_not_recorded():
    quiet = [_record("relu", s, 0.9, loads=[1.0, 1.2]) for s in range(2)]  # one thread of its own, 0.2 more
    busy = [_record("elu", 0, 0.9, loads=[1.1, 3.4]), _record("elu", 1, 0.9, loads=[2.0])]
    old = [_record("gelu", s, 0.9) for s in range(2)]
    assert hostload.group_load(quiet) == {"busy_load": None, "load_average_max": 1.2, "load_recorded": True}
    got = hostload.group_load(busy)
    assert got["busy_load"] == pytest.approx(2.4) and got["load_average_max"] == 3.4 and got["load_recorded"]
    assert hostload.group_load(old) == {"busy_load": None, "load_average_max": None, "load_recorded": False}
    assert [hostload.mark(hostload.group_load(g)) for g in (quiet, busy, old)] == ["", "*", "?"]
    # GPU runs need no load: an older GPU record is not "not recorded"
    gpu = [_record("relu", 0, 0.9, device="cuda")]
    assert hostload.mark(hostload.group_load(gpu)) == ""
    # two threads of its own: a load of 2.3 leaves 0.3 for others, under half a core
    assert hostload.mark(hostload.group_load([_record("relu", 0, 0.9, loads=[2.3], threads=2)])) == ""


def test_notes_name_the_rows_and_the_load():
    rows = [{"act_label": "relu", **hostload.group_load([_record("relu", 0, 0.9, loads=[1.0])])},
            {"act_label": "elu", **hostload.group_load([_record("elu", 0, 0.9, loads=[3.4])])},
            {"act_label": "gelu", **hostload.group_load([_record("gelu", 0, 0.9)])}]
    text = hostload.note(rows)
    assert "* busy host" in text and "2.4 cores" in text and "load average up to 3.4" in text and "of elu" in text
    assert "? load not recorded" in text and "for gelu" in text and "relu" not in text
    assert "busy host" in hostload.ratio_warning(rows)
    assert "not recorded" in hostload.ratio_warning([rows[0], rows[2]])
    assert hostload.ratio_warning(rows[:1]) is None and hostload.note(rows[:1]) is None


def _table_text(summary, baseline="relu"):
    console = Console(width=400, record=True)
    console.print(summary_table(summary, baseline, "cpu"))
    return console.export_text()


def test_train_table_marks_busy_and_unrecorded_throughput_and_shows_the_detectable_effect():
    records = ([_record("relu", s, a, loads=[1.0]) for s, a in enumerate([0.90, 0.91, 0.92])]
               + [_record("elu", s, a, loads=[3.0]) for s, a in enumerate([0.905, 0.912, 0.93])]
               + [_record("gelu", s, a) for s, a in enumerate([0.91, 0.92, 0.93])])
    summary = summarise(records, "relu")
    rows = {r["act_label"]: r for r in summary}
    text = _table_text(summary)
    line = {name: next(l for l in text.splitlines() if l.lstrip("│ ").startswith(name + " "))
            for name in ("relu", "elu", "gelu")}
    assert "501*" not in line["relu"] and "501?" not in line["relu"] and "501" in line["relu"]
    assert "501*" in line["elu"] and "100.0*" in line["elu"]
    assert "501?" in line["gelu"] and "100.0?" in line["gelu"]
    assert f"{100 * rows['elu']['detectable_diff']:.2f}" in line["elu"]
    assert rows["gelu"]["detectable_note"] is not None and "n/a (zero SD)" in line["gelu"]  # +1 pp every seed
    flat = " ".join(text.split())
    assert "busy host: other processes took up to 2.0 cores" in flat and "load not recorded" in flat
    assert "80% power" in flat


def test_train_table_one_seed_says_why_no_power():
    summary = summarise([_record("relu", 0, 0.9, loads=[1.0]), _record("elu", 0, 0.91, loads=[1.0])], "relu")
    assert summary[1]["detectable_diff"] is None and "at least 2" in summary[1]["detectable_note"]
    assert "n/a (1 seed)" in _table_text(summary)
