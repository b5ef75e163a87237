"""pytest-benchmark suite over the registry: activation x dtype x size x mode x provider, and the
per-call host cost at a tiny size (activation x mode x provider).

Providers, modes, inputs and byte accounting come from :mod:`actkit.bench`, so these numbers
mean what ``actkit bench`` (and ``actkit bench --host-cost``) reports. Each ``test_activation``
group is one activation x mode x dtype x size, with the providers side by side; ``extra_info``
carries GB/s, bytes moved, device and backend. The timed function synchronises the device; on
CUDA the L2 cache is flushed before every round (in pedantic ``setup``, not timed). First calls
(torch.compile, Triton JIT) run before timing starts.

``test_host_cost`` groups are one activation x mode at ``ACTKIT_BENCH_HOST_SIZES`` elements
(default 16, fp32): actkit's functional and module calls, the eager op, a minimal
torch.autograd.Function around it (where the registry names an ATen backward) and torch.compile.
Each round makes many calls back to back without synchronising (the host's cost per call; on
CUDA the GPU runs behind), and the reported time is per call.

    pytest --benchmark-only -q --benchmark-json out.json      # CPU: small sizes; CUDA: large ones
    pytest --benchmark-only -k host_cost                      # the host cost alone
"""
from __future__ import annotations

import os

import pytest
import torch

from actkit import bench, registry, results

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_CUDA = DEVICE == "cuda"
DEFAULTS = {
    "cuda": dict(sizes="2^20,2^24", dtypes="fp32,bf16", rounds=100, warmup_rounds=10),
    "cpu": dict(sizes="2^16", dtypes="fp32", rounds=20, warmup_rounds=3),
}[DEVICE]

ACTS = bench.parse_activations(os.environ.get("ACTKIT_BENCH_ACTS", "all"))
DTYPES = bench.parse_dtypes(os.environ.get("ACTKIT_BENCH_DTYPES", DEFAULTS["dtypes"]))
SIZES = bench.parse_sizes(os.environ.get("ACTKIT_BENCH_SIZES", DEFAULTS["sizes"]))
PROVIDERS = bench.parse_providers(os.environ.get("ACTKIT_BENCH_PROVIDERS", "all"))
MODES = bench.parse_modes(os.environ.get("ACTKIT_BENCH_MODES", "all"))
THREADS = bench.parse_threads(os.environ.get("ACTKIT_BENCH_THREADS"))
HOST_SIZES = bench.parse_sizes(os.environ.get("ACTKIT_BENCH_HOST_SIZES", ",".join(map(str, bench.HOST_SIZES))))
HOST_PROVIDERS = bench.parse_providers(os.environ.get("ACTKIT_BENCH_HOST_PROVIDERS", "all"), "host")
HOST_MODES = bench.parse_modes(os.environ.get("ACTKIT_BENCH_HOST_MODES", "all"), "host")
HOST_DTYPE = bench.HOST_DTYPES[0]
# Calls per round: enough that a round of µs calls is far above the timer's resolution, few enough
# that a slow fwd+bwd (~1 ms on a busy CPU) keeps a benchmark under a second.
HOST_ROUNDS, HOST_CALLS = 20, 50


def _cases():
    """Ordered so that each activation x dtype x size is contiguous: torch.compile compiles once per case."""
    cases = []
    for name in ACTS:
        spec = registry.get(name)
        if spec.kind.name not in bench.KINDS:
            cases.append(pytest.param(name, None, None, None, None, id=f"{name}-unsupported", marks=pytest.mark.skip(
                reason=f"kind {spec.kind.name!r} is not benchmarked yet (supported: {', '.join(bench.KINDS)})")))
            continue
        for dtype in DTYPES:
            for size in SIZES:
                for mode in MODES:
                    if mode != "fwd" and not spec.differentiable:
                        continue
                    for provider in PROVIDERS:
                        cases.append(pytest.param(name, dtype, size, mode, provider,
                                                  id=f"{name}-{dtype}-{bench.size_label(size)}-{mode}-{provider}"))
    return cases


CASES = _cases()
_inputs: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _cpu_threads():
    """ACTKIT_BENCH_THREADS for these benchmarks only; restored afterwards."""
    before = torch.get_num_threads()
    if THREADS is not None:
        torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _inputs_for(spec, dtype: str, numel: int) -> bench.CaseInputs:
    """The case's tensors, kept while consecutive benchmarks (providers x modes) share them."""
    key = (spec.name, dtype, numel)
    if key not in _inputs:
        _inputs.clear()
        _inputs[key] = bench.make_inputs(spec, numel, bench.DTYPES[dtype], DEVICE)
    return _inputs[key]


def _sync() -> None:
    if ON_CUDA:
        torch.cuda.synchronize()


_l2 = {}


def _flush_l2():
    """pytest-benchmark setup: overwrite a buffer larger than L2, then wait for it (untimed)."""
    if "buffer" not in _l2:
        _l2["buffer"] = torch.empty(256 * 2 ** 20, dtype=torch.int8, device=DEVICE)
    _l2["buffer"].zero_()
    torch.cuda.synchronize()


@pytest.mark.parametrize("name,dtype,numel,mode,provider", CASES)
def test_activation(benchmark, name, dtype, numel, mode, provider):
    spec = registry.get(name)
    inputs = _inputs_for(spec, dtype, numel)
    x = inputs.x
    # Built and called twice before timing: compile / JIT / lazy initialisation stay out of it.
    run, note = bench.prepared_runner(provider, spec, mode, inputs, key=(dtype, numel))
    _sync()

    def timed():
        run()
        _sync()

    env = results.environment(DEVICE)
    benchmark.group = f"{name} {mode} {dtype} {bench.size_label(numel)}"
    nbytes = bench.bytes_moved(spec.kind.name, mode, numel, x.element_size())
    benchmark.extra_info.update({
        "activation": name, "kind": spec.kind.name, "provider": provider, "mode": mode, "dtype": dtype,
        "numel": numel, "shape": list(x.shape),
        "backend": bench.backend_label(provider, x), "bytes_moved": nbytes, "device": DEVICE,
        "device_name": env["device_name"], "torch": env["torch"], "triton": env["triton"],
        "cpu_threads": torch.get_num_threads(),
        "cache_flushed": ON_CUDA, "note": note,
    })
    benchmark.pedantic(timed, setup=_flush_l2 if ON_CUDA else None, rounds=DEFAULTS["rounds"],
                       warmup_rounds=DEFAULTS["warmup_rounds"], iterations=1)
    if benchmark.stats is not None:  # None when benchmarks are disabled (run once, untimed)
        median = benchmark.stats.stats.median
        benchmark.extra_info["median_s"] = median
        benchmark.extra_info["gbps"] = bench.gbps(nbytes, median)


def _host_cases():
    """activation x size x mode x provider; what cannot be measured is listed as skipped, with why."""
    cases = []
    for name in ACTS:
        spec = registry.get(name)
        if spec.kind.name not in bench.KINDS:
            continue  # listed once, by _cases
        for size in HOST_SIZES:
            for mode in HOST_MODES:
                if mode != "nograd" and not spec.differentiable:
                    continue
                for provider in HOST_PROVIDERS:
                    case_id = f"{name}-{bench.size_label(size)}-{mode}-{provider}"
                    marks = ()
                    if provider == "function" and spec.aten_backward() is None:
                        marks = pytest.mark.skip(reason=f"{name}: no ATen backward op in the registry, so no minimal "
                                                        "autograd.Function baseline")
                    cases.append(pytest.param(name, size, mode, provider, id=case_id, marks=marks))
    return cases


HOST_CASES = _host_cases()
_host_case: dict = {}


def _host_case_for(spec, numel: int) -> bench.HostCase:
    """The case's tensors and modules, kept while consecutive benchmarks (providers x modes) share them."""
    key = (spec.name, numel)
    if key not in _host_case:
        _host_case.clear()
        _host_case[key] = bench.make_host_case(spec, numel, bench.DTYPES[HOST_DTYPE], DEVICE)
    return _host_case[key]


@pytest.mark.parametrize("name,numel,mode,provider", HOST_CASES)
def test_host_cost(benchmark, name, numel, mode, provider):
    spec = registry.get(name)
    case = _host_case_for(spec, numel)
    run = bench.host_runner(provider, case, mode, key=("pytest-benchmark", numel))
    first_call_s = bench.time_first_call(run, DEVICE)  # compile, lazy initialisation: not timed
    run()
    env = results.environment(DEVICE)
    benchmark.group = f"host cost {name} {mode} {HOST_DTYPE} {bench.size_label(numel)}"
    benchmark.extra_info.update({
        "activation": name, "kind": spec.kind.name, "provider": provider, "call": bench.call_label(provider, spec),
        "mode": mode, "dtype": HOST_DTYPE, "numel": numel, "shape": list(case.x.shape),
        "backend": bench.backend_label(provider, case.x), "device": DEVICE, "device_name": env["device_name"],
        "torch": env["torch"], "triton": env["triton"], "cpu_threads": torch.get_num_threads(),
        "first_call_s": first_call_s,
    })
    benchmark.pedantic(run, rounds=HOST_ROUNDS, warmup_rounds=1, iterations=HOST_CALLS)
    _sync()
    if benchmark.stats is not None:
        benchmark.extra_info["median_us"] = benchmark.stats.stats.median * 1e6


def test_suite_covers_the_registry():
    """Every activation is either benchmarked in every supported mode or skipped with its reason."""
    ids = {p.id for p in CASES}
    for name in ACTS:
        spec = registry.get(name)
        if spec.kind.name not in bench.KINDS:
            assert f"{name}-unsupported" in ids
            continue
        modes = MODES if spec.differentiable else [m for m in MODES if m == "fwd"]
        for dtype in DTYPES:
            for size in SIZES:
                for mode in modes:
                    for provider in PROVIDERS:
                        assert f"{name}-{dtype}-{bench.size_label(size)}-{mode}-{provider}" in ids


def test_host_cost_suite_covers_the_registry():
    """Every benchmarked activation has a host-cost benchmark per mode it has and per provider;
    the minimal autograd.Function is skipped exactly where the registry has no ATen backward."""
    params = {p.id: p for p in HOST_CASES}
    for name in ACTS:
        spec = registry.get(name)
        if spec.kind.name not in bench.KINDS:
            continue
        for size in HOST_SIZES:
            for mode in HOST_MODES:
                for provider in HOST_PROVIDERS:
                    case_id = f"{name}-{bench.size_label(size)}-{mode}-{provider}"
                    if mode != "nograd" and not spec.differentiable:
                        assert case_id not in params
                        continue
                    skipped = any(m.name == "skip" for m in params[case_id].marks)
                    assert skipped == (provider == "function" and spec.aten_backward() is None), case_id
