"""Hooks into a run: :class:`Callback` (diagnostics recorded in the run record) and :class:`Reporter`
(progress for the command line). :mod:`actkit.diagnostics` holds the callbacks actkit ships."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..data import Dataset
from .config import RunConfig


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


class Quiet(Reporter):
    """What the processes other than rank 0 of a data-parallel run report: nothing."""

    def note(self, text: str) -> None:
        pass
