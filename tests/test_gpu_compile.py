"""Every Triton kernel actkit launches compiles for real GPUs (sm_80 and sm_90), without a GPU.

The interpreter that runs the kernels in the other tests accepts code the GPU compiler refuses
(module-level floats, for one). actkit.bench.compileonly drives every registry activation's
Triton implementation, every dtype, forward and backward and every kernel configuration,
through Triton's own JIT with a driver that reports the target GPU: each launch is specialised
and compiled exactly as on that GPU (ptxas ships in the Triton wheel), and recorded instead of
run. The two targets run once per session in parallel subprocesses (the ``compile_only`` fixture
of tests/conftest.py; the probe needs TRITON_INTERPRET unset).

The same checks run with every other Triton named in ``ACTKIT_EXTRA_TRITONS`` (folders joined by
``os.pathsep``, each made by ``pip install --no-deps --target DIR triton==X``; the probe process puts
the folder first on its path, with the installed torch): .ci/run sets it to the oldest supported
Triton (3.3) and the newest on the package index, so a change that only the installed Triton
accepts fails CI. Without the variable those runs are skipped.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import actkit

pytest.importorskip("triton")

ARCHS = (80, 90)
DTYPES = ("fp32", "fp16", "bf16")
INSTALLED = "installed"
EXTRA_TRITONS = [d for d in os.environ.get("ACTKIT_EXTRA_TRITONS", "").split(os.pathsep) if d]
NO_EXTRA = "no-extra-triton"  # the parameter that stands for them when the variable is unset


@pytest.fixture(scope="module", params=[INSTALLED] + (EXTRA_TRITONS or [NO_EXTRA]),
                ids=lambda d: d if d in (INSTALLED, NO_EXTRA) else f"triton@{Path(d).name}")
def results(request, tmp_path_factory) -> dict[int, dict]:
    """Per arch, the compile-only result with the installed Triton (the session's, shared with the
    roofline tests) or with one of ACTKIT_EXTRA_TRITONS (both archs in parallel processes)."""
    if request.param == INSTALLED:
        return request.getfixturevalue("compile_only")
    if request.param == NO_EXTRA:
        pytest.skip("ACTKIT_EXTRA_TRITONS is unset: no other Triton to compile with "
                    "(.ci/run sets it to Triton 3.3 and the newest; see tests/test_gpu_compile.py)")
    from actkit.bench import compileonly

    folder, triton_dir = tmp_path_factory.mktemp("compile_extra"), Path(request.param)

    def probe(arch: int) -> dict:
        return compileonly.probe(arch, folder / f"sm_{arch}.json", triton_dir=triton_dir)

    with ThreadPoolExecutor(len(ARCHS)) as pool:
        found = dict(zip(ARCHS, pool.map(probe, ARCHS)))
    for result in found.values():  # the Triton that compiled is the one asked for, not the installed one
        assert Path(result["triton_dir"]).is_relative_to(triton_dir.resolve()), result["triton_dir"]
    return found


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles(results, arch):
    failures = [f"{i['activation']} {i['dtype']} {i['what']}: {i['error']}" for i in results[arch]["items"] if i["error"]]
    assert not failures, (f"{len(failures)} launch(es) fail to compile for sm_{arch} with Triton "
                          f"{results[arch]['triton']}:\n" + "\n".join(failures))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_activation_dtype_and_direction_is_covered(results, arch):
    seen = {(i["activation"], i["dtype"], "backward" in i["what"]) for i in results[arch]["items"] if not i["error"]}
    for spec in actkit.registry.REGISTRY.values():
        for dtype in DTYPES:
            assert (spec.name, dtype, False) in seen, f"{spec.name} {dtype}: no forward launch was compiled"
            if spec.saves_for(spec.defaults) != "none":
                assert (spec.name, dtype, True) in seen, f"{spec.name} {dtype}: no backward launch was compiled"
    items = results[arch]["items"]
    rowwise = {i["what"] for i in items if i["kind"] == "rowwise"}
    assert any("one pass" in w for w in rowwise) and any("two passes" in w for w in rowwise)
    assert any("stride 8" in w for w in rowwise), "softmax over a dim that is not innermost"
    compiled = [c for i in items for c in i["compiled"]]
    assert {bits for c in compiled if c["kernel"].startswith("fewbit") for bits in [c["meta"]["K"]]} == set(range(1, 9))
    assert {"learnable_fwd_kernel", "learnable_bwd_kernel", "column_sum_kernel", "softmax_fwd_kernel",
            "softmax_bwd_kernel", "activation_fwd_kernel", "activation_bwd_kernel", "fewbit_fwd_kernel",
            "fewbit_bwd_kernel", "glu_fwd_kernel", "glu_bwd_kernel"} <= {c["kernel"] for c in compiled}
    glu_tiles = {(c["meta"]["ROWS"], c["meta"]["COLS"]) for c in compiled if c["kernel"].startswith("glu_")}
    assert {(1, 2048), (4, 512)} <= glu_tiles, "GLU rows longer than a tile and rows sharing one"


@pytest.mark.parametrize("arch", ARCHS)
def test_direct_launch_passes_what_the_jit_passes(results, arch):
    """actkit launches a cached compiled kernel without JITFunction.run: the arguments it hands the
    launcher must be exactly those the JIT itself hands it for the same call."""
    items = [i for i in results[arch]["items"] if not i["error"]]
    assert items and all(i["launches"] >= 1 for i in items)
    wrong = [f"{i['activation']} {i['dtype']} {i['what']}: {i.get('launch_args')}" for i in items
             if not i["launches_agree"]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("arch", ARCHS)
def test_elementwise_kernels_move_128_bits_per_access(results, arch):
    """Aligned tensors of 2^16 elements: loads and stores compile to ld/st.global.v4 (16 bytes), in the
    elementwise kernels and in the GLU kernels (rows of aligned length at aligned strides)."""
    narrow = [f"{i['activation']} {i['dtype']} {i['what']}: load v4 {c['v4_load']}, store v4 {c['v4_store']}"
              for i in results[arch]["items"] for c in i["compiled"]
              if c["kernel"].startswith(("activation_", "glu_")) and not (c["v4_load"] and c["v4_store"])]
    assert not narrow, "\n".join(narrow)


def test_a_compile_failure_is_one_line_naming_kernel_dtype_and_device(monkeypatch):
    """What a user sees when a kernel does not compile for their GPU: no compiler stack."""
    from actkit.kernels import launch

    class Broken:  # stands for a JITFunction whose compilation fails
        __name__ = "activation_fwd_kernel"

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                raise RuntimeError("outer") from NameError("Cannot access global variable K. More text")
            return run

    kernel = launch.Kernel.__new__(launch.Kernel)
    kernel.fn, kernel.meta, kernel.n_runtime, kernel.compiled = Broken(), {"F": actkit.get("gelu").triton_functions[0]}, 1, {}
    with pytest.raises(launch.KernelCompileError) as caught:
        kernel._first_launch((1,), (torch.ones(4, dtype=torch.float16),), ())
    message = str(caught.value)
    assert "\n" not in message
    assert "activation_fwd_kernel[F=gelu_fwd]" in message and "float16" in message and "cpu" in message
    assert "NameError: Cannot access global variable K" in message and "More text" not in message
    assert "ACTKIT_BACKEND=torch" in message


def test_an_extra_triton_folder_without_triton_is_one_line(tmp_path):
    from actkit.bench import compileonly

    with pytest.raises(compileonly.ProbeError) as caught:
        compileonly.probe(90, tmp_path / "sm_90.json", triton_dir=tmp_path / "empty")
    message = str(caught.value)
    assert "\n" not in message and "no triton package there" in message and "pip install --no-deps --target" in message
    assert not (tmp_path / "sm_90.json").exists()
