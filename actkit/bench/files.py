"""Result files: a payload written atomically as JSON and/or CSV, and read back with a check.

Each measurement has its own schema, so that a file says what its records are and a command
that needs one kind (a plot of GB/s) refuses the other with a clear message."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import results
from .bandwidth import RECORD_FIELDS
from .hostcost import HOST_RECORD_FIELDS
from .options import BenchError

SCHEMA = "actkit.bench/1"
HOST_SCHEMA = "actkit.bench.host/1"
SCHEMAS = {"bandwidth": SCHEMA, "host": HOST_SCHEMA}
_FIELDS = {"bandwidth": RECORD_FIELDS, "host": HOST_RECORD_FIELDS}
_MADE_BY = {"bandwidth": "actkit bench --json", "host": "actkit bench --host-cost --json"}


def measure_of(payload: Mapping[str, Any]) -> str:
    """``bandwidth`` or ``host``: which measurement a payload holds; :class:`BenchError` if neither."""
    for measure, schema in SCHEMAS.items():
        if payload.get("schema") == schema:
            return measure
    raise BenchError(f"not an actkit bench result (schema {payload.get('schema')!r}, expected one of "
                     f"{', '.join(map(repr, SCHEMAS.values()))})")


def write(payload: Mapping[str, Any], json_path=None, csv_path=None) -> list:
    """Write the payload as JSON and/or its records as CSV (atomic, via :mod:`actkit.results`)."""
    written = []
    if json_path is not None:
        written.append(results.write_json(json_path, payload))
    if csv_path is not None:
        written.append(results.write_csv(csv_path, payload["records"], fieldnames=_FIELDS[measure_of(payload)]))
    return written


def load(path, measures: Sequence[str] = ("bandwidth",)) -> dict[str, Any]:
    """Read a bench JSON file, checking it holds one of ``measures`` (default: a bandwidth sweep)."""
    try:
        payload = results.read_json(path)
    except FileNotFoundError:
        raise BenchError(f"no such file: {path}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from None
    measure = None
    if isinstance(payload, dict):
        try:
            measure = measure_of(payload)
        except BenchError:
            pass
    if measure is None:
        expected = " or ".join(repr(SCHEMAS[m]) for m in measures)
        raise BenchError(f"{path} is not an actkit bench result file (expected schema {expected})")
    if measure not in measures:
        wanted = " or ".join(_MADE_BY[m] for m in measures)
        raise BenchError(f"{path} holds {'host-cost' if measure == 'host' else 'bandwidth'} results "
                         f"({_MADE_BY[measure]}); this needs a file from {wanted}")
    return payload
