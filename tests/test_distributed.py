"""Sweeps and runs over several processes, on CPU with gloo: a sweep under torchrun and one split by
``--shard K/N`` (a worker killed with SIGKILL, then resumed) against the same sweep in one process, a
data-parallel run's loss curve against the one-process run, and the one-line errors of bad launches.

The workers are real processes started as users start them: ``python -m torch.distributed.run``
(torchrun, ``--standalone``: it picks a free port) and ``python -m actkit.cli.main``.
"""
import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from actkit import results
from actkit import train as T
from actkit.cli.main import app
from actkit.distributed import Launch, LaunchError, Shard, bind_device

# A tiny sweep: 4 runs (2 activations x 2 seeds) of 2 epochs, 4 steps each, so a worker's run takes about
# a second; most of a test's time is the workers' start (importing torch).
OPTIONS = dict(dataset="synthetic", model="simple", epochs=2, batch_size=32, val_size=64, subset=128, device="cpu")
ACTS, SEEDS = "relu,tanh", 2
CLI = [x for key, value in OPTIONS.items() for x in (f"--{key.replace('_', '-')}", str(value))] + [
    "--act", ACTS, "--seeds", str(SEEDS), "--no-diagnostics"]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_S = 300


def sweep(acts=ACTS, seeds=SEEDS) -> T.Sweep:
    return T.Sweep(activations=T.parse_activations(acts), seeds=list(range(seeds)), **OPTIONS)


PLANNED = [c.id for c in sweep().runs()]


@contextlib.contextmanager
def one_thread():
    """The workers run with one thread each (torchrun's default for several processes on a machine, and set
    for the --shard workers below); the reference does too, so that a run is computed the same way, to the
    bit: CPU kernels may split a reduction differently for another number of threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep in this process, as one worker."""
    with one_thread():
        return T.run_sweep(sweep(), tmp_path_factory.mktemp("reference") / "out")


@pytest.fixture(autouse=True)
def not_under_a_launcher(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)


def launch(*commands, cwd):
    """Start ``commands`` together and wait for all; ``(return code, stdout + stderr)`` of each. A launch
    that hangs is killed whole (its session: torchrun and its workers) and fails the test."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", ACTKIT_NO_DOWNLOAD="1")
    if sys.platform.startswith("linux"):  # gloo between processes of this machine: over loopback, whatever the
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # host name resolves to
    procs = [subprocess.Popen([str(c) for c in command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) for command in commands]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
        return [(p.returncode, output) for p, output in zip(procs, outputs)]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def torchrun(nproc: int, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", nproc,
            "-m", "actkit.cli.main", "train", *args]


def worker(*args):
    return [sys.executable, "-m", "actkit.cli.main", "train", *args]


def invoke(*args):
    """``actkit train ARGS`` in this process."""
    return CliRunner().invoke(app, ["train", *map(str, args)], catch_exceptions=False)


def records_in(out) -> dict:
    return {p.stem: results.read_json(p) for p in (out / "runs").glob("*.json")}


def assert_same_run(got: dict, want: dict) -> None:
    """The same run: same configuration, and the same numbers to the bit (same seed, same arithmetic)."""
    assert got["config"] == want["config"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert got["history"][key] == want["history"][key], (got["id"], key)
    for key in ("test_acc", "test_loss", "confusion"):
        assert got["final"][key] == want["final"][key], (got["id"], key)


SUMMARY_KEYS = ("act_label", "impl", "n", "seeds", "test_acc_mean", "test_acc_ci", "best_seed", "worst_seed",
                "test_loss_mean", "f1_macro_mean", "diff", "diff_ci", "p_value", "p_holm", "paired_n")


def assert_assembled(out, reference) -> None:
    """runs.csv and the summaries cover every planned run, and agree with the one-process sweep's."""
    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == PLANNED
    assert [float(r["test_acc"]) for r in rows] == [r["final"]["test_acc"] for r in reference.records]
    summary = results.read_json(out / "summary.json")
    assert [{k: r[k] for k in SUMMARY_KEYS} for r in summary["rows"]] == [
        {k: r[k] for k in SUMMARY_KEYS} for r in reference.summary]
    with open(out / "summary.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(reference.summary)


def test_a_sweep_under_torchrun_is_dealt_out_to_the_workers_and_matches_one_process(tmp_path, reference):
    out = tmp_path / "out"
    [(code, output)] = launch(torchrun(2, *CLI, "--out", out), cwd=tmp_path)
    assert code == 0, output
    records = records_in(out)
    assert sorted(records) == sorted(PLANNED)  # none lost, none extra
    want = {r["id"]: r for r in reference.records}
    for i, run_id in enumerate(PLANNED):  # run i is worker i mod 2's, and trained once
        assert output.count(f"{run_id}: started") == 1 and f"[worker {i % 2}/2] {run_id}: started" in output
        assert records[run_id]["worker"]["rank"] == i % 2 and records[run_id]["worker"]["shard"] == f"{i % 2}/2"
        assert records[run_id]["worker"]["world_size"] == 2
        assert_same_run(records[run_id], want[run_id])
    assert_assembled(out, reference)
    assert output.count("Test accuracy over seeds") == 1  # the worker that finished last printed the sweep's table
    assert not any((out / "checkpoints").iterdir())


# Worker 1 of 2, as `--shard 1/2` runs it, killing itself with SIGKILL in the first step of epoch 2 of its
# first run (after epoch 1's checkpoint): a deterministic point to be killed at.
KILLED_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from actkit import train as T
    from actkit.distributed import Shard

    class Kill(T.Callback):
        def on_step(self, ctx):
            if ctx.epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    options, acts, seeds = json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sweep = T.Sweep(activations=T.parse_activations(acts), seeds=list(range(seeds)), **options)
    T.run_sweep(sweep, sys.argv[1], shard=Shard(1, 2), callbacks=lambda config: [Kill()])
""")


def test_shard_workers_as_separate_processes_one_killed_and_resumed(tmp_path, reference):
    out = tmp_path / "out"
    killed = [sys.executable, "-c", KILLED_WORKER, out, json.dumps(OPTIONS), ACTS, SEEDS]
    (code0, output0), (code1, output1) = launch(worker(*CLI, "--out", out, "--shard", "0/2"), killed, cwd=tmp_path)
    assert code0 == 0, output0
    assert code1 == -signal.SIGKILL, output1
    first = PLANNED[1]  # worker 1's first run: its checkpoint of epoch 1, no record
    assert (out / "checkpoints" / f"{first}.pt").is_file() and not (out / "runs" / f"{first}.json").exists()
    assert sorted(records_in(out)) == sorted(PLANNED[0::2])
    # worker 0 finished first and did not write a summary of half a sweep
    assert "The sweep has 2 of 4 runs finished" in " ".join(output0.split())
    assert not any((out / name).exists() for name in ("runs.csv", "summary.csv", "summary.json"))

    # the killed worker's command rerun with --resume (here, in this process): its runs, the first from its
    # checkpoint; then, last to finish, it assembles the sweep
    with one_thread():
        resumed = invoke(*CLI, "--out", out, "--shard", "1/2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    records, want = records_in(out), {r["id"]: r for r in reference.records}
    assert sorted(records) == sorted(PLANNED)
    for run_id in PLANNED:
        assert_same_run(records[run_id], want[run_id])
    assert records[first]["resumed_from_epoch"] == 1 and records[PLANNED[3]]["resumed_from_epoch"] == 0
    assert [records[i]["worker"]["shard"] for i in PLANNED] == ["0/2", "1/2", "0/2", "1/2"]
    assert_assembled(out, reference)
    assert "Test accuracy over seeds" in resumed.output and not any((out / "checkpoints").iterdir())


def test_a_data_parallel_run_follows_the_one_process_loss_curve(tmp_path, reference):
    out = tmp_path / "out"
    [(code, output)] = launch(torchrun(2, *CLI, "--act", "relu", "--seeds", "1", "--parallel", "data",
                                       "--out", out), cwd=tmp_path)
    assert code == 0, output
    text = " ".join(output.split())
    assert text.count("Data-parallel over 2 processes (gloo): global batch 32 = 2 x 16, lr 0.001") == 1
    assert output.count("Test accuracy over seeds") == 1  # rank 0 reports
    (got,) = records_in(out).values()  # one record, written by rank 0
    want = next(r for r in reference.records if r["id"] == "relu-actkit-seed0")  # the same run in one process
    assert got["config"] == want["config"]
    assert got["parallel"] == {"mode": "data", "world_size": 2, "backend": "gloo", "global_batch_size": 32,
                               "per_process_batch_size": 16, "lr": 0.001, "sync_batchnorm": False}
    # every test image evaluated once, by one of the processes
    assert got["final"]["test_n"] == want["final"]["test_n"] == sum(map(sum, got["final"]["confusion"]))
    assert got["timing"]["images"] == want["timing"]["images"] and got["timing"]["steps"] == want["timing"]["steps"]

    # Tolerance. The model ("simple") has no BatchNorm and no dropout, so both runs compute the same
    # function of the same data; they differ only in rounding. Each step's gradient is, in one process, a
    # sum over the global batch and, data-parallel, two half-batch sums all-reduced: the same fp32 terms
    # added in another order, a relative difference of about sqrt(n) u for n terms (u = 2^-24; the
    # probabilistic bound of a sum, as in refcheck.sum_error_bound), n at most the first convolution's
    # weight gradient's 32 images x 26 x 26 output pixels. Adam's step does not depend on the gradient's
    # scale, so that becomes at most the same relative difference of each step; over S steps the
    # differences add up (first order), S sqrt(n) u relative: 7e-5 here. Measured: at most 5e-8.
    steps = got["timing"]["steps"]
    rtol = steps * math.sqrt(OPTIONS["batch_size"] * 26 * 26) * 2.0 ** -24
    for key in ("train_loss", "val_loss"):
        assert len(got["history"][key]) == OPTIONS["epochs"]
        for a, b in zip(got["history"][key], want["history"][key]):
            assert a == pytest.approx(b, rel=rtol, abs=0), key
    assert got["final"]["test_loss"] == pytest.approx(want["final"]["test_loss"], rel=rtol, abs=0)


# -- where a process sits ---------------------------------------------------------------------------
@pytest.mark.parametrize("shards,world", [(1, 1), (1, 3), (3, 1), (2, 4), (4, 2)])
def test_every_run_goes_to_exactly_one_worker(shards, world):
    """--shard K/N for every K, each under torchrun with `world` processes: every run index once."""
    n = 23
    owners = {i: [] for i in range(n)}
    for k in range(shards):
        for rank in range(world):
            worker = Shard(k, shards).within(Launch(rank=rank, world_size=world))
            assert worker.count == shards * world
            for i in range(n):
                if worker.owns(i):
                    owners[i].append((k, rank))
    assert all(len(who) == 1 for who in owners.values()), owners
    # run i is worker (i mod N)'s, workers numbered shard-major: worker K x W + RANK
    assert all(k * world + rank == i % (shards * world) for i, [(k, rank)] in owners.items())


def test_launch_from_torchruns_environment():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node0",
           "MASTER_PORT": "29500"}
    assert Launch.from_env(env) == Launch(rank=3, world_size=4, local_rank=1, local_world_size=2, rendezvous=True)
    assert Launch.from_env({}) == Launch()  # started on its own: rank 0 of 1, no GPU assigned, no rendezvous
    assert Launch.from_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}).rendezvous is False
    assert bind_device("cpu", Launch.from_env(env)) == "cpu"
    if torch.cuda.device_count() < 8:
        with pytest.raises(LaunchError, match=r"\$LOCAL_RANK=7 but this machine has \d+ CUDA device\(s\): start at "
                                              r"most \d+ worker\(s\) per machine"):
            bind_device("cuda", Launch(rank=7, world_size=8, local_rank=7, local_world_size=8))


# -- bad launches: one line each ------------------------------------------------------------------
def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("Error: ") and message in text, text
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args,env,message", [
    (["--shard", "3/2"], {}, "--shard 3/2: K must be between 0 and 1 (K/N: worker K of N, K = 0..N-1; "
                             "a SLURM array for N workers is --array=0-1)"),
    (["--shard", "0/0"], {}, "--shard 0/0: N, the number of workers, must be at least 1"),
    (["--shard", "1of2"], {}, "--shard must look like K/N (worker K of N, K = 0..N-1), got '1of2'"),
    (["--parallel", "model"], {}, "unknown --parallel 'model'; choose none"),
    (["--parallel", "data"], {}, "--parallel data needs a process group: start the command with torchrun, e.g. "
                                 "torchrun --nproc-per-node N -m actkit.cli.main train ... --parallel data"),
    (["--parallel", "data"], {"RANK": "0", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     "--batch-size 32 is not divisible by the 3 processes of --parallel data: the batch size is global"),
    ([], {"RANK": "2", "WORLD_SIZE": "2"}, "$RANK=2 and $WORLD_SIZE=2 do not fit: the rank must be below"),
    ([], {"WORLD_SIZE": "two"}, "$WORLD_SIZE must be a non-negative integer, got 'two'"),
])
def test_bad_launches_are_one_line_errors(tmp_path, monkeypatch, args, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = invoke(*CLI, "--out", tmp_path / "out", *args)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_several_workers_need_one_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke(*CLI, "--shard", "0/2"),
                          "--out is required when the sweep is spread over several workers (--shard, torchrun)")
    assert not (tmp_path / "runs").exists()


def test_out_on_an_existing_file_is_refused_and_the_file_kept(tmp_path):
    file = tmp_path / "results.txt"
    file.write_text("precious\n")
    assert_one_line_error(invoke(*CLI, "--out", file),
                          f"--out {file}: {file} is an existing file, not a directory; give a directory")
    assert_one_line_error(invoke(*CLI, "--out", file / "sweep"), f"{file} is an existing file, not a directory")
    assert file.read_text() == "precious\n"


def copy_sweep(reference, out, run_ids, workers: int = 1) -> None:
    """``out`` as workers of the reference sweep leave it: its config.json (dealt among ``workers``) and the
    records of ``run_ids``."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    config = results.read_json(reference.out / "config.json")
    results.write_json(out / "config.json", {**config, "workers": workers})
    for run_id in run_ids:
        (out / "runs" / f"{run_id}.json").write_bytes((reference.out / "runs" / f"{run_id}.json").read_bytes())


def test_workers_with_other_settings_are_refused_naming_the_setting(tmp_path, reference):
    out = tmp_path / "out"
    copy_sweep(reference, out, PLANNED[0::2], workers=2)  # worker 0 of 2 is done, worker 1 has not started
    made = (out / "config.json").read_bytes()
    assert_one_line_error(invoke(*CLI, "--out", out, "--shard", "1/2", "--lr", "0.01"),
                          f"{out} holds a sweep with a different configuration (lr is 0.001 there, 0.01 here)")
    assert_one_line_error(invoke(*CLI, "--out", out, "--shard", "1/2", "--act", "relu,tanh,gelu"),
                          f"{out} holds an unfinished sweep with other settings (activations is relu,tanh there, "
                          "relu,tanh,gelu here)")
    assert_one_line_error(invoke(*CLI, "--out", out, "--shard", "2/3", "--resume"),
                          f"{out} holds an unfinished sweep dealt out among 2 worker(s), and this command is one of 3 "
                          "(workers is 2 there, 3 here)")
    assert_one_line_error(invoke(*CLI, "--out", out, "--resume"), "(workers is 2 there, 1 here)")
    # worker 0 again, without --resume: its own runs are there
    assert_one_line_error(invoke(*CLI, "--out", out, "--shard", "0/2"),
                          f"{out} already holds results of worker 0/2's runs (2 file(s), e.g. relu-actkit-seed0.json)")
    assert (out / "config.json").read_bytes() == made and sorted(records_in(out)) == sorted(PLANNED[0::2])
    # once every run is finished, any number of workers may resume the sweep (to grow it): nothing to train
    copy_sweep(reference, out, PLANNED[1::2], workers=2)
    resumed = invoke(*CLI, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "0 run(s) to do, 4 already finished (skipped)" in " ".join(resumed.output.split())
    assert results.read_json(out / "config.json")["workers"] == 1
    assert_assembled(out, reference)


def test_actkit_report_assembles_a_finished_sweep_and_names_the_missing_runs(tmp_path, reference):
    out = tmp_path / "out"
    copy_sweep(reference, out, PLANNED[:-1], workers=2)  # the last worker's last run is missing
    report = ["report", out, "--out", tmp_path / "report.md", "--no-figures"]
    partial = CliRunner().invoke(app, [str(a) for a in report], catch_exceptions=False)
    assert partial.exit_code == 0, partial.output
    assert (f"note: the sweep in {out} has 3 of 4 planned runs finished (missing: {PLANNED[-1]}); the report covers "
            "the finished ones") in " ".join(partial.output.split())
    assert not any((out / name).exists() for name in ("runs.csv", "summary.csv", "summary.json"))
    copy_sweep(reference, out, PLANNED[-1:], workers=2)
    whole = CliRunner().invoke(app, [str(a) for a in report], catch_exceptions=False)
    assert whole.exit_code == 0, whole.output
    assert "note:" not in whole.output
    assert_assembled(out, reference)
