"""Result files: a payload written atomically as JSON and/or CSV, and read back with a check."""
from __future__ import annotations

from typing import Any, Mapping

from .. import results
from .options import BenchError
from .bandwidth import RECORD_FIELDS
from .sweep import SCHEMA


def write(payload: Mapping[str, Any], json_path=None, csv_path=None) -> list:
    """Write the payload as JSON and/or its records as CSV (atomic, via :mod:`actkit.results`)."""
    written = []
    if json_path is not None:
        written.append(results.write_json(json_path, payload))
    if csv_path is not None:
        written.append(results.write_csv(csv_path, payload["records"], fieldnames=RECORD_FIELDS))
    return written


def load(path) -> dict[str, Any]:
    """Read a bench JSON file, checking it is one."""
    try:
        payload = results.read_json(path)
    except FileNotFoundError:
        raise BenchError(f"no such file: {path}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise BenchError(f"{path} is not an actkit bench result file (expected schema {SCHEMA!r})")
    return payload
