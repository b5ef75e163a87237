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


def test_glu_bytes_and_shapes():
    """The size counts x; a and b are its halves and y has half of x's elements. Forward reads x and
    writes y (1.5 x's bytes), backward reads x and dy and writes dx (2.5)."""
    assert bench.bytes_moved("glu", "fwd", 4096, 2) == 3 * 2048 * 2
    assert bench.bytes_moved("glu", "bwd", 4096, 2) == 5 * 2048 * 2
    assert bench.bytes_moved("glu", "fwd+bwd", 4096, 4) == 8 * 2048 * 4
    model = bench.KINDS["glu"]
    assert model.shape(2 ** 16) == (64, 1024) and model.output_shape((64, 1024)) == (64, 512)
    assert model.shape(6) == (1, 6) and model.shape(2 * 1023) == (1, 2046)
    with pytest.raises(bench.BenchError, match="1001 elements is odd"):
        model.shape(1001)


def test_glu_kind_runs_keeps_two_halves_and_skips_odd_sizes():
    result = bench.run(tiny_config("swiglu", sizes=(4096, 1001), modes=("fwd+bwd",)))
    saved = {r["provider"]: r["saved_bytes_per_element"] for r in result["records"]}
    # Per element of x, fp32: actkit keeps x (a and b), 4 bytes; the composite also keeps silu(a), half of x.
    assert saved == {"actkit": 4.0, "eager": 6.0}
    assert {tuple(r["shape"]) for r in result["records"]} == {(4, 1024)}
    assert [(s["numel"], "odd" in s["reason"]) for s in result["skipped"]] == [(1001, True)]


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
    only = bench.markdown_table(loaded, activations=["sigmoid"])
    assert [line.split(" | ")[0][2:] for line in only.splitlines()
            if line.startswith("| ") and not line.startswith("| activation")] == ["sigmoid"] * 4
    with pytest.raises(bench.BenchError, match="no records of relu; it has: mish, step, sigmoid"):
        bench.markdown_table(loaded, activations=["relu"])


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


# -- host cost ---------------------------------------------------------------------------------------
def host_config(act, providers=("actkit", "module", "eager", "function"), modes=bench.HOST_MODES, sizes=(16,)):
    config = bench.make_config(act, "cpu", sizes=[str(s) for s in sizes], modes=list(modes),
                               providers=list(providers), measure="host", quick=True)
    return dataclasses.replace(config, **FAST)


@pytest.fixture(scope="module")
def host_payload():
    """One small real host-cost run: an activation with an ATen backward, a learnable one (no
    autograd.Function baseline) and a forward-only one."""
    return bench.run(host_config("mish,prelu,step"))


def test_host_config_defaults_and_vocabulary():
    config = bench.make_config("mish", "cpu", measure="host")
    assert config.measure == "host" and config.sizes == bench.HOST_SIZES == (16,) and config.dtypes == ("fp32",)
    assert config.modes == bench.HOST_MODES == ("nograd", "grad", "fwd+bwd")
    assert config.providers == bench.HOST_PROVIDERS == ("actkit", "module", "eager", "function", "compile")
    assert bench.make_config("mish", "cpu").measure == "bandwidth"
    assert bench.parse_modes("no-grad,fwd+bwd", "host") == ("nograd", "fwd+bwd")
    assert bench.parse_providers("actkit.nn,autograd.function", "host") == ("module", "function")
    with pytest.raises(bench.BenchError, match="unsupported mode 'bwd' in --mode; with --host-cost choose from "
                                               "nograd, grad, fwd\\+bwd"):
        bench.make_config("mish", "cpu", modes="bwd", measure="host")
    with pytest.raises(bench.BenchError, match="unsupported mode 'grad' in --mode; choose from fwd, bwd"):
        bench.make_config("mish", "cpu", modes="grad")
    with pytest.raises(bench.BenchError, match="unsupported provider 'module'.*actkit, eager, compile$"):
        bench.make_config("mish", "cpu", providers="module")
    with pytest.raises(bench.BenchError, match="unknown measurement 'latency'"):
        bench.make_config("mish", "cpu", measure="latency")


@pytest.mark.parametrize("name", [s.name for s in registry.REGISTRY.values() if s.aten_backward() is not None])
def test_minimal_function_is_the_eager_op_with_its_aten_backward(name):
    """The baseline must compute what autograd of the eager op computes, or its cost means nothing."""
    spec = registry.get(name)
    fn = bench.minimal_function(spec)
    x = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    dy = torch.randn(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = fn(xa), spec.reference(xb)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ya, xa, dy)[0], torch.autograd.grad(yb, xb, dy)[0])
    assert type(ya.grad_fn).__name__ == f"Minimal{spec.class_name}Backward"


def test_no_minimal_function_without_an_aten_backward():
    with pytest.raises(bench.BenchError, match="lisht: the registry has no ATen backward op"):
        bench.minimal_function(registry.get("lisht"))


@pytest.mark.parametrize("name", ["mish", "sigmoid", "prelu", "softmax"])
def test_host_runners_do_what_their_mode_says(name):
    """nograd records no graph; grad records one; fwd+bwd returns the gradients of x (and of a learnable
    parameter), the same for every provider as for the eager op."""
    spec = registry.get(name)
    case = bench.make_host_case(spec, 16 if not spec.kind.learnable else 128, torch.float32, "cpu")
    providers = [p for p in ("actkit", "module", "eager", "function") if p != "function" or spec.aten_backward()]
    expected = bench.host_runner("eager", case, "fwd+bwd")()
    assert len(expected) == (2 if spec.kind.learnable else 1)
    for provider in providers:
        y0 = bench.host_runner(provider, case, "nograd")()
        assert not y0.requires_grad and y0.grad_fn is None
        y = bench.host_runner(provider, case, "grad")()
        assert y.requires_grad and y.grad_fn is not None
        torch.testing.assert_close(y.detach(), y0)
        for got, want in zip(bench.host_runner(provider, case, "fwd+bwd")(), expected):
            torch.testing.assert_close(got, want)
    assert case.x.grad is None and all(p.grad is None for p in case.module.parameters())


def test_host_call_labels():
    mish, prelu, softmax = (registry.get(n) for n in ("mish", "prelu", "softmax"))
    assert bench.call_label("actkit", mish) == "actkit.functional.mish(x)"
    assert bench.call_label("module", mish) == "actkit.nn.Mish()(x)"
    assert bench.call_label("eager", mish) == "F.mish(x)"
    assert bench.call_label("function", mish) == "autograd.Function(F.mish, aten.mish_backward)"
    assert bench.call_label("compile", mish) == "torch.compile(F.mish)(x)"
    assert bench.call_label("module", prelu) == "actkit.nn.PReLU(num_parameters=C)(x)"
    assert bench.call_label("eager", softmax) == "torch.softmax(x, dim=-1)"


def test_host_records(host_payload):
    assert host_payload["schema"] == bench.HOST_SCHEMA and host_payload["config"]["measure"] == "host"
    records = {(r["activation"], r["mode"], r["provider"]): r for r in host_payload["records"]}
    assert len(records) == len(host_payload["records"])
    expected = {("mish", m, p) for m in bench.HOST_MODES for p in ("actkit", "module", "eager", "function")}
    expected |= {("prelu", m, p) for m in bench.HOST_MODES for p in ("actkit", "module", "eager")}
    expected |= {("step", "nograd", p) for p in ("actkit", "module", "eager")}
    assert set(records) == expected
    notes = {(s["activation"], s["provider"], s["mode"]): s["reason"] for s in host_payload["skipped"]}
    assert set(notes) == {("prelu", "function", None), ("step", "function", None), ("step", None, "grad"),
                          ("step", None, "fwd+bwd")}
    assert "no ATen backward op" in notes[("prelu", "function", None)]
    for (act, mode, provider), r in records.items():
        assert list(r) == list(bench.HOST_RECORD_FIELDS)
        assert r["p20_us"] <= r["median_us"] <= r["p80_us"] and r["reps"] >= 1 and r["first_call_s"] >= 0
        assert r["numel"] == 16 and r["size"] == "2^4" and r["dtype"] == "fp32" and r["device"] == "cpu"
        assert r["call"] == bench.call_label(provider, registry.get(act))
        assert r["backend"] == {"actkit": "torch", "module": "torch", "eager": "aten", "function": "aten"}[provider]
        assert r["cost_vs_eager"] == pytest.approx(r["median_us"] / records[(act, mode, "eager")]["median_us"])
        if act == "mish":
            function = records[(act, mode, "function")]["median_us"]
            assert r["cost_vs_function"] == pytest.approx(r["median_us"] / function)
        else:
            assert r["cost_vs_function"] is None
    assert records[("prelu", "grad", "module")]["shape"] == [16]


def test_host_targets_by_hand():
    def record(provider, mode, median, eager=None, function=None):
        return dict(activation="mish", dtype="fp32", numel=16, size="2^4", provider=provider, mode=mode,
                    median_us=median, cost_vs_eager=eager, cost_vs_function=function)

    records = [record("eager", "nograd", 1.7, 1.0), record("actkit", "nograd", 32.0, 32.0 / 1.7),
               record("function", "grad", 5.2, 5.2 / 2.7, 1.0), record("module", "grad", 7.8, 7.8 / 2.7, 1.5)]
    assert [ratio for _, ratio in bench.target_ratios(records, "mish", "fp32", 16)] == [32.0 / 1.7, 1.5]
    assert bench.host_summary_line(records, "mish", "fp32", 16) == (
        "mish fp32 2^4: no grad: actkit.functional 18.8x eager (target <= 3x: missed); "
        "grad: actkit.nn 1.5x autograd.Function (target <= 2x: met)")
    assert "grad: actkit.nn vs autograd.Function: not measured" in bench.host_summary_line(records[:2], "mish",
                                                                                           "fp32", 16)


def test_host_files_and_tables(host_payload, tmp_path):
    json_path, csv_path = tmp_path / "host.json", tmp_path / "host.csv"
    bench.write(host_payload, json_path, csv_path)
    loaded = bench.load(json_path, measures=bench.MEASURES)
    assert loaded["records"] == json.loads(json.dumps(host_payload["records"]))
    with pytest.raises(bench.BenchError, match="holds host-cost results .*needs a file from actkit bench --json"):
        bench.load(json_path)  # commands that plot GB/s need a bandwidth sweep
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == bench.HOST_RECORD_FIELDS
        assert len(list(reader)) == len(host_payload["records"])

    wide = bench.markdown_table(loaded)
    assert "`actkit bench --device cpu --host-cost --quick`" in wide.splitlines()[0]
    assert "| µs per call (no grad / grad / fwd+bwd) |" in wide
    by_call = {line.split(" | ")[3]: line for line in wide.splitlines() if line.startswith("| mish | fp32 | 2^4 | `")}
    assert set(by_call) == {f"`{bench.call_label(p, registry.get('mish'))}`"
                            for p in ("actkit", "module", "eager", "function")}
    module = {r["mode"]: r for r in host_payload["records"] if r["activation"] == "mish" and r["provider"] == "module"}
    assert f"| {bench.format_us(module['nograd']['median_us'])} / " in by_call["`actkit.nn.Mish()(x)`"]
    targets = next(line for line in wide.splitlines() if line.startswith("| mish | fp32 | 2^4 | ") and "`" not in line)
    assert f"| {module['grad']['cost_vs_function']:.2f}x |" in targets
    assert "| step | fp32 | 2^4 | " in wide and "(target <= 2x) |" in wide

    long = bench.markdown_table(loaded, modes=["grad"], layout="long")
    rows = [line for line in long.splitlines() if line.startswith("| ") and not line.startswith("| activation")]
    assert len(rows) == 4 + 3 and all(" | grad | " in row for row in rows)  # mish 4 calls, prelu 3; step has no grad


def test_resume_refuses_another_measurement(payload, host_payload):
    with pytest.raises(bench.BenchError, match="made with measure 'bandwidth', this run has 'host'"):
        bench.check_resumable(json.loads(json.dumps(payload)), host_config("mish"), payload["environment"])
    with pytest.raises(bench.BenchError, match="made with measure 'host', this run has 'bandwidth'"):
        bench.check_resumable(json.loads(json.dumps(host_payload)), tiny_config("mish"), host_payload["environment"])


def test_files_from_before_host_cost_still_resume(payload, monkeypatch):
    """A file written before the measure setting existed holds a bandwidth sweep."""
    calls = _counting_cases(monkeypatch)
    old = json.loads(json.dumps(payload))
    del old["config"]["measure"]
    config = tiny_config("mish,step,sigmoid", dtypes=("fp32", "bf16"), sizes=(1000, 2048))
    assert bench.run(config, previous=old)["complete"] is True and calls == []


def test_host_cost_with_compile():
    """torch.compile's host cost (guards and the compiled call); its compile is the first call, apart."""
    result = bench.run(host_config("relu", providers=("eager", "compile"), modes=("nograd",)))
    compiled = next(r for r in result["records"] if r["provider"] == "compile")
    assert compiled["backend"] == "inductor" and compiled["call"] == "torch.compile(F.relu)(x)"
    assert compiled["first_call_s"] > 0 and compiled["cost_vs_eager"] > 0 and not result["skipped"]


def test_saved_bits_give_actkit_a_few_bit_backward():
    """--saved-bits k: actkit's records carry k and keep k/8 bytes per element (rounded up to whole
    int32 words); the references are untouched; an activation without a few-bit backward (step: no
    backward at all), which only ``all`` brings along, is skipped with a note rather than timed exact."""
    config = dataclasses.replace(tiny_config("gelu,step", sizes=(4096,), modes=("fwd", "fwd+bwd")), saved_bits=3)
    result = bench.run(config)
    records = result["records"]
    gelu = {r["provider"]: r for r in records if r["activation"] == "gelu" and r["mode"] == "fwd+bwd"}
    assert gelu["actkit"]["saved_bits"] == 3 and gelu["eager"]["saved_bits"] is None
    assert gelu["actkit"]["saved_bytes_per_element"] == pytest.approx(4 / (32 // 3), rel=0.01)
    assert gelu["eager"]["saved_bytes_per_element"] == 4
    assert not [r for r in records if r["activation"] == "step"]
    assert [s["reason"] for s in result["skipped"] if s["activation"] == "step"] == [
        "--saved-bits: step has no backward, so nothing to save: drop saved_bits"]
    for bits in (9, 0):
        with pytest.raises(bench.BenchError, match=f"--saved-bits must be an integer from 1 to 8 .*got {bits}; leave "
                                                   "it out for the exact backward"):
            bench.make_config("gelu", "cpu", saved_bits=bits)


@pytest.mark.parametrize("act", ["swiglu", "prelu", "softmax", "identity", "step", "relu,prelu"])
def test_saved_bits_refuse_a_named_activation_without_a_few_bit_backward(act):
    with pytest.raises(bench.BenchError, match=r"^--saved-bits 2: .*(no few-bit backward|nothing to save|keeps "
                                               r"nothing).*; leave \w+ out of --act or drop --saved-bits$"):
        bench.make_config(act, "cpu", saved_bits=2)


def test_saved_bits_with_all_skip_and_name_the_activations_without_one():
    """``--act all --saved-bits k``: every activation with a few-bit backward is measured with it; the
    others are skipped, each with a note saying why (as a named one is refused)."""
    plan = bench.plan(bench.make_config("all", "cpu", saved_bits=2))
    planned = {spec.name for spec, _, _ in plan.cases}
    noted = {s["activation"] for s in plan.skipped if s["reason"].startswith("--saved-bits: ")}
    assert {"gelu", "relu", "silu"} <= planned
    assert {"prelu", "swish_beta", "swiglu", "identity", "step"} <= noted and not planned & noted
    assert planned | {s["activation"] for s in plan.skipped} == set(bench.parse_activations("all"))


def test_a_request_with_nothing_to_measure_is_refused():
    """Every case skipped (an odd size for a GLU) is bad input, not an empty result."""
    with pytest.raises(bench.BenchError, match="^nothing to measure: swiglu: a GLU splits x into two halves: 7 "
                                               "elements is odd; choose an even size$"):
        bench.run(tiny_config("swiglu", sizes=(7,)))
