"""One run: train a reference CNN from scratch on a loaded dataset and return its record.

:func:`train_run` goes through the steps below in order: set the run up (seeds, model, optimizer,
batches), continue from a checkpoint or start the callbacks, train epoch by epoch (each epoch:
the optimizer steps, then the validation pass, then a checkpoint), evaluate the test set once,
and build the record (:mod:`actkit.train.records` describes its fields).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from .. import results, stats
from ..backend import backend_for
from ..batches import Batcher
from ..data import Dataset
from ..distributed import ProcessGroup
from ..memory import SavedTensorCounter
from ..models import build_model, maybe_compile
from ..runs import HISTORY_KEYS, RUN_SCHEMA
from .callbacks import Callback, Reporter, RunContext
from .config import RunConfig, TrainError, check_divides

WARMUP_STEPS = 5
PROGRESS_EVERY = 20
PROBE_SIZE = 256


def _new_timing() -> dict:
    return {"train_s": 0.0, "eval_s": 0.0, "steps": 0, "images": 0, "warmup_steps": 0, "warmup_s": 0.0,
            "steady_s": 0.0, "steady_images": 0, "steady_steps": 0}


@dataclass
class _Run:
    """What the steps of one run share while it trains."""

    config: RunConfig
    data: Dataset
    device: torch.device
    group: ProcessGroup | None
    callbacks: Sequence[Callback]
    reporter: Reporter
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    """The data order and augmentation stream: alike on every process."""
    batches: dict[str, Batcher]
    ctx: RunContext
    started: str
    t_run: float
    resident: int
    """CUDA memory allocated before the run (the dataset): not the run's."""
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    diagnostics: dict = field(default_factory=dict)
    timing: dict = field(default_factory=_new_timing)
    status: str = "finished"
    start_epoch: int = 0
    saved_for_backward: dict = field(default_factory=lambda: {"saved_bytes": None, "saved_parameter_bytes": None})
    warm_left: int = WARMUP_STEPS
    runner: torch.nn.Module | None = None
    eval_runner: torch.nn.Module | None = None

    @property
    def rank(self) -> int:
        return self.group.rank if self.group is not None else 0

    @property
    def world(self) -> int:
        return self.group.world_size if self.group is not None else 1

    @property
    def sync_bn(self) -> bool:
        return self.group is not None and self.device.type == "cuda"

    def event(self, cb: Callback, event: str, epoch: int, value: dict | None) -> None:
        if value is not None:
            self.diagnostics[cb.name].append({"event": event, "epoch": epoch, **value})


def train_run(config: RunConfig, data: Dataset, *, callbacks: Sequence[Callback] = (),
              reporter: Reporter | None = None, checkpoint: str | os.PathLike | None = None,
              group: ProcessGroup | None = None) -> dict:
    """Train one run on ``data`` (already on ``config.device``) and return its record (:mod:`actkit.train`).

    ``checkpoint``: a path where the state after each epoch is saved atomically; if it exists with the
    same config, training continues from it.

    ``group``: train data-parallel with every process of this group (each calls ``train_run`` with
    the same arguments): ``DistributedDataParallel``, ``config.batch_size`` is the global batch, each
    process takes its share of every batch (:class:`actkit.batches.Batcher` ``part``) and evaluates its
    share of the validation and test sets; the losses, counts and confusion matrices are summed over
    the processes, so every process returns the record of the whole run (rank 0 saves checkpoints).
    On CUDA, BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch, as in one
    process); PyTorch has no CPU SyncBatchNorm, so on CPU (gloo) each process normalises its share.
    Each process draws its own dropout masks.
    """
    run = _setup(config, data, callbacks, reporter or Reporter(), group)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    # Every process reads the checkpoint before DistributedDataParallel's first collective (its
    # construction), so rank 0 cannot be writing the next one meanwhile.
    if checkpoint is not None and checkpoint.is_file():
        _resume(run, checkpoint)
    else:
        for cb in run.callbacks:
            run.event(cb, "start", 0, cb.on_train_start(run.ctx))
    run.runner, run.eval_runner = _runners(run)
    run.reporter.run_start(config, len(run.batches["train"]), run.start_epoch)
    run.model.train()
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        if not _epoch(run, epoch):
            run.status = "diverged"
            break
        if checkpoint is not None and epoch < config.epochs:
            _save_checkpoint(run, checkpoint, epoch)
    for cb in run.callbacks:
        run.event(cb, "end", run.ctx.epoch, cb.on_train_end(run.ctx))
    record = _record(run, _final(run))
    run.reporter.run_end(config, record)
    return record


# -- setting up ---------------------------------------------------------------------------------
def _device(config: RunConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None:  # the current GPU: under torchrun, LOCAL_RANK's
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _setup(config: RunConfig, data: Dataset, callbacks: Sequence[Callback], reporter: Reporter,
           group: ProcessGroup | None) -> _Run:
    device = _device(config)
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    check_divides(config.batch_size, world)
    info = data.info
    started, t_run = results.timestamp(), time.perf_counter()
    resident = 0
    if device.type == "cuda":  # what is allocated before the run (the dataset) is not the run's memory
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)

    torch.manual_seed(config.seed)  # model init (and then dropout) stream: the same for every activation
    model = build_model(config.model, config.activation, config.impl, config.act_params, info.shape,
                        info.num_classes, config.depth).to(device)
    if group is not None and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if rank > 0:  # the same initial weights on every process, then independent dropout masks per process
        torch.manual_seed(config.seed + (rank << 32))
    optimizer = _make_optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation: alike on every process
    part = (rank, world)
    batches = {"train": Batcher(data.train, info, config.batch_size, shuffle=True, generator=generator,
                                augment=config.augment, part=part),
               "val": Batcher(data.val, info, config.eval_batch_size, part=part),
               "test": Batcher(data.test, info, config.eval_batch_size, part=part)}
    probe_split = data.val.take(torch.arange(min(PROBE_SIZE, len(data.val)), device=data.val.labels.device))
    probe = (batches["val"].prepare(probe_split.images), probe_split.labels)
    ctx = RunContext(config, model, optimizer, device, probe)
    return _Run(config, data, device, group, callbacks, reporter, model, optimizer, generator, batches, ctx,
                started, t_run, resident, diagnostics={cb.name: [] for cb in callbacks})


def _runners(run: _Run) -> tuple[torch.nn.Module, torch.nn.Module]:
    """What trains (``DistributedDataParallel`` in a group, compiled for ``impl="compile"``) and what evaluates."""
    impl = run.config.impl
    if run.group is None:
        runner = maybe_compile(run.model, impl)
        return runner, runner
    from torch.nn.parallel import DistributedDataParallel

    index = run.device.index
    runner = maybe_compile(DistributedDataParallel(run.model, device_ids=[index] if index is not None else None), impl)
    # evaluation runs on each process's share with the bare model: no gradient, nothing to synchronise
    return runner, maybe_compile(run.model, impl)


# -- checkpoints ----------------------------------------------------------------------------------
def _resume(run: _Run, checkpoint: Path) -> None:
    """Continue from the state after the checkpointed epoch: weights, optimizer, history, RNG streams."""
    # RNG states must stay CPU tensors; load_state_dict moves weights and optimizer state to the device
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("config") != run.config.as_dict():
        raise TrainError(f"checkpoint {checkpoint} was made with a different configuration; "
                         "remove it or use another --out")
    made_by = int(state.get("world_size", 1))
    if made_by != run.world:
        raise TrainError(f"checkpoint {checkpoint} was made by {made_by} data-parallel process(es), this run "
                         f"has {run.world}: resume it with {made_by} (or delete the checkpoint to restart that run)")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.history, run.diagnostics, run.start_epoch = state["history"], state["diagnostics"], int(state["epoch"])
    run.timing.update(state["timing"])
    own = state["rng"]["per_rank"][run.rank] if run.world > 1 else state["rng"]
    torch.set_rng_state(own["torch"])
    run.generator.set_state(state["rng"]["data"])
    if run.device.type == "cuda" and own.get("cuda") is not None:
        torch.cuda.set_rng_state(own["cuda"], run.device)
    run.ctx.step = run.timing["steps"]


def _save_checkpoint(run: _Run, checkpoint: Path, epoch: int) -> None:
    """The state after ``epoch``, written by rank 0 atomically (a complete file renamed into place)."""
    device = run.device
    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if run.group is not None:  # each process's own dropout stream, so a resumed run is the same run
        rng = {**rng, "per_rank": run.group.gather(rng)}
    if run.rank != 0:
        return
    state = {"config": run.config.as_dict(), "epoch": epoch, "world_size": run.world,
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "history": run.history,
             "diagnostics": run.diagnostics, "timing": run.timing, "rng": {**rng, "data": run.generator.get_state()}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    results.atomic_write_bytes(checkpoint, buffer.getvalue())


# -- one epoch ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _EpochClock:
    """Times one epoch's training steps, the run's first steps (warm-up, compilation included) apart
    from the steady rest the rates are computed from."""

    def __init__(self, run: _Run):
        self.run = run
        _sync(run.device)
        self.start = self.mark = time.perf_counter()
        self.steady_from_images = self.warm_steps = 0

    def step_done(self, i: int, steps: int, seen_all: int) -> None:
        run = self.run
        if run.warm_left <= 0:
            return
        run.warm_left -= 1
        if run.warm_left == 0 or i == steps - 1:
            _sync(run.device)
            now = time.perf_counter()
            run.timing["warmup_s"] += now - self.mark
            self.warm_steps = i + 1
            run.timing["warmup_steps"] += self.warm_steps
            self.mark, self.steady_from_images = now, seen_all
            run.warm_left = 0

    def stop(self, steps: int, seen_all: int) -> float:
        """Adds the epoch to the run's timing; returns its training time in seconds."""
        _sync(self.run.device)
        end, timing = time.perf_counter(), self.run.timing
        timing["train_s"] += end - self.start
        timing["steady_s"] += end - self.mark
        timing["steady_images"] += seen_all - self.steady_from_images
        timing["steady_steps"] += steps - self.warm_steps
        timing["steps"] += steps
        timing["images"] += seen_all
        # what else ran meanwhile: read against this process's own threads when the rates are judged
        timing.setdefault("load_average", []).append(host_load_average())
        return end - self.start


def _step(run: _Run, i: int, x: torch.Tensor, y: torch.Tensor, batch_all: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the loss and the logits."""
    # What autograd keeps for backward, counted on each epoch's first step (so a resumed run
    # counts too); the hook returns each tensor untouched, the step is the same without it.
    with SavedTensorCounter() if i == 0 else contextlib.nullcontext() as saved:
        logits = run.runner(x)
        loss = F.cross_entropy(logits, y)
    if i == 0:
        run.saved_for_backward = {"saved_bytes": saved.total,
                                  "saved_parameter_bytes": saved.total - saved.excluding(run.model.parameters())}
    run.optimizer.zero_grad(set_to_none=True)
    if run.group is None:
        loss.backward()
    else:
        # DDP averages the processes' gradients; weighting each process's mean loss by its share
        # of the global batch makes that the gradient of the global batch's mean loss (exact when
        # the shares differ in size, as in the last batch of an epoch)
        (loss * (y.shape[0] * run.world / batch_all)).backward()
    run.ctx.step += 1
    if run.callbacks:
        run.ctx.batch, run.ctx.loss = (x, y), loss
        for cb in run.callbacks:
            cb.on_step(run.ctx)
    run.optimizer.step()
    return loss, logits


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float, float]:
    """The epoch's optimizer steps; returns the training loss and accuracy (running means) and its seconds."""
    batches = run.batches["train"]
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    seen = seen_all = 0  # images of this process, of all processes
    steps = len(batches)
    clock = _EpochClock(run)
    for i, (x, y) in enumerate(batches):
        batch_all = batches.global_size(i)
        loss, logits = _step(run, i, x, y, batch_all)
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        seen_all += batch_all
        clock.step_done(i, steps, seen_all)
        if (i + 1) % PROGRESS_EVERY == 0 or i == steps - 1:
            run.reporter.step(run.config, epoch, i + 1, float(loss_sum) / seen, int(correct) / seen)
        else:
            run.reporter.step(run.config, epoch, i + 1, None, None)
    seconds = clock.stop(steps, seen_all)
    run.ctx.batch = run.ctx.loss = None
    if run.group is None:
        return float(loss_sum) / seen, int(correct) / seen, seconds
    totals = run.group.sum(torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(float(seen))]))
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), seconds


def _epoch(run: _Run, epoch: int) -> bool:
    """Train one epoch, then validate; returns whether the training loss stayed finite."""
    run.ctx.epoch = epoch
    train_loss, train_acc, train_s = _train_epoch(run, epoch)
    t_eval = time.perf_counter()
    val = evaluate(run.eval_runner, run.batches["val"], run.data.info.num_classes, run.device, run.group)
    eval_s = time.perf_counter() - t_eval
    run.timing["eval_s"] += eval_s
    entry = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"],
             "val_acc": val["acc"], "train_time_s": train_s, "eval_time_s": eval_s,
             "lr": run.optimizer.param_groups[0]["lr"]}
    for key in HISTORY_KEYS:
        run.history[key].append(entry[key])
    for cb in run.callbacks:
        run.event(cb, "epoch", epoch, cb.on_epoch_end(run.ctx))
    run.reporter.epoch_end(run.config, entry)
    return math.isfinite(train_loss)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             device: torch.device, group: ProcessGroup | None = None) -> dict:
    """Mean cross-entropy, accuracy and the confusion matrix (``[true][pred]``) over ``batches``
    (with ``group``: over every process's batches, each process passing its share)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    n = 0
    for x, y in batches:
        if y.numel() == 0:  # a process's share of a last batch smaller than the number of processes
            continue
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
        n += y.shape[0]
    model.train(was_training)
    if group is not None:
        group.sum(loss_sum)
        group.sum(confusion)
        n = int(group.sum(torch.tensor(n, dtype=torch.int64, device=device)))
    cm = confusion.view(num_classes, num_classes).cpu()
    correct = int(cm.diag().sum())
    return {"loss": float(loss_sum) / max(n, 1), "acc": correct / max(n, 1), "n": n, "confusion": cm.tolist()}


# -- the record -----------------------------------------------------------------------------------
def host_load_average() -> float | None:
    """The host's 1-minute load average (where the OS reports one), sampled at each epoch's end."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _peak_rss_bytes() -> int | None:
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _activation_backend(config: RunConfig, device: torch.device) -> str:
    if config.impl == "torch":
        return "torch-eager"
    if config.impl == "compile":
        return "torch.compile"
    return backend_for(torch.empty(1, device=device))


def _final(run: _Run) -> dict:
    """The test set's metrics (evaluated once, at the end), and the validation figures of the history."""
    t_eval = time.perf_counter()
    test = evaluate(run.eval_runner, run.batches["test"], run.data.info.num_classes, run.device, run.group)
    run.timing["eval_s"] += time.perf_counter() - t_eval
    metrics = stats.classification_metrics(test["confusion"])
    history = run.history
    val_accs = history["val_acc"]
    best = max(range(len(val_accs)), key=lambda k: val_accs[k]) if val_accs else None
    return {"test_loss": test["loss"], "test_acc": test["acc"], "test_n": test["n"],
            **{k: v for k, v in metrics.items() if k != "accuracy"}, "confusion": test["confusion"],
            "val_loss": history["val_loss"][-1] if val_accs else None,
            "val_acc": val_accs[-1] if val_accs else None,
            "best_val_acc": val_accs[best] if best is not None else None,
            "best_val_epoch": history["epoch"][best] if best is not None else None}


def _finish_timing(run: _Run) -> dict:
    """The run's timing with the steady-state rates (warm-up steps left out) and the host's threads."""
    timing = run.timing
    steady_s, steady_images = timing.pop("steady_s"), timing.pop("steady_images")
    steady_steps = timing.pop("steady_steps")
    if steady_images == 0:  # everything was warm-up (tiny runs): fall back to the whole training time
        steady_s, steady_images, steady_steps = timing["train_s"], timing["images"], timing["steps"]
    timing.update({"wall_s": time.perf_counter() - run.t_run, "threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(),
                   "train_images_per_s": steady_images / steady_s if steady_s > 0 else None,
                   "step_time_ms": 1000.0 * steady_s / steady_steps if steady_steps else None})
    return timing


def _record(run: _Run, final: dict) -> dict:
    config, device, model, on_cuda = run.config, run.device, run.model, run.device.type == "cuda"
    return {
        "schema": RUN_SCHEMA,
        "id": config.id,
        "status": run.status,
        "config": config.as_dict(),
        "env": results.environment(device),
        "backend": _activation_backend(config, device),
        "data": run.data.describe(),
        "model": {"name": config.model, "parameters": sum(p.numel() for p in model.parameters()),
                  "activation_layers": [n for n, _ in model.activation_layers()], "depth": config.depth},
        "history": run.history,
        "final": final,
        "timing": _finish_timing(run),
        "memory": {"peak_bytes": torch.cuda.max_memory_allocated(device) - run.resident if on_cuda else None,
                   "resident_bytes": run.resident if on_cuda else None,
                   "peak_rss_bytes": _peak_rss_bytes(), **run.saved_for_backward},
        "diagnostics": run.diagnostics,
        "parallel": {"mode": "none" if run.group is None else "data", "world_size": run.world,
                     "backend": run.group.backend if run.group is not None else None,
                     "global_batch_size": config.batch_size,
                     "per_process_batch_size": config.batch_size // run.world,
                     "lr": config.lr, "sync_batchnorm": run.sync_bn},
        "resumed_from_epoch": run.start_epoch,
        "started": run.started,
        "finished": results.timestamp(),
    }
