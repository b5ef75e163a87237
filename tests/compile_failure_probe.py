"""A kernel that the GPU compiler refuses, through actkit.bench.compileonly (tests/test_roofline.py).

Run as ``python tests/compile_failure_probe.py OUT.json`` without TRITON_INTERPRET: ReLU's device
function is replaced by one that reads a module-level float, which the interpreter accepts and
real compilation refuses ("Cannot access global variable"), then ReLU is compiled for sm_90 in
bf16 with SASS counting on, as ``actkit roofline`` would.
"""
import json
import sys

import triton
import triton.language as tl

SLOPE = 0.5  # a plain float: not a tl.constexpr, so @triton.jit code may not read it


@triton.jit
def broken_relu_fwd(x, p0, p1, ACC: tl.constexpr):
    return tl.where(x < 0.0, x * SLOPE, x)


if __name__ == "__main__":
    from actkit.bench import compileonly
    from actkit.kernels import activations

    activations.TABLE["relu"] = activations.TABLE["relu"]._replace(fwd=broken_relu_fwd)
    result = compileonly.run(90, ["relu"], ["bf16"], sass=True)
    with open(sys.argv[1], "w") as f:
        json.dump(result, f)
