"""Training sweeps: (activation x implementation x seed) runs of a reference CNN, saved as data.

A *sweep* (:class:`Sweep`) is one dataset, one model and one set of hyper-parameters, run for
every activation, implementation and seed. Each *run* (:class:`RunConfig`) trains the model from
scratch and writes one JSON record. Seeds are paired: for seed ``s`` the model's initial weights
(``torch.manual_seed(s)`` before construction), the dropout stream (the same global generator,
consumed identically whatever the activation) and the data order and augmentation (a CPU
``torch.Generator`` seeded with ``s``) are the same for every activation and implementation, so
differences between activations can be tested per seed (:mod:`actkit.stats`).

Output directory (``--out``)
----------------------------
::

    <out>/config.json              the sweep: {"schema": "actkit.train.sweep/1", "sweep": {...}, "env": {...}}
    <out>/runs/<run id>.json       one record per finished run (schema below), written atomically
    <out>/checkpoints/<run id>.pt  the last finished epoch of an unfinished run (deleted when it finishes)
    <out>/runs.csv                 one row per finished run (RUN_CSV_FIELDS)
    <out>/summary.csv              one row per (activation, impl): mean ± CI, paired test vs the baseline
    <out>/summary.json             the same summary as JSON

``run id`` is ``<activation label>-<impl>-seed<seed>``, e.g. ``relu-actkit-seed0`` or
``leaky_relu_negative_slope=0.1-torch-seed2``. Rerunning with ``resume=True`` skips runs whose
record exists with the same config, restarts unfinished runs from their checkpoint (RNG states
included, so the result is the one an uninterrupted run gives), and refuses a record made with
a different config. Without ``resume`` an output directory that already holds results is
refused: results are never overwritten.

Run record (``runs/<run id>.json``, schema ``actkit.train.run/1``)
------------------------------------------------------------------
``schema``, ``id``
``status``           ``"finished"``, or ``"diverged"`` (training loss became non-finite; training
                     stopped at that epoch, the test metrics are those of the diverged model)
``config``           :class:`RunConfig` as a dict: dataset, model, activation, act_params (all
                     parameters, defaults included), act_label, impl, seed, epochs, batch_size, lr,
                     weight_decay, optimizer, val_size, subset, augment, depth, device, split_seed,
                     eval_batch_size
``env``              :func:`actkit.results.environment`: device and its name, torch/triton/actkit/
                     python versions, platform, configured backend, interpreter flag, CPU threads
``backend``          what ran the activations: ``triton``, ``triton-interpreter`` or ``torch``
                     (actkit's custom op), ``torch-eager`` (impl torch) or ``torch.compile``
``data``             dataset name, source directory (or ``generated``), shape, classes, normalisation
                     mean/std, sizes ``train``/``val``/``test``/``train_full``
``model``            ``name``, ``parameters`` (count), ``activation_layers`` (qualified names in
                     forward order), ``depth``
``history``          per-epoch lists of equal length: ``epoch`` (1-based), ``train_loss``,
                     ``train_acc`` (running mean over the epoch's batches, in training mode),
                     ``val_loss``, ``val_acc`` (eval mode, after the epoch), ``train_time_s``,
                     ``eval_time_s``, ``lr``
``final``            test set (evaluated once, at the end): ``test_loss``, ``test_acc``,
                     ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_per_class``,
                     ``recall_per_class``, ``f1_per_class``, ``confusion`` (``[true][pred]`` counts),
                     plus ``val_loss``, ``val_acc`` (last epoch), ``best_val_acc``, ``best_val_epoch``
``timing``           ``wall_s`` (whole run incl. evaluation), ``train_s`` (training steps only),
                     ``eval_s``, ``steps``, ``images``, ``warmup_steps`` and ``warmup_s`` (the first
                     steps of a process, incl. any compilation: excluded from the rates),
                     ``train_images_per_s`` and ``step_time_ms`` (steady-state mean)
``memory``           ``peak_bytes``: ``torch.cuda.max_memory_allocated`` during the run minus what was
                     allocated when it started (the device-resident dataset, ``resident_bytes``): the
                     memory the run itself needed (weights, optimizer state, activations, workspace);
                     ``null`` on CPU. ``peak_rss_bytes``: the process's peak resident memory so far
                     (process-wide, so it only grows over a sweep). ``saved_bytes``: what autograd
                     keeps for backward in one training step (distinct storages, counted on the first
                     step of the last epoch, any device; :mod:`actkit.memory`), of which
                     ``saved_parameter_bytes`` are the model's own parameters
``diagnostics``      ``{callback name: [event, ...]}``; each event is the dict a :class:`Callback`
                     returned plus ``event`` (``start``/``epoch``/``end``) and ``epoch``
``resumed_from_epoch``  0, or the checkpointed epoch this run continued from
``started``, ``finished``  UTC timestamps
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from . import registry, results, stats
from .backend import backend_for
from .data import Batcher, Dataset, dataset_info, load as load_dataset
from .memory import SavedTensorCounter
from .models import IMPLS, build_model, check_impl, check_model, maybe_compile

RUN_SCHEMA = "actkit.train.run/1"
SWEEP_SCHEMA = "actkit.train.sweep/1"
WARMUP_STEPS = 5
PROGRESS_EVERY = 20
PROBE_SIZE = 256


class TrainError(ValueError):
    """A training request that cannot run as given (bad option values, conflicting results)."""


class ResultsExistError(TrainError):
    """The output directory already holds results (and ``resume`` was not asked for)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActChoice:
    """An activation with explicit parameters, from ``name`` or ``name:param=value[:param=value]``.
    ``saved_bits=k`` among them asks for actkit's few-bit backward (:mod:`actkit.fewbit`)."""

    name: str
    given: tuple[tuple[str, float], ...] = ()

    @property
    def saved_bits(self) -> int | None:
        return dict(self.given).get("saved_bits")

    @property
    def params(self) -> dict[str, float]:
        given = dict(self.given)
        bits = given.pop("saved_bits", None)
        return {**registry.get(self.name).bind((), given), **({"saved_bits": bits} if bits else {})}

    @property
    def label(self) -> str:
        return self.name + "".join(f"_{k}={v:g}" for k, v in self.given)


def parse_activations(text: str | Sequence[str], saved_bits: int | None = None) -> list[ActChoice]:
    """``"relu,leaky_relu:negative_slope=0.1,gelu:saved_bits=2"`` -> choices; ``all``: every trainable
    elementwise or learnable one. ``saved_bits``: the few-bit backward for every elementwise one that
    does not say otherwise (``--saved-bits``; learnable activations have none and are refused)."""
    items = [t for part in ([text] if isinstance(text, str) else text) for t in part.split(",")]
    items = [t.strip() for t in items if t.strip()]
    if not items:
        raise TrainError("no activation given (e.g. --act relu,gelu)")
    out: list[ActChoice] = []
    for item in items:
        if item.lower() == "all":
            out += [ActChoice(s.name) for s in registry.REGISTRY.values()
                    if s.differentiable and getattr(s, "kind", "elementwise") in ("elementwise", "learnable")]
            continue
        name, *assignments = item.split(":")
        spec = registry.get(name)  # ValueError with suggestions for unknown names
        if getattr(spec, "kind", "elementwise") not in ("elementwise", "learnable"):
            raise TrainError(f"{spec.name} is a {spec.kind} function, not a pointwise activation: it cannot fill "
                             "an activation slot of the models")
        if not spec.differentiable:
            raise TrainError(f"{spec.name} has no gradient, so a network using it cannot be trained")
        given: dict[str, float] = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep:
                raise TrainError(f"activation parameter {assignment!r} in {item!r} must look like name=value")
            given[key.strip()] = value.strip()
        bits = given.pop("saved_bits", saved_bits)
        bound = spec.bind((), given)  # validates names and values
        choice = tuple((k, bound[k]) for k in given)
        if bits is not None and _check_saved_bits(spec, bits):  # 0: the exact backward, as if not given
            choice += (("saved_bits", _check_saved_bits(spec, bits)),)
        out.append(ActChoice(spec.name, choice))
    return list(dict.fromkeys(out))


def _check_saved_bits(spec: registry.ActivationSpec, bits) -> int:
    """``saved_bits`` as given (a string from the command line, or an int): 0 (exact) or 1..8."""
    from . import fewbit  # imports scipy: only when a few-bit backward is asked for

    if isinstance(bits, str) and bits.strip().isdigit():
        bits = int(bits)
    if type(bits) is int and bits == 0:
        return 0
    try:
        value = fewbit.check_bits(bits)
    except ValueError as exc:
        raise TrainError(f"{spec.name}: {exc}") from None
    if value and spec.kind != "elementwise":
        raise TrainError(f"{spec.name} is a {spec.kind} activation: it has no few-bit backward (saved_bits "
                         "applies to elementwise activations)")
    return value


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; checks ``cuda[:N]`` exists. Returns a normalised string."""
    text = device.strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise TrainError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise TrainError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
        return text
    raise TrainError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    model: str
    activation: str
    act_params: dict
    act_label: str
    impl: str
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    val_size: int | None
    subset: int | None
    augment: bool
    depth: int
    device: str
    split_seed: int
    eval_batch_size: int

    @property
    def id(self) -> str:
        return f"{self.act_label}-{self.impl}-seed{self.seed}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sweep:
    """Everything one ``actkit train`` command runs. ``runs()`` lists the (seed, activation, impl) runs,
    seed-major, so an interrupted sweep has complete pairs for the first seeds."""

    dataset: str = "fashion-mnist"
    model: str = "convnet"
    activations: list[ActChoice] = field(default_factory=lambda: [ActChoice("relu")])
    impls: list[str] = field(default_factory=lambda: ["actkit"])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    val_size: int | None = None
    subset: int | None = None
    augment: bool | None = None
    depth: int = 0
    device: str = "auto"
    split_seed: int = 0
    eval_batch_size: int = 1000
    baseline: str | None = None

    def __post_init__(self):
        self.dataset = dataset_info(self.dataset).name
        self.model = check_model(self.model)
        self.impls = list(dict.fromkeys(check_impl(i) for i in self.impls))
        if not self.impls:
            raise TrainError("no implementation given; choose from: " + ", ".join(IMPLS))
        if not self.activations:
            raise TrainError("no activation given")
        self.device = resolve_device(self.device)
        if self.augment is None:
            self.augment = dataset_info(self.dataset).augment
        if self.optimizer not in ("adam", "sgd"):
            raise TrainError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")
        for name, value, low in (("epochs", self.epochs, 1), ("batch size", self.batch_size, 1),
                                 ("eval batch size", self.eval_batch_size, 1), ("depth", self.depth, 0)):
            if int(value) != value or value < low:
                raise TrainError(f"{name} must be an integer >= {low}, got {value}")
        if not self.seeds or any(int(s) != s or s < 0 for s in self.seeds):
            raise TrainError(f"seeds must be non-negative integers, got {self.seeds}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise TrainError(f"weight decay must be >= 0, got {self.weight_decay}")
        few_bit = [a.label for a in self.activations if a.saved_bits]
        if few_bit and set(self.impls) - {"actkit"}:
            raise TrainError(f"{', '.join(few_bit)}: a few-bit backward is actkit's; run it with --impl actkit "
                             f"(PyTorch's ops have none), not {', '.join(i for i in self.impls if i != 'actkit')}")
        labels = [a.label for a in self.activations]
        if self.baseline is None:
            self.baseline = "relu" if "relu" in labels else labels[0]
        else:
            base = parse_activations(self.baseline)
            if len(base) != 1 or base[0].label not in labels:
                raise TrainError(f"baseline {self.baseline!r} is not one of the activations run: {', '.join(labels)}")
            self.baseline = base[0].label

    def runs(self) -> list[RunConfig]:
        return [RunConfig(self.dataset, self.model, a.name, a.params, a.label, impl, int(seed), int(self.epochs),
                          int(self.batch_size), float(self.lr), float(self.weight_decay), self.optimizer,
                          self.val_size, self.subset, bool(self.augment), int(self.depth), self.device,
                          int(self.split_seed), int(self.eval_batch_size))
                for seed in self.seeds for a in self.activations for impl in self.impls]

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["activations"] = [{"name": a.name, "label": a.label, "params": a.params} for a in self.activations]
        return d


# --------------------------------------------------------------------------------------------
# Hooks for diagnostics and progress
# --------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What callbacks see. ``model`` is the eager model (also under ``torch.compile``)."""

    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    probe: tuple[torch.Tensor, torch.Tensor]
    """A fixed, normalised batch of up to 256 validation images and labels on the device."""
    epoch: int = 0
    """The epoch in progress (1-based); 0 before training starts."""
    step: int = 0
    """Optimizer steps done so far in this run."""
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    """The current training batch (in ``on_step``)."""
    loss: torch.Tensor | None = None


class Callback:
    """Base class of training hooks. Subclass and override what you need.

    ``on_train_start``, ``on_epoch_end`` and ``on_train_end`` may return a dict: it is stored in
    the run record under ``diagnostics[<name>]`` as an event (with ``event`` and ``epoch`` added).
    ``on_step`` runs after ``loss.backward()`` and before ``optimizer.step()`` (gradients are in
    ``.grad``); aggregate there and return the aggregate from ``on_epoch_end``. An epoch's events
    are saved in the epoch checkpoint, so a resumed run keeps them. Callbacks must not consume the
    global RNG if runs are to stay paired.
    """

    name = "callback"

    def on_train_start(self, ctx: RunContext) -> dict | None:
        return None

    def on_step(self, ctx: RunContext) -> None:
        return None

    def on_epoch_end(self, ctx: RunContext) -> dict | None:
        return None

    def on_train_end(self, ctx: RunContext) -> dict | None:
        return None


class Reporter:
    """Progress sink for the CLI (no-op by default)."""

    def sweep_start(self, runs: Sequence[RunConfig], skipped: Sequence[str], out: Path, data: Dataset) -> None: ...

    def run_start(self, config: RunConfig, steps_per_epoch: int, start_epoch: int) -> None: ...

    def step(self, config: RunConfig, epoch: int, step_in_epoch: int, loss: float | None,
             acc: float | None) -> None: ...

    def epoch_end(self, config: RunConfig, entry: dict) -> None: ...

    def run_end(self, config: RunConfig, record: dict) -> None: ...


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_time_s", "eval_time_s", "lr")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             device: torch.device) -> dict:
    """Mean cross-entropy, accuracy and the confusion matrix (``[true][pred]``) over ``batches``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    n = 0
    for x, y in batches:
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
        n += y.shape[0]
    model.train(was_training)
    cm = confusion.view(num_classes, num_classes).cpu()
    correct = int(cm.diag().sum())
    return {"loss": float(loss_sum) / max(n, 1), "acc": correct / max(n, 1), "n": n, "confusion": cm.tolist()}


def _peak_rss_bytes() -> int | None:
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file next to ``path``, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _activation_backend(config: RunConfig, device: torch.device) -> str:
    if config.impl == "torch":
        return "torch-eager"
    if config.impl == "compile":
        return "torch.compile"
    return backend_for(torch.empty(1, device=device))


def train_run(config: RunConfig, data: Dataset, *, callbacks: Sequence[Callback] = (),
              reporter: Reporter | None = None, checkpoint: str | os.PathLike | None = None) -> dict:
    """Train one run on ``data`` (already on ``config.device``) and return its record (see module docstring).

    ``checkpoint``: a path where the state after each epoch is saved atomically; if it exists with the
    same config, training continues from it.
    """
    reporter = reporter or Reporter()
    device = torch.device(config.device)
    info = data.info
    started, t_run = results.timestamp(), time.perf_counter()
    resident, on_cuda = 0, device.type == "cuda"
    if on_cuda:  # what is allocated before the run (the dataset) is not the run's memory
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)

    torch.manual_seed(config.seed)  # model init (and then dropout) stream: the same for every activation
    model = build_model(config.model, config.activation, config.impl, config.act_params, info.shape,
                        info.num_classes, config.depth).to(device)
    optimizer = _make_optimizer(config, model)
    runner = maybe_compile(model, config.impl)
    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
    train_batches = Batcher(data.train, info, config.batch_size, shuffle=True, generator=generator,
                            augment=config.augment)
    val_batches = Batcher(data.val, info, config.eval_batch_size)
    test_batches = Batcher(data.test, info, config.eval_batch_size)
    probe_split = data.val.take(torch.arange(min(PROBE_SIZE, len(data.val)), device=data.val.labels.device))
    probe = (val_batches.prepare(probe_split.images), probe_split.labels)
    ctx = RunContext(config, model, optimizer, device, probe)

    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    diagnostics: dict[str, list] = {cb.name: [] for cb in callbacks}
    timing = {"train_s": 0.0, "eval_s": 0.0, "steps": 0, "images": 0, "warmup_steps": 0, "warmup_s": 0.0,
              "steady_s": 0.0, "steady_images": 0, "steady_steps": 0}
    status, start_epoch = "finished", 0
    saved_for_backward = {"saved_bytes": None, "saved_parameter_bytes": None}
    checkpoint = Path(checkpoint) if checkpoint is not None else None

    def record_event(cb: Callback, event: str, epoch: int, value: dict | None) -> None:
        if value is not None:
            diagnostics[cb.name].append({"event": event, "epoch": epoch, **value})

    if checkpoint is not None and checkpoint.is_file():
        # RNG states must stay CPU tensors; load_state_dict moves weights and optimizer state to the device
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("config") != config.as_dict():
            raise TrainError(f"checkpoint {checkpoint} was made with a different configuration; "
                             "remove it or use another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, diagnostics, start_epoch = state["history"], state["diagnostics"], int(state["epoch"])
        timing.update(state["timing"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["data"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        ctx.step = timing["steps"]
    else:
        for cb in callbacks:
            record_event(cb, "start", 0, cb.on_train_start(ctx))

    steps_per_epoch = len(train_batches)
    reporter.run_start(config, steps_per_epoch, start_epoch)
    warm_left = WARMUP_STEPS
    model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        ctx.epoch = epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        _sync(device)
        t_epoch = t_mark = time.perf_counter()
        steady_start_images = warm_steps = 0
        for i, (x, y) in enumerate(train_batches):
            # What autograd keeps for backward, counted on each epoch's first step (so a resumed run
            # counts too); the hook returns each tensor untouched, the step is the same without it.
            with SavedTensorCounter() if i == 0 else contextlib.nullcontext() as saved:
                logits = runner(x)
                loss = F.cross_entropy(logits, y)
            if i == 0:
                saved_for_backward = {"saved_bytes": saved.total,
                                      "saved_parameter_bytes": saved.total - saved.excluding(model.parameters())}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctx.step += 1
            if callbacks:
                ctx.batch, ctx.loss = (x, y), loss
                for cb in callbacks:
                    cb.on_step(ctx)
            optimizer.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
            if warm_left > 0:
                warm_left -= 1
                if warm_left == 0 or i == steps_per_epoch - 1:
                    _sync(device)
                    now = time.perf_counter()
                    timing["warmup_s"] += now - t_mark
                    warm_steps = i + 1
                    timing["warmup_steps"] += warm_steps
                    t_mark, steady_start_images = now, seen
                    warm_left = 0
            if (i + 1) % PROGRESS_EVERY == 0 or i == steps_per_epoch - 1:
                reporter.step(config, epoch, i + 1, float(loss_sum) / seen, int(correct) / seen)
            else:
                reporter.step(config, epoch, i + 1, None, None)
        _sync(device)
        t_end = time.perf_counter()
        ctx.batch = ctx.loss = None
        timing["train_s"] += t_end - t_epoch
        timing["steady_s"] += t_end - t_mark
        timing["steady_images"] += seen - steady_start_images
        timing["steady_steps"] += steps_per_epoch - warm_steps
        timing["steps"] += steps_per_epoch
        timing["images"] += seen
        train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen

        t_eval = time.perf_counter()
        val = evaluate(runner, val_batches, info.num_classes, device)
        eval_s = time.perf_counter() - t_eval
        timing["eval_s"] += eval_s
        entry = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"],
                 "val_acc": val["acc"], "train_time_s": t_end - t_epoch, "eval_time_s": eval_s,
                 "lr": optimizer.param_groups[0]["lr"]}
        for key in HISTORY_KEYS:
            history[key].append(entry[key])
        for cb in callbacks:
            record_event(cb, "epoch", epoch, cb.on_epoch_end(ctx))
        reporter.epoch_end(config, entry)
        if not math.isfinite(train_loss):
            status = "diverged"
            break
        if checkpoint is not None and epoch < config.epochs:
            _save_checkpoint(checkpoint, {
                "config": config.as_dict(), "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "history": history, "diagnostics": diagnostics,
                "timing": timing, "rng": {"torch": torch.get_rng_state(), "data": generator.get_state(),
                                          "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}})

    for cb in callbacks:
        record_event(cb, "end", ctx.epoch, cb.on_train_end(ctx))
    t_eval = time.perf_counter()
    test = evaluate(runner, test_batches, info.num_classes, device)
    timing["eval_s"] += time.perf_counter() - t_eval
    metrics = stats.classification_metrics(test["confusion"])
    val_accs = history["val_acc"]
    best = max(range(len(val_accs)), key=lambda k: val_accs[k]) if val_accs else None
    final = {"test_loss": test["loss"], "test_acc": test["acc"], "test_n": test["n"],
             **{k: v for k, v in metrics.items() if k != "accuracy"}, "confusion": test["confusion"],
             "val_loss": history["val_loss"][-1] if val_accs else None,
             "val_acc": val_accs[-1] if val_accs else None,
             "best_val_acc": val_accs[best] if best is not None else None,
             "best_val_epoch": history["epoch"][best] if best is not None else None}
    steady_s, steady_images = timing.pop("steady_s"), timing.pop("steady_images")
    steady_steps = timing.pop("steady_steps")
    if steady_images == 0:  # everything was warm-up (tiny runs): fall back to the whole training time
        steady_s, steady_images, steady_steps = timing["train_s"], timing["images"], timing["steps"]
    timing.update({"wall_s": time.perf_counter() - t_run,
                   "train_images_per_s": steady_images / steady_s if steady_s > 0 else None,
                   "step_time_ms": 1000.0 * steady_s / steady_steps if steady_steps else None})
    record = {
        "schema": RUN_SCHEMA,
        "id": config.id,
        "status": status,
        "config": config.as_dict(),
        "env": results.environment(device),
        "backend": _activation_backend(config, device),
        "data": data.describe(),
        "model": {"name": config.model, "parameters": sum(p.numel() for p in model.parameters()),
                  "activation_layers": [n for n, _ in model.activation_layers()], "depth": config.depth},
        "history": history,
        "final": final,
        "timing": timing,
        "memory": {"peak_bytes": torch.cuda.max_memory_allocated(device) - resident if on_cuda else None,
                   "resident_bytes": resident if on_cuda else None,
                   "peak_rss_bytes": _peak_rss_bytes(), **saved_for_backward},
        "diagnostics": diagnostics,
        "resumed_from_epoch": start_epoch,
        "started": started,
        "finished": results.timestamp(),
    }
    reporter.run_end(config, record)
    return record


# --------------------------------------------------------------------------------------------
# Sweeps, resume, summaries
# --------------------------------------------------------------------------------------------
RUN_CSV_FIELDS = ("id", "status", "activation", "act_label", "impl", "seed", "dataset", "model", "epochs",
                  "test_acc", "test_loss", "f1_macro", "precision_macro", "recall_macro", "best_val_acc",
                  "train_images_per_s", "step_time_ms", "train_s", "wall_s", "peak_bytes", "saved_bytes", "device", "backend")


def run_row(record: Mapping) -> dict:
    c, f, t = record["config"], record["final"], record["timing"]
    return {"id": record["id"], "status": record["status"], "activation": c["activation"],
            "act_label": c["act_label"], "impl": c["impl"], "seed": c["seed"], "dataset": c["dataset"],
            "model": c["model"], "epochs": len(record["history"]["epoch"]), "test_acc": f["test_acc"],
            "test_loss": f["test_loss"], "f1_macro": f["f1_macro"], "precision_macro": f["precision_macro"],
            "recall_macro": f["recall_macro"], "best_val_acc": f["best_val_acc"],
            "train_images_per_s": t["train_images_per_s"], "step_time_ms": t["step_time_ms"],
            "train_s": t["train_s"], "wall_s": t["wall_s"], "peak_bytes": record["memory"]["peak_bytes"],
            "saved_bytes": record["memory"].get("saved_bytes"), "device": record["env"]["device"],
            "backend": record["backend"]}


def summarise(records: Sequence[Mapping], baseline: str, confidence: float = 0.95, alpha: float = 0.05) -> list[dict]:
    """One row per (activation label, impl): test accuracy mean ± CI over seeds, best/worst seed, means of
    loss, macro-F1, throughput and step time, peak memory, and the paired test against ``baseline`` (same
    impl, seeds present in both). ``p_holm`` adjusts the p-values of all rows for multiple comparisons;
    ``significant`` is ``p_holm < alpha`` (``None`` where no test was possible)."""
    groups: dict[tuple[str, str], dict[int, Mapping]] = {}
    for r in records:
        c = r["config"]
        groups.setdefault((c["act_label"], c["impl"]), {})[c["seed"]] = r

    def mean_of(rs, fn):
        values = [fn(r) for r in rs if fn(r) is not None]
        return sum(values) / len(values) if values else None

    rows = []
    for (label, impl), by_seed in groups.items():
        seeds = sorted(by_seed)
        accs = [by_seed[s]["final"]["test_acc"] for s in seeds]
        ci = stats.mean_ci(accs, confidence)
        best = max(seeds, key=lambda s: by_seed[s]["final"]["test_acc"])
        worst = min(seeds, key=lambda s: by_seed[s]["final"]["test_acc"])
        rs = [by_seed[s] for s in seeds]
        peaks = [r["memory"]["peak_bytes"] for r in rs if r["memory"]["peak_bytes"] is not None]
        saved = [r["memory"]["saved_bytes"] for r in rs if r["memory"].get("saved_bytes") is not None]
        row = {"act_label": label, "activation": rs[0]["config"]["activation"], "impl": impl, "n": len(seeds),
               "seeds": seeds, "test_acc_mean": ci.mean, "test_acc_ci": ci.half_width, "test_acc_std": ci.std,
               "best_seed": best, "best_acc": by_seed[best]["final"]["test_acc"], "worst_seed": worst,
               "worst_acc": by_seed[worst]["final"]["test_acc"],
               "test_loss_mean": mean_of(rs, lambda r: r["final"]["test_loss"]),
               "f1_macro_mean": mean_of(rs, lambda r: r["final"]["f1_macro"]),
               "precision_macro_mean": mean_of(rs, lambda r: r["final"]["precision_macro"]),
               "recall_macro_mean": mean_of(rs, lambda r: r["final"]["recall_macro"]),
               "train_images_per_s": mean_of(rs, lambda r: r["timing"]["train_images_per_s"]),
               "step_time_ms": mean_of(rs, lambda r: r["timing"]["step_time_ms"]),
               "peak_bytes": max(peaks) if peaks else None,
               "saved_bytes": max(saved) if saved else None,
               "diverged": sum(r["status"] == "diverged" for r in rs),
               "baseline": baseline, "diff": None, "diff_ci": None, "p_value": None, "p_holm": None,
               "significant": None, "paired_n": 0}
        base = groups.get((baseline, impl))
        if base is not None and label != baseline:
            common = [s for s in seeds if s in base]
            if common:
                test = stats.paired_test([by_seed[s]["final"]["test_acc"] for s in common],
                                         [base[s]["final"]["test_acc"] for s in common], confidence)
                row.update(diff=test.mean_diff, diff_ci=test.ci_half_width, p_value=test.p_value,
                           paired_n=test.n)
        rows.append(row)
    tested = [i for i, r in enumerate(rows) if r["p_value"] is not None and not math.isnan(r["p_value"])]
    adjusted = stats.holm([rows[i]["p_value"] for i in tested])
    for i, p in zip(tested, adjusted):
        rows[i]["p_holm"] = p
        rows[i]["significant"] = stats.is_significant(p, alpha)
    for r in rows:  # JSON has no NaN: store "not computable" as null
        for key in ("test_acc_ci", "test_acc_std", "diff_ci", "p_value"):
            if isinstance(r[key], float) and math.isnan(r[key]):
                r[key] = None
    return rows


@dataclass
class SweepResult:
    out: Path
    records: list[dict]
    summary: list[dict]
    ran: list[str]
    skipped: list[str]


def default_out(base: str | os.PathLike = "runs") -> Path:
    return Path(base) / time.strftime("%Y%m%d-%H%M%S")


def _sweep_identity(d: Mapping) -> dict:
    """The parts of a sweep that decide whether a directory can be resumed (activations/impls/seeds may grow)."""
    keep = ("dataset", "model", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "val_size", "subset",
            "augment", "depth", "device", "split_seed", "eval_batch_size")
    return {k: d.get(k) for k in keep}


def find_resumable(sweep: Sweep, base: str | os.PathLike = "runs") -> Path | None:
    """The newest directory under ``base`` whose sweep config matches ``sweep`` (for ``--resume`` without ``--out``)."""
    base = Path(base)
    if not base.is_dir():
        return None
    want = _sweep_identity(sweep.as_dict())
    for candidate in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        try:
            saved = results.read_json(candidate / "config.json")
        except (OSError, ValueError):
            continue
        if saved.get("schema") == SWEEP_SCHEMA and _sweep_identity(saved.get("sweep", {})) == want:
            return candidate
    return None


def _existing_results(out: Path) -> list[Path]:
    found = []
    for sub, pattern in (("runs", "*.json"), ("checkpoints", "*.pt")):
        if (out / sub).is_dir():
            found += sorted((out / sub).glob(pattern))
    return found


def write_summaries(out: Path, records: Sequence[Mapping], baseline: str) -> list[dict]:
    summary = summarise(records, baseline)
    results.write_csv(out / "runs.csv", [run_row(r) for r in records], RUN_CSV_FIELDS)
    results.write_csv(out / "summary.csv", summary)
    results.write_json(out / "summary.json", {"schema": "actkit.train.summary/1", "baseline": baseline,
                                              "rows": summary})
    return summary


def run_sweep(sweep: Sweep, out: str | os.PathLike, *, resume: bool = False, data: Dataset | None = None,
              data_dir: str | os.PathLike | None = None, download: bool = False,
              callbacks: Callable[[RunConfig], Sequence[Callback]] | None = None,
              reporter: Reporter | None = None, checkpoints: bool = True) -> SweepResult:
    """Run every run of ``sweep`` into ``out`` (see the module docstring for the layout and resume rules).

    ``data``: an already loaded dataset (else :func:`actkit.data.load` with ``data_dir``/``download``).
    ``callbacks``: a factory giving fresh callbacks per run.
    """
    reporter = reporter or Reporter()
    out = Path(out)
    existing = _existing_results(out)
    if existing and not resume:
        raise ResultsExistError(f"{out} already holds results ({len(existing)} file(s), e.g. {existing[0].name}); "
                                f"pass --resume to continue that sweep, or choose another --out")
    runs = sweep.runs()
    # Check every finished record before training anything, so a config clash fails fast.
    done: dict[str, dict] = {}
    for cfg in runs:
        path = out / "runs" / f"{cfg.id}.json"
        if path.is_file():
            record = results.read_json(path)
            if record.get("config") != cfg.as_dict():
                raise TrainError(f"{path} was made with a different configuration than this command; "
                                 "use another --out, or rerun with the original options")
            done[cfg.id] = record
    if data is None:
        data = load_dataset(sweep.dataset, data_dir=data_dir, download=download, val_size=sweep.val_size,
                            subset=sweep.subset, split_seed=sweep.split_seed)
    data = data.to(sweep.device)
    out.mkdir(parents=True, exist_ok=True)
    results.write_json(out / "config.json", {"schema": SWEEP_SCHEMA, "sweep": sweep.as_dict(),
                                             "env": results.environment(sweep.device)})
    records = [done[c.id] for c in runs if c.id in done]
    ran: list[str] = []
    reporter.sweep_start([c for c in runs if c.id not in done], list(done), out, data)
    for cfg in runs:
        if cfg.id in done:
            continue
        ckpt = out / "checkpoints" / f"{cfg.id}.pt"
        record = train_run(cfg, data, callbacks=list(callbacks(cfg)) if callbacks else (), reporter=reporter,
                           checkpoint=ckpt if checkpoints else None)
        results.write_json(out / "runs" / f"{cfg.id}.json", record)
        ckpt.unlink(missing_ok=True)
        records.append(record)
        ran.append(cfg.id)
        write_summaries(out, records, sweep.baseline)
    summary = write_summaries(out, records, sweep.baseline)
    return SweepResult(out, records, summary, ran, list(done))
