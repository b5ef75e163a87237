"""Compile every Triton kernel actkit launches for a real GPU target, on a machine without a GPU.

Run as ``python -m actkit.bench.compileonly --arch 90 --out result.json [--sass] [--triton DIR]`` in a
process where ``TRITON_INTERPRET`` is unset, so that ``@triton.jit`` gives real JIT functions
(:func:`probe` starts that process, with another Triton first on its path if asked: ``--triton``).
``tests/test_gpu_compile.py`` runs it for sm_80 and sm_90, with the installed Triton and in CI with
the oldest supported and the newest (``ACTKIT_EXTRA_TRITONS``);
:mod:`actkit.bench.roofline` reads the SASS counts it writes with ``--sass``.

How. A Triton "driver" for a GPU that is not there (:class:`CompileOnlyDriver`) is made active:
it reports the target architecture, so Triton's own JIT binds, specialises (dtypes, 16-byte
alignment, integer divisibility) and compiles every launch exactly as it would on that GPU,
with ptxas from the Triton wheel; its launcher records each launch instead of running it. The
launches come from actkit's real launchers, driven through each registry activation's own
Triton implementation (``op.triton()``) for every dtype, forward and backward, and every
kernel configuration (learnable layouts, the softmax paths), so no signature is restated here.

Each workload item runs twice: the first launch goes through ``JITFunction.run``, the second
through actkit's direct launch of the cached compiled kernel (:mod:`actkit.kernels.launch`), and
the two launches' argument lists must agree. The output JSON lists, per workload item, any
error, the kernels it compiled first and its launches (``launched``: grid, scalars and tensors by
parameter name, and the index of the compiled kernel); ``kernels`` describes every compiled kernel
once: name, constexprs, shared memory, whether its PTX loads and stores 128 bits at a time and, with
``--sass``, its SASS counted by mnemonic (:mod:`actkit.bench.sass`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Per-block shared memory a kernel may opt into: A100 (sm_80) 163 KiB, H100 (sm_90) 227 KiB
# (CUDA C Programming Guide, compute capability tables). These are the targets it compiles for.
MAX_SHARED = {80: 166912, 90: 232448}
ARCHS = tuple(MAX_SHARED)
V4_LOAD = re.compile(r"ld\.global(\.[a-z0-9_]+)*\.v4\.")
V4_STORE = re.compile(r"st\.global(\.[a-z0-9_]+)*\.v4\.")


class ProbeError(RuntimeError):
    """The compile-only process could not run (not: a kernel failed to compile, which it records)."""


class _Utils:
    def __init__(self, arch: int, load_binary_fields: int):
        self.arch, self.fields = arch, load_binary_fields

    def get_device_properties(self, device):
        return {"max_shared_mem": MAX_SHARED[self.arch], "max_num_regs": 65536, "multiprocessor_count": 132,
                "warpSize": 32, "sm_clock_rate": 1_755_000, "mem_clock_rate": 2_619_000, "mem_bus_width": 5120}

    def load_binary(self, name, kernel, shared, device):
        # (module, function, n_regs, n_spills[, n_max_threads from Triton 3.4])
        return (object(), object(), 0, 0, 1024)[:self.fields]

    def unload_module(self, module):
        pass


def _launch_record(src, metadata, grid, args) -> dict:
    """What a launch passed, by parameter name: scalars as values, tensors described (no data)."""
    names = list(src.fn.arg_names)
    if len(args) != len(names):  # Triton < 3.3 passes the runtime arguments only
        names = [p.name for p in src.fn.params if not p.is_constexpr]
    tensors, scalars = {}, {}
    for name, arg in zip(names, args):
        if isinstance(arg, torch.Tensor):
            storage = arg.untyped_storage()
            tensors[name] = {"dtype": str(arg.dtype).replace("torch.", ""), "numel": arg.numel(),
                             "element_size": arg.element_size(), "storage": storage.data_ptr(),
                             "storage_bytes": storage.nbytes()}
        elif isinstance(arg, (bool, int, float)):
            scalars[name] = arg
    return {"kernel": src.fn.__name__, "metadata": id(metadata), "grid": list(grid), "tensors": tensors,
            "scalars": scalars, "args": args}


class CompileOnlyDriver:
    """Triton's view of a CUDA GPU of compute capability ``arch`` that compiles but never runs."""

    def __init__(self, arch: int):
        import triton
        from triton.backends.compiler import GPUTarget

        from actkit.kernels.launch import _version

        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)
        self.utils = _Utils(arch, 5 if _version(triton.__version__) >= (3, 4) else 4)
        self.launches: list[dict] = []

    def is_active(self):
        return True

    def get_current_device(self):
        return 0

    def set_current_device(self, device):
        pass

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def launcher_cls(self, src, metadata):
        launches = self.launches

        def launch(grid_x, grid_y, grid_z, stream, function, packed_metadata, launch_metadata, enter_hook,
                   exit_hook, *args):
            launches.append(_launch_record(src, metadata, (grid_x, grid_y, grid_z), args))

        return launch


def _aligned(shape, dtype, layout=None) -> torch.Tensor:
    t = torch.randn(shape, dtype=torch.float32).to(dtype)
    return t.contiguous(memory_format=layout) if layout is not None else t


def _arg_signature(arg):
    """What a launch argument is, independent of where a fresh output happens to be allocated."""
    if isinstance(arg, torch.Tensor):
        return ("tensor", str(arg.dtype), arg.data_ptr() % 16 == 0)
    return (type(arg).__name__, arg)


# -- workloads: every registry activation through its own Triton implementation ------------------
def elementwise_workload(spec, dtype):
    from actkit import registry
    from actkit.kinds import elementwise as kind
    from actkit.kernels import activations, elementwise

    op = kind.bind(spec)
    impl = op.triton()
    x = _aligned(2 ** 16, dtype)
    yield "forward", lambda: impl.forward(x)
    for what, q0, q1 in activations.TABLE[spec.table_key].fwd_plan_cases:  # the forms other parameters launch
        fwd, q0, q1 = spec.triton_forward(q0, q1)
        yield f"forward, {what}", lambda fwd=fwd, q0=q0, q1=q1: elementwise.forward(x, fwd, q0, q1)
    if op.saves != "none":
        saved, dy = (impl.forward(x) if op.saves == "y" else x), _aligned(2 ** 16, dtype)
        yield f"backward from {op.saves}", lambda: impl.dx(dy, saved)
    # The derivative of the other tensor, which other parameters save (leaky_relu with a negative
    # slope saves x): through the same launcher.
    for other in ("x", "y"):
        if other != op.saves and spec.differentiable and hasattr(activations, f"{spec.kernel or spec.name}_bwd"
                                                                 + ("_y" if other == "y" else "")):
            dfn, dy = spec.triton_derivative(other), _aligned(2 ** 16, dtype)
            yield f"backward from {other}", lambda dfn=dfn, dy=dy: elementwise.backward(x, dy, dfn, op.p0, op.p1)
    if spec.saves_for(spec.defaults) == "x":  # few-bit where f' needs x (saves="y" too); bits rotate over the registry
        savers = [s.name for s in registry.REGISTRY.values() if s.kind.few_bit and s.saves == "x"]
        bits = 1 + savers.index(spec.name) % 8
        fewbit = kind.bind(spec, (), {"saved_bits": bits}).triton()
        yield f"few-bit forward, {bits} bits", lambda: fewbit.encode(x)
        y, codes = fewbit.encode(x)
        yield f"few-bit backward, {bits} bits", lambda: fewbit.decode(codes, y, y.stride())


def learnable_workload(spec, dtype):
    from actkit.kinds import learnable

    impl = learnable.op_for(spec).triton()
    # Channel-first (NCHW: a channel's elements are contiguous) and channels-last (N, C) layouts
    # take different tiles, so different constexprs.
    for label, x in (("NCHW", _aligned((4, 16, 8, 8), dtype)), ("NC", _aligned((256, 64), dtype))):
        weight = torch.full((x.shape[1],), 0.25, dtype=dtype)
        dy = torch.randn_like(x)
        yield f"{label} forward", lambda x=x, w=weight: impl.forward(x, w)
        yield f"{label} backward", lambda x=x, w=weight, dy=dy: impl.dx_dweight(x, w, dy, True)
        yield f"{label} backward, frozen parameter", lambda x=x, w=weight, dy=dy: impl.dx_dweight(x, w, dy, False)


def rowwise_workload(spec, dtype):
    from actkit.kinds import rowwise
    from actkit.kernels.layout import ROWWISE_MAX_FUSED

    impl = rowwise.op_for(spec).triton()
    fused = ROWWISE_MAX_FUSED
    configs = {  # shape, dim: the one-pass and two-pass paths, over the innermost dim and another
        "one pass, innermost dim": ((8, fused // 2), 1),
        "two passes, innermost dim": ((2, fused * 2), 1),
        "one pass, dim with stride 8": ((2, 64, 8), 1),
        "two passes, dim with stride 8": ((2, fused, 8), 1),
    }
    for label, (shape, dim) in configs.items():
        x = _aligned(shape, dtype)
        yield f"{label} forward", lambda x=x, dim=dim: impl.forward(x, dim)
        y, dy = impl.forward(x, dim), torch.randn_like(x)
        yield f"{label} backward", lambda y=y, dy=dy, dim=dim: impl.dx(y, dy, dim)


def glu_workload(spec, dtype):
    from actkit.kinds import glu

    impl = glu.op_for(spec).triton()
    # One tensor split along the last dim (rows of a half at a row stride of two halves), along a
    # leading dim (one long row), two contiguous tensors (one flat row) and the halves a user took
    # with chunk (rows at their own stride): one kernel, different strides and tile shapes.
    x = _aligned((64, 1024), dtype)
    a, b = x.chunk(2, -1)
    configs = {"split last dim": (x, -1), "split dim 0": (x, 0), "two tensors": (a.contiguous(), b.contiguous()),
               "two strided halves": (a, b)}
    for label, (first, other) in configs.items():
        yield f"{label} forward", lambda first=first, other=other: impl.forward(first, other)
        dy = torch.randn_like(impl.forward(first, other))
        saved, state = impl.to_save((first, other), None)
        yield f"{label} backward", lambda saved=saved, state=state, dy=dy: impl.input_grads(saved, dy, state)


WORKLOADS = {"elementwise": elementwise_workload, "learnable": learnable_workload, "rowwise": rowwise_workload,
             "glu": glu_workload}


def _compiled_kernels() -> dict[tuple, object]:
    from actkit.kernels import launch

    return {(id(k), key): (k, compiled) for k in launch.kernels() for key, compiled in k.compiled.items()}


def _describe(kernel, compiled) -> dict:
    ptx = compiled.asm.get("ptx", "")
    meta = {k: (getattr(v, "__name__", None) or getattr(getattr(v, "fn", None), "__name__", None) or v)
            for k, v in kernel.meta.items()}
    return {"kernel": compiled.name if hasattr(compiled, "name") else compiled.metadata.name,
            "meta": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in meta.items()},
            "shared": compiled.metadata.shared, "num_warps": compiled.metadata.num_warps,
            "v4_load": bool(V4_LOAD.search(ptx)), "v4_store": bool(V4_STORE.search(ptx)),
            "ptx_bytes": len(ptx)}


def _selected(names: Optional[Iterable[str]], dtypes: Optional[Iterable[str]]):
    """(registry specs, dtypes) to compile: all of them, or the ones named (canonical names)."""
    from actkit import registry

    specs = list(registry.REGISTRY.values())
    if names is not None:
        wanted = set(names)
        specs = [s for s in specs if s.name in wanted]
    chosen = DTYPES if dtypes is None else {d: DTYPES[d] for d in dtypes}
    return specs, chosen


def run(arch: int, activations: Optional[Iterable[str]] = None, dtypes: Optional[Iterable[str]] = None,
        sass: bool = False, cubin_dir: Optional[Path] = None) -> dict:
    """Compile every launch of the chosen activations (default: the whole registry) and dtypes for
    sm_``arch``; with ``sass``, count each compiled kernel's SASS (:func:`actkit.bench.sass.count`).

    The result lists the workload items (``items``: what was launched, any error, the kernels it
    compiled first, and ``launched``: each launch's grid, scalars and tensors by parameter name and
    the index of its compiled kernel) and every compiled kernel once (``kernels``). With
    ``cubin_dir``, each kernel's cubin is written there too (its name is the kernel's ``cubin``)."""
    import triton
    from triton.runtime import driver

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise ProbeError("unset TRITON_INTERPRET: compileonly compiles kernels, it does not interpret them")
    fake = CompileOnlyDriver(arch)
    driver.set_active(fake)
    specs, chosen = _selected(activations, dtypes)
    items, kernels, index = [], [], {}  # index: id(compiled metadata) -> position in kernels
    for spec in specs:
        if spec.kind.name not in WORKLOADS:
            items.append({"activation": spec.name, "kind": spec.kind.name, "dtype": None, "what": "-",
                          "error": f"no compile workload for kind {spec.kind.name!r}: add one to {__file__}"})
            continue
        for dtype_name, dtype in chosen.items():
            for item, new, launches in _run_workload(fake, spec, dtype_name, dtype):
                for compiled, described in new:
                    index[id(compiled.metadata)] = len(kernels)
                    kernels.append((compiled, described))
                item["launched"] = [{"kernel": index.get(launch["metadata"]),
                                     **{k: launch[k] for k in ("grid", "scalars", "tensors")}} for launch in launches]
                items.append(item)
    if cubin_dir is not None:
        for i, (compiled, described) in enumerate(kernels):
            described["cubin"] = f"{i:04d}-{described['kernel']}.cubin"
            (Path(cubin_dir) / described["cubin"]).write_bytes(compiled.asm["cubin"])
    if sass:
        from . import sass as sass_mod

        counted = sass_mod.count([compiled.asm["cubin"] for compiled, _ in kernels], arch)
        for (_, described), counts in zip(kernels, counted):
            described["sass"] = counts
    return {"arch": arch, "triton": triton.__version__, "triton_dir": str(Path(triton.__file__).resolve().parent),
            "torch": torch.__version__, "items": items, "kernels": [described for _, described in kernels]}


def _run_workload(fake: CompileOnlyDriver, spec, dtype_name: str, dtype):
    """(item, [(compiled kernel, description)] first compiled by it, its JIT launches) per step of
    the activation's workload in this dtype."""
    work = WORKLOADS[spec.kind.name](spec, dtype)  # a generator: inputs are made between the items
    while True:
        item = {"activation": spec.name, "kind": spec.kind.name, "dtype": dtype_name, "what": "setup",
                "error": None, "compiled": [], "launches_agree": None}
        before = _compiled_kernels()
        try:
            step = next(work, None)
            if step is None:
                return
            item["what"], call = step
            start = len(fake.launches)
            call()  # the JIT's own launch (compiles on first sight of this specialisation)
            first = fake.launches[start:]
            call()  # actkit's direct launch of the cached compiled kernel
            second = fake.launches[start + len(first):]
        except Exception as exc:
            item["error"] = f"{type(exc).__name__}: {exc}"
            yield item, [], []
            if item["what"] == "setup":
                return
            continue
        item["launches"] = len(first)
        item["launches_agree"] = len(first) == len(second) and all(
            a["kernel"] == b["kernel"] and a["grid"] == b["grid"]
            and list(map(_arg_signature, a["args"])) == list(map(_arg_signature, b["args"]))
            for a, b in zip(first, second))
        if not item["launches_agree"]:
            item["launch_args"] = [[str(_arg_signature(a)) for a in launch["args"]] for launch in first + second]
        after = _compiled_kernels()
        new = [(after[k][1], _describe(*after[k])) for k in after.keys() - before.keys()]
        item["compiled"] = [described for _, described in new]
        yield item, new, first


def probe(arch: int, out: Path, activations: Optional[Iterable[str]] = None,
          dtypes: Optional[Iterable[str]] = None, sass: bool = False, cubin_dir: Optional[Path] = None,
          timeout: float = 1800, triton_dir: Optional[Path] = None) -> dict:
    """:func:`run` in a fresh Python process without ``TRITON_INTERPRET`` (the calling process may
    interpret kernels, or drive a real GPU); its result, also written to ``out``.

    ``triton_dir``: a folder holding another Triton than the installed one (``pip install --no-deps
    --target DIR triton==X``), put first on that process's ``PYTHONPATH`` so that it imports this
    Triton with the installed torch; the result's ``triton_dir`` says which Triton compiled."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_dir is not None:
        if not (Path(triton_dir) / "triton" / "__init__.py").is_file():
            raise ProbeError(f"{triton_dir}: no triton package there; install one with "
                             f"pip install --no-deps --target {triton_dir} triton==VERSION")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(triton_dir).resolve()), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "actkit.bench.compileonly", "--arch", str(arch), "--out", str(out)]
    if activations is not None:
        command += ["--activations", ",".join(activations)]
    if dtypes is not None:
        command += ["--dtypes", ",".join(dtypes)]
    if sass:
        command.append("--sass")
    if cubin_dir is not None:
        command += ["--cubins", str(cubin_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeError(f"the compile-only process for sm_{arch} failed (exit {done.returncode}): {tail}")
    return json.loads(Path(out).read_text())


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a result file is for everyone
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, required=True, choices=ARCHS, help="compute capability")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--activations", help="comma list of registry names (default: all)")
    parser.add_argument("--dtypes", help="comma list of fp32, fp16, bf16 (default: all)")
    parser.add_argument("--sass", action="store_true", help="count each compiled kernel's SASS")
    parser.add_argument("--cubins", help="folder to write each compiled kernel's cubin to")
    parser.add_argument("--triton", help="compile with the Triton in this folder (pip install --no-deps --target "
                                         "DIR triton==X) instead of the installed one, in a process of its own")
    args = parser.parse_args(argv)
    split = lambda text: None if text is None else text.split(",")  # noqa: E731
    cubins = None if args.cubins is None else Path(args.cubins)
    try:
        if args.triton is not None:  # this process has imported the installed Triton: start one that has not
            result = probe(args.arch, Path(args.out), split(args.activations), split(args.dtypes), args.sass, cubins,
                           triton_dir=Path(args.triton))
        else:
            result = run(args.arch, split(args.activations), split(args.dtypes), args.sass, cubins)
            write_json(Path(args.out), result)
    except ProbeError as exc:
        print(f"compileonly: {exc}", file=sys.stderr)
        return 2
    failed = [item for item in result["items"] if item["error"]]
    for item in failed:
        print(f"{item['activation']} {item['dtype']} {item['what']}: {item['error']}", flush=True)
    print(f"sm_{args.arch}, triton {result['triton']}: {len(result['items'])} launches checked, {len(failed)} failed",
          flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
