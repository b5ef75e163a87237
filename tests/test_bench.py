"""actkit.bench: byte accounting, option parsing, records and result files.

Timings are never asserted against each other (the CPU is shared); the tests check the
arithmetic that turns a time into GB/s and % of copy, the structure of every record, and
what the harness measures that is exact (bytes saved for backward).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch

from actkit import bench, registry

# Minimal CPU timing so that real sweeps in tests take milliseconds, not seconds.
FAST = dict(min_run_time=0.001, min_blocks=3, block_s=0.0002, warmup_calls=1)


def tiny_config(act, providers=("actkit", "eager"), dtypes=("fp32",), sizes=(1024,), modes=bench.MODES):
    config = bench.make_config(act, "cpu", dtypes=list(dtypes), sizes=[str(s) for s in sizes],
                               modes=list(modes), providers=list(providers), quick=True)
    return dataclasses.replace(config, **FAST)


@pytest.fixture(scope="module")
def payload():
    """One small real sweep shared by the record and file tests: 2 activations x 2 dtypes."""
    return bench.run(tiny_config("mish,step,sigmoid", dtypes=("fp32", "bf16"), sizes=(1000, 2048)))


# -- byte accounting ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,itemsize", [(torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)])
@pytest.mark.parametrize("numel", [1, 1000, 2 ** 20])
def test_elementwise_bytes_by_hand(dtype, itemsize, numel):
    assert torch.empty((), dtype=dtype).element_size() == itemsize
    # fwd: read x, write y; bwd: read saved, read dy, write dx; fwd+bwd: all five.
    assert bench.bytes_moved("elementwise", "fwd", numel, itemsize) == 2 * numel * itemsize
    assert bench.bytes_moved("elementwise", "bwd", numel, itemsize) == 3 * numel * itemsize
    assert bench.bytes_moved("elementwise", "fwd+bwd", numel, itemsize) == 5 * numel * itemsize
    assert bench.copy_bytes(numel, itemsize) == 2 * numel * itemsize


def test_gbps_arithmetic():
    # 2^24 bf16 forward: 2 * 2^24 * 2 bytes = 67,108,864 bytes; in 24.8 us that is 2706 GB/s.
    nbytes = bench.bytes_moved("elementwise", "fwd", 2 ** 24, 2)
    assert nbytes == 67_108_864
    assert bench.gbps(nbytes, 24.8e-6) == pytest.approx(67_108_864 / 24.8e-6 / 1e9)
    assert bench.gbps(nbytes, 24.8e-6) == pytest.approx(2706.0, abs=0.1)
    assert bench.format_bandwidth(2706.0) == "2.71 TB/s"
    assert bench.format_bandwidth(812.34) == "812.3 GB/s"


@pytest.mark.parametrize("kind", ["rowwise", "learnable"])
def test_other_kinds_move_the_same_tensors(kind):
    # softmax: read x, write y; backward reads y and dy, writes dx. PReLU/Swish-beta: as elementwise,
    # plus a per-channel parameter whose few bytes are not counted.
    for mode, per_elem in (("fwd", 2), ("bwd", 3), ("fwd+bwd", 5)):
        assert bench.bytes_moved(kind, mode, 4096, 2) == per_elem * 4096 * 2


def test_kind_shapes():
    assert bench.KINDS["elementwise"].shape(2 ** 16) == (2 ** 16,)
    assert bench.KINDS["rowwise"].shape(2 ** 16) == (64, 1024)
    assert bench.KINDS["rowwise"].shape(256) == (1, 256) and bench.KINDS["rowwise"].shape(1000) == (1, 1000)
    assert bench.KINDS["learnable"].shape(2 ** 16) == (1024, 64) and bench.KINDS["learnable"].shape(10) == (10,)


def test_unknown_kind_and_mode_have_no_byte_accounting():
    with pytest.raises(bench.BenchError, match="kind 'exotic'"):
        bench.bytes_moved("exotic", "fwd", 10, 4)
    with pytest.raises(bench.BenchError, match="unknown mode 'sideways'"):
        bench.bytes_moved("elementwise", "sideways", 10, 4)


def test_size_labels():
    assert [bench.size_label(n) for n in (1, 1024, 2 ** 24, 1000, 3 * 2 ** 20)] == \
        ["2^0", "2^10", "2^24", "1,000", "3,145,728"]


# -- option parsing ------------------------------------------------------------------------------
def test_parse_lists_aliases_and_all():
    assert bench.parse_dtypes("fp32, bfloat16,half") == ("fp32", "bf16", "fp16")
    assert bench.parse_modes("forward,fwd+bwd,fwd") == ("fwd", "fwd+bwd")
    assert bench.parse_modes("all") == bench.MODES
    assert bench.parse_providers("torch,inductor") == ("eager", "compile")
    assert bench.parse_sizes("65536, 2^20,2**10,1_000") == (65536, 2 ** 20, 1024, 1000)
    assert bench.parse_activations("Swish,mish,silu") == ("silu", "mish")
    assert bench.parse_activations("all") == tuple(registry.available())


@pytest.mark.parametrize("value", ["fp64", "int8", "float64"])
def test_unsupported_dtype_is_named(value):
    with pytest.raises(bench.BenchError) as info:
        bench.parse_dtypes(f"fp32,{value}")
    assert repr(value) in str(info.value) and "fp32, bf16, fp16" in str(info.value)


@pytest.mark.parametrize("value", ["abc", "0", "-4", "2^", "1.5", "2^40", ""])
def test_bad_sizes(value):
    with pytest.raises(bench.BenchError, match="--sizes"):
        bench.parse_sizes(value)


def test_unknown_activation_suggests():
    with pytest.raises(bench.BenchError, match="unknown activation 'mishh'.*'mish'"):
        bench.parse_activations("relu,mishh")


def test_devices():
    assert bench.parse_device("cpu") == "cpu"
    with pytest.raises(bench.BenchError, match="choose cuda or cpu"):
        bench.parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(bench.BenchError, match="no CUDA GPU"):
            bench.parse_device("cuda")
        assert bench.parse_device(None) == "cpu"


def test_threads_option_is_applied_and_restored():
    before = torch.get_num_threads()
    result = bench.run(dataclasses.replace(tiny_config("relu", modes=("fwd",)), threads=1))
    assert result["environment"]["cpu_threads"] == 1 and all(r["cpu_threads"] == 1 for r in result["records"])
    assert torch.get_num_threads() == before
    assert bench.parse_threads("2") == 2 and bench.parse_threads(None) is None
    with pytest.raises(bench.BenchError, match="positive integer"):
        bench.parse_threads("-1")


def test_quick_defaults_are_small_on_cpu():
    config = bench.make_config("mish", "cpu", quick=True)
    assert config.sizes == bench.QUICK_SIZES["cpu"] and config.dtypes == ("fp32",)
    assert config.providers == bench.PROVIDERS and config.modes == bench.MODES
    full = bench.make_config("mish", "cpu")
    assert full.dtypes == ("fp32", "bf16", "fp16") and max(full.sizes) <= 2 ** 20


# -- measurement pieces ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,provider,dtype,expected", [
    ("mish", "actkit", torch.float32, 4),      # actkit saves x
    ("sigmoid", "actkit", torch.float32, 4),   # ... or y, never both
    ("mish", "actkit", torch.bfloat16, 2),
    ("mish", "eager", torch.float32, 4),       # ATen's mish saves its input
    ("lisht", "eager", torch.float32, 8),      # x * tanh(x): autograd keeps x and tanh(x)
    ("softmax", "actkit", torch.float32, 4),   # y
    ("prelu", "actkit", torch.float32, 4 + 64 * 4 / 4096),  # x and the 64 slopes
])
def test_saved_bytes_per_element(name, provider, dtype, expected):
    spec = registry.get(name)
    inputs = bench.make_inputs(spec, 4096, dtype, "cpu")
    fn = bench.provider_fn(provider, spec)
    assert bench.saved_bytes_per_element(fn, inputs) == expected


def test_peak_memory_is_not_faked_on_cpu():
    assert bench.peak_memory_bytes(lambda: None, "cpu") is None


@pytest.mark.parametrize("name", ["mish", "softmax", "prelu"])
def test_mode_runners_compute_the_gradients(name):
    spec = registry.get(name)
    inputs = bench.make_inputs(spec, 256, torch.float32, "cpu")
    x, dy, args = inputs.x, inputs.dy, inputs.args
    assert inputs.wrt == (x, *args)  # prelu: the slopes get a gradient too
    y_ref = spec.reference(x, *args, **inputs.kwargs)
    expected = torch.autograd.grad(y_ref, inputs.wrt, dy)
    for provider in ("actkit", "eager"):
        fn = bench.provider_fn(provider, spec)
        assert torch.allclose(bench.mode_runner(fn, "fwd", inputs)(), y_ref.detach(), atol=1e-6)
        bwd = bench.mode_runner(fn, "bwd", inputs)
        for _ in range(2):  # the retained graph replays
            for got, want in zip(bwd(), expected):
                assert torch.allclose(got, want, atol=1e-5)
        for got, want in zip(bench.mode_runner(fn, "fwd+bwd", inputs)(), expected):
            assert torch.allclose(got, want, atol=1e-5)
    assert x.grad is None  # autograd.grad never accumulates


def test_time_cpu_structure():
    calls = {"a": 0, "b": 0}

    def count(key):
        def fn():
            calls[key] += 1
        return fn

    timings = bench.time_cpu({"a": count("a"), "b": count("b")}, min_run_time=0.0, min_blocks=4, block_s=1e-5,
                             warmup_calls=2)
    for key, t in timings.items():
        assert t.p20_s <= t.median_s <= t.p80_s
        assert t.reps >= 4 and not t.cache_flushed and "interleaved" in t.timer
        assert calls[key] >= t.reps + 2  # warm-up and calibration calls come on top of the timed ones


def test_kind_without_a_model_is_skipped_with_a_note(monkeypatch):
    """A kind the harness has no KINDS entry for (as a newly added kind would be) is noted, not run."""
    monkeypatch.delitem(bench.KINDS, "rowwise")
    planned = bench.plan(tiny_config("softmax,relu"))
    assert [spec.name for spec, _, _ in planned.cases] == ["relu"]
    assert planned.skipped[0]["activation"] == "softmax" and "'rowwise'" in planned.skipped[0]["reason"]
    with pytest.raises(bench.BenchError, match="not benchmarked yet"):
        bench.provider_fn("actkit", registry.get("softmax"))
    with pytest.raises(bench.BenchError, match="no byte accounting for kind 'rowwise'"):
        bench.bytes_moved("rowwise", "fwd", 10, 4)


# -- records ----------------------------------------------------------------------------------------
def test_every_combination_has_a_record(payload):
    keys = {(r["activation"], r["dtype"], r["numel"], r["mode"], r["provider"]) for r in payload["records"]}
    assert len(keys) == len(payload["records"])
    for act, modes in (("mish", bench.MODES), ("sigmoid", bench.MODES), ("step", ("fwd",))):
        for dtype in ("fp32", "bf16"):
            for numel in (1000, 2048):
                for mode in modes:
                    for provider in ("actkit", "eager"):
                        assert (act, dtype, numel, mode, provider) in keys
    # step has no backward: noted, not measured
    assert {(s["activation"], s["mode"]) for s in payload["skipped"]} == {("step", "bwd"), ("step", "fwd+bwd")}


def test_record_figures_follow_from_times(payload):
    for r in payload["records"]:
        assert set(r) == set(bench.RECORD_FIELDS)
        itemsize = {"fp32": 4, "bf16": 2}[r["dtype"]]
        per_elem = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[r["mode"]]
        assert r["bytes_moved"] == per_elem * r["numel"] * itemsize
        assert r["gbps"] == pytest.approx(r["bytes_moved"] / (r["median_ms"] / 1e3) / 1e9)
        assert r["copy_gbps"] == pytest.approx(2 * r["numel"] * itemsize / (r["copy_median_ms"] / 1e3) / 1e9)
        # % of copy from the two times alone: (per_elem / 2) * copy time / provider time
        assert r["pct_of_copy"] == pytest.approx(100 * per_elem / 2 * r["copy_median_ms"] / r["median_ms"])
        assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["first_call_s"] >= 0 and r["reps"] >= 1
        assert r["device"] == "cpu" and r["torch"] == torch.__version__ and r["timestamp"]
        assert r["backend"] == {"actkit": "torch", "eager": "aten"}[r["provider"]]
        assert r["peak_mem_bytes"] is None  # CPU: not measured
        assert r["saved_bytes_per_element"] == (None if r["activation"] == "step" else itemsize)


def test_speedups_are_time_ratios(payload):
    by_key = {(r["activation"], r["dtype"], r["numel"], r["mode"], r["provider"]): r for r in payload["records"]}
    for (act, dtype, numel, mode, provider), r in by_key.items():
        actkit = by_key[(act, dtype, numel, mode, "actkit")]
        assert r["actkit_speedup"] == pytest.approx(r["median_ms"] / actkit["median_ms"])
        if provider == "actkit":
            eager = by_key[(act, dtype, numel, mode, "eager")]
            assert r["speedup_vs_eager"] == pytest.approx(eager["median_ms"] / r["median_ms"])
            assert r["speedup_vs_compile"] is None  # compile not requested
        else:
            assert r["speedup_vs_eager"] is None


def test_summary_line_by_hand():
    base = dict(activation="mish", provider="actkit", mode="fwd", dtype="bf16", reference="native")
    records = [
        dict(base, numel=2 ** 20, size="2^20", gbps=1500.0, pct_of_copy=80.0, speedup_vs_eager=1.1,
             speedup_vs_compile=1.0),
        dict(base, numel=2 ** 24, size="2^24", gbps=2706.0, pct_of_copy=93.2, speedup_vs_eager=1.02,
             speedup_vs_compile=0.998),
        dict(base, mode="bwd", numel=2 ** 24, size="2^24", gbps=1.0, pct_of_copy=1.0, speedup_vs_eager=9.0,
             speedup_vs_compile=9.0),
    ]
    assert bench.summary_line(records, "mish") == \
        "mish fwd bf16 2^24: 2.71 TB/s, 93% of copy, 1.02x ATen, 1.00x compile"
    composite = [dict(records[1], activation="lisht", reference="composite", speedup_vs_compile=None)]
    assert bench.summary_line(composite, "lisht") == "lisht fwd bf16 2^24: 2.71 TB/s, 93% of copy, 1.02x eager"
    assert bench.summary_line(records, "relu") is None


# -- files -----------------------------------------------------------------------------------------
def test_json_and_csv_schema(payload, tmp_path):
    json_path, csv_path = tmp_path / "out" / "bench.json", tmp_path / "bench.csv"
    bench.write(payload, json_path, csv_path)
    data = json.loads(json_path.read_text())
    assert data["schema"] == bench.SCHEMA
    for key in ("device_name", "torch", "triton", "timestamp", "device"):
        assert key in data["environment"]
    assert data["config"]["dtypes"] == ["fp32", "bf16"] and data["config"]["sizes"] == [1000, 2048]
    # providers x dtypes x sizes x (mish 3 modes + sigmoid 3 + step fwd only)
    assert len(data["records"]) == len(payload["records"]) == 2 * 2 * 2 * (3 + 3 + 1)
    assert all(list(r) == list(bench.RECORD_FIELDS) for r in data["records"])
    assert bench.load(json_path)["records"] == data["records"]

    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == bench.RECORD_FIELDS
        rows = list(reader)
    assert len(rows) == len(data["records"])
    for row, record in zip(rows, data["records"]):
        assert row["activation"] == record["activation"] and row["provider"] == record["provider"]
        assert int(row["numel"]) == record["numel"] and int(row["bytes_moved"]) == record["bytes_moved"]
        assert math.isclose(float(row["gbps"]), record["gbps"], rel_tol=1e-9)
        assert row["device_name"] == record["device_name"] and row["backend"] == record["backend"]
        assert row["peak_mem_bytes"] == ""  # None -> empty cell
        assert json.loads(row["params"]) == record["params"]


def test_markdown_table_from_file(payload, tmp_path):
    path = tmp_path / "bench.json"
    bench.write(payload, path)
    loaded = bench.load(path)
    text = bench.markdown_table(loaded, modes=["fwd"], dtypes=["fp32"], layout="long")
    lines = text.splitlines()
    assert payload["environment"]["device_name"] in lines[0] and "torch " + torch.__version__ in lines[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| activation")]
    assert len(rows) == 3 * 2  # mish, step, sigmoid x two sizes, fwd fp32 only
    assert all(" fwd | fp32 |" in row for row in rows)

    wide = bench.markdown_table(loaded)
    rows = {line.split(" | ")[0][2:] + " " + line.split(" | ")[1] + " " + line.split(" | ")[2]: line
            for line in wide.splitlines() if line.startswith("| ") and not line.startswith("| activation")}
    assert len(rows) == 3 * 2 * 2  # activation x dtype x size, modes side by side
    assert "| GB/s (fwd / bwd / fwd+bwd) |" in wide
    mish = next(r for r in payload["records"] if r["activation"] == "mish" and r["provider"] == "actkit"
                and r["dtype"] == "bf16" and r["numel"] == 2048 and r["mode"] == "bwd")
    assert f" / {mish['gbps']:.1f} / " in rows["mish bf16 2^11"]
    assert "| - / - / - |" in rows["step fp32 1,000"]  # no bwd, and no saved tensors
    with pytest.raises(bench.BenchError, match="unknown table layout"):
        bench.markdown_table(loaded, layout="tall")


def test_load_rejects_other_files(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"records": []}))
    with pytest.raises(bench.BenchError, match="not an actkit bench result"):
        bench.load(other)
    with pytest.raises(bench.BenchError, match="no such file"):
        bench.load(tmp_path / "missing.json")


def test_busy_host_note():
    quiet = {"environment": {"device": "cpu"}, "host": {"cpu_count": 8, "load_average_start": 0.5,
                                                         "load_average_end": 1.0}}
    assert bench.busy_host(quiet) is None
    busy = {"environment": {"device": "cpu"}, "host": {"cpu_count": 2, "load_average_start": 1.6,
                                                        "load_average_end": 0.2}}
    assert "load average up to 1.6 on 2 CPUs" in bench.busy_host(busy)
    assert "--threads 1" in bench.busy_host({**busy, "environment": {"device": "cpu", "cpu_threads": 2}})
    assert "--threads 1" not in bench.busy_host({**busy, "environment": {"device": "cpu", "cpu_threads": 1}})
    assert bench.busy_host({"environment": {"device": "cuda"}, "host": busy["host"]}) is None


def test_rowwise_and_learnable_kinds_run():
    result = bench.run(tiny_config("softmax,prelu", sizes=(4096,), modes=("fwd+bwd",)))
    shapes = {(r["activation"], r["provider"]): r["shape"] for r in result["records"]}
    assert shapes == {("softmax", "actkit"): [4, 1024], ("softmax", "eager"): [4, 1024],
                      ("prelu", "actkit"): [64, 64], ("prelu", "eager"): [64, 64]}
    for r in result["records"]:
        assert r["bytes_moved"] == 5 * 4096 * 4 and r["kind"] in ("rowwise", "learnable")
    assert not result["skipped"]


def test_compile_provider_runs_one_case():
    """torch.compile of the reference: compiled once per case, its compile time reported apart. ReLU's
    compiled backward may donate its saved mask's memory; bwd then replays a second compile."""
    result = bench.run(tiny_config("relu", providers=("actkit", "compile"), modes=("bwd", "fwd+bwd")))
    assert not result["skipped"]
    records = {(r["provider"], r["mode"]): r for r in result["records"]}
    assert set(records) == {(p, m) for p in ("actkit", "compile") for m in ("bwd", "fwd+bwd")}
    compiled = records[("compile", "fwd+bwd")]
    assert compiled["backend"] == "inductor" and compiled["note"] is None
    assert compiled["saved_bytes_per_element"] is not None and compiled["first_call_s"] > 0
    actkit = records[("actkit", "fwd+bwd")]
    assert actkit["speedup_vs_compile"] == pytest.approx(compiled["median_ms"] / actkit["median_ms"])
    note = records[("compile", "bwd")]["note"]
    assert note is None or "without donated buffers" in note


# -- checkpoints and resume ------------------------------------------------------------------------
def _counting_cases(monkeypatch, interrupt_at=None):
    """Wrap the per-case runner: record each case it runs, raise KeyboardInterrupt on call ``interrupt_at``."""
    calls, real = [], bench.sweep._run_case

    def run_case(config, spec, dtype_name, numel, env, tick):
        calls.append((spec.name, dtype_name, numel))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(config, spec, dtype_name, numel, env, tick)

    monkeypatch.setattr(bench.sweep, "_run_case", run_case)
    return calls


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_interrupted_sweep_keeps_finished_cases_and_resume_runs_the_rest(tmp_path, monkeypatch):
    json_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    config = tiny_config("mish,relu", sizes=(512, 1024), modes=("fwd", "fwd+bwd"))
    every_case = [(a, "fp32", n) for a in ("mish", "relu") for n in (512, 1024)]

    def save(payload):
        bench.write(payload, json_path, csv_path)

    calls = _counting_cases(monkeypatch, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        bench.run(config, checkpoint=save)
    partial = bench.load(json_path)
    assert partial["complete"] is False and bench.cases_done(partial) == set(every_case[:2])
    assert len(partial["records"]) == 2 * 2 * 2  # cases x providers x modes
    assert [row["activation"] for row in _csv_rows(csv_path)] == [r["activation"] for r in partial["records"]]

    calls = _counting_cases(monkeypatch)
    final = bench.run(config, previous=bench.load(json_path), checkpoint=save)
    assert calls == every_case[2:]  # the saved cases were not run again
    on_disk = bench.load(json_path)
    assert on_disk["complete"] is True and final["complete"] is True
    assert bench.cases_done(on_disk) == set(every_case) and len(on_disk["records"]) == 4 * 2 * 2
    # The saved records are kept as they were, byte for byte; the new ones follow.
    kept = [json.dumps(r) for r in on_disk["records"][:len(partial["records"])]]
    assert kept == [json.dumps(r) for r in partial["records"]]
    assert on_disk["environment"] == partial["environment"] and on_disk["config"] == partial["config"]
    rows = _csv_rows(csv_path)
    assert [(row["activation"], int(row["numel"]), row["mode"], row["provider"]) for row in rows] == \
        [(r["activation"], r["numel"], r["mode"], r["provider"]) for r in on_disk["records"]]


def test_resuming_a_complete_payload_runs_nothing(payload, monkeypatch):
    calls = _counting_cases(monkeypatch)
    config = tiny_config("mish,step,sigmoid", dtypes=("fp32", "bf16"), sizes=(1000, 2048))
    again = bench.run(config, previous=json.loads(json.dumps(payload)))
    assert calls == [] and again["complete"] is True
    assert again["records"] == json.loads(json.dumps(payload["records"])) and again["skipped"] == payload["skipped"]


def test_resume_can_add_activations(payload, monkeypatch):
    """Only what decides the numbers must match; another activation's cases stand alone."""
    calls = _counting_cases(monkeypatch)
    config = tiny_config("relu", dtypes=("fp32", "bf16"), sizes=(1000, 2048))
    result = bench.run(config, previous=json.loads(json.dumps(payload)))
    assert calls == [("relu", d, n) for d in ("fp32", "bf16") for n in (1000, 2048)]
    assert list(result["config"]["activations"]) == ["mish", "step", "sigmoid", "relu"]
    assert result["complete"] is True and len(result["records"]) == len(payload["records"]) + 4 * 3 * 2


@pytest.mark.parametrize("change,setting", [
    (dict(sizes=(1000,)), "sizes"), (dict(dtypes=("fp32",)), "dtypes"), (dict(providers=("actkit",)), "providers"),
    (dict(modes=("fwd",)), "modes"), (dict(quick=False), "quick"), (dict(min_blocks=99), "min_blocks"),
    (dict(threads=1), "threads"),
])
def test_resume_refuses_other_settings(payload, monkeypatch, change, setting):
    calls = _counting_cases(monkeypatch)
    config = dataclasses.replace(tiny_config("mish,step,sigmoid", dtypes=("fp32", "bf16"), sizes=(1000, 2048)),
                                 **change)
    with pytest.raises(bench.BenchError, match=f"cannot resume: the file was made with {setting} "):
        bench.run(config, previous=json.loads(json.dumps(payload)))
    assert calls == []


def test_resume_refuses_another_machine(payload):
    config = tiny_config("mish", dtypes=("fp32", "bf16"), sizes=(1000, 2048))
    env = dict(payload["environment"], device_name="Other CPU")
    with pytest.raises(bench.BenchError, match="device_name"):
        bench.check_resumable(json.loads(json.dumps(payload)), config, env)
    bench.check_resumable(json.loads(json.dumps(payload)), config, payload["environment"])  # same: fine
