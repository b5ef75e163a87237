"""A sweep directory written before actkit.train became a package still resumes with today's code.

``data/sweep-20261202`` was written by the single-module ``actkit/train.py`` (commit 787fd70): a sweep of
relu and prelu:weight=0.1 x actkit and torch, interrupted in its last run (prelu on the eager reference
module, whose learnable weight the checkpoint holds). Kept from it: ``config.json``, the three finished
records, and the structure (keys, types, tensor shapes) of the checkpoint the interrupted run left; the
checkpoint itself (2.7 MB of weights) is not kept, but the one today's code writes must have that structure
to be read back by either.
"""
import shutil
from pathlib import Path

import pytest
import torch

from actkit import data as D
from actkit import results
from actkit import train as T

FIXTURE = Path(__file__).parent / "data" / "sweep-20261202"
INTERRUPTED = "prelu_weight=0.1-torch-seed0"


def structure(x):
    """Keys, types and tensor shapes of a checkpoint, as in ``checkpoint-structure.json``."""
    if isinstance(x, torch.Tensor):
        return f"tensor {x.dtype} {list(x.shape)}"
    if isinstance(x, dict):
        return {str(k): structure(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [structure(v) for v in x]
    return None if x is None else type(x).__name__


def key_paths(d, prefix=""):
    """Every key of a nested record, in order, as a path."""
    out = []
    for k, v in d.items():
        out.append(f"{prefix}/{k}")
        if isinstance(v, dict):
            out += key_paths(v, f"{prefix}/{k}")
    return out


class InterruptAtEpoch2(T.Callback):
    name = "interrupt"

    def on_epoch_end(self, ctx):
        if ctx.config.id == INTERRUPTED and ctx.epoch == 2:
            raise KeyboardInterrupt


def test_a_sweep_directory_written_before_the_split_resumes(tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(FIXTURE, out, ignore=shutil.ignore_patterns("checkpoint-structure.json"))
    sweep = T.Sweep(dataset="synthetic", model="simple", activations=T.parse_activations("relu,prelu:weight=0.1"),
                    impls=["actkit", "torch"], seeds=[0], epochs=2, batch_size=64, val_size=200, subset=640,
                    device="cpu")
    data = D.load("synthetic", val_size=200, subset=640)
    finished = {p.name: p.read_bytes() for p in (out / "runs").iterdir()}

    # config.json and the finished records are accepted as this sweep's: only the unfinished run trains
    with pytest.raises(KeyboardInterrupt):
        T.run_sweep(sweep, out, resume=True, data=data, callbacks=lambda cfg: [InterruptAtEpoch2()])
    checkpoint = out / "checkpoints" / f"{INTERRUPTED}.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert structure(state) == results.read_json(FIXTURE / "checkpoint-structure.json")

    result = T.run_sweep(sweep, out, resume=True, data=data)
    assert result.skipped == ["relu-actkit-seed0", "relu-torch-seed0", "prelu_weight=0.1-actkit-seed0"]
    assert result.ran == [INTERRUPTED] and result.complete and not checkpoint.exists()
    assert all((out / "runs" / name).read_bytes() == text for name, text in finished.items())
    resumed = results.read_json(out / "runs" / f"{INTERRUPTED}.json")
    assert resumed["resumed_from_epoch"] == 1
    before = results.read_json(FIXTURE / "runs" / "prelu_weight=0.1-actkit-seed0.json")
    assert key_paths(resumed) == key_paths(before)  # the same fields, in the same order
    assert [r["act_label"] for r in result.summary] == ["relu", "relu", "prelu_weight=0.1", "prelu_weight=0.1"]
