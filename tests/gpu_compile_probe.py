"""Compile every Triton kernel actkit launches for a real GPU target, on a machine without a GPU.

Run as a script (``python tests/gpu_compile_probe.py --arch 90 --out result.json``) in a process
where ``TRITON_INTERPRET`` is unset, so that ``@triton.jit`` gives real JIT functions.
``tests/test_gpu_compile.py`` runs it for sm_80 and sm_90.

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
error, and per compiled kernel its name, constexprs, shared memory and whether its PTX loads and
stores 128 bits at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("gpu_compile_probe: unset TRITON_INTERPRET; the probe compiles, it does not interpret")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Per-block shared memory a kernel may opt into: A100 (sm_80) 163 KiB, H100 (sm_90) 227 KiB
# (CUDA C Programming Guide, compute capability tables).
MAX_SHARED = {80: 166912, 90: 232448}
V4_LOAD = re.compile(r"ld\.global(\.[a-z0-9_]+)*\.v4\.")
V4_STORE = re.compile(r"st\.global(\.[a-z0-9_]+)*\.v4\.")


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


class CompileOnlyDriver:
    """Triton's view of a CUDA GPU of compute capability ``arch`` that compiles but never runs."""

    def __init__(self, arch: int):
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
            launches.append({"kernel": src.fn.__name__, "grid": (grid_x, grid_y, grid_z), "args": args})

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
    if op.saves == "x":  # few-bit backward, where it saves memory; the bit widths rotate over the registry
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
    from actkit.kernels import softmax

    impl = rowwise.op_for(spec).triton()
    fused = softmax.MAX_FUSED
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


def run(arch: int) -> dict:
    fake = CompileOnlyDriver(arch)
    driver.set_active(fake)
    from actkit import registry

    items = []
    for spec in registry.REGISTRY.values():
        if spec.kind.name not in WORKLOADS:
            items.append({"activation": spec.name, "kind": spec.kind.name, "dtype": None, "what": "-",
                          "error": f"no compile workload for kind {spec.kind.name!r}: add one to {__file__}"})
            continue
        for dtype_name, dtype in DTYPES.items():
            work = WORKLOADS[spec.kind.name](spec, dtype)  # a generator: inputs are made between the items
            while True:
                item = {"activation": spec.name, "kind": spec.kind.name, "dtype": dtype_name, "what": "setup",
                        "error": None, "compiled": [], "launches_agree": None}
                before = _compiled_kernels()
                try:
                    step = next(work, None)
                    if step is None:
                        break
                    item["what"], call = step
                    start = len(fake.launches)
                    call()  # the JIT's own launch (compiles on first sight of this specialisation)
                    first = fake.launches[start:]
                    call()  # actkit's direct launch of the cached compiled kernel
                    second = fake.launches[start + len(first):]
                except Exception as exc:
                    item["error"] = f"{type(exc).__name__}: {exc}"
                    items.append(item)
                    if item["what"] == "setup":
                        break
                    continue
                item["launches"] = len(first)
                item["launches_agree"] = len(first) == len(second) and all(
                    a["kernel"] == b["kernel"] and a["grid"] == b["grid"]
                    and list(map(_arg_signature, a["args"])) == list(map(_arg_signature, b["args"]))
                    for a, b in zip(first, second))
                if not item["launches_agree"]:
                    item["launch_args"] = [[str(_arg_signature(a)) for a in launch["args"]]
                                           for launch in first + second]
                after = _compiled_kernels()
                item["compiled"] = [_describe(*after[k]) for k in after.keys() - before.keys()]
                items.append(item)
    return {"arch": arch, "triton": triton.__version__, "torch": torch.__version__, "items": items}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, required=True, help="compute capability, e.g. 80 or 90")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    result = run(args.arch)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    errors = sum(1 for item in result["items"] if item["error"])
    print(f"sm_{args.arch}: {len(result['items'])} launches checked, {errors} failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
