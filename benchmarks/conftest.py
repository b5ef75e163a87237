"""pytest-benchmark configuration for the actkit suites.

Timed benchmarks run only when asked for: ``pytest --benchmark-only`` (or ``--benchmark-enable``,
``--benchmark-json``, ``--benchmark-save``, ``--benchmark-autosave``); ``--benchmark-disable`` runs
each once, untimed, as a smoke test. A plain ``pytest`` run skips them, so the test suite does
not spend minutes compiling and timing.

What is swept (defaults: CPU small, CUDA large) can be narrowed with environment variables:
``ACTKIT_BENCH_ACTS`` (e.g. ``mish,gelu``), ``ACTKIT_BENCH_DTYPES`` (``fp32,bf16``),
``ACTKIT_BENCH_SIZES`` (``2^20,2^24``), ``ACTKIT_BENCH_PROVIDERS`` (``actkit,eager``),
``ACTKIT_BENCH_MODES`` (``fwd,fwd+bwd``); ``ACTKIT_BENCH_THREADS`` sets torch's CPU threads for the
benchmarks (1 is steadier on a shared machine).
"""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_REQUEST_OPTIONS = ("benchmark_only", "benchmark_enable", "benchmark_disable", "benchmark_json",
                    "benchmark_save", "benchmark_autosave")


def benchmarks_requested(config: pytest.Config) -> bool:
    return any(config.getoption(name, default=None) for name in _REQUEST_OPTIONS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_requested(config):
        return
    skip = pytest.mark.skip(reason="timed benchmark: run with pytest --benchmark-only "
                                   "(or --benchmark-disable to run each once untimed)")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()) and HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)
