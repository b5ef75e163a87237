"""What a benchmark request may name, and the parsing of user options into it.

Every option arrives as a string (a comma list) or a sequence; parsing canonicalises aliases
and raises :class:`BenchError` with one line naming the bad value and what is allowed.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch

from .. import selection

PROVIDERS = ("actkit", "eager", "compile")
MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# What --host-cost measures: the cost of one call at a tiny size, where the host's work dominates.
# Providers: actkit's functional call and module call, the eager op, a minimal autograd.Function
# around the eager op and its ATen backward (the floor any custom op with autograd can hope for),
# and torch.compile of the eager op. Modes: a forward whose inputs do not require grad, a forward
# that records the graph (inputs require grad), and a full forward and backward.
HOST_PROVIDERS = ("actkit", "module", "eager", "function", "compile")
HOST_MODES = ("nograd", "grad", "fwd+bwd")

MEASURES = ("bandwidth", "host")
"""``bandwidth``: the sweep over sizes (GB/s, % of copy); ``host``: the per-call host cost (µs per call)."""

_PROVIDER_ALIASES = {"torch": "eager", "aten": "eager", "native": "eager", "torch.compile": "compile",
                     "inductor": "compile", "triton": "actkit", "functional": "actkit", "actkit.functional": "actkit",
                     "nn": "module", "actkit.nn": "module", "autograd.function": "function"}
_MODE_ALIASES = {"forward": "fwd", "backward": "bwd", "fwdbwd": "fwd+bwd", "fwd_bwd": "fwd+bwd",
                 "fwd-bwd": "fwd+bwd", "step": "fwd+bwd", "no_grad": "nograd", "no-grad": "nograd",
                 "inference": "nograd"}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "f32": "fp32", "bfloat16": "bf16",
                  "float16": "fp16", "half": "fp16", "f16": "fp16"}


class BenchError(ValueError):
    """A benchmark request that cannot run (bad option value, missing device)."""


def _choices(value, allowed: Sequence[str], aliases: Mapping[str, str], what: str, option: str,
             context: str = "") -> tuple[str, ...]:
    names = selection.comma_items(value)
    if not names:
        raise BenchError(f"{option} is empty; {context}choose from {', '.join(allowed)} (comma-separated) or all")
    if any(n.lower() == "all" for n in names):
        return tuple(allowed)
    chosen = []
    for name in names:
        key = name.lower()
        key = aliases.get(key, key)
        if key not in allowed:
            raise BenchError(f"unsupported {what} {name!r} in {option}; {context}choose from {', '.join(allowed)}")
        if key not in chosen:
            chosen.append(key)
    return tuple(chosen)


def parse_providers(value, measure: str = "bandwidth") -> tuple[str, ...]:
    if measure == "host":
        return _choices(value, HOST_PROVIDERS, _PROVIDER_ALIASES, "provider", "--providers", "with --host-cost ")
    return _choices(value, PROVIDERS, _PROVIDER_ALIASES, "provider", "--providers")


def parse_modes(value, measure: str = "bandwidth") -> tuple[str, ...]:
    if measure == "host":
        return _choices(value, HOST_MODES, _MODE_ALIASES, "mode", "--mode", "with --host-cost ")
    return _choices(value, MODES, _MODE_ALIASES, "mode", "--mode")


def parse_dtypes(value) -> tuple[str, ...]:
    return _choices(value, tuple(DTYPES), _DTYPE_ALIASES, "dtype", "--dtype")


def parse_activations(value) -> tuple[str, ...]:
    """Canonical names (:func:`actkit.selection.activation_names`); ``all`` is every registered activation
    (unsupported kinds are skipped later)."""
    return tuple(selection.activation_names(value, error=BenchError))


_SIZE = re.compile(r"^(?:(\d+)|2\s*(?:\^|\*\*)\s*(\d+))$")


def parse_sizes(value) -> tuple[int, ...]:
    """Element counts: integers (``65536``, ``1_048_576``) or powers of two (``2^20``, ``2**20``)."""
    names = selection.comma_items(value)
    if not names:
        raise BenchError("--sizes is empty; give element counts such as 65536,2^20")
    sizes = []
    for name in names:
        match = _SIZE.match(name.replace("_", ""))
        if match is None:
            raise BenchError(f"bad size {name!r} in --sizes; give positive element counts as integers "
                             "or powers of two, e.g. 65536,2^20")
        n = int(match.group(1)) if match.group(1) is not None else 2 ** int(match.group(2))
        if n < 1:
            raise BenchError(f"bad size {name!r} in --sizes: element counts must be at least 1")
        if n > 2 ** 34:
            raise BenchError(f"size {name!r} in --sizes is larger than 2^34 elements; choose a smaller one")
        if n not in sizes:
            sizes.append(n)
    return tuple(sizes)


def parse_threads(value) -> int | None:
    """A positive thread count (``None`` keeps torch's setting)."""
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise BenchError(f"bad --threads {value!r}: give a positive integer, e.g. --threads 1")
    return number


def parse_device(value: str | None) -> str:
    """``cuda``, ``cuda:N`` or ``cpu`` (``None`` or ``auto``: cuda when a GPU is present), by
    :func:`actkit.selection.parse_device`."""
    return selection.parse_device(value, error=BenchError, unknown="unsupported device {value!r}; choose cuda or cpu")
