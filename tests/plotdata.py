"""Small real result files for the plot and report tests (imported by them; not a test module).

``make_runs`` trains a tiny sweep with actkit.train (in the real run-record schema, diagnostics
included) on a few synthetic images; ``make_bench`` runs actkit.bench on two tiny sizes with
shortened timing budgets. Both take a few seconds on one CPU core.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tiny_data(n_train: int = 64, n_val: int = 32, n_test: int = 32):
    from actkit import data as data_mod

    train, test = data_mod.synthetic(n_train + n_val, n_test, seed=0)
    val = train.take(torch.arange(n_val))
    train = train.take(torch.arange(n_val, n_train + n_val))
    sizes = {"train": n_train, "val": n_val, "test": n_test, "train_full": n_train + n_val}
    return data_mod.Dataset(data_mod.dataset_info("synthetic"), train, val, test, "generated", sizes)


def make_runs(out: Path, acts: str = "relu,sigmoid", seeds=(0, 1, 2), epochs: int = 2) -> Path:
    from actkit import diagnostics
    from actkit import train as tr

    sweep = tr.Sweep(dataset="synthetic", model="simple", activations=tr.parse_activations(acts),
                     seeds=list(seeds), epochs=epochs, batch_size=32, device="cpu")
    tr.run_sweep(sweep, out, data=tiny_data(), callbacks=diagnostics.training_callbacks, checkpoints=False)
    return out


def relabel(run_dir: Path, source: str, target: str, accuracies: dict[int, float] | None = None) -> None:
    """Copy ``source``'s run records as activation label ``target`` (optionally with new test accuracies)."""
    for path in sorted((run_dir / "runs").glob(f"{source}-*.json")):
        record = json.loads(path.read_text())
        new = copy.deepcopy(record)
        c = new["config"]
        c["activation"] = c["act_label"] = target
        new["id"] = f"{target}-{c['impl']}-seed{c['seed']}"
        if accuracies is not None:
            new["final"]["test_acc"] = accuracies[c["seed"]]
        (run_dir / "runs" / f"{new['id']}.json").write_text(json.dumps(new))


def set_accuracies(run_dir: Path, label: str, accuracies: dict[int, float]) -> None:
    for path in sorted((run_dir / "runs").glob(f"{label}-*.json")):
        record = json.loads(path.read_text())
        record["final"]["test_acc"] = accuracies[record["config"]["seed"]]
        path.write_text(json.dumps(record))


def make_bench(path: Path) -> Path:
    from actkit import bench

    config = bench.make_config(act="relu,tanh", device="cpu", sizes="1024,4096", providers="actkit,eager",
                               modes="fwd,fwd+bwd", quick=True)
    config = dataclasses.replace(config, min_run_time=0.01, min_blocks=3, block_s=0.0005, warmup_calls=1)
    bench.write(bench.run(config), json_path=path)
    return path


def assert_png(path: Path, size=None) -> None:
    """The file is a PNG of the given pixel size with plenty of non-background pixels."""
    assert path.exists() and path.stat().st_size > 1000, path
    with Image.open(path) as img:
        assert img.format == "PNG"
        if size is not None:
            assert img.size == tuple(size)
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    inked = np.abs(pixels - pixels[0, 0]).sum(axis=2) > 30
    assert inked.mean() > 0.01, f"{path} looks blank ({inked.mean():.4f} of the pixels inked)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
