"""Accuracy of the elementwise activation kernels against exact references, with the GPU's
approximate instructions modelled at their documented error bounds.

    python benchmarks/accuracy.py [--before REF] [--out benchmarks/results/accuracy.json]

What is measured, per activation (registry defaults), forward and backward (f'(x) with dy = 1):

* fp32: inputs are every finite bf16 value plus a dense random sweep; the ulp error of the
  kernel's fp32 result against the exact value (``ulp`` of the exact value, subnormal ulp 2^-149),
  its maximum and 99.9th percentile, and the same for PyTorch's own fp32 op on the same inputs.
* bf16 and fp16: every finite input (all bit patterns); the kernel's fp32 result (its fp16/bf16
  math, ``ACC=False``) rounded to nearest-even *in torch* (Triton's interpreter truncates fp32 to
  bf16; the GPU rounds), against the correctly rounded exact value: the share of inputs where
  they are equal and the largest distance in ulp of that dtype.
* Backward of an activation that saves its output y (sigmoid, tanh, softplus, ...): the kernel
  reads the stored y, so the reference is the exact derivative at that stored y
  (``f'(f^-1(y))``, e.g. y (1 - y) for sigmoid), and PyTorch's comparison is its own backward
  formula on the same y.

The exact references are float64 formulas free of cancellation (scipy's ``expit``, ``erfc``,
numpy's ``logaddexp``, ``expm1``, mpmath where float64 cancels: tanhshrink near 0);
tests/test_accuracy.py checks them against mpmath at 60 digits on a sample that includes the
cancellation regions.

The kernels run in Triton's interpreter, which computes ``exp``, ``log``, division and ``erf``
exactly (numpy) where a GPU uses approximate instructions. :class:`GpuModel` replaces those
interpreter operations with the GPU's: ``tl.exp`` as ``ex2.approx.f32`` of the fp32 product
x * fp32(log2 e), ``tl.exp2`` as ``ex2.approx.ftz.f32`` (subnormal results flushed to zero),
``fma`` fused (one rounding), and then moves each approximate result by its full documented bound,
all up or all down; a kernel's error is the largest over the exact run and the two shifted ones.
Bounds (PTX ISA 9.1 and the CUDA C Programming Guide's accuracy tables): ``ex2.approx`` 2 ulp,
``rcp.approx`` 1 ulp (the interpreter's stand-in is ``div_rn``), ``div.full.f32`` 2 ulp,
libdevice ``logf``/``log2f`` 1 ulp, ``erff`` 2 ulp. Not modelled: the GPU compiler's contraction
of a multiply and an add into one FMA (one rounding fewer, so at most half an ulp per contraction,
either way).

"Before" is the kernel source at a git revision (``--before``, default :data:`BEFORE`, main before
issue 16's cheaper math), loaded as a separate module; its device functions take no ``ACC`` argument.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ["TRITON_INTERPRET"] in ("", "0"):
    sys.exit("accuracy.py models the GPU in Triton's interpreter: run it with TRITON_INTERPRET=1 (or unset)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_refs as refs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "accuracy.json"
BLOCK = 1 << 16

# The approximate GPU instructions behind each interpreter operation and their bound in ulp.
BOUNDS = {
    "create_exp": ("ex2.approx.f32 of fp32(x * fp32(log2 e)) (tl.exp)", 2),
    "create_exp2": ("ex2.approx.ftz.f32 (tl.exp2)", 2),
    "create_precise_divf": ("rcp.approx.ftz.f32 (fp32math.rcp; div_rn stands in for it)", 1),
    "create_fdiv": ("div.full.f32 (fp32 /)", 2),
    "create_log": ("libdevice logf (tl.log)", 1),
    "create_log2": ("libdevice log2f (tl.log2)", 1),
    "create_erf": ("libdevice erff (tl.math.erf)", 2),
}


# -- the GPU model ------------------------------------------------------------------------------
def _shift(values: np.ndarray, ulps: int, sign: int) -> np.ndarray:
    """``values`` (fp32) moved ``ulps`` representable steps up (sign 1) or down (-1); inf, NaN, 0 stay."""
    out = values.astype(np.float32)
    if sign == 0:
        return out
    target = np.float32(np.inf if sign > 0 else -np.inf)
    moved = out
    for _ in range(ulps):
        moved = np.nextafter(moved, target).astype(np.float32)
    keep = ~np.isfinite(out) | (out == 0)
    return np.where(keep, out, moved).astype(np.float32)


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).astype(np.float32)


def _flush(values: np.ndarray) -> np.ndarray:
    tiny = np.finfo(np.float32).tiny
    return np.where(np.abs(values) < tiny, np.float32(0), values).astype(np.float32)


class GpuModel:
    """Within ``with GpuModel(sign):``, the interpreter computes exp, exp2, division, log and erf
    as the GPU's instructions do, each result moved by its bound in the direction ``sign``
    (0: the instruction's correctly rounded value, +-1: its documented worst case up or down)."""

    def __init__(self, sign: int):
        self.sign = sign
        self.saved = {}

    def _unary(self, name, exact):
        sign, ulps = self.sign, BOUNDS[name][1]

        def op(builder, arg):
            data = arg.data
            if data.dtype != np.float32:
                return self.saved[name](builder, arg)
            return interpreter.TensorHandle(_shift(exact(data), ulps, sign), arg.dtype.scalar)
        return op

    def _binary(self, name, exact):
        sign, ulps = self.sign, BOUNDS[name][1]

        def op(builder, lhs, rhs):
            if lhs.data.dtype != np.float32 or rhs.data.dtype != np.float32:
                return self.saved[name](builder, lhs, rhs)
            return interpreter.TensorHandle(_shift(exact(lhs.data, rhs.data), ulps, sign), lhs.dtype.scalar)
        return op

    def __enter__(self):
        log2e = np.float32(math.log2(math.e))

        def ex2_of_product(x):  # tl.exp: fp32 product with fp32(log2 e), then ex2 (no flush)
            with np.errstate(over="ignore"):
                return _f32(np.exp2((x * log2e).astype(np.float64)))

        def ex2_ftz(x):
            with np.errstate(over="ignore"):
                return _flush(_f32(np.exp2(_flush(x).astype(np.float64))))

        def div(a, b):
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return _f32(a.astype(np.float64) / b.astype(np.float64))

        def log(x):
            with np.errstate(divide="ignore", invalid="ignore"):
                return _f32(np.log(x.astype(np.float64)))

        def log2(x):
            with np.errstate(divide="ignore", invalid="ignore"):
                return _f32(np.log2(x.astype(np.float64)))

        def erf(x):
            from scipy.special import erf as erf64
            return _f32(erf64(x.astype(np.float64)))

        patches = {
            "create_exp": self._unary("create_exp", ex2_of_product),
            "create_exp2": self._unary("create_exp2", ex2_ftz),
            "create_log": self._unary("create_log", log),
            "create_log2": self._unary("create_log2", log2),
            "create_erf": self._unary("create_erf", erf),
            "create_fdiv": self._binary("create_fdiv", div),
            "create_precise_divf": self._binary("create_precise_divf", div),
        }

        def fma(builder, x, y, z):  # the GPU's FFMA: one rounding (exact product in float64)
            if z.data.dtype != np.float32:
                return self.saved["create_fma"](builder, x, y, z)
            exact = x.data.astype(np.float64) * y.data.astype(np.float64) + z.data.astype(np.float64)
            return interpreter.TensorHandle(_f32(exact), z.dtype.scalar)
        patches["create_fma"] = fma
        for name, fn in patches.items():
            self.saved[name] = getattr(interpreter.InterpreterBuilder, name)
            setattr(interpreter.InterpreterBuilder, name, fn)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(interpreter.InterpreterBuilder, name, fn)


# -- running device functions ---------------------------------------------------------------------
@triton.jit
def _probe(x_ptr, y_ptr, n, p0, p1, F: tl.constexpr, ACC: tl.constexpr, LEGACY: tl.constexpr,
           BLOCK_SIZE: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    if LEGACY:
        y = F(x, p0, p1)
    else:
        y = F(x, p0, p1, ACC)
    tl.store(y_ptr + offsets, y, mask=mask)


def run_device_function(fn, x: torch.Tensor, p0: float, p1: float, acc: bool, legacy: bool) -> torch.Tensor:
    """fp32 results of the device function ``fn`` on the fp32 tensor ``x``, in the precision
    mode ``acc`` (the one the production kernels pick for an fp32 output) -- worst over the model's
    exact and shifted runs is the caller's to take."""
    y = torch.empty_like(x)
    n = x.numel()
    _probe[(triton.cdiv(n, BLOCK),)](x, y, n, float(p0), float(p1), F=fn, ACC=acc, LEGACY=legacy,
                                     BLOCK_SIZE=BLOCK)
    return y


def modelled(fn, x, p0, p1, acc, legacy) -> list[torch.Tensor]:
    """The results under the exact model and with every bound applied up and down."""
    out = []
    for sign in (0, 1, -1):
        with GpuModel(sign):
            out.append(run_device_function(fn, x, p0, p1, acc, legacy))
    return out


# -- error measures ----------------------------------------------------------------------------------
FORMATS = {torch.float32: (24, -126), torch.bfloat16: (8, -126), torch.float16: (11, -14)}


def ulp_of(exact: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    digits, emin = FORMATS[dtype]
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.abs(exact)))
    e = np.where(np.isfinite(e), np.maximum(e, emin), emin)
    return np.exp2(e - (digits - 1))


def fp32_ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in ulp of the exact value (fp32); inf where got is not finite but exact is."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got.astype(np.float64) - exact) / ulp_of(exact, torch.float32)
    return np.where(np.isfinite(got), err, np.inf)


def _ordered(bits: np.ndarray) -> np.ndarray:
    """16-bit patterns as integers in the order of the values they encode (-0 == +0)."""
    b = bits.astype(np.int32) & 0xFFFF
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def round_exact(exact: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """float64 values correctly rounded (nearest, ties to even) to the 16-bit ``dtype``. torch's
    float64 -> bf16/fp16 conversion goes through fp32 (two roundings), so its result is checked
    against its neighbours."""
    first = torch.from_numpy(exact).to(dtype)
    bits = _ordered(first.view(torch.int16).numpy())
    candidates = np.stack([bits - 1, bits, bits + 1])
    raw = np.where(candidates < 0, (-candidates) | 0x8000, candidates).astype(np.uint16).view(np.int16)
    values = torch.from_numpy(raw.copy()).view(dtype).double().numpy()
    with np.errstate(invalid="ignore"):
        dist = np.abs(values - exact[None])
    dist = np.where(np.isnan(dist), np.inf, dist)
    best = dist.min(0)
    tie_even = (dist == best[None]) & (candidates % 2 == 0)
    pick = np.where(tie_even.any(0), np.argmax(tie_even, 0), np.argmin(dist, 0))
    chosen = np.take_along_axis(raw, pick[None], 0)[0]
    finite = torch.isfinite(first).numpy() & np.isfinite(exact)
    out = np.where(finite, chosen, first.view(torch.int16).numpy())
    return torch.from_numpy(out.astype(np.int16)).view(dtype)


def settle_ties(x: np.ndarray, exact: np.ndarray, dtype: torch.dtype, mp_fn) -> int:
    """Where the float64 reference sits exactly halfway between two ``dtype`` values, float64 cannot
    say which way the true value leans (silu(x) = x/2 + x^2/4 at a subnormal x is x/2 in float64):
    ask mpmath (50 digits) and move the reference one float64 step that way. Returns the count."""
    import mpmath as mp

    first = torch.from_numpy(exact).to(dtype).double().numpy()
    up = torch.from_numpy(exact).to(dtype)
    bits = up.view(torch.int16).numpy().astype(np.int32)
    # the neighbour on the other side of exact, as float64
    step = np.where(first < exact, 1, -1) * np.where(first < 0, -1, 1)
    other = torch.from_numpy((bits + step).astype(np.int16)).view(dtype).double().numpy()
    with np.errstate(invalid="ignore"):
        tie = np.isfinite(exact) & np.isfinite(other) & (first != exact) & (np.abs(exact - first) == np.abs(other - exact))
    idx = np.nonzero(tie)[0]
    mp.mp.dps = 50
    for i in idx:
        true = mp.mpf(mp_fn(mp.mpf(float(x[i]))))
        mid = mp.mpf(float(exact[i]))
        if true != mid:
            exact[i] = np.nextafter(exact[i], np.inf if true > mid else -np.inf)
    return len(idx)


def half_ulp_distance(got: torch.Tensor, exact: np.ndarray) -> np.ndarray:
    """Distance in ulp of the 16-bit dtype between ``got`` and the correctly rounded exact value."""
    want = round_exact(exact, got.dtype)
    d = np.abs(_ordered(got.view(torch.int16).numpy()) - _ordered(want.view(torch.int16).numpy()))
    nan = torch.isnan(got).numpy() | torch.isnan(want).numpy()
    return np.where(nan, np.where(torch.isnan(got).numpy() & torch.isnan(want).numpy(), 0, 1 << 16), d)


# -- inputs -----------------------------------------------------------------------------------------
def all_finite(dtype: torch.dtype) -> torch.Tensor:
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    return values[torch.isfinite(values)]


def fp32_inputs(sweep: int, seed: int = 0) -> torch.Tensor:
    """Every finite bf16 value, plus ``sweep`` random fp32 values: half uniform on [-12, 12], half
    log-uniform in magnitude over 2^-30 .. 2^7 with random signs."""
    g = torch.Generator().manual_seed(seed)
    uniform = (torch.rand(sweep // 2, generator=g, dtype=torch.float64) * 24 - 12)
    magnitude = torch.exp2(torch.rand(sweep - sweep // 2, generator=g, dtype=torch.float64) * 37 - 30)
    signs = torch.where(torch.rand(magnitude.shape, generator=g) < 0.5, -1.0, 1.0).double()
    return torch.cat([all_finite(torch.bfloat16).float(), uniform.float(), (magnitude * signs).float()])


# -- one activation ---------------------------------------------------------------------------------
def _measure_fp32(results: list[torch.Tensor], exact: np.ndarray, keep: np.ndarray) -> dict:
    err = np.max([fp32_ulp_error(r.numpy(), exact) for r in results], axis=0)[keep]
    return {"max": float(err.max()), "p999": float(np.quantile(err, 0.999, method="higher")), "n": int(keep.sum())}


def _measure_half(results: list[torch.Tensor], exact: np.ndarray, keep: np.ndarray, dtype) -> dict:
    """Share of inputs rounded correctly and the largest ulp distance, over the inputs an fp32 kernel
    can round correctly at all: where the exact value rounded to fp32 and then to ``dtype`` (double
    rounding) differs from it rounded once, no fp32 result can be (silu at a subnormal x is x/2 +
    x^2/4, whose fp32 rounding is the tie x/2); those are counted apart as ``unreachable``."""
    dist = np.max([half_ulp_distance(r.to(dtype), exact) for r in results], axis=0)
    ideal = torch.from_numpy(exact.astype(np.float32)).to(dtype)  # numpy's float64 -> fp32 rounds once
    reachable = half_ulp_distance(ideal, exact) == 0
    judged = keep & reachable
    d = dist[judged]
    return {"correct": float((d == 0).mean()), "max_ulp": int(d.max()), "n": int(judged.sum()),
            "unreachable": int((keep & ~reachable).sum()), "max_ulp_unreachable": int(dist[keep & ~reachable].max(initial=0))}


def measure(name: str, kernels, legacy: bool, sweep: int) -> dict:
    """Forward and backward errors of one activation's device functions (module ``kernels``)."""
    case = refs.CASES[name]
    p0, p1 = case.kernel_args
    fwd_p0, fwd_p1 = p0, p1
    if hasattr(kernels, "TABLE"):
        entry = kernels.TABLE[case.prefix]
        fwd, bwd = entry.fwd, entry.bwd_y if case.saves == "y" else entry.bwd
        plan = getattr(entry, "fwd_plan", None)  # the f these arguments launch (softplus's plain form)
        if plan is not None:
            fwd, fwd_p0, fwd_p1 = plan(p0, p1)
        fwd_fp16 = getattr(entry, "fwd_fp16", None) or fwd  # the f fp16 results launch (gelu's)
    else:  # kernels of an older commit (``--before``), from before the table: by name
        fwd = fwd_fp16 = getattr(kernels, f"{case.prefix}_fwd")
        bwd = getattr(kernels, f"{case.prefix}_bwd{'_y' if case.saves == 'y' else ''}", None)
    if case.backward is None and case.backward_y is None:  # no derivative to measure (step, identity)
        bwd = None
    out: dict = {"forward": {}, "backward": {}}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        acc = dtype == torch.float32
        x = fp32_inputs(sweep) if acc else all_finite(dtype).float()
        x64 = x.double().numpy()
        exact = case.forward(x64)
        if not acc:
            settle_ties(x64, exact, dtype, case.mp_forward)
        ys = modelled(fwd_fp16 if dtype == torch.float16 else fwd, x, fwd_p0, fwd_p1, acc, legacy)
        keep = np.isfinite(exact) & (np.abs(exact) <= torch.finfo(dtype).max)
        label = str(dtype).replace("torch.", "").replace("float", "fp").replace("bfp16", "bf16")
        out["forward"][label] = (_measure_fp32(ys, exact, keep) if acc else _measure_half(ys, exact, keep, dtype))
        if bwd is None:
            continue
        if case.saves == "y":  # the derivative at the stored y, as the kernel reads it
            stored = ys[0] if acc else ys[0].to(dtype).float()
            s = stored[torch.isfinite(stored)]
            d_exact = case.backward_y(s.double().numpy())
        else:
            s = x
            d_exact = case.backward(x64)
            if not acc:
                settle_ties(x64, d_exact, dtype, case.mp_derivative)
        ds = modelled(bwd, s, p0, p1, acc, legacy)
        keep = np.isfinite(d_exact) & (np.abs(d_exact) <= torch.finfo(dtype).max)
        out["backward"][label] = (_measure_fp32(ds, d_exact, keep) if acc
                                  else _measure_half(ds, d_exact, keep, dtype))
    return out


def measure_torch(name: str, sweep: int) -> dict:
    """PyTorch's own fp32 op on the same fp32 inputs (forward, and its backward as actkit's is measured)."""
    case = refs.CASES[name]
    x = fp32_inputs(sweep)
    exact = case.forward(x.double().numpy())
    y = case.torch_forward(x)
    keep = np.isfinite(exact) & (np.abs(exact) <= torch.finfo(torch.float32).max)
    result = {"forward": _measure_fp32([y], exact, keep)}
    if case.torch_backward is not None:
        if case.saves == "y":
            s = y[torch.isfinite(y)]
            d = case.torch_backward(s)
            d_exact = case.backward_y(s.double().numpy())
        else:
            d = case.torch_backward(x)
            d_exact = case.backward(x.double().numpy())
        keep = np.isfinite(d_exact) & (np.abs(d_exact) <= torch.finfo(torch.float32).max)
        result["backward"] = _measure_fp32([d], d_exact, keep)
    return result


def load_kernels(revision: str | None):
    """actkit's device functions now (None) or at a git revision, as a module."""
    if revision is None:
        from actkit.kernels import activations
        return activations
    folder = Path(tempfile.mkdtemp(prefix="actkit-before-")) / "before_kernels"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("activations.py", "fp32math.py"):
        source = subprocess.run(["git", "show", f"{revision}:kernels/{name}"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
        (folder / name).write_text(source)
    spec = importlib.util.spec_from_file_location("before_kernels", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["before_kernels"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("before_kernels.activations")


def run(before: str | None, sweep: int, names=None) -> dict:
    after = load_kernels(None)
    old = load_kernels(before) if before else None
    table = {}
    for name in names or refs.CASES:
        entry = {"after": measure(name, after, legacy=False, sweep=sweep), "torch": measure_torch(name, sweep)}
        if old is not None:
            entry["before"] = measure(name, old, legacy=True, sweep=sweep)
        table[name] = entry
        print(f"{name}: done", flush=True)
    return {"model": {k: {"instruction": v[0], "bound_ulp": v[1]} for k, v in BOUNDS.items()},
            "inputs": {"fp32": f"every finite bf16 value + {sweep} random", "bf16": "every finite value",
                       "fp16": "every finite value"},
            "device": "Triton interpreter with the GPU model (2-core x86-64 CPU, torch "
                      f"{torch.__version__}, triton {triton.__version__})",
            "before": before, "activations": table}


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def markdown(result: dict) -> str:
    """The README table: fp32 p99.9/max ulp (before -> after, torch) and bf16/fp16 correctly rounded share."""
    lines = ["| activation | direction | fp32 ulp p99.9 / max: before -> after (torch) | bf16 correctly rounded, "
             "max ulp: before -> after | fp16 correctly rounded, max ulp: before -> after |",
             "|---|---|---|---|---|"]

    def fp32(e):
        return f"{e['p999']:.2g} / {e['max']:.3g}"

    def half(e):
        return f"{100 * e['correct']:.3f}%, {e['max_ulp']}"

    def ties(entry, d):
        n = entry.get(d, {}).get("unreachable", 0)
        return f" [{n} not fp32-reachable]" if n else ""

    for name, entry in result["activations"].items():
        for direction in ("forward", "backward"):
            after = entry["after"][direction]
            if not after:
                continue
            before = entry.get("before", {}).get(direction, {})
            torch_ = entry["torch"].get(direction)
            cells = []
            b = before.get("fp32")
            cells.append((f"{fp32(b)} -> " if b else "") + fp32(after["fp32"])
                         + (f" ({fp32(torch_)})" if torch_ else ""))
            for d in ("bf16", "fp16"):
                b = before.get(d)
                cells.append((f"{half(b)} -> " if b else "") + half(after[d]) + ties(after, d))
            lines.append(f"| {name} | {direction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEFORE = "22b9251"  # main before issue 16's cheaper math: the committed results' "before"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the kernels to compare with ('' for none)")
    parser.add_argument("--sweep", type=int, default=1 << 18, help="random fp32 inputs besides the bf16 grid")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--only", nargs="*", help="activations (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in refs.CASES]
    if unknown:
        parser.error(f"unknown activation(s) {', '.join(unknown)}; known: {', '.join(refs.CASES)}")
    result = run(args.before or None, args.sweep, args.only)
    write_atomic(args.out, result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
