"""Benchmark harness: actkit's activations against eager PyTorch and ``torch.compile``.

For each activation x dtype x size, and for each provider

* ``actkit``  - :func:`actkit.functional.apply`, i.e. the custom op with its autograd (Triton on CUDA,
  the PyTorch fallback on CPU; the backend that ran is recorded),
* ``eager``   - the spec's PyTorch reference (the native ATen op, or the composite formula where
  torch has no op, e.g. LiSHT),
* ``compile`` - ``torch.compile`` of that same reference (static shapes, compiled per case),

it times three modes (``fwd``, ``bwd``, ``fwd+bwd``) and derives

* median time with p20/p80 spread,
* effective bandwidth: the bytes that *must* move (see :data:`KINDS`) over the median time,
* % of a copy kernel's bandwidth measured in the same case (the roofline),
* the speedup of actkit over each other provider,
* bytes saved for backward per element (measured with ``saved_tensors_hooks``),
* peak memory of one fwd+bwd step (CUDA only: ``torch.cuda.max_memory_allocated``),
* the first call's time (compile, Triton JIT, autotune, warm-up), excluded from every timing.

``fwd`` is the training forward: the input requires grad, so autograd records the graph and
saves what backward needs, as in a training step (forward-only activations run without grad).
``bwd`` replays backward on a retained graph; ``fwd+bwd`` is a full step.

Timing: on CUDA ``triton.testing.do_bench`` (warm-up, L2 cache flushed before every rep,
CUDA events, quantiles). On CPU ``torch.utils.benchmark.Timer`` (all of torch's threads) after
warm-up, in blocks interleaved round-robin over the copy and every provider x mode of a case, so
that load from other processes falls on all of them alike; CPU caches are not flushed, which the
records say (``cache_flushed``), and the host's load average is stored with the results.

Kinds: elementwise activations run on 1-D inputs; row-wise ones (softmax) on rows of
:data:`ROW_LENGTH`; learnable ones (PReLU, Swish-beta) on (N, :data:`CHANNELS`) inputs with a
per-channel parameter whose gradient backward also computes. What the harness knows about each
kind (shape, arguments, bytes) is in :data:`KINDS`; activations of other kinds are skipped with
a note.

This module draws nothing: :func:`run` reports progress through a callback and returns a
payload (plain dicts) that :mod:`actkit.results` writes and the CLI renders. Long sweeps are
resumable: a ``checkpoint`` callback receives the payload after every case (``"complete"`` stays
false until the last), and ``previous`` continues a saved payload, running only the cases it lacks.

``make_config(..., measure="host")`` (``actkit bench --host-cost``) measures instead what one call
costs the host at a tiny size, against the eager op and a minimal ``torch.autograd.Function``:
see :mod:`.hostcost`.

Modules, one job each: :mod:`.options` (what a request may name, and parsing it),
:mod:`.config` (a validated configuration and its defaults), :mod:`.cases` (shapes, byte
accounting and inputs of a case), :mod:`.providers` (a runner per provider x mode),
:mod:`.timing` (the timers), :mod:`.bandwidth` (one case of the sweep, measured),
:mod:`.hostcost` (one case of the per-call host cost, measured),
:mod:`.sweep` (planning, running, checkpointing and resuming the cases), :mod:`.tables`
(summary lines and markdown) and :mod:`.files` (result files). The names below are the
package's API: ``from actkit import bench; bench.run(bench.make_config("mish", "cpu"))``.

The static roofline (``actkit roofline``) measures nothing and needs no GPU; its modules are
imported by name: :mod:`.compileonly` (compile every kernel actkit launches for sm_80/sm_90 with a
driver that records launches instead of running them), :mod:`.sass` (disassemble and count SASS)
and :mod:`.roofline` (per-element instructions and bytes against an A100/H100/H200 model).
"""
from __future__ import annotations

from .bandwidth import RECORD_FIELDS
from .cases import (CHANNELS, ENV_FIELDS, KINDS, ROW_LENGTH, CaseInputs, KindModel, bytes_moved, copy_bytes,
                    failure_note, gbps, make_inputs, size_label, skip_note)
from .config import (DEFAULT_DTYPES, DEFAULT_SIZES, HOST_DTYPES, HOST_SIZES, QUICK_DTYPES, QUICK_SIZES, BenchConfig,
                     make_config)
from .files import HOST_SCHEMA, SCHEMA, SCHEMAS, load, measure_of, write
from .hostcost import (HOST_RECORD_FIELDS, TARGETS, HostCase, Target, call_label, host_runner, make_host_case,
                       minimal_function, target_ratios)
from .options import (DTYPES, HOST_MODES, HOST_PROVIDERS, MEASURES, MODES, PROVIDERS, BenchError,
                      parse_activations, parse_device, parse_dtypes, parse_modes, parse_providers, parse_sizes,
                      parse_threads)
from .providers import (backend_label, compiled_reference, donated_buffers_off, forget_compiled, mode_runner,
                        peak_memory_bytes, prepared_runner, provider_fn, saved_bytes_per_element, sync,
                        time_first_call)
from .sweep import CaseKey, ProgressCallback, busy_host, cases_done, check_resumable, plan, run
from .tables import (LAYOUTS, MODE_LABELS, PROVIDER_LABELS, format_bandwidth, format_time, format_us, headline,
                     host_cases, host_summary_line, markdown_table, summary_line, target_line)
from .timing import Timing, time_all, time_cpu, time_cuda, time_interleaved
