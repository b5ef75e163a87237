"""A static roofline: what each kernel asks of a GPU, read from its SASS, against what the GPU gives.

Every kernel actkit launches is compiled for a real target without a GPU
(:mod:`actkit.bench.compileonly`, through actkit's own launchers), its SASS counted
(:mod:`actkit.bench.sass`), and each launch's instructions and bytes divided by the elements it
handles. This is a lower-bound model of the time per element on a GPU, one resource at a time:

* **memory**  = bytes per element / (0.92 x peak HBM bandwidth). 0.92 is about what a streaming
  copy reaches on A100 / H100 / H200 (:data:`BANDWIDTH_EFFICIENCY`).
* **issue**   = warp instructions per element / (SMs x 4 schedulers x clock): each SM
  sub-partition issues one warp instruction per clock (:data:`SCHEDULERS`).
* **pipes**   = thread instructions per element on a pipe / (its rate per SM per clock x SMs x
  clock), for the FP32 FMA, FP16x2, integer/logic ALU, integer multiply-add, XU (special functions
  and slow conversions) and shuffle pipes (:data:`PIPE_RATES`, :func:`actkit.bench.sass.pipe_of`).

**Headroom** = memory time / the largest compute time (issue or any pipe). Above 1 the kernel can
run at memory speed; below 1 it is compute-bound even with perfect latency hiding. **Binding** is
the resource with the largest time (``memory`` when headroom >= 1).

Per element. Instructions per element are *thread* instructions (a warp instruction counts 32):
the SASS a thread executes (straight-line code once, each loop once per trip, both sides of a
forward branch, not the subroutines only a ``CALL`` reaches: see :mod:`actkit.bench.sass`) x threads
per program x programs / elements of the launch. Programs (the grid) and warps come from the real
launch, elements from its arguments (:data:`ELEMENTS`: the elements of the activation's input
for elementwise, few-bit, learnable and row-wise kernels, the output's (one per gate pair) for
GLU, the partial sums for ``column_sum_kernel``), loop trips likewise (:data:`TRIPS`: the
row-wise two-pass paths loop over a row in chunks, ``column_sum_kernel`` over partial rows).
Bytes per element are the compulsory traffic: every byte of every tensor the launch passes, once
(views of one storage counted as their union, at most the storage), so x read, y written; a
re-read (the row-wise two-pass paths read x twice) is taken to hit L2. Where the kernel's global
loads and stores (their widths in the SASS) request fewer bytes than that, those: a tensor the
kernel never reads (identity's backward needs no x) moves nothing. Gathers from small tables (the
few-bit breakpoints, a channel's weight) request more than their tensors hold and are taken to hit
the caches; lookup tables whose size is fixed, not per element (:data:`LOOKUP_TABLES`: the few-bit
code tables, up to 64 KiB), count no bytes at all. Launch sizes are the
probe's (2^16 elements for elementwise kernels): per-element figures do not depend on the size for
straight-line kernels with full programs; row-wise and learnable ones depend on the shape
(row length, channels), which the ``what`` column names.

Targets and the GPUs modelled (:data:`GPUS`):

=========  ====  =====  =========  ==========  ================================================
GPU        arch  SMs    clock GHz  HBM TB/s    source / note
=========  ====  =====  =========  ==========  ================================================
A100       80    108    1.41       2.039       A100 SXM4 80 GB (the 40 GB part has 1.555 TB/s)
H100       90    132    1.755      3.35        H100 SXM5; 1.755 GHz is issue 16's figure (NVIDIA
                                               lists up to 1.98 GHz boost: compute times 11% less)
H200       90    132    1.755      4.8         H200 SXM (H100's SM, 141 GB HBM3e)
=========  ====  =====  =========  ==========  ================================================

Pipe rates, results per SM per clock (CUDA C Programming Guide, "Arithmetic Instructions",
throughput of native arithmetic instructions): FP32 add/mul/FMA 64 on sm_80, 128 on sm_90; FP16
add/mul/FMA 256 results = 128 HFMA2-type instructions (two results each); 32-bit integer add,
shift, logic, compare/min/max 64 (the ALU: also FP32 compare/min/max/select and moves); 32-bit
integer multiply(-add) 64 (IMAD); special functions (MUFU: rcp, rsqrt, lg2, ex2, sin, cos) 16,
and the type conversions the table rates at 16 (F2F, F2I, I2F, F2FP, FRND) and popc/clz/brev, all
charged to one 16-per-clock unit (XU), conservatively; warp shuffle 32. Uniform-datapath, memory
and control instructions cost issue slots only.

What it ignores: latency (it assumes enough warps in flight to hide it), occupancy and register
limits, the tail of the last wave of programs, launch overhead, L2 and L1 hits (and misses of
small tables), DRAM page effects, instruction-cache misses, bank conflicts, dual-issue and
register-bank stalls, clocks lowered by power or heat. Each of those makes a real kernel slower
than the model: the model is a bound a kernel cannot beat, so headroom below 1 is a certain
compute bound and headroom near 1 is not a promise of memory speed (issue 16 asks for 1.5).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from . import sass

SCHEMA = "actkit-static-roofline/1"
BANDWIDTH_EFFICIENCY = 0.92
SCHEDULERS = 4  # warp schedulers (sub-partitions) per SM, each issuing one warp instruction per clock
WARP = 32
HEADROOM_BAR = 1.5  # what issue 16 asks of every kernel on the H200 model (tests/test_roofline.py)


@dataclass(frozen=True)
class GPU:
    name: str
    arch: int
    sms: int
    clock_ghz: float
    hbm_tbps: float
    note: str


GPUS = {
    "A100": GPU("A100", 80, 108, 1.41, 2.039, "A100 SXM4 80 GB; the 40 GB part has 1.555 TB/s"),
    "H100": GPU("H100", 90, 132, 1.755, 3.35, "H100 SXM5; 1.755 GHz as issue 16 (up to 1.98 GHz boost)"),
    "H200": GPU("H200", 90, 132, 1.755, 4.8, "H200 SXM: H100's SM with 4.8 TB/s HBM3e"),
}
PIPE_RATES = {  # thread instructions per SM per clock
    80: {"fma": 64, "fp16": 128, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
    90: {"fma": 128, "fp16": 128, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
}
ARCHS = tuple(PIPE_RATES)

# Elements a launch handles, from its arguments by parameter name (see the module docstring).
ELEMENTS = {
    "activation_fwd_kernel": "n_elements", "activation_bwd_kernel": "n_elements",
    "fewbit_fwd_kernel": "n_elements", "fewbit_bwd_kernel": "n_elements",
    "learnable_fwd_kernel": "outer * C * inner", "learnable_bwd_kernel": "outer * C * inner",
    "glu_fwd_kernel": "rows * cols", "glu_bwd_kernel": "rows * cols",
    "softmax_fwd_kernel": "n_rows * N", "softmax_bwd_kernel": "n_rows * N",
}
# Trips of every loop of a kernel that has loops (arguments and constexprs by name).
TRIPS = {
    "softmax_fwd_kernel": "cdiv(N, BLOCK_N)", "softmax_bwd_kernel": "cdiv(N, BLOCK_N)",
    "column_sum_kernel": "cdiv(n_rows, ROWS)",
}


class RooflineError(ValueError):
    """A request the roofline cannot serve (an unknown arch or activation); one line."""


def parse_arch(value: str) -> int:
    """``sm_90``, ``sm90``, ``90`` or ``9.0`` -> 90; anything else is refused in one line."""
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    arch = None
    if text.isdigit():
        arch = int(text)
    elif text.count(".") == 1 and text.replace(".", "").isdigit():
        major, minor = text.split(".")
        arch = int(major) * 10 + int(minor)
    if arch not in ARCHS:
        raise RooflineError(f"unknown arch {value!r}: the static roofline compiles for "
                            f"{', '.join(f'sm_{a}' for a in ARCHS)}")
    return arch


def gpus_for(arch: int) -> list[GPU]:
    return [g for g in GPUS.values() if g.arch == arch]


def _evaluate(expression: str, names: Mapping[str, int]) -> int:
    return int(eval(expression, {"__builtins__": {}, "cdiv": lambda a, b: -(-a // b)}, dict(names)))


# Lookup tables by parameter name: their size does not grow with the launch (the few-bit kernels'
# breakpoints, cell and code tables, levels), so over a real launch their one read amortises to
# nothing; counted at the probe's size they would dilute its bytes per element (a 64 KiB code
# table is a byte per element at 2^16 elements) and flatter the headroom. Not counted.
LOOKUP_TABLES = frozenset({"breakpoint_ptr", "table_ptr", "level_ptr"})


def _tensor_bytes(tensors: Mapping[str, Mapping]) -> int:
    """Every tensor once (lookup tables none); tensors on one storage (views) count as their union,
    at most the storage."""
    by_storage: dict[int, list] = {}
    for name, t in tensors.items():
        if name in LOOKUP_TABLES:
            continue
        by_storage.setdefault(t["storage"], []).append(t)
    return sum(min(ts[0]["storage_bytes"], sum(t["numel"] * t["element_size"] for t in ts))
               for ts in by_storage.values())


_ACCESS_BYTES = ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1))


def access_bytes(mnemonic: str) -> int:
    """Bytes one thread moves with a global load or store (``LDG.E.128`` 16, ``STG.E.U16`` 2, ``LDG.E`` 4)."""
    return next((size for suffix, size in _ACCESS_BYTES if suffix in mnemonic), 4)


def requested_bytes(per_thread: Mapping[str, int]) -> int:
    """Bytes one thread's global loads and stores request (``per_thread``: mnemonic -> executions)."""
    return sum(access_bytes(op) * n for op, n in per_thread.items() if op.split(".")[0] in ("LDG", "STG"))


def _per_thread(described: Mapping, names: Mapping[str, int]) -> Counter:
    """SASS instructions one thread of the launch executes, by mnemonic (loops times their trips)."""
    name, counted = described["kernel"], described["sass"]
    per_thread = Counter(counted["straight"])
    if counted["loops"]:
        if name not in TRIPS:
            raise RooflineError(f"{name} has {len(counted['loops'])} loop(s) and no trip count; add it to "
                                "actkit.bench.roofline.TRIPS")
        trips = _evaluate(TRIPS[name], names)
        for body in counted["loops"]:
            for op, n in body.items():
                per_thread[op] += n * trips
    return per_thread


def operation_cost(launched: Sequence[Mapping], kernels: Sequence[Mapping]) -> dict:
    """Per-element instructions (by class and pipe) and bytes of one operation: the launches of a
    compileonly item (a learnable backward is two kernels), per element of its first launch."""
    total, elements = Counter(), None
    bytes_moved = tensor_bytes = requested = 0
    for launch in launched:
        described = kernels[launch["kernel"]]
        names = {**launch["scalars"], **{k: v for k, v in described["meta"].items() if isinstance(v, int)}}
        if elements is None:
            if described["kernel"] not in ELEMENTS:
                raise RooflineError(f"{described['kernel']}: no element count for this kernel; add it to "
                                    "actkit.bench.roofline.ELEMENTS")
            elements = _evaluate(ELEMENTS[described["kernel"]], names)
            programs = math.prod(launch["grid"])
            threads = described["num_warps"] * WARP
        launch_threads = described["num_warps"] * WARP * math.prod(launch["grid"])
        per_thread = _per_thread(described, names)
        for op, n in per_thread.items():
            total[op] += n * launch_threads
        tensor_bytes += _tensor_bytes(launch["tensors"])
        requested += requested_bytes(per_thread) * launch_threads
        # A tensor the kernel never reads (f' = 1 needs no x) moves nothing; a gather from a small
        # table (few-bit breakpoints, a channel's weight) or a re-read hits the caches: the smaller.
        bytes_moved += min(_tensor_bytes(launch["tensors"]), requested_bytes(per_thread) * launch_threads)
    classes, pipes = Counter(), Counter()
    for op, n in total.items():
        classes[sass.class_of(op)] += n / elements
        pipe = sass.pipe_of(op)
        if pipe is not None:
            pipes[pipe] += n / elements
    return {"kernels": [kernels[launch["kernel"]]["kernel"] for launch in launched],
            "elements_per_program": elements / programs, "threads_per_program": threads,
            "instructions_per_element": round(sum(total.values()) / elements, 4),
            "classes": {c: round(classes[c], 4) for c in sass.CLASSES if classes[c]},
            "pipes": {p: round(pipes[p], 4) for p in sass.PIPES if pipes[p]},
            "bytes_per_element": round(bytes_moved / elements, 4),
            "tensor_bytes_per_element": round(tensor_bytes / elements, 4),
            "requested_bytes_per_element": round(requested / elements, 4)}


def model(cost: Mapping, gpu: GPU) -> dict:
    """Times per element (picoseconds) of each resource on ``gpu``, the binding one and the headroom."""
    hz = gpu.sms * gpu.clock_ghz * 1e9
    times = {"memory": cost["bytes_per_element"] / (BANDWIDTH_EFFICIENCY * gpu.hbm_tbps * 1e12),
             "issue": cost["instructions_per_element"] / WARP / (SCHEDULERS * hz)}
    rates = PIPE_RATES[gpu.arch]
    times.update({p: n / (rates[p] * hz) for p, n in cost["pipes"].items()})
    compute = max(v for k, v in times.items() if k != "memory")
    return {"headroom": round(times["memory"] / compute, 4) if compute else math.inf,
            "binding": max(times, key=times.get),
            "ps_per_element": {k: round(v * 1e12, 4) for k, v in times.items()}}


def rows(probe: Mapping) -> tuple[list[dict], list[str]]:
    """(one row per operation launched, one line per launch that failed) of a compileonly result
    run with ``sass=True``."""
    arch = probe["arch"]
    table, failures = [], []
    for item in probe["items"]:
        if item["error"]:
            dtype = f" {item['dtype']}" if item["dtype"] else ""
            failures.append(f"{item['activation']}{dtype} {item['what']} did not compile for sm_{arch}: "
                            f"{item['error']}")
            continue
        cost = operation_cost(item["launched"], probe["kernels"])
        table.append({"activation": item["activation"], "kind": item["kind"], "dtype": item["dtype"],
                      "what": item["what"], **cost, "gpus": {g.name: model(cost, g) for g in gpus_for(arch)}})
    return table, failures


def payload(probe: Mapping) -> dict:
    """The result file's content for one arch: the model's figures, its rows and any failures."""
    table, failures = rows(probe)
    arch = probe["arch"]
    return {"schema": SCHEMA, "arch": arch, "triton": probe["triton"], "torch": probe["torch"],
            "model": {"bandwidth_efficiency": BANDWIDTH_EFFICIENCY, "schedulers_per_sm": SCHEDULERS,
                      "pipe_rates_per_sm_per_clock": PIPE_RATES[arch],
                      "gpus": [asdict(g) for g in gpus_for(arch)]},
            "rows": table, "failures": failures}


def run(arch: int, out: Path, activations: Optional[Iterable[str]] = None,
        dtypes: Optional[Iterable[str]] = None) -> dict:
    """Compile, disassemble and model every kernel of the chosen activations (default: all) for
    sm_``arch`` in a fresh process; the probe's raw result is written to ``out``."""
    from . import compileonly

    return payload(compileonly.probe(arch, out, activations, dtypes, sass=True))


def below(result: Mapping, gpu: str = "H200", bar: float = HEADROOM_BAR) -> list[dict]:
    """The rows whose headroom on ``gpu`` is under ``bar``, worst first."""
    found = [r for r in result["rows"] if gpu in r["gpus"] and r["gpus"][gpu]["headroom"] < bar]
    return sorted(found, key=lambda r: r["gpus"][gpu]["headroom"])


def merge(results: Sequence[Mapping]) -> tuple[list[str], list[tuple[dict, dict]]]:
    """(every GPU modelled, [(row, {GPU: its model})]) of results for several archs (e.g. sm_80 and
    sm_90): the rows of the last result, each with the models of the same launch (activation, launch,
    dtype) in every result."""
    key = lambda row: (row["activation"], row["what"], row["dtype"])  # noqa: E731
    models: dict[tuple, dict] = {}
    gpus = []
    for result in results:
        gpus += [g["name"] for g in result["model"]["gpus"] if g["name"] not in gpus]
        for row in result["rows"]:
            models.setdefault(key(row), {}).update(row["gpus"])
    return gpus, [(row, models[key(row)]) for row in results[-1]["rows"]]


def select(merged: Sequence[tuple[dict, dict]], gpus: Sequence[str], dtypes: Optional[Iterable[str]] = None,
           activations: Optional[Iterable[str]] = None, launches: Optional[Iterable[str]] = None,
           only_below: Optional[float] = None) -> list[tuple[dict, dict]]:
    """The merged rows of these dtypes, activations and launches (None: all), and with ``only_below``
    those whose headroom on one of ``gpus`` is under it."""
    keep = lambda value, chosen: chosen is None or value in set(chosen)  # noqa: E731
    return [(row, models) for row, models in merged
            if keep(row["dtype"], dtypes) and keep(row["activation"], activations) and keep(row["what"], launches)
            and (only_below is None or min(models[g]["headroom"] for g in gpus if g in models) < only_below)]


def markdown(results: Sequence[Mapping], gpus: Sequence[str] = (), dtypes: Optional[Iterable[str]] = None,
             activations: Optional[Iterable[str]] = None, launches: Optional[Iterable[str]] = None,
             only_below: Optional[float] = None) -> str:
    """A markdown table of one or more results (e.g. sm_80 and sm_90): one line per launch (activation,
    launch, dtype) of the last result, its bytes and instructions per element and classes there, and
    the headroom on every GPU of every result (A100 from sm_80, H100 and H200 from sm_90)."""
    known, merged = merge(results)
    names = list(gpus) or known
    head = ["activation", "launch", "dtype", "B/elem", "instr/elem", "MUFU", "FP32", "int", "conv"]
    head += [f"headroom {g}" for g in names] + [f"binds on {names[-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, models in select(merged, names, dtypes, activations, launches, only_below):
        c = r["classes"]
        cells = [r["activation"], r["what"], r["dtype"], f"{r['bytes_per_element']:.3g}",
                 f"{r['instructions_per_element']:.1f}", f"{c.get('mufu', 0):.2g}", f"{c.get('fp32', 0):.3g}",
                 f"{c.get('integer', 0):.3g}", f"{c.get('conversion', 0):.2g}"]
        cells += [f"{models[g]['headroom']:.2f}" if g in models else "-" for g in names]
        cells.append(models[names[-1]]["binding"] if names[-1] in models else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
