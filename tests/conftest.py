"""Fixtures shared by test modules."""
from concurrent.futures import ThreadPoolExecutor

import pytest

COMPILE_ARCHS = (80, 90)
SASS_ARCHS = (90,)  # the roofline test models H200 (sm_90); sm_80 is compiled only


@pytest.fixture(scope="session")
def compile_only(tmp_path_factory) -> dict[int, dict]:
    """Every kernel actkit launches, compiled for sm_80 and sm_90 without a GPU
    (:mod:`actkit.bench.compileonly`), once per session: the targets in parallel processes, sm_90
    with its SASS counted and its cubins kept (``result["cubin_dir"]``). tests/test_gpu_compile.py
    and tests/test_roofline.py share it."""
    pytest.importorskip("triton")
    from actkit.bench import compileonly

    folder = tmp_path_factory.mktemp("compile_only")

    def probe(arch: int) -> dict:
        cubins = None
        if arch in SASS_ARCHS:
            cubins = folder / f"sm_{arch}-cubins"
            cubins.mkdir()
        result = compileonly.probe(arch, folder / f"sm_{arch}.json", sass=cubins is not None, cubin_dir=cubins)
        result["cubin_dir"] = cubins
        return result

    with ThreadPoolExecutor(len(COMPILE_ARCHS)) as pool:
        found = pool.map(probe, COMPILE_ARCHS)
    return dict(zip(COMPILE_ARCHS, found))
