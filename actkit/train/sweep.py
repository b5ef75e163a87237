"""Running a sweep into its directory, alone or as one of several workers.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``) or with ``--shard K/N`` the planned runs are dealt out,
run ``i`` to worker ``i mod N`` (:mod:`actkit.distributed`), all writing into one ``--out``; with
``parallel="data"`` every run is instead trained by all processes of the launch (:func:`train_run`
``group``) and rank 0 writes.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import results
from ..data import Dataset, load as load_dataset
from ..distributed import Launch, ProcessGroup, Shard, bind_device
from . import directory
from .callbacks import Callback, Quiet, Reporter
from .config import ResultsExistError, RunConfig, Sweep, TrainError, check_divides
from .loop import train_run
from .records import summarise

PARALLEL_MODES = ("none", "data")


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


def run_sweep(sweep: Sweep, out: str | os.PathLike, *, resume: bool = False, data: Dataset | None = None,
              data_dir: str | os.PathLike | None = None, download: bool | None = None,
              callbacks: Callable[[RunConfig], Sequence[Callback]] | None = None,
              reporter: Reporter | None = None, checkpoints: bool = True, shard: Shard | None = None,
              parallel: str = "none", launch: Launch | None = None) -> SweepResult:
    """Run the runs of ``sweep`` into ``out`` (see :mod:`actkit.train` for the layout and resume rules).

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
    directory.check_out(out)
    if parallel not in PARALLEL_MODES:
        raise TrainError(f"unknown parallel mode {parallel!r}; choose {' or '.join(PARALLEL_MODES)}")
    launch = launch if launch is not None else Launch.from_env()
    shard = shard if shard is not None else Shard()
    group = None
    if parallel == "data":
        check_divides(sweep.batch_size, launch.world_size)
        bind_device(sweep.device, launch)
        group = ProcessGroup(sweep.device, launch)
        check_divides(sweep.batch_size, group.world_size)
    try:
        plan = _Plan(sweep, out, shard if group is not None else shard.within(launch), launch, group,
                     reporter or Reporter())
        return plan.run(resume=resume, data=data, data_dir=data_dir, download=download, callbacks=callbacks,
                        checkpoints=checkpoints)
    finally:
        if group is not None:
            group.close()


class _Plan:
    """This process's share of a sweep in its directory, and what is already done there."""

    def __init__(self, sweep: Sweep, out: Path, workers: Shard, launch: Launch, group: ProcessGroup | None,
                 reporter: Reporter):
        self.sweep, self.out, self.workers, self.launch, self.group = sweep, out, workers, launch, group
        self.writer = group is None or group.rank == 0
        self.reporter = reporter if self.writer else Quiet()
        self.shared = workers.count > 1
        self.runs = sweep.runs()
        self.mine = [c for i, c in enumerate(self.runs) if workers.owns(i)]

    def run(self, *, resume: bool, data: Dataset | None, data_dir, download: bool | None, callbacks,
            checkpoints: bool) -> SweepResult:
        saved = directory.read_config(self.out)
        replace_config = saved is not None and directory.check_settings(self.out, saved, self.sweep,
                                                                        self.workers.count)
        if not resume:
            self._refuse_existing()
        done = self._finished()
        data = self._prepare(data, data_dir, download, saved, replace_config)
        finished = {c.id: done[c.id] for c in self.mine if c.id in done}
        skipped = list(finished)
        self.reporter.sweep_start([c for c in self.mine if c.id not in done], skipped, self.out, data)
        ran = self._train(data, done, finished, callbacks, checkpoints)
        records = [finished[c.id] for c in self.mine if c.id in finished]
        if not self.shared:
            baseline = self.sweep.baseline
            summary = (directory.write_summaries(self.out, records, baseline) if self.writer
                       else summarise(records, baseline))
            return SweepResult(self.out, records, summary, ran, skipped, self.workers)
        state = directory.assemble(self.out, write=self.writer)
        return SweepResult(self.out, state.records, state.summary, ran, skipped, self.workers, state.missing)

    def _refuse_existing(self) -> None:
        """Without ``resume``, results already there are refused (a worker of a shared sweep looks only
        at its own runs: the others' records may already be there)."""
        out = self.out
        existing = (directory.existing_results(out) if not self.shared else
                    [p for c in self.mine for p in (directory.record_path(out, c.id),
                                                    directory.checkpoint_path(out, c.id)) if p.is_file()])
        if existing:
            whose = "" if not self.shared else f" of worker {self.workers}'s runs"
            raise ResultsExistError(f"{out} already holds results{whose} ({len(existing)} file(s), e.g. "
                                    f"{existing[0].name}); pass --resume to continue that sweep, or choose another --out")

    def _finished(self) -> dict[str, dict]:
        """Every finished record of the plan, checked before training anything, so a config clash fails fast."""
        done: dict[str, dict] = {}
        for cfg in self.runs:
            path = directory.record_path(self.out, cfg.id)
            if path.is_file():
                record = results.read_json(path)
                if record.get("config") != cfg.as_dict():
                    raise TrainError(f"{path} was made with a different configuration than this command; "
                                     "use another --out, or rerun with the original options")
                done[cfg.id] = record
        return done

    def _prepare(self, data: Dataset | None, data_dir, download: bool | None, saved: dict | None,
                 replace_config: bool) -> Dataset:
        """Load the data onto the device, create the directory and its ``config.json``; say what this process does."""
        sweep, out, workers, group = self.sweep, self.out, self.workers, self.group
        if data is None:
            data = load_dataset(sweep.dataset, data_dir=data_dir, download=download, val_size=sweep.val_size,
                                subset=sweep.subset, split_seed=sweep.split_seed, log=self.reporter.note)
        if group is None:
            bind_device(sweep.device, self.launch)
        data = data.to(sweep.device)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainError(f"cannot create --out {out}: {exc.strerror or exc}") from None
        if self.writer:
            directory.write_config(out, sweep, saved, replace_config, workers.count)
        if self.shared:
            self.reporter.note(f"Worker {workers}: {len(self.mine)} of the sweep's {len(self.runs)} runs are this "
                               f"worker's (run i goes to worker i mod {workers.count}).")
        if group is not None:
            self.reporter.note(f"Data-parallel over {group.world_size} processes ({group.backend}): global batch "
                               f"{sweep.batch_size} = {group.world_size} x {sweep.batch_size // group.world_size}, "
                               f"lr {sweep.lr:g}.")
        return data

    def _train(self, data: Dataset, done: dict, finished: dict, callbacks, checkpoints: bool) -> list[str]:
        """Train this process's unfinished runs, writing each record as it finishes; returns their ids."""
        out, ran = self.out, []
        worker = {"shard": str(self.workers), **self.launch.as_dict(), "host": platform.node()}
        for cfg in self.mine:
            if cfg.id in done:
                continue
            ckpt = directory.checkpoint_path(out, cfg.id)
            record = train_run(cfg, data, callbacks=list(callbacks(cfg)) if callbacks else (),
                               reporter=self.reporter, checkpoint=ckpt if checkpoints else None, group=self.group)
            record["worker"] = worker
            if self.writer:
                results.write_json(directory.record_path(out, cfg.id), record)
                ckpt.unlink(missing_ok=True)
            finished[cfg.id] = record
            ran.append(cfg.id)
            if self.writer and not self.shared:
                directory.write_summaries(out, [finished[c.id] for c in self.mine if c.id in finished],
                                          self.sweep.baseline)
        return ran
