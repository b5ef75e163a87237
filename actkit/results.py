"""Result files: atomic JSON/CSV writes and the environment stamp every record carries.

Writes go to a temporary file in the target directory, are flushed and fsynced, then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), so an
interrupted run never leaves a truncated result file behind.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch


def _complete_temporary(path: Path, content: str | bytes) -> str:
    """``content`` in a new temporary file next to ``path``, flushed to disk; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        binary = isinstance(content, bytes)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _atomic_write(path: str | os.PathLike, content: str | bytes) -> Path:
    path = Path(path)
    tmp = _complete_temporary(path, content)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """What ``torch.save`` wrote to a buffer (a checkpoint), written the same way as the text files."""
    return _atomic_write(path, data)


def atomic_create_text(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless a file is already there; ``False`` if one was.

    Of several processes creating one file at once exactly one succeeds (a hard link of the complete
    temporary file, which fails if the name exists); where the file system has no hard links, the
    check and the rename are two steps.
    """
    path = Path(path)
    tmp = _complete_temporary(path, text)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, _json_text(data))


def create_json(path: str | os.PathLike, data: Any) -> bool:
    """:func:`write_json` if ``path`` does not exist yet (atomically so, see :func:`atomic_create_text`)."""
    return atomic_create_text(path, _json_text(data))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
              fieldnames: Sequence[str] | None = None) -> Path:
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in fieldnames})
    return atomic_write_text(path, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_jsonable)
    return "" if value is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a result file")


def format_bytes(nbytes: float | None) -> str:
    """``1.5 MiB``-style size for tables (binary units, one decimal); ``-`` for None."""
    if nbytes is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Device, library versions and host: stamped into every result record."""
    from . import __version__
    from .backend import get_backend, interpreter_enabled, triton_installed

    triton_version = None
    if triton_installed():
        from importlib.metadata import version

        triton_version = version("triton")
    return {
        "timestamp": timestamp(),
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton_version,
        "actkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "configured_backend": get_backend(),
        "triton_interpreter": interpreter_enabled(),
        "cpu_threads": torch.get_num_threads(),
    }
