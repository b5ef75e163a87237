"""What a user names on the command line or in a library call: the activations and the device.

One parser for each, shared by every command (``train``, ``bench``, ``memory``, ``plot``,
``boundary``) and the library entry points behind them. Both accept the union of what the commands
accepted before they shared them:

* activations: a comma list (or a sequence of comma lists) of names or aliases, ``all``, and
  ``name:param=value[:param=value]`` for explicit parameters (``saved_bits=k`` among them asks for
  actkit's few-bit backward, ``saves=y`` for a save policy); duplicates are dropped, the order kept;
* devices: ``auto`` (or nothing: ``cuda`` when a GPU is present, else ``cpu``), ``cpu``, ``cuda`` and
  ``cuda:N``.

A command says what it does with the activations (a :class:`Need`: any function, one that fills a
network's pointwise slot, one that can be trained) and in which words it refuses the others; the
errors are raised as the caller's exception class (``error``), one line naming the value and what is
allowed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from . import registry


class SelectionError(ValueError):
    """An activation list or a device that cannot be used as given."""


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """What a command needs of its activations, and the words of its refusals.

    ``pointwise``: only functions of one element (elementwise and learnable kinds) can serve;
    ``gradient``: only differentiable ones. ``all`` stands for every registered activation that
    meets both. The refusals are templates of ``name``, ``kind`` and ``reason``
    (``spec.kind.not_pointwise``)."""

    pointwise: bool = False
    gradient: bool = False
    not_pointwise: str = "{name} is {reason}; choose elementwise or learnable activations"
    no_gradient: str = "{name} has no gradient"

    def refusal(self, spec: registry.ActivationSpec) -> str | None:
        reason = spec.kind.not_pointwise
        if self.pointwise and reason is not None:
            return self.not_pointwise.format(name=spec.name, kind=spec.kind, reason=reason)
        if self.gradient and not spec.differentiable:
            return self.no_gradient.format(name=spec.name, kind=spec.kind, reason=reason)
        return None


ANY = Need()
"""Any registered activation (``actkit bench``, the filters of ``actkit plot bench``)."""
TRAINABLE = Need(True, True, "{name} is a {kind} function, not a pointwise activation: it cannot fill an "
                             "activation slot of the models",
                 "{name} has no gradient, so a network using it cannot be trained")
"""What fills the activation slots of the training models (``actkit train``)."""
NETWORK_SLOT = Need(True, False, "{name} is {reason}: it cannot stand in for a network's ReLUs; choose "
                                 "elementwise or learnable activations")
"""What replaces a network's ReLUs to count the bytes kept for backward (``actkit memory``)."""
CURVE = Need(True, False, "{name} is {reason} and has no curve f(x); choose elementwise or learnable activations")
"""What a curve f(x) can show (``actkit plot curves``)."""
TOY_MLP = Need(True, True, "{name} cannot be used in the toy MLP: it is {reason}; use elementwise or learnable "
                           "activations",
               "{name} cannot be used in the toy MLP: it has no gradient; use elementwise or learnable activations")
"""What the toy MLP of ``actkit boundary`` trains with."""


@dataclass(frozen=True)
class ActChoice:
    """An activation with explicit parameters, from ``name`` or ``name:param=value[:param=value]``.
    ``saved_bits=k`` among them asks for actkit's few-bit backward (:mod:`actkit.kinds.fewbit`),
    ``saves=policy`` for a save policy other than the default (``registry.SAVE_POLICIES``)."""

    name: str
    given: tuple[tuple[str, float | str], ...] = ()

    @property
    def saved_bits(self) -> int | None:
        return dict(self.given).get("saved_bits")

    @property
    def saves(self) -> str | None:
        """The save policy asked for, None for the default."""
        return dict(self.given).get("saves")

    @property
    def params(self) -> dict[str, float]:
        given = dict(self.given)
        options = {k: given.pop(k) for k in ("saves", "saved_bits") if k in given}
        return {**registry.get(self.name).bind((), given), **options}

    @property
    def label(self) -> str:
        return self.name + "".join(f"_{k}={v}" if isinstance(v, str) else f"_{k}={v:g}" for k, v in self.given)


def parse_activations(value: str | Sequence[str] | None, need: Need = ANY, *, saved_bits: int | None = None,
                      saves: str | None = None, error: type[Exception] = SelectionError,
                      left_out: list[str] | None = None) -> list[ActChoice]:
    """``"relu,leaky_relu:negative_slope=0.1,gelu:saved_bits=2"`` -> choices, in order, without repeats.

    ``all``: every registered activation that meets ``need``. ``saved_bits``: the few-bit backward
    for every activation named that does not say otherwise (``--saved-bits``); one that has none
    (learnable, identity: :func:`few_bit_refusal`) is refused when named, and with ``all`` left out,
    its name appended to ``left_out`` so that the caller can say so. ``saves``: the save policy of
    every elementwise activation that does not say otherwise and has no few-bit backward (``--saves``;
    the other kinds keep what torch keeps under any policy). Unknown names raise ``error`` with the
    registry's suggestions; bad parameters the registry's own TypeError or ValueError."""
    items = comma_items(value)
    if not items:
        raise error("no activation given; give a name, a comma list (e.g. --act relu,gelu) or all")
    out: list[ActChoice] = []
    for item in items:
        if item.lower() == "all":
            specs = [s for s in registry.REGISTRY.values() if need.refusal(s) is None]
            if saved_bits:
                kept = [s for s in specs if few_bit_refusal(s) is None]
                if left_out is not None:
                    left_out.extend(s.name for s in specs if s not in kept and s.name not in left_out)
                out += [_choice(s, s.name, (), saved_bits, saves, error) for s in kept]
            else:
                out += [_choice(s, s.name, (), None, saves, error) for s in specs]
            continue
        name, *assignments = item.split(":")
        try:
            spec = registry.get(name)
        except ValueError as exc:  # an unknown name, with suggestions
            raise error(str(exc)) from None
        refusal = need.refusal(spec)
        if refusal is not None:
            raise error(refusal)
        out.append(_choice(spec, item, assignments, saved_bits, saves, error))
    return list(dict.fromkeys(out))


def activation_names(value: str | Sequence[str] | None, need: Need = ANY, *,
                     error: type[Exception] = SelectionError) -> list[str]:
    """Canonical names, for the commands that take no parameters (``relu``, not ``relu:...``)."""
    choices = parse_activations(value, need, error=error)
    given = [c.label for c in choices if c.given]
    if given:
        raise error(f"{given[0]}: this command takes activation names without parameters "
                    "(name:param=value is for actkit train)")
    return [c.name for c in choices]


def comma_items(value: str | Sequence[str] | None) -> list[str]:
    """The non-empty, stripped items of a comma list (or of a sequence of comma lists)."""
    parts = [] if value is None else [value] if isinstance(value, str) else [str(v) for v in value]
    return [t.strip() for part in parts for t in part.split(",") if t.strip()]


def _choice(spec: registry.ActivationSpec, item: str, assignments: Sequence[str], saved_bits: int | None,
            saves: str | None, error: type[Exception]) -> ActChoice:
    given: dict[str, object] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise error(f"activation parameter {assignment!r} in {item!r} must look like name=value")
        given[key.strip()] = text.strip()
    bits = given.pop("saved_bits", saved_bits)
    policy = _check_saves(spec, given.pop("saves"), error) if "saves" in given else None
    bound = spec.bind((), given)  # validates names and values
    choice = tuple((k, bound[k]) for k in given)
    bits = _check_saved_bits(spec, bits, error) if bits is not None else 0
    if bits and policy not in (None, registry.DEFAULT_SAVE_POLICY):
        raise error(f"{item}: saves={policy} does not go with saved_bits={bits} (the few-bit backward keeps k-bit "
                    "codes, neither x nor y); give one of the two")
    if bits:  # 0: the exact backward, as if not given
        choice += (("saved_bits", bits),)
    elif policy is None and saves is not None and spec.kind.save_policy:
        policy = _check_saves(spec, saves, error)
    if policy not in (None, registry.DEFAULT_SAVE_POLICY):
        choice += (("saves", policy),)
    return ActChoice(spec.name, choice)


def _check_saves(spec: registry.ActivationSpec, policy, error: type[Exception]) -> str:
    """A save policy as given, for an activation that takes one."""
    try:
        registry.check_save_policy(policy, spec.name)
    except ValueError as exc:
        raise error(str(exc)) from None
    if not spec.kind.save_policy:
        raise error(f"{spec.name} is a {spec.kind} activation: it keeps what torch's op keeps (saves applies to "
                    "elementwise activations)")
    return policy


def _check_saved_bits(spec: registry.ActivationSpec, bits, error: type[Exception]) -> int:
    """``saved_bits`` as given (a string from the command line, or an int): 0 (exact) or 1..8."""
    from .kinds import fewbit  # imports scipy: only when a few-bit backward is asked for

    if isinstance(bits, str) and bits.strip().isdigit():
        bits = int(bits)
    if type(bits) is int and bits == 0:
        return 0
    try:
        value = fewbit.check_bits(bits)
    except ValueError as exc:
        raise error(f"{spec.name}: {exc}") from None
    reason = fewbit.refusal(spec) if value else None
    if reason is not None:
        raise error(reason)
    return value


def few_bit_refusal(spec: registry.ActivationSpec) -> str | None:
    """Why ``saved_bits`` does not apply to ``spec`` at its default parameters (one line), or None."""
    from .kinds import fewbit

    return fewbit.refusal(spec)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
UNKNOWN_DEVICE = "unknown device {value!r}; use auto, cpu, cuda or cuda:N"


def parse_device(value: str | None, *, error: type[Exception] = SelectionError,
                 unknown: str = UNKNOWN_DEVICE) -> str:
    """``auto`` (or None, or empty) -> ``cuda`` when a GPU is present, else ``cpu``; ``cpu``; ``cuda``
    and ``cuda:N`` when that GPU exists. Returns the normalised string; raises ``error`` otherwise
    (``unknown``: the command's words for a device it does not know, a template of ``value``)."""
    import torch  # not at import time: the command line parses options before it needs torch

    text = "" if value is None else str(value).strip().lower()
    if text in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise error(unknown.format(value=value))
    if not torch.cuda.is_available():
        raise error(f"device {value!r} requested but CUDA is not available on this machine (no CUDA GPU); "
                    "use --device cpu")
    index = int(text.split(":")[1]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        raise error(f"device {value!r} does not exist: this machine has {torch.cuda.device_count()} "
                    "CUDA device(s)")
    return text
