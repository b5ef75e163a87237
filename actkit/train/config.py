"""What a sweep runs: :class:`Sweep` (one ``actkit train`` command) and its :class:`RunConfig` runs.

Options are checked when a sweep is made, so a bad value fails before any data is loaded; the
activations come from :func:`actkit.selection.parse_activations` (what fills the models' slots),
the device from :func:`actkit.selection.parse_device`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from .. import selection
from ..data import dataset_info
from ..models import IMPLS, check_impl, check_model
from ..selection import ActChoice


class TrainError(ValueError):
    """A training request that cannot run as given (bad option values, conflicting results)."""


class ResultsExistError(TrainError):
    """The output directory already holds results (and ``resume`` was not asked for)."""


def parse_activations(text: str | Sequence[str], saved_bits: int | None = None,
                      saves: str | None = None, left_out: list[str] | None = None) -> list[ActChoice]:
    """The activations a sweep trains: ``"relu,leaky_relu:negative_slope=0.1,gelu:saved_bits=2,elu:saves=y"``;
    ``all``: every trainable pointwise one. ``saved_bits``: the few-bit backward for every elementwise
    one that does not say otherwise (``--saved-bits``); activations without one (learnable, identity) are
    refused when named, and left out of ``all``, their names appended to ``left_out``. ``saves``: the
    save policy of every elementwise one without a few-bit backward (``--saves``)."""
    return selection.parse_activations(text, selection.TRAINABLE, saved_bits=saved_bits, saves=saves,
                                       error=TrainError, left_out=left_out)


def run_id(act_label: str, impl: str, seed: int) -> str:
    """A run's id, the name of its record (``runs/<id>.json``) and checkpoint."""
    return f"{act_label}-{impl}-seed{seed}"


def check_divides(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise TrainError(f"--batch-size {batch_size} is not divisible by the {world} processes of --parallel data: "
                         f"the batch size is global (each process takes batch/{world}); use a multiple of {world}")


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
        self.device = selection.parse_device(self.device, error=TrainError)
        if self.augment is None:
            self.augment = dataset_info(self.dataset).augment
        self._check_numbers()
        few_bit = [a.label for a in self.activations if a.saved_bits]
        if few_bit and set(self.impls) - {"actkit"}:
            raise TrainError(f"{', '.join(few_bit)}: a few-bit backward is actkit's; run it with --impl actkit "
                             f"(PyTorch's ops have none), not {', '.join(i for i in self.impls if i != 'actkit')}")
        policies = [a.label for a in self.activations if a.saves]
        if policies and set(self.impls) - {"actkit"}:
            raise TrainError(f"{', '.join(policies)}: a save policy is actkit's; run it with --impl actkit "
                             f"(PyTorch's ops keep what they keep), not "
                             f"{', '.join(i for i in self.impls if i != 'actkit')}")
        self.baseline = self._baseline()

    def _check_numbers(self) -> None:
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

    def _baseline(self) -> str:
        labels = [a.label for a in self.activations]
        if self.baseline is None:
            return "relu" if "relu" in labels else labels[0]
        base = parse_activations(self.baseline)
        if len(base) != 1 or base[0].label not in labels:
            raise TrainError(f"baseline {self.baseline!r} is not one of the activations run: {', '.join(labels)}")
        return base[0].label

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
