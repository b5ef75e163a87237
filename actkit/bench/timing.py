"""Timing: ``triton.testing.do_bench`` on CUDA; on CPU ``torch.utils.benchmark.Timer`` in blocks
interleaved round-robin over everything a case times."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .config import BenchConfig


@dataclass
class Timing:
    median_s: float
    p20_s: float
    p80_s: float
    reps: int | None
    timer: str
    cache_flushed: bool


def time_cuda(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> Timing:
    """``triton.testing.do_bench``: warm-up, L2 flush before every rep, CUDA events; quantiles in ms."""
    from triton.testing import do_bench  # keyword arguments: stable across triton 3.1 .. 3.8

    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(median / 1e3, p20 / 1e3, p80 / 1e3, None,
                  f"triton.testing.do_bench(warmup={warmup_ms}ms, rep={rep_ms}ms)", True)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _calls_per_block(timer, block_s: float) -> int:
    """How many calls fill about ``block_s``: grow a batch until it takes a quarter of that, then
    scale by the fastest of three such batches (a burst of load elsewhere shrinks blocks rather
    than inflating them; a per-call estimate from single calls would count the timer's overhead)."""
    number = 1
    while number < 2 ** 20:
        if timer.timeit(number).median * number >= block_s / 4:
            break
        number *= 4
    per_call = min(timer.timeit(number).median for _ in range(3))
    return max(1, round(block_s / max(per_call, 1e-12)))


def time_cpu(fns: Mapping[Any, Callable[[], Any]], *, min_run_time: float, min_blocks: int, block_s: float,
             warmup_calls: int) -> dict[Any, Timing]:
    """Time several callables with ``torch.utils.benchmark.Timer``, interleaved.

    Each callable runs in blocks of about ``block_s``; the blocks go round-robin over the
    callables (at least ``min_blocks`` rounds, and ``min_run_time`` seconds per callable unless
    contention has stretched the rounds past four times the planned time),
    so a burst of load from elsewhere on the machine slows every provider alike instead of
    falling on one of them. Median and p20/p80 are over the per-call times of the blocks.
    """
    from torch.utils import benchmark as tbench

    threads = torch.get_num_threads()
    timers, numbers, samples = {}, {}, {}
    for key, fn in fns.items():
        for _ in range(warmup_calls):
            fn()
        timers[key] = tbench.Timer("fn()", globals={"fn": fn}, num_threads=threads)
        numbers[key] = _calls_per_block(timers[key], block_s)
        samples[key] = []
    spent = dict.fromkeys(fns, 0.0)
    rounds = 0
    # On a loaded machine blocks stretch; past this wall-clock budget, min_blocks rounds suffice.
    deadline = time.perf_counter() + 4 * min_run_time * len(fns)
    while rounds < min_blocks or (min(spent.values()) < min_run_time and time.perf_counter() < deadline):
        for key, timer in timers.items():
            per_call = timer.timeit(numbers[key]).median
            samples[key].append(per_call)
            spent[key] += per_call * numbers[key]
        rounds += 1
    return {key: Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8),
                        numbers[key] * len(times),
                        f"torch.utils.benchmark.Timer({len(times)} interleaved blocks x {numbers[key]} calls, "
                        f"{threads} thread{'' if threads == 1 else 's'})", False)
            for key, times in samples.items()}


def time_all(fns: Mapping[Any, Callable[[], Any]], config: BenchConfig) -> dict[Any, Timing]:
    """Timings for each callable: ``do_bench`` one after another on CUDA, interleaved Timer blocks on CPU
    (``config``: a :class:`BenchConfig`, or another configuration with its timing fields and ``device_type``)."""
    if config.device_type == "cuda":
        return {key: time_cuda(fn, config.warmup_ms, config.rep_ms) for key, fn in fns.items()}
    return time_interleaved(fns, config)


def time_interleaved(fns: Mapping[Any, Callable[[], Any]], config: BenchConfig) -> dict[Any, Timing]:
    """:func:`time_cpu` with the configuration's budget, on any device.

    On CUDA, ``torch.utils.benchmark.Timer`` synchronises the device before and after each block
    and not between calls, so a block's time is what the host spends issuing its calls back to back
    (plus draining the last kernel): the host cost, when the kernels are shorter than their launch.
    """
    return time_cpu(fns, min_run_time=config.min_run_time, min_blocks=config.min_blocks, block_s=config.block_s,
                    warmup_calls=config.warmup_calls)

