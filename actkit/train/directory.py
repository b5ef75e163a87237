"""The sweep directory (``--out``): its ``config.json`` guard, the planned runs' ids, the search for a
directory to resume, and the assembly of ``runs.csv`` and the summaries from a complete sweep.
Every file is written atomically (:mod:`actkit.results`)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .. import results
from ..runs import SUMMARY_SCHEMA, SWEEP_SCHEMA
from .config import Sweep, TrainError, run_id
from .records import RUN_CSV_FIELDS, run_row, summarise

PLAN_KEYS = ("activations", "impls", "seeds", "baseline")
"""Sweep settings that may change when a finished sweep grows (``--resume`` with more activations or seeds);
every other setting of a sweep directory is fixed."""


def record_path(out: Path, rid: str) -> Path:
    return out / "runs" / f"{rid}.json"


def checkpoint_path(out: Path, rid: str) -> Path:
    return out / "checkpoints" / f"{rid}.pt"


def planned_ids(sweep: Mapping) -> list[str]:
    """The planned runs' ids, in the order of :meth:`Sweep.runs`, from a sweep's settings (``config.json``)."""
    labels = [a["label"] for a in sweep["activations"]]
    return [run_id(label, impl, seed) for seed in sweep["seeds"] for label in labels for impl in sweep["impls"]]


def check_out(out: Path) -> None:
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


def existing_results(out: Path) -> list[Path]:
    found = []
    for sub, pattern in (("runs", "*.json"), ("checkpoints", "*.pt")):
        if (out / sub).is_dir():
            found += sorted((out / sub).glob(pattern))
    return found


# -- config.json ----------------------------------------------------------------------------------
def read_config(out: Path) -> dict | None:
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


def check_settings(out: Path, saved: Mapping, sweep: Sweep, workers: int) -> bool:
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
        if not all(record_path(out, i).is_file() for i in planned_ids(theirs)):
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


def write_config(out: Path, sweep: Sweep, saved: Mapping | None, replace: bool, workers: int) -> None:
    payload = {"schema": SWEEP_SCHEMA, "sweep": sweep.as_dict(), "workers": workers,
               "env": results.environment(sweep.device)}
    if saved is None:
        if results.create_json(out / "config.json", payload):
            return
        # another worker made it since we looked: the same check as for one found at the start
        replace = check_settings(out, read_config(out), sweep, workers)
    if replace:
        results.write_json(out / "config.json", payload)


# -- resuming without --out -----------------------------------------------------------------------
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


# -- assembly -------------------------------------------------------------------------------------
def write_summaries(out: Path, records: Sequence[Mapping], baseline: str) -> list[dict]:
    summary = summarise(records, baseline)
    results.write_csv(out / "runs.csv", [run_row(r) for r in records], RUN_CSV_FIELDS)
    results.write_csv(out / "summary.csv", summary)
    results.write_json(out / "summary.json", {"schema": SUMMARY_SCHEMA, "baseline": baseline, "rows": summary})
    return summary


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
    saved = read_config(out)
    if saved is None:
        raise TrainError(f"{out} has no config.json: not an output directory of actkit train")
    records, missing = [], []
    for rid in planned_ids(saved["sweep"]):
        path = record_path(out, rid)
        if not path.is_file():
            missing.append(rid)
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
