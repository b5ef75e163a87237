"""actkit on DTensors, over 2 processes with gloo on CPU: every kind on Shard(0) (uneven: 5 rows on 2
ranks), Shard(last), Replicate (and the channel dim for the learnable kind) gives the single-process values
and gradients, with the placements torch's own op gives on the same DTensor; a tensor-parallel SwiGLU MLP,
actkit.patch on a tensor-parallel model, actkit.nn modules and an FSDP2 model match their single-process
runs; a compiled call registers the rules that waited for DTensor.

The checks live in tests/dtensor_worker.py and run in two worker processes started once for this module
(one process group, one start of two interpreters); each test here reads one check's outcome on both ranks.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available in this build", allow_module_level=True)

from dtensor_worker import CASES  # noqa: E402

pytestmark = pytest.mark.slow  # two worker processes, about a minute on 2 cores

WORKER = Path(__file__).with_name("dtensor_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 600
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    """Each rank's ``{case: "ok" or the failure}``, from one launch of the two workers."""
    out = tmp_path_factory.mktemp("dtensor")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    if sys.platform.startswith("linux"):  # gloo between processes of this machine: over loopback
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(WORLD_SIZE), str(out / "rendezvous"),
                               str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for rank in range(WORLD_SIZE)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {rank} exited with {p.returncode}:\n{text[-4000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


def assert_ok(reports: list[dict], case: str) -> None:
    for rank, report in enumerate(reports):
        outcome = report.get(case, "not run")
        assert outcome == "ok", f"rank {rank}:\n{outcome}"


@pytest.mark.parametrize("case", [c for c in CASES if c.split("-")[0] in
                                  ("elementwise", "fewbit", "learnable", "rowwise", "glu")])
def test_each_kind_on_dtensors_matches_one_process_and_torchs_placements(reports, case):
    assert_ok(reports, case)


@pytest.mark.parametrize("case", ["tensor-parallel-swiglu-mlp", "patch-tensor-parallel", "nn-modules", "fsdp2-mlp"])
def test_parallel_models_match_their_single_process_runs(reports, case):
    assert_ok(reports, case)


def test_a_compiled_dtensor_call_registers_the_waiting_rules(reports):
    assert_ok(reports, "compiled-before-eager")


def test_every_check_ran_on_both_ranks(reports):
    assert [list(r) for r in reports] == [list(CASES)] * WORLD_SIZE


def test_actkit_does_not_load_dtensor_or_dynamo():
    """The rules wait for DTensor rather than import it: importing torch.distributed.tensor (and torch._dynamo,
    which imports it) would add more than a second to every `import actkit`."""
    code = ("import sys, torch, actkit.functional as F, actkit.nn\n"
            "F.silu(torch.ones(2)), F.prelu(torch.ones(2), 0.25), F.softmax(torch.ones(2), -1), F.swiglu(torch.ones(2))\n"
            "F.gelu(torch.ones(2, requires_grad=True), saved_bits=2).sum().backward()\n"
            "print(sorted(m for m in ('torch.distributed.tensor', 'torch._dynamo') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
