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

    <out>/config.json              the sweep: {"schema": "actkit.train.sweep/1", "sweep": {...}, "workers": N,
                                   "env": {...}}
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
refused: results are never overwritten. ``config.json`` guards the directory: a command whose
settings differ from it is refused with the differing settings named (only the activations,
implementations, seeds and baseline may change, to grow a finished sweep with ``--resume``).

Several workers, one directory
------------------------------
Under ``torchrun`` (``RANK``/``WORLD_SIZE``) or with ``--shard K/N`` the sweep's planned runs
(in the order of :meth:`Sweep.runs`) are dealt out, run ``i`` to worker ``i mod N``
(:mod:`actkit.distributed`), each worker on its own GPU (``LOCAL_RANK``), all writing into one
``--out``: each run is one worker's, and its record one atomically renamed file. The first worker
creates ``config.json`` (an atomic create-if-absent), the others must match it, in the number of
workers too until every planned run is finished. A worker without ``resume`` refuses only when
records or checkpoints of *its own* runs exist (the others' may already be there when it starts). ``runs.csv`` and the summaries are written only from a complete
sweep, by :func:`assemble`: the worker that finds every planned record on disk after its last run
(workers finishing at once write identical files), or any later ``--resume`` or ``actkit report``.
A killed worker is resumed by rerunning its command with ``--resume``. With ``--parallel data``
every run is instead trained by all processes of the launch (:func:`train_run` ``group``).

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
                     ``train_images_per_s`` and ``step_time_ms`` (steady-state mean);
                     ``load_average`` (the host's 1-minute load average at each epoch's end),
                     ``threads`` (PyTorch's CPU threads) and ``cpu_count``: ``busy_run`` reads them
``memory``           ``peak_bytes``: ``torch.cuda.max_memory_allocated`` during the run minus what was
                     allocated when it started (the device-resident dataset, ``resident_bytes``): the
                     memory the run itself needed (weights, optimizer state, activations, workspace);
                     ``null`` on CPU. ``peak_rss_bytes``: the process's peak resident memory so far
                     (process-wide, so it only grows over a sweep). ``saved_bytes``: what autograd
                     keeps for backward in one training step (distinct storages, counted on the first
                     step of the last epoch, any device; :mod:`actkit.memory`; in a data-parallel
                     run, rank 0's share of the batch), of which ``saved_parameter_bytes`` are the
                     model's own parameters
``diagnostics``      ``{callback name: [event, ...]}``; each event is the dict a :class:`Callback`
                     returned plus ``event`` (``start``/``epoch``/``end``) and ``epoch``
``parallel``         ``mode`` (``none`` or ``data``), ``world_size`` (processes that trained the run),
                     ``backend`` (``gloo``/``nccl``, or null), ``global_batch_size``,
                     ``per_process_batch_size``, ``lr`` (as given: the global batch is the same as
                     one process's), ``sync_batchnorm`` (BatchNorm statistics over the global batch)
``worker``           which worker ran it: ``shard`` (``K/N``), torchrun's ``rank``, ``world_size``,
                     ``local_rank``, ``local_world_size``, and ``host``
``resumed_from_epoch``  0, or the checkpointed epoch this run continued from
``started``, ``finished``  UTC timestamps
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from . import hostload, registry, results, stats
from .backend import backend_for
from .data import Batcher, Dataset, dataset_info, load as load_dataset
from .distributed import Launch, ProcessGroup, Shard, bind_device
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
        bits = _check_saved_bits(spec, bits) if bits is not None else 0
        if bits:  # 0: the exact backward, as if not given
            choice += (("saved_bits", bits),)
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


def run_id(act_label: str, impl: str, seed: int) -> str:
    """A run's id, the name of its record (``runs/<id>.json``) and checkpoint."""
    return f"{act_label}-{impl}-seed{seed}"


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
        return run_id(self.act_label, self.impl, self.seed)

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

    def note(self, text: str) -> None:
        """A message for the user (a dataset download, the runs a worker takes): to stderr by default."""
        print(text, file=sys.stderr, flush=True)


class _Quiet(Reporter):
    """What the processes other than rank 0 of a data-parallel run report: nothing."""

    def note(self, text: str) -> None:
        pass


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
              reporter: Reporter | None = None, checkpoint: str | os.PathLike | None = None,
              group: ProcessGroup | None = None) -> dict:
    """Train one run on ``data`` (already on ``config.device``) and return its record (see module docstring).

    ``checkpoint``: a path where the state after each epoch is saved atomically; if it exists with the
    same config, training continues from it.

    ``group``: train data-parallel with every process of this group (each calls ``train_run`` with
    the same arguments): ``DistributedDataParallel``, ``config.batch_size`` is the global batch, each
    process takes its share of every batch (:class:`actkit.data.Batcher` ``part``) and evaluates its
    share of the validation and test sets; the losses, counts and confusion matrices are summed over
    the processes, so every process returns the record of the whole run (rank 0 saves checkpoints).
    On CUDA, BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch, as in one
    process); PyTorch has no CPU SyncBatchNorm, so on CPU (gloo) each process normalises its share.
    Each process draws its own dropout masks.
    """
    reporter = reporter or Reporter()
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None:  # the current GPU: under torchrun, LOCAL_RANK's
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    _check_divides(config.batch_size, world)
    info = data.info
    started, t_run = results.timestamp(), time.perf_counter()
    resident, on_cuda = 0, device.type == "cuda"
    if on_cuda:  # what is allocated before the run (the dataset) is not the run's memory
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)

    torch.manual_seed(config.seed)  # model init (and then dropout) stream: the same for every activation
    model = build_model(config.model, config.activation, config.impl, config.act_params, info.shape,
                        info.num_classes, config.depth).to(device)
    sync_bn = group is not None and device.type == "cuda"
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if rank > 0:  # the same initial weights on every process, then independent dropout masks per process
        torch.manual_seed(config.seed + (rank << 32))
    optimizer = _make_optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation: alike on every process
    part = (rank, world)
    train_batches = Batcher(data.train, info, config.batch_size, shuffle=True, generator=generator,
                            augment=config.augment, part=part)
    val_batches = Batcher(data.val, info, config.eval_batch_size, part=part)
    test_batches = Batcher(data.test, info, config.eval_batch_size, part=part)
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

    # Every process reads the checkpoint before DistributedDataParallel's first collective (its
    # construction), so rank 0 cannot be writing the next one meanwhile.
    if checkpoint is not None and checkpoint.is_file():
        # RNG states must stay CPU tensors; load_state_dict moves weights and optimizer state to the device
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("config") != config.as_dict():
            raise TrainError(f"checkpoint {checkpoint} was made with a different configuration; "
                             "remove it or use another --out")
        made_by = int(state.get("world_size", 1))
        if made_by != world:
            raise TrainError(f"checkpoint {checkpoint} was made by {made_by} data-parallel process(es), this run "
                             f"has {world}: resume it with {made_by} (or delete the checkpoint to restart that run)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, diagnostics, start_epoch = state["history"], state["diagnostics"], int(state["epoch"])
        timing.update(state["timing"])
        own = state["rng"]["per_rank"][rank] if world > 1 else state["rng"]
        torch.set_rng_state(own["torch"])
        generator.set_state(state["rng"]["data"])
        if device.type == "cuda" and own.get("cuda") is not None:
            torch.cuda.set_rng_state(own["cuda"], device)
        ctx.step = timing["steps"]
    else:
        for cb in callbacks:
            record_event(cb, "start", 0, cb.on_train_start(ctx))
    if group is None:
        runner = eval_runner = maybe_compile(model, config.impl)
    else:
        from torch.nn.parallel import DistributedDataParallel

        runner = maybe_compile(DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                       else None), config.impl)
        # evaluation runs on each process's share with the bare model: no gradient, nothing to synchronise
        eval_runner = maybe_compile(model, config.impl)

    steps_per_epoch = len(train_batches)
    reporter.run_start(config, steps_per_epoch, start_epoch)
    warm_left = WARMUP_STEPS
    model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        ctx.epoch = epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0  # images of this process
        seen_all = 0  # images of all processes
        _sync(device)
        t_epoch = t_mark = time.perf_counter()
        steady_start_images = warm_steps = 0
        for i, (x, y) in enumerate(train_batches):
            batch_all = train_batches.global_size(i)
            # What autograd keeps for backward, counted on each epoch's first step (so a resumed run
            # counts too); the hook returns each tensor untouched, the step is the same without it.
            with SavedTensorCounter() if i == 0 else contextlib.nullcontext() as saved:
                logits = runner(x)
                loss = F.cross_entropy(logits, y)
            if i == 0:
                saved_for_backward = {"saved_bytes": saved.total,
                                      "saved_parameter_bytes": saved.total - saved.excluding(model.parameters())}
            optimizer.zero_grad(set_to_none=True)
            if group is None:
                loss.backward()
            else:
                # DDP averages the processes' gradients; weighting each process's mean loss by its share
                # of the global batch makes that the gradient of the global batch's mean loss (exact when
                # the shares differ in size, as in the last batch of an epoch)
                (loss * (y.shape[0] * world / batch_all)).backward()
            ctx.step += 1
            if callbacks:
                ctx.batch, ctx.loss = (x, y), loss
                for cb in callbacks:
                    cb.on_step(ctx)
            optimizer.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
            seen_all += batch_all
            if warm_left > 0:
                warm_left -= 1
                if warm_left == 0 or i == steps_per_epoch - 1:
                    _sync(device)
                    now = time.perf_counter()
                    timing["warmup_s"] += now - t_mark
                    warm_steps = i + 1
                    timing["warmup_steps"] += warm_steps
                    t_mark, steady_start_images = now, seen_all
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
        timing["steady_images"] += seen_all - steady_start_images
        timing["steady_steps"] += steps_per_epoch - warm_steps
        timing["steps"] += steps_per_epoch
        timing["images"] += seen_all
        # what else ran meanwhile: read against this process's own threads when the rates are judged
        timing.setdefault("load_average", []).append(host_load_average())
        if group is None:
            train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen
        else:
            totals = group.sum(torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(float(seen))]))
            train_loss, train_acc = float(totals[0] / totals[2]), float(totals[1] / totals[2])

        t_eval = time.perf_counter()
        val = evaluate(eval_runner, val_batches, info.num_classes, device, group)
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
            rng = {"torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            if group is not None:  # each process's own dropout stream, so a resumed run is the same run
                rng = {**rng, "per_rank": group.gather(rng)}
            if rank == 0:
                _save_checkpoint(checkpoint, {
                    "config": config.as_dict(), "epoch": epoch, "world_size": world, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "history": history, "diagnostics": diagnostics,
                    "timing": timing, "rng": {**rng, "data": generator.get_state()}})

    for cb in callbacks:
        record_event(cb, "end", ctx.epoch, cb.on_train_end(ctx))
    t_eval = time.perf_counter()
    test = evaluate(eval_runner, test_batches, info.num_classes, device, group)
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
    timing.update({"wall_s": time.perf_counter() - t_run, "threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(),
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
        "parallel": {"mode": "none" if group is None else "data", "world_size": world,
                     "backend": group.backend if group is not None else None,
                     "global_batch_size": config.batch_size, "per_process_batch_size": config.batch_size // world,
                     "lr": config.lr, "sync_batchnorm": sync_bn},
        "resumed_from_epoch": start_epoch,
        "started": started,
        "finished": results.timestamp(),
    }
    reporter.run_end(config, record)
    return record


def host_load_average() -> float | None:
    """The host's 1-minute load average (where the OS reports one), sampled at each epoch's end."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_run(record: Mapping) -> float | None:
    """How much CPU other processes took during a CPU run, when it was enough to skew its throughput.

    The 1-minute load average counts the run's own threads too, so what exceeds them is other work;
    half a core or more of it (at any epoch's end) makes the run's img/s a measurement of the machine's
    load as much as of the activation. Returns the largest such excess load, else None (and None for
    GPU runs, whose timing the host's load barely touches, and for records made before it was kept).
    """
    t = record.get("timing", {})
    loads = [v for v in t.get("load_average") or () if v is not None]
    if not loads or not str(record.get("env", {}).get("device", "")).startswith("cpu"):
        return None
    own = min(t.get("threads") or 1, t.get("cpu_count") or 1)
    excess = max(loads) - own
    return excess if excess >= 0.5 else None


# --------------------------------------------------------------------------------------------
# Sweeps, resume, summaries
# --------------------------------------------------------------------------------------------
RUN_CSV_FIELDS = ("id", "status", "activation", "act_label", "impl", "seed", "dataset", "model", "epochs",
                  "test_acc", "test_loss", "f1_macro", "precision_macro", "recall_macro", "best_val_acc",
                  "train_images_per_s", "step_time_ms", "train_s", "wall_s", "peak_bytes", "saved_bytes", "device", "backend",
                  "load_average_max", "threads", "cpu_count")
"""The last three let a report read from runs.csv alone still say whether the host was busy (:func:`busy_run`)."""


def run_row(record: Mapping) -> dict:
    c, f, t = record["config"], record["final"], record["timing"]
    loads = [v for v in t.get("load_average") or () if v is not None]
    return {"id": record["id"], "status": record["status"], "activation": c["activation"],
            "act_label": c["act_label"], "impl": c["impl"], "seed": c["seed"], "dataset": c["dataset"],
            "model": c["model"], "epochs": len(record["history"]["epoch"]), "test_acc": f["test_acc"],
            "test_loss": f["test_loss"], "f1_macro": f["f1_macro"], "precision_macro": f["precision_macro"],
            "recall_macro": f["recall_macro"], "best_val_acc": f["best_val_acc"],
            "train_images_per_s": t["train_images_per_s"], "step_time_ms": t["step_time_ms"],
            "train_s": t["train_s"], "wall_s": t["wall_s"], "peak_bytes": record["memory"]["peak_bytes"],
            "saved_bytes": record["memory"].get("saved_bytes"), "device": record["env"]["device"],
            "backend": record["backend"], "load_average_max": max(loads, default=None),
            "threads": t.get("threads"), "cpu_count": t.get("cpu_count")}


def summarise(records: Sequence[Mapping], baseline: str, confidence: float = 0.95, alpha: float = 0.05) -> list[dict]:
    """One row per (activation label, impl): test accuracy mean ± CI over seeds, best/worst seed, means of
    loss, macro-F1, throughput and step time, peak memory, and the paired test against ``baseline`` (same
    impl, seeds present in both). ``p_holm`` adjusts the p-values of all rows for multiple comparisons;
    ``significant`` is ``p_holm < alpha`` (``None`` where no test was possible). ``diff_sd`` is the SD of the
    per-seed differences and ``detectable_diff`` the smallest difference the test detects with 80% power at
    ``alpha`` (:func:`actkit.stats.detectable_for_pairs`; None with ``detectable_note`` saying why);
    ``busy_load``, ``load_average_max`` and ``load_recorded`` say whether the host was busy while the
    throughput was measured (:func:`actkit.hostload.group_load`)."""
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
               "significant": None, "paired_n": 0, "diff_sd": None, "detectable_diff": None,
               "detectable_note": None, **hostload.group_load(rs)}
        base = groups.get((baseline, impl))
        if base is not None and label != baseline:
            common = [s for s in seeds if s in base]
            if common:
                ours = [by_seed[s]["final"]["test_acc"] for s in common]
                theirs = [base[s]["final"]["test_acc"] for s in common]
                test = stats.paired_test(ours, theirs, confidence)
                row.update(diff=test.mean_diff, diff_ci=test.ci_half_width, p_value=test.p_value,
                           paired_n=test.n)
                power = stats.detectable_for_pairs(ours, theirs, alpha)  # the smallest difference this test sees
                row.update(diff_sd=power.sd, detectable_diff=power.effect, detectable_note=power.reason)
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
    """The records of this process's runs; for a sweep spread over workers, of every planned run finished."""
    summary: list[dict]
    """Empty while planned runs are missing (they are other workers')."""
    ran: list[str]
    skipped: list[str]
    worker: Shard = field(default_factory=Shard)
    missing: list[str] = field(default_factory=list)
    """Planned runs without a record when this process finished."""

    @property
    def complete(self) -> bool:
        return not self.missing


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


# --------------------------------------------------------------------------------------------
# Sweeps over several workers: the plan, the settings guard, assembly
# --------------------------------------------------------------------------------------------
PARALLEL_MODES = ("none", "data")
PLAN_KEYS = ("activations", "impls", "seeds", "baseline")
"""Sweep settings that may change when a finished sweep grows (``--resume`` with more activations or seeds);
every other setting of a sweep directory is fixed."""


def _run_ids(sweep: Mapping) -> list[str]:
    """The planned runs' ids, in the order of :meth:`Sweep.runs`, from a sweep's settings (``config.json``)."""
    labels = [a["label"] for a in sweep["activations"]]
    return [run_id(label, impl, seed) for seed in sweep["seeds"] for label in labels for impl in sweep["impls"]]


def _read_config(out: Path) -> dict | None:
    path = out / "config.json"
    if not path.is_file():
        return None
    try:
        saved = results.read_json(path)
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path} cannot be read as the config of an actkit train sweep ({exc}); "
                         "use another --out") from None
    if not isinstance(saved, dict) or saved.get("schema") != SWEEP_SCHEMA or not isinstance(saved.get("sweep"), dict):
        raise TrainError(f"{path} is not the config of an actkit train sweep (schema {SWEEP_SCHEMA}); "
                         "use another --out")
    return saved


def _shown(key: str, value) -> str:
    if key == "activations" and isinstance(value, list):
        return ",".join(str(a.get("label")) for a in value)
    return json.dumps(value)


def _check_settings(out: Path, saved: Mapping, sweep: Sweep, workers: int) -> bool:
    """Refuse a sweep whose settings clash with those ``out`` was made with (``saved``, its ``config.json``),
    naming the settings.

    Returns whether ``config.json`` must be replaced: the planned runs grew (or the baseline changed),
    which one process may do with ``--resume``, and workers of a shared sweep only once every run of
    the saved plan is finished (until then another worker may still be dealing out that plan). The
    number of workers the runs are dealt among may change only then too: dealt among another number,
    some runs would be trained twice and others by nobody.
    """
    theirs = saved["sweep"]
    mine = json.loads(json.dumps(sweep.as_dict()))
    differ = [k for k in dict.fromkeys([*theirs, *mine]) if theirs.get(k) != mine.get(k)]
    fixed = [k for k in differ if k not in PLAN_KEYS]
    what = "; ".join(f"{k} is {_shown(k, theirs.get(k))} there, {_shown(k, mine.get(k))} here"
                     for k in (fixed or differ))
    if fixed:
        raise TrainError(f"{out} holds a sweep with a different configuration ({what}): every worker of a sweep, "
                         "and --resume, must use the same settings; give a different sweep another --out")
    dealt = saved.get("workers")
    dealt = dealt if isinstance(dealt, int) else workers  # a config.json from before the count was kept
    if (differ and workers > 1) or dealt != workers:
        if not all((out / "runs" / f"{i}.json").is_file() for i in _run_ids(theirs)):
            if dealt != workers:
                raise TrainError(
                    f"{out} holds an unfinished sweep dealt out among {dealt} worker(s), and this command is one of "
                    f"{workers} (workers is {dealt} there, {workers} here): dealt out anew, some runs would be "
                    f"trained twice and some never; rerun each of the {dealt} workers' commands with --resume "
                    f"(--shard K/{dealt}, or torchrun with as many processes)")
            raise TrainError(f"{out} holds an unfinished sweep with other settings ({what}): every worker of a sweep "
                             "must use the same settings (a sweep may grow, with more activations or seeds, once all "
                             "its runs are finished)")
    return bool(differ) or dealt != workers


def _write_config(out: Path, sweep: Sweep, saved: Mapping | None, replace: bool, workers: int) -> None:
    payload = {"schema": SWEEP_SCHEMA, "sweep": sweep.as_dict(), "workers": workers,
               "env": results.environment(sweep.device)}
    if saved is None:
        if results.create_json(out / "config.json", payload):
            return
        # another worker made it since we looked: the same check as for one found at the start
        replace = _check_settings(out, _read_config(out), sweep, workers)
    if replace:
        results.write_json(out / "config.json", payload)


def _check_out(out: Path) -> None:
    """``out`` must be a directory we can write into, or creatable in one."""
    for place in (out, *out.parents):
        if place.exists():
            if not place.is_dir():
                raise TrainError(f"--out {out}: {place} is an existing file, not a directory; "
                                 "give a directory for the results")
            if not os.access(place, os.W_OK | os.X_OK):
                raise TrainError(f"--out {out}: cannot write into {place} (permission denied); "
                                 "give a writable directory")
            return


def _check_divides(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise TrainError(f"--batch-size {batch_size} is not divisible by the {world} processes of --parallel data: "
                         f"the batch size is global (each process takes batch/{world}); use a multiple of {world}")


@dataclass
class SweepState:
    """What :func:`assemble` found in a sweep directory."""

    out: Path
    records: list[dict]
    """The planned runs' records found, in the sweep's order."""
    missing: list[str]
    summary: list[dict]
    """Empty while runs are missing."""

    @property
    def complete(self) -> bool:
        return not self.missing


def assemble(out: str | os.PathLike, *, write: bool = True) -> SweepState:
    """Read the records of every planned run of the sweep in ``out`` (``config.json``) and, once none is
    missing, write ``runs.csv``, ``summary.csv`` and ``summary.json`` from them.

    Whoever finds the sweep complete assembles it: the last worker to finish, a later ``--resume`` or
    ``actkit report``. Each file is written atomically and computed from the same records in the same
    order, so workers finishing at once write the same bytes; nobody writes a partial summary that
    could land after a complete one.
    """
    out = Path(out)
    saved = _read_config(out)
    if saved is None:
        raise TrainError(f"{out} has no config.json: not an output directory of actkit train")
    records, missing = [], []
    for run_id in _run_ids(saved["sweep"]):
        path = out / "runs" / f"{run_id}.json"
        if not path.is_file():
            missing.append(run_id)
            continue
        try:
            records.append(results.read_json(path))
        except ValueError as exc:
            raise TrainError(f"{path} is not a valid run record ({exc}); delete it and rerun with --resume") from None
    summary: list[dict] = []
    if not missing:
        baseline = saved["sweep"]["baseline"]
        summary = write_summaries(out, records, baseline) if write else summarise(records, baseline)
    return SweepState(out, records, missing, summary)


# --------------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------------
def run_sweep(sweep: Sweep, out: str | os.PathLike, *, resume: bool = False, data: Dataset | None = None,
              data_dir: str | os.PathLike | None = None, download: bool | None = None,
              callbacks: Callable[[RunConfig], Sequence[Callback]] | None = None,
              reporter: Reporter | None = None, checkpoints: bool = True, shard: Shard | None = None,
              parallel: str = "none", launch: Launch | None = None) -> SweepResult:
    """Run the runs of ``sweep`` into ``out`` (see the module docstring for the layout and resume rules).

    ``data``: an already loaded dataset (else :func:`actkit.data.load` with ``data_dir``/``download``).
    ``callbacks``: a factory giving fresh callbacks per run.

    Several processes (:mod:`actkit.distributed`): ``launch`` is where this process sits (default:
    torchrun's environment variables; one process without them). With ``parallel="none"`` the
    planned runs are dealt out among the ``shard.within(launch)`` workers, each on its own GPU,
    all writing into ``out``; the one that finds every planned run finished writes the summaries.
    With ``parallel="data"`` all processes of the launch train every run together
    (:func:`train_run` ``group``), rank 0 writes, and ``shard`` alone splits the sweep.
    """
    out = Path(out)
    _check_out(out)
    if parallel not in PARALLEL_MODES:
        raise TrainError(f"unknown parallel mode {parallel!r}; choose {' or '.join(PARALLEL_MODES)}")
    launch = launch if launch is not None else Launch.from_env()
    shard = shard if shard is not None else Shard()
    group = None
    if parallel == "data":
        _check_divides(sweep.batch_size, launch.world_size)
        bind_device(sweep.device, launch)
        group = ProcessGroup(sweep.device, launch)
        _check_divides(sweep.batch_size, group.world_size)
    try:
        return _run_sweep(sweep, out, resume=resume, data=data, data_dir=data_dir, download=download,
                          callbacks=callbacks, reporter=reporter or Reporter(), checkpoints=checkpoints,
                          workers=shard if group is not None else shard.within(launch), launch=launch, group=group)
    finally:
        if group is not None:
            group.close()


def _run_sweep(sweep: Sweep, out: Path, *, resume: bool, data: Dataset | None, data_dir, download: bool | None,
               callbacks, reporter: Reporter, checkpoints: bool, workers: Shard, launch: Launch,
               group: ProcessGroup | None) -> SweepResult:
    writer = group is None or group.rank == 0
    if not writer:
        reporter = _Quiet()
    shared = workers.count > 1
    runs = sweep.runs()
    mine = [c for i, c in enumerate(runs) if workers.owns(i)]
    saved = _read_config(out)
    replace_config = saved is not None and _check_settings(out, saved, sweep, workers.count)
    if not resume:
        # A worker of a shared sweep looks only at its own runs: the others' records may already be there.
        existing = (_existing_results(out) if not shared else
                    [p for c in mine for p in (out / "runs" / f"{c.id}.json", out / "checkpoints" / f"{c.id}.pt")
                     if p.is_file()])
        if existing:
            whose = "" if not shared else f" of worker {workers}'s runs"
            raise ResultsExistError(f"{out} already holds results{whose} ({len(existing)} file(s), e.g. "
                                    f"{existing[0].name}); pass --resume to continue that sweep, or choose another --out")
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
                            subset=sweep.subset, split_seed=sweep.split_seed, log=reporter.note)
    if group is None:
        bind_device(sweep.device, launch)
    data = data.to(sweep.device)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if writer:
        _write_config(out, sweep, saved, replace_config, workers.count)
    if shared:
        reporter.note(f"Worker {workers}: {len(mine)} of the sweep's {len(runs)} runs are this worker's "
                      f"(run i goes to worker i mod {workers.count}).")
    if group is not None:
        reporter.note(f"Data-parallel over {group.world_size} processes ({group.backend}): global batch "
                      f"{sweep.batch_size} = {group.world_size} x {sweep.batch_size // group.world_size}, lr {sweep.lr:g}.")
    finished = {c.id: done[c.id] for c in mine if c.id in done}
    skipped = list(finished)
    ran: list[str] = []
    worker = {"shard": str(workers), **launch.as_dict(), "host": platform.node()}
    reporter.sweep_start([c for c in mine if c.id not in done], skipped, out, data)

    def in_order() -> list[dict]:
        return [finished[c.id] for c in mine if c.id in finished]

    for cfg in mine:
        if cfg.id in done:
            continue
        ckpt = out / "checkpoints" / f"{cfg.id}.pt"
        record = train_run(cfg, data, callbacks=list(callbacks(cfg)) if callbacks else (), reporter=reporter,
                           checkpoint=ckpt if checkpoints else None, group=group)
        record["worker"] = worker
        if writer:
            results.write_json(out / "runs" / f"{cfg.id}.json", record)
            ckpt.unlink(missing_ok=True)
        finished[cfg.id] = record
        ran.append(cfg.id)
        if writer and not shared:
            write_summaries(out, in_order(), sweep.baseline)
    if not shared:
        records = in_order()
        summary = write_summaries(out, records, sweep.baseline) if writer else summarise(records, sweep.baseline)
        return SweepResult(out, records, summary, ran, skipped, workers)
    state = assemble(out, write=writer)
    return SweepResult(out, state.records, state.summary, ran, skipped, workers, state.missing)
