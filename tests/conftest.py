"""Fixtures shared by test modules."""
from concurrent.futures import ThreadPoolExecutor

import pytest

COMPILE_ARCHS = (80, 90)
SASS_ARCHS = (90,)  # the roofline test models H200 (sm_90); sm_80 is compiled only


@pytest.fixture(scope="session")
def compile_only(tmp_path_factory) -> dict[int, dict]:
    """Every kernel actkit launches, compiled for sm_80 and sm_90 without a GPU
    (:mod:`actkit.bench.compileonly`), once per session: the targets in parallel processes, sm_90
    with its SASS counted. tests/test_gpu_compile.py and tests/test_roofline.py share it."""
    pytest.importorskip("triton")
    from actkit.bench import compileonly

    folder = tmp_path_factory.mktemp("compile_only")
    with ThreadPoolExecutor(len(COMPILE_ARCHS)) as pool:
        found = pool.map(lambda arch: compileonly.probe(arch, folder / f"sm_{arch}.json", sass=arch in SASS_ARCHS),
                         COMPILE_ARCHS)
    return dict(zip(COMPILE_ARCHS, found))
