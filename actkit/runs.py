"""Reading saved training results back: the run records of ``actkit train`` and their aggregates.

:func:`load` reads a sweep directory (``<dir>/runs/*.json``, plus ``<dir>/config.json`` for the
baseline) or a directory of run records, or one record file. A sweep directory whose run records
were not kept (only ``runs.csv``, ``summary.json`` and ``config.json`` committed) is read from
``runs.csv``: final metrics, throughput and memory per run, but no histories or diagnostics
(:attr:`RunSet.from_table`). Records must carry the schema
``actkit.train.run/1`` (see :mod:`actkit.train`; the schema names are kept here, where records are
read, and :mod:`actkit.train` writes them). Aggregates are computed from the records,
never copied from the CSV/summary files, so the figures and the report always agree with the
per-run data:

* :meth:`RunSet.curves`: per-epoch mean and 95% CI across seeds of the history series;
* :meth:`RunSet.summary`: per (activation, impl) test accuracy mean ± CI and the paired test
  against the baseline (:func:`actkit.train.summarise`, the same table ``actkit train`` prints);
* :meth:`RunSet.versus_best`: paired tests of every activation against the best one
  (Holm-adjusted), the "tied with the best / significantly worse" verdicts;
* :meth:`RunSet.gradient_flow` and :meth:`RunSet.dead_units`: the recorded diagnostics,
  averaged over seeds.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from . import stats

RUN_SCHEMA = "actkit.train.run/1"
"""A run record, ``<out>/runs/<run id>.json`` (its fields: :mod:`actkit.train`)."""
SWEEP_SCHEMA = "actkit.train.sweep/1"
"""A sweep directory's ``config.json``."""
SUMMARY_SCHEMA = "actkit.train.summary/1"
"""A sweep's ``summary.json``."""
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_time_s", "eval_time_s", "lr")
"""The per-epoch lists of a run record's ``history``, all of one length."""


class RunsError(ValueError):
    """The given path holds no readable training results."""


def _read(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise RunsError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise RunsError(f"cannot read {path}: {exc.strerror}") from None


@dataclass
class RunSet:
    """The run records of one sweep (same dataset, model and hyper-parameters)."""

    source: Path
    records: list[dict]
    baseline: str
    sweep: dict = field(default_factory=dict)

    # -- what is in it -------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Activation labels in sweep order (first appearance)."""
        return list(dict.fromkeys(r["config"]["act_label"] for r in self.records))

    @property
    def impls(self) -> list[str]:
        order = {"actkit": 0, "torch": 1, "compile": 2}
        found = dict.fromkeys(r["config"]["impl"] for r in self.records)
        return sorted(found, key=lambda i: order.get(i, 9))

    @property
    def primary_impl(self) -> str:
        """``actkit`` when it was run, else the first implementation: the one accuracy findings use."""
        return self.impls[0]

    @property
    def seeds(self) -> list[int]:
        return sorted({r["config"]["seed"] for r in self.records})

    def select(self, label: str | None = None, impl: str | None = None) -> list[dict]:
        return [r for r in self.records
                if (label is None or r["config"]["act_label"] == label)
                and (impl is None or r["config"]["impl"] == impl)]

    @property
    def first(self) -> dict:
        return self.records[0]

    def describe(self) -> dict:
        """Dataset, model, epochs, device and versions, from the first record."""
        c, env = self.first["config"], self.first.get("env", {})
        return {"dataset": c["dataset"], "model": c["model"], "depth": c.get("depth", 0),
                "epochs": c["epochs"], "batch_size": c["batch_size"], "lr": c["lr"], "optimizer": c["optimizer"],
                "subset": c.get("subset"), "device": env.get("device", c.get("device")),
                "device_name": env.get("device_name"), "torch": env.get("torch"), "triton": env.get("triton"),
                "actkit": env.get("actkit"), "backends": sorted({r.get("backend", "?") for r in self.records}),
                "data": self.first.get("data", {}), "runs": len(self.records), "seeds": self.seeds}

    # -- aggregates ----------------------------------------------------------------------------
    def curves(self, label: str, impl: str, series: str, confidence: float = 0.95) -> dict:
        """``{"epoch": [...], "mean": [...], "low": [...], "high": [...], "n": [...]}`` across seeds.

        The band is the ``confidence`` interval of the mean (Student t); with one seed it
        collapses onto the mean.
        """
        by_epoch: dict[int, list[float]] = {}
        for r in self.select(label, impl):
            h = r["history"]
            for epoch, value in zip(h["epoch"], h[series]):
                if value is not None and math.isfinite(value):
                    by_epoch.setdefault(int(epoch), []).append(float(value))
        out = {"epoch": [], "mean": [], "low": [], "high": [], "n": []}
        for epoch in sorted(by_epoch):
            ci = stats.mean_ci(by_epoch[epoch], confidence)
            half = 0.0 if math.isnan(ci.half_width) else ci.half_width
            out["epoch"].append(epoch)
            out["mean"].append(ci.mean)
            out["low"].append(ci.mean - half)
            out["high"].append(ci.mean + half)
            out["n"].append(ci.n)
        return out

    def metric(self, label: str, impl: str, fn, confidence: float = 0.95) -> stats.MeanCI | None:
        """Mean ± CI over seeds of ``fn(record)`` (records where it is None are left out)."""
        values = [fn(r) for r in self.select(label, impl)]
        values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        return stats.mean_ci(values, confidence) if values else None

    def accuracy(self, label: str, impl: str, confidence: float = 0.95) -> stats.MeanCI | None:
        return self.metric(label, impl, lambda r: r["final"]["test_acc"], confidence)

    def throughput(self, label: str, impl: str, confidence: float = 0.95) -> stats.MeanCI | None:
        return self.metric(label, impl, lambda r: r["timing"].get("train_images_per_s"), confidence)

    def summary(self, confidence: float = 0.95, alpha: float = 0.05) -> list[dict]:
        """The per (activation, impl) summary of :func:`actkit.train.summarise` (paired test vs the baseline)."""
        from .train.records import summarise

        return summarise(self.records, self.baseline, confidence, alpha)

    def versus_best(self, impl: str | None = None, confidence: float = 0.95, alpha: float = 0.05) -> dict:
        """Every activation against the one with the best mean test accuracy (same impl, paired seeds).

        Returns ``{"impl", "best", "alpha", "rows": [...]}``; each row has ``label``, ``n``, ``mean``,
        ``ci``, ``diff`` (label - best, accuracy as a fraction), ``diff_ci``, ``p_value``, ``p_holm``
        (Holm over all the comparisons), ``detectable`` (the difference the test finds with 80% power, None
        when it cannot say) and ``verdict``: ``best``, ``tied`` (p_holm >= alpha),
        ``worse``/``better`` (p_holm < alpha) or ``untested`` (fewer than two paired seeds).
        """
        impl = impl or self.primary_impl
        per_label: dict[str, dict[int, float]] = {}
        for r in self.select(impl=impl):
            per_label.setdefault(r["config"]["act_label"], {})[r["config"]["seed"]] = r["final"]["test_acc"]
        if not per_label:
            return {"impl": impl, "best": None, "alpha": alpha, "rows": []}
        means = {label: sum(v.values()) / len(v) for label, v in per_label.items()}
        best = max(means, key=lambda k: means[k])
        rows = []
        for label, by_seed in per_label.items():
            ci = stats.mean_ci(list(by_seed.values()), confidence)
            row = {"label": label, "n": ci.n, "mean": ci.mean,
                   "ci": None if math.isnan(ci.half_width) else ci.half_width, "diff": 0.0, "diff_ci": None,
                   "p_value": None, "p_holm": None, "paired_n": 0, "detectable": None,
                   "verdict": "best" if label == best else "untested"}
            if label != best:
                common = sorted(set(by_seed) & set(per_label[best]))
                if common:
                    test = stats.paired_test([by_seed[s] for s in common], [per_label[best][s] for s in common],
                                             confidence)
                    row.update(diff=test.mean_diff, paired_n=test.n,
                               diff_ci=None if math.isnan(test.ci_half_width) else test.ci_half_width,
                               p_value=None if math.isnan(test.p_value) else test.p_value,
                               detectable=stats.detectable_for_pairs(
                                   [by_seed[s] for s in common], [per_label[best][s] for s in common], alpha).effect)
            rows.append(row)
        tested = [r for r in rows if r["p_value"] is not None]
        for r, p in zip(tested, stats.holm([r["p_value"] for r in tested])):
            r["p_holm"] = p
            if p >= alpha:
                r["verdict"] = "tied"
            else:
                r["verdict"] = "worse" if r["diff"] < 0 else "better"
        rows.sort(key=lambda r: -r["mean"])
        return {"impl": impl, "best": best, "alpha": alpha, "rows": rows}

    def gradient_flow(self, label: str, impl: str | None = None, epoch: str | int = "last") -> dict[str, float]:
        """``{layer: gradient norm}`` for one epoch (``"first"``, ``"last"`` or a number), mean over seeds."""
        sums: dict[str, list[float]] = {}
        for r in self.select(label, impl or self.primary_impl):
            events = r.get("diagnostics", {}).get("gradient_flow", [])
            if not events:
                continue
            if epoch == "first":
                event = events[0]
            elif epoch == "last":
                event = events[-1]
            else:
                event = next((e for e in events if e.get("epoch") == epoch), None)
                if event is None:
                    continue
            for layer, value in event["layers"].items():
                sums.setdefault(layer, []).append(float(value))
        return {layer: sum(v) / len(v) for layer, v in sums.items()}

    def dead_units(self, label: str, impl: str | None = None) -> dict[str, dict]:
        """``{phase: {"fraction": mean over seeds, "epoch": ..., "layers": {layer: mean fraction}}}``."""
        phases: dict[str, dict] = {}
        for r in self.select(label, impl or self.primary_impl):
            for e in r.get("diagnostics", {}).get("dead_units", []):
                slot = phases.setdefault(e["phase"], {"fraction": [], "epoch": e.get("epoch"), "layers": {}})
                slot["fraction"].append(float(e["fraction"]))
                for layer, v in e["layers"].items():
                    slot["layers"].setdefault(layer, []).append(float(v["fraction"]))
        return {phase: {"fraction": sum(p["fraction"]) / len(p["fraction"]), "epoch": p["epoch"],
                        "layers": {k: sum(v) / len(v) for k, v in p["layers"].items()}}
                for phase, p in phases.items()}

    @property
    def from_table(self) -> bool:
        """The records were rebuilt from ``runs.csv`` (the run files were not kept): no histories or
        diagnostics (and no host load in tables written before it was kept)."""
        return any(r.get("source") == TABLE_SOURCE for r in self.records)

    @property
    def has_history(self) -> bool:
        return any(r.get("history", {}).get("epoch") for r in self.records)

    @property
    def has_gradient_flow(self) -> bool:
        return any(r.get("diagnostics", {}).get("gradient_flow") for r in self.records)

    @property
    def has_dead_units(self) -> bool:
        return any(r.get("diagnostics", {}).get("dead_units") for r in self.records)


# -- a sweep whose run records were not kept: its runs.csv ----------------------------------------------
TABLE_SOURCE = "runs.csv"
"""``record["source"]`` of a record rebuilt from ``runs.csv``: it has no history and no diagnostics."""
_FINAL_COLUMNS = ("test_acc", "test_loss", "f1_macro", "precision_macro", "recall_macro", "best_val_acc")
_TIMING_COLUMNS = ("train_images_per_s", "step_time_ms", "train_s", "wall_s")


def table_only(path: str | os.PathLike) -> bool:
    """A sweep directory with ``runs.csv`` but no run records (``runs/*.json`` not kept, e.g. not committed)."""
    path = Path(path)
    return path.is_dir() and (path / "runs.csv").is_file() and not any((path / "runs").glob("*.json"))


def _cell(value: str, kind):
    return None if value in ("", None) else kind(value)


def _load_columns(row: Mapping) -> dict:
    """The host load a runs.csv row kept (its largest 1-minute load average, threads, CPUs); {} in older tables."""
    top = _cell(row.get("load_average_max", ""), float)
    if top is None:
        return {}
    return {"load_average": [top], "threads": _cell(row.get("threads", ""), int),
            "cpu_count": _cell(row.get("cpu_count", ""), int)}


def _records_from_table(path: Path, saved: Mapping) -> list[dict]:
    """Minimal run records from ``runs.csv`` and the sweep's ``config.json`` (``saved``): the final metrics,
    throughput, memory and (in tables that have it) host load of each run; no per-epoch history, no
    diagnostics."""
    sweep, env = saved.get("sweep", {}), saved.get("env", {})
    try:
        with open(path / "runs.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        records = []
        for row in rows:
            config = {key: sweep.get(key) for key in ("batch_size", "lr", "optimizer", "subset", "weight_decay")}
            config.update(act_label=row["act_label"], activation=row["activation"], impl=row["impl"],
                          seed=int(row["seed"]), dataset=row["dataset"], model=row["model"],
                          epochs=int(row["epochs"]), depth=sweep.get("depth", 0), device=row["device"])
            records.append({
                "schema": RUN_SCHEMA, "source": TABLE_SOURCE, "id": row["id"], "status": row["status"],
                "config": config, "backend": row["backend"], "env": {**env, "device": row["device"]},
                "final": {key: _cell(row.get(key, ""), float) for key in _FINAL_COLUMNS},
                "timing": {**{key: _cell(row.get(key, ""), float) for key in _TIMING_COLUMNS},
                           **_load_columns(row)},
                "memory": {"peak_bytes": _cell(row.get("peak_bytes", ""), int),
                           "saved_bytes": _cell(row.get("saved_bytes", ""), int)},
                "history": {series: [] for series in HISTORY_KEYS}, "diagnostics": {}, "data": {}})
    except (KeyError, ValueError) as exc:
        raise RunsError(f"{path / 'runs.csv'} is not a runs table of actkit train ({type(exc).__name__}: {exc})") \
            from None
    if not records:
        raise RunsError(f"{path / 'runs.csv'} lists no runs")
    return records


def _check_against_summary(path: Path, records: Sequence[Mapping]) -> None:
    """``summary.json``, where present, must agree with the runs the table lists (count and mean accuracy)."""
    if not (path / "summary.json").is_file():
        return
    saved = _read(path / "summary.json")
    for row in saved.get("rows", []) if isinstance(saved, dict) else []:
        accs = [r["final"]["test_acc"] for r in records
                if r["config"]["act_label"] == row.get("act_label") and r["config"]["impl"] == row.get("impl")]
        mean = sum(accs) / len(accs) if accs else None
        if len(accs) != row.get("n") or mean is None or not math.isclose(mean, row["test_acc_mean"], abs_tol=1e-9):
            raise RunsError(f"{path / 'summary.json'} and runs.csv disagree on {row.get('act_label')}/"
                            f"{row.get('impl')} ({row.get('n')} runs, mean {row.get('test_acc_mean')} vs {len(accs)} "
                            f"runs, mean {mean}); regenerate them with actkit train --resume")


def _record_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "runs").is_dir():
        return sorted((path / "runs").glob("*.json"))
    return sorted(p for p in path.glob("*.json") if p.name not in ("config.json", "summary.json"))


def load(path: str | os.PathLike, baseline: str | None = None) -> RunSet:
    """Read the run records under ``path`` (a sweep directory, a folder of records, or one record)."""
    path = Path(path)
    if not path.exists():
        raise RunsError(f"{str(path)!r} does not exist; give the directory that actkit train wrote (--out)")
    records = []
    for file in _record_files(path):
        data = _read(file)
        if isinstance(data, dict) and data.get("schema") == RUN_SCHEMA:
            records.append(data)
    if not records and table_only(path) and (path / "config.json").is_file():
        saved = _read(path / "config.json")
        if isinstance(saved, dict) and saved.get("schema") == SWEEP_SCHEMA:
            records = _records_from_table(path, saved)
            _check_against_summary(path, records)
    if not records:
        where = path / "runs" if (path / "runs").is_dir() else path
        raise RunsError(f"no training run records ({RUN_SCHEMA}) found in {str(where)!r}; "
                        "give the directory that actkit train wrote (--out)")
    sweep: dict = {}
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    if not config_file.is_file() and path.is_file():
        config_file = path.parent.parent / "config.json"
    if config_file.is_file():
        saved = _read(config_file)
        if isinstance(saved, dict) and saved.get("schema") == SWEEP_SCHEMA:
            sweep = saved.get("sweep", {})
    keys = {(r["config"]["dataset"], r["config"]["model"], r["config"]["epochs"], r["config"].get("depth", 0))
            for r in records}
    if len(keys) > 1:
        shown = "; ".join(f"{d}/{m}, {e} epochs, depth {k}" for d, m, e, k in sorted(keys))
        raise RunsError(f"{str(path)!r} mixes runs of different sweeps ({shown}); give one sweep's directory")
    order = {lbl: i for i, lbl in enumerate(a["label"] for a in sweep.get("activations", []))}
    records.sort(key=lambda r: (order.get(r["config"]["act_label"], len(order)), r["config"]["seed"]))
    labels = list(dict.fromkeys(r["config"]["act_label"] for r in records))
    if baseline is not None and baseline not in labels:
        raise RunsError(f"baseline {baseline!r} is not among the activations run: {', '.join(labels)}")
    if baseline is None:
        saved = sweep.get("baseline")
        if saved is not None and saved not in labels:  # comparing with another one silently would mislead
            raise RunsError(f"the sweep's baseline {saved!r} has no runs in {str(path)!r}, which has "
                            f"{', '.join(labels)}; choose one of them as the baseline (actkit report --baseline NAME)")
        baseline = saved if saved in labels else "relu" if "relu" in labels else labels[0]
    return RunSet(path, records, baseline, sweep)
