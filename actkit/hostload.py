"""Was the host busy while a group of training runs measured its throughput? Marks and notes for tables.

Training throughput (img/s, step time) on a CPU is taken under whatever else the machine runs. Each
run record keeps the host's 1-minute load average at every epoch's end (``timing.load_average``) and
:func:`busy_run` turns it into the load beyond the run's own threads when that is half a
core or more. This module summarises that over the runs behind one table row and says it in words:

* ``busy``: other work took half a core or more during at least one run: its img/s measures the
  machine's load as much as the activation (mark ``*``);
* ``not recorded``: a CPU run made before the load was kept: nobody knows (mark ``?``), which is
  said rather than presented as quiet;
* quiet otherwise (and on GPUs, whose timing the host's load barely touches).
"""
from __future__ import annotations

from typing import Mapping, Sequence

BUSY_MARK = "*"
UNKNOWN_MARK = "?"


def _on_cpu(record: Mapping) -> bool:
    device = (record.get("env") or {}).get("device") or (record.get("config") or {}).get("device") or ""
    return str(device).startswith("cpu")


def load_recorded(record: Mapping) -> bool:
    """Whether the record carries the host's load (GPU runs need none: True)."""
    if not _on_cpu(record):
        return True
    return any(v is not None for v in (record.get("timing") or {}).get("load_average") or ())


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


def group_load(records: Sequence[Mapping]) -> dict:
    """``{"busy_load", "load_average_max", "load_recorded"}`` over the runs behind one table row.

    ``busy_load``: the largest load beyond a run's own threads among the busy runs (None: none was busy);
    ``load_average_max``: the largest 1-minute load average recorded; ``load_recorded``: False when
    any CPU run lacks the load (records made before it was kept).
    """
    busy = [b for b in (busy_run(r) for r in records) if b is not None]
    loads = [v for r in records for v in (r.get("timing") or {}).get("load_average") or () if v is not None]
    return {"busy_load": max(busy) if busy else None, "load_average_max": max(loads) if loads else None,
            "load_recorded": all(load_recorded(r) for r in records)}


def mark(row: Mapping) -> str:
    """``*`` (busy host), ``?`` (load not recorded) or ``""``, for a row carrying :func:`group_load`'s fields."""
    if row.get("busy_load") is not None:
        return BUSY_MARK
    if row.get("load_recorded") is False:
        return UNKNOWN_MARK
    return ""


def note(rows: Sequence[Mapping], labels: Sequence[str] | None = None) -> str | None:
    """What the marks of ``rows`` mean, naming the rows (``labels``, default their ``act_label``); None if unmarked."""
    labels = labels or [r.get("act_label", "?") for r in rows]
    busy = [(label, r) for label, r in zip(labels, rows) if mark(r) == BUSY_MARK]
    unknown = [label for label, r in zip(labels, rows) if mark(r) == UNKNOWN_MARK]
    parts = []
    if busy:
        worst = max(r["busy_load"] for _, r in busy)
        top = max((r["load_average_max"] for _, r in busy if r.get("load_average_max") is not None), default=None)
        parts.append(f"{BUSY_MARK} busy host: other processes took up to {worst:.1f} cores beyond the run's own "
                     + (f"(1-minute load average up to {top:.1f}) " if top is not None else "")
                     + f"during the runs of {', '.join(label for label, _ in busy)}: their img/s and step time "
                     "measure the machine's load as much as the activation")
    if unknown:
        parts.append(f"{UNKNOWN_MARK} load not recorded (run records made before actkit kept the host's load, or "
                     f"not kept at all) for "
                     f"{', '.join(unknown)}: whether other work slowed them is unknown")
    return "; ".join(parts) if parts else None


def ratio_warning(rows: Sequence[Mapping]) -> str | None:
    """The warning a throughput ratio between ``rows`` must carry, or None when every row was quiet."""
    if any(mark(r) == BUSY_MARK for r in rows):
        worst = max(r["busy_load"] for r in rows if mark(r) == BUSY_MARK)
        return (f"these throughputs were measured on a busy host (other processes took up to {worst:.1f} cores "
                "beyond the runs' own), so "
                "the ratio reflects the machine's load as much as the activations; `actkit bench` on a quiet "
                "host (or with interleaved providers) measures the cost itself")
    if any(mark(r) == UNKNOWN_MARK for r in rows):
        return ("the host's load was not recorded for some of these runs, so whether other work skewed the ratio "
                "is unknown")
    return None
