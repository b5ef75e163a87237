"""Drop actkit into an existing model: swap its activation modules, and back.

``patch(model)`` replaces every activation module that actkit implements (``nn.ReLU``,
``nn.GELU``, ``nn.SiLU``, ``nn.PReLU``, ``nn.Softmax``, ...) with the actkit module for the
same function and parameters, so the model runs actkit's kernels (Triton on CUDA, the
PyTorch fallback on CPU). ``patch(model, "mish")`` instead puts Mish in place of every
pointwise activation; row-wise normalisers (softmax, log_softmax) keep their function and
only change implementation, since swapping them for a pointwise function would change
what the model computes (attention weights, output distributions).

What the new modules keep for backward follows ``saves`` (``registry.SAVE_POLICIES``): by default
what the replaced torch module keeps (its input for ``nn.ELU``, its output for ``nn.ReLU`` and for
the in-place modules whose in-place op keeps it, ``nn.ELU(inplace=True)``), so code that modifies an
activation's output in place (``y += r``) trains after patching exactly as before.

Replacement is by exact module type: a subclass of ``nn.ReLU`` may change its forward, so
it is reported and left alone. Parameters are kept: the actkit PReLU holds the very same
``nn.Parameter`` as the module it replaces (state_dict keys and optimiser state stay
valid). Modules shared between several parents stay shared. ``unpatch(model)`` puts the
original modules back. Activations called as functions inside a ``forward``
(``F.relu(x)``, the softmax inside ``nn.MultiheadAttention``) are not modules and cannot be
swapped; the report lists the ones it can see.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .nn import Activation, ReferenceActivation, class_for
from .registry import DEFAULT_SAVE_POLICY, check_save_policy

IMPLS = ("actkit", "torch")


# -- torch module -> (actkit name, constructor arguments) ---------------------------------------
def _gelu(m: nn.GELU):
    return ("gelu" if m.approximate == "none" else "gelu_tanh"), {}


_TORCH_MODULES = {
    nn.ReLU: lambda m: ("relu", {}),
    nn.ReLU6: lambda m: ("relu6", {}),
    nn.LeakyReLU: lambda m: ("leaky_relu", {"negative_slope": m.negative_slope}),
    nn.ELU: lambda m: ("elu", {"alpha": m.alpha}),
    nn.CELU: lambda m: ("celu", {"alpha": m.alpha}),
    nn.SELU: lambda m: ("selu", {}),
    nn.GELU: _gelu,
    nn.SiLU: lambda m: ("silu", {}),
    nn.Mish: lambda m: ("mish", {}),
    nn.Sigmoid: lambda m: ("sigmoid", {}),
    nn.Tanh: lambda m: ("tanh", {}),
    nn.Softplus: lambda m: ("softplus", {"beta": m.beta, "threshold": m.threshold}),
    nn.Softsign: lambda m: ("softsign", {}),
    nn.Hardswish: lambda m: ("hardswish", {}),
    nn.Hardsigmoid: lambda m: ("hardsigmoid", {}),
    nn.Hardtanh: lambda m: ("hardtanh", {"min_val": m.min_val, "max_val": m.max_val}),
    nn.LogSigmoid: lambda m: ("logsigmoid", {}),
    nn.Tanhshrink: lambda m: ("tanhshrink", {}),
    nn.PReLU: lambda m: ("prelu", {"num_parameters": m.num_parameters}),
    nn.Softmax: lambda m: ("softmax", {"dim": m.dim}),
    nn.Softmax2d: lambda m: ("softmax", {"dim": -3}),
    nn.LogSoftmax: lambda m: ("log_softmax", {"dim": m.dim}),
}
TORCH_MODULES = tuple(_TORCH_MODULES)
"""The torch.nn activation classes that ``patch`` replaces."""

INPLACE_KEEPS_OUTPUT = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU)
"""The classes whose ``inplace=True`` op keeps its output for backward (``relu_``, ``elu_``, ...: the
input is overwritten); the others' in-place ops keep what the out-of-place op keeps. Under the "torch"
save policy their actkit replacement keeps y as well: the same memory, and an in-place change of the
output fails in backward with and without patching. tests/test_save_policy.py checks the list."""

_FUNCTIONAL_ACTIVATIONS = {F.relu: "relu", F.gelu: "gelu", F.silu: "silu", torch.relu: "relu"}


class Replacement(NamedTuple):
    """One activation module that ``patch`` swapped for actkit's."""
    path: str
    """The module's path in the model, as ``named_modules`` gives it ("features.3")."""
    before: str
    """The module that was there, as ``_describe`` writes it ("GELU(approximate='tanh')")."""
    after: str
    """The actkit module now there, likewise."""


class Skipped(NamedTuple):
    """One activation ``patch`` found and left alone, and why (a function, not a module; no actkit equivalent)."""
    path: str
    what: str
    """What was found there ("relu function", "MultiheadAttention softmax", a module)."""
    reason: str
    """Why it was left alone, and what to do instead where there is something."""


@dataclass
class PatchReport:
    """What ``patch`` replaced (and what it saw but left alone)."""

    act: str | None
    impl: str
    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replaced)

    def counts(self) -> dict[str, int]:
        """``{"ReLU -> ReLU": 17, ...}``: replacements per (old, new) module type."""
        out: dict[str, int] = {}
        for r in self.replaced:
            key = f"{r.before.split('(')[0]} -> {r.after.split('(')[0]}"
            out[key] = out.get(key, 0) + 1
        return out

    def as_dict(self) -> dict:
        return {"act": self.act, "impl": self.impl,
                "replaced": [vars(r) for r in self.replaced], "skipped": [vars(s) for s in self.skipped]}

    def __str__(self) -> str:
        target = self.act or "same activation"
        lines = [f"actkit.patch ({target}, impl={self.impl}): {len(self.replaced)} module(s) replaced"]
        lines += [f"  {r.path}: {r.before} -> {r.after}" for r in self.replaced]
        if self.skipped:
            lines.append(f"left as is: {len(self.skipped)}")
            lines += [f"  {s.path}: {s.what} ({s.reason})" for s in self.skipped]
        return "\n".join(lines)


# -- bookkeeping for unpatch ---------------------------------------------------------------------
# model -> {path: original module}, {(path, attribute): original value}; weak, so a patched
# model that is dropped is not kept alive.
_ORIGINALS: "weakref.WeakKeyDictionary[nn.Module, tuple[dict, dict]]" = weakref.WeakKeyDictionary()


def _describe(m: nn.Module) -> str:
    module = type(m).__module__
    prefix = "nn." if module.startswith("torch.nn") else "actkit.nn." if module == "actkit.nn" else ""
    return f"{prefix}{type(m).__name__}({m.extra_repr()})"


def _class_for(name: str, impl: str) -> type[nn.Module]:
    return class_for(name) if impl == "actkit" else ReferenceActivation


def _is_actkit(m: nn.Module) -> bool:
    return isinstance(m, (Activation, ReferenceActivation))


def _placement(model: nn.Module, old: nn.Module) -> dict:
    """Device and dtype for new parameters: those of the replaced module, else of the model."""
    for source in (old, model):
        for p in source.parameters():
            return {"device": p.device, "dtype": p.dtype}
        for b in source.buffers():
            if b.is_floating_point():
                return {"device": b.device, "dtype": b.dtype}
    return {}


def _same(m: nn.Module) -> tuple[str, dict] | None:
    """(actkit name, constructor kwargs) for the function ``m`` computes, or None."""
    if _is_actkit(m):
        return m.spec.name, m.spec.kind.ops.module_kwargs(m)
    convert = _TORCH_MODULES.get(type(m))
    return None if convert is None else convert(m)


def _build(model, old, name, kwargs, impl, reuse_parameter):
    spec = registry.get(name)
    if spec.kind.learnable:
        kwargs = {**kwargs, **_placement(model, old)}
    new = class_for(name)(**kwargs) if impl == "actkit" else ReferenceActivation(name, **kwargs)
    if spec.kind.learnable and reuse_parameter is not None:
        setattr(new, spec.params[0].name, reuse_parameter)
        new.num_parameters = reuse_parameter.numel()
    new.train(old.training)
    return new


def _keeps_input(name: str, kwargs: dict, saves: str) -> bool:
    """An elementwise activation that saves x for backward with these parameters and save policy."""
    spec = registry.get(name)
    scalars = {k: v for k, v in kwargs.items() if k not in ("saved_bits", "saves")}
    return spec.kind.keeps_input(spec, scalars, saves)


def _parameter_of(old: nn.Module, name: str) -> nn.Parameter | None:
    """The learnable parameter to carry over when ``old`` computes activation ``name``."""
    if type(old) is nn.PReLU and name == "prelu":
        return old.weight
    if _is_actkit(old) and old.spec.name == name and old.spec.kind.learnable:
        return getattr(old, old.spec.params[0].name)
    return None


def patch(model: nn.Module, act: str | None = None, impl: str = "actkit", saved_bits: int | None = None,
          saves: str | None = None, **act_params) -> PatchReport:
    """Replace the activation modules of ``model`` in place; returns a :class:`PatchReport`.

    act: ``None`` keeps every activation's function and parameters and swaps in actkit's
        implementation; a name (``"mish"``, ``"leaky_relu"``, ``"prelu"``, ...) puts that
        activation, with ``act_params``, in place of every pointwise activation (row-wise
        softmax/log_softmax keep their function). New learnable activations get fresh
        parameters on the model's device and dtype.
    impl: ``"actkit"`` (actkit's custom ops: Triton on CUDA, PyTorch on CPU) or ``"torch"``
        (the registry's PyTorch reference in plain eager ops, a baseline).
    saved_bits: 1..8 gives every elementwise activation that would keep its input x for backward under
        the save policy (GELU, SiLU, Mish; ELU by default) a few-bit backward instead
        (:mod:`actkit.kinds.fewbit`); those that keep their output y (ReLU; ELU with ``saves="y"``) stay as
        they are, since y is usually kept by the next layer anyway. None or 0: exact backward.
    saves: the save policy of the new elementwise modules (``registry.SAVE_POLICIES``): "torch" keeps
        what the replaced torch module keeps (x for ``nn.ELU``, y for ``nn.ReLU`` and for the in-place
        modules in :data:`INPLACE_KEEPS_OUTPUT`), so a model that trains unpatched trains patched; "y"
        keeps the output wherever f' can be read from it, less memory but an in-place change of an
        output (``y += r``) then fails in backward; "x" always the input. None: "torch", and actkit
        modules already in the model keep their own. With ``saved_bits``, the activations that keep
        x under the policy get the few-bit backward instead.

    Patch before ``torch.compile`` and before building the optimiser when ``act`` adds
    parameters. ``unpatch(model)`` restores the original modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch expects a torch.nn.Module, got {type(model).__name__}")
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of: {', '.join(IMPLS)}")
    target = _target(act, act_params)
    if saves is not None:
        check_save_policy(saves, "patch")
        if impl != "actkit" and saves != DEFAULT_SAVE_POLICY:
            raise ValueError(f"patch(saves={saves!r}) needs impl='actkit': the PyTorch reference keeps what torch "
                             "keeps")
    if saved_bits:
        from .kinds.fewbit import check_bits

        saved_bits = check_bits(saved_bits)
        if impl != "actkit":
            raise ValueError("saved_bits needs impl='actkit': the PyTorch reference keeps x for backward")

    report = PatchReport(act=target.name if target else None, impl=impl)
    if _same(model) is not None:
        report.skipped.append(Skipped("", _describe(model), "the model itself is an activation and has no parent to "
                                      "swap it in; use actkit.nn." + registry.get(_same(model)[0]).class_name))
    originals, attributes = _ORIGINALS.setdefault(model, ({}, {}))
    built: dict[int, nn.Module] = {}  # id(old) -> new, so shared modules stay shared
    for parent, parent_path, child_name, child_path, old in _children(model, report):
        wanted = _wanted(old, child_path, target, act_params, (saved_bits, saves) if impl == "actkit" else None, report)
        if wanted is None or (type(old) is _class_for(wanted[0], impl) and _same(old) == wanted):
            continue  # nothing to put there, or already what was asked for
        if id(old) not in built:
            built[id(old)] = _build(model, old, *wanted, impl, _parameter_of(old, wanted[0]))
        new = built[id(old)]
        setattr(parent, child_name, new)
        originals.setdefault(child_path, old)
        report.replaced.append(Replacement(child_path, _describe(old), _describe(new)))
        # nn.TransformerEncoderLayer's inference fast path calls a fused native kernel with
        # relu/gelu whenever this flag is set, ignoring self.activation: switch it off.
        if child_name == "activation" and getattr(parent, "activation_relu_or_gelu", None):
            key = (parent_path, "activation_relu_or_gelu")
            attributes.setdefault(key, parent.activation_relu_or_gelu)
            parent.activation_relu_or_gelu = 0
    if not originals and not attributes:
        _ORIGINALS.pop(model, None)
    return report


def _target(act: str | None, act_params: dict) -> registry.ActivationSpec | None:
    """The spec ``act`` names (None for act=None), checked: pointwise, parameters valid."""
    if act is None:
        if act_params:
            raise TypeError(f"activation parameters {sorted(act_params)} need act=<name>; with act=None each "
                            f"module keeps its own parameters")
        return None
    target = registry.get(act)
    reason = target.kind.not_pointwise
    if reason is not None:
        raise ValueError(f"patch(act={act!r}): {target.name} is {reason} and cannot stand in for pointwise "
                         f"activations; choose a pointwise one (e.g. 'mish', 'gelu', 'prelu'). "
                         f"Softmax modules are converted to actkit's softmax with act=None or any act")
    if target.kind.scalar_params:
        target.bind((), act_params)  # clear errors for bad parameters before touching the model
    return target


def _children(model: nn.Module, report: PatchReport) -> list[tuple]:
    """(parent, parent path, child name, child path, child) of every child module, repeats included;
    notes in ``report`` the activations that are functions, not modules."""
    plan = []
    for path, module in model.named_modules(remove_duplicate=False):
        for child_name, child in module._modules.items():  # (named_children() hides repeats)
            if child is None:
                continue
            child_path = f"{path}.{child_name}" if path else child_name
            plan.append((module, path, child_name, child_path, child))
        fn = getattr(module, "activation", None)
        if any(fn is f for f in _FUNCTIONAL_ACTIVATIONS):
            report.skipped.append(Skipped(f"{path}.activation" if path else "activation", f"{fn.__name__} function",
                                          "a function, not a module: build the layer with an activation module "
                                          "(e.g. activation=nn.GELU()) to patch it"))
        if isinstance(module, nn.MultiheadAttention):
            report.skipped.append(Skipped(path, "MultiheadAttention softmax",
                                          "computed inside F.multi_head_attention_forward, not a module"))
    return plan


def _wanted(old: nn.Module, path: str, target, act_params: dict, backward: tuple, report: PatchReport):
    """(actkit name, constructor kwargs) of what goes in place of ``old``, or None (noted in ``report``
    where ``old`` is an activation actkit leaves alone). ``backward``: patch's (saved_bits, saves), None for
    the PyTorch reference (which keeps what torch keeps)."""
    same = _same(old)
    if same is None:
        if type(old).__module__ == "torch.nn.modules.activation" and not isinstance(old, nn.MultiheadAttention):
            report.skipped.append(Skipped(path, _describe(old), "no actkit equivalent"))
        elif isinstance(old, TORCH_MODULES):
            report.skipped.append(Skipped(path, _describe(old), f"subclass {type(old).__qualname__} of a torch "
                                          "activation: its forward may differ"))
        return None
    name, kwargs = same
    if target is not None and registry.get(name).kind.pointwise:
        name, kwargs = target.name, dict(act_params)
    if backward is None:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("saves", "saved_bits")}
    elif registry.get(name).kind.save_policy:
        kwargs = _backward_options(old, name, kwargs, *backward)
    return name, kwargs


def _backward_options(old: nn.Module, name: str, kwargs: dict, saved_bits, saves) -> dict:
    """``kwargs`` with the save policy and few-bit option of the new elementwise module: patch's where
    given, else an actkit module's own; few-bit where patch asks for it and the module would keep x."""
    kwargs = dict(kwargs)
    own_bits, own_saves = kwargs.pop("saved_bits", None), kwargs.pop("saves", DEFAULT_SAVE_POLICY)
    policy = own_saves if saves is None else saves
    if policy == "torch" and type(old) in INPLACE_KEEPS_OUTPUT and old.inplace and _same(old)[0] == name \
            and registry.get(name).torch_saves != "y":
        policy = "y"  # what torch's in-place op keeps (relu keeps y by default already)
    bits = saved_bits if saved_bits and _keeps_input(name, kwargs, policy) else own_bits
    if bits:
        return {**kwargs, "saved_bits": bits}
    return kwargs if policy == DEFAULT_SAVE_POLICY else {**kwargs, "saves": policy}


def unpatch(model: nn.Module) -> list[str]:
    """Put back every module ``patch`` replaced in ``model``; returns the restored paths."""
    originals, attributes = _ORIGINALS.pop(model, ({}, {}))
    for path, original in originals.items():
        parent_path, _, child_name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), child_name, original)
    for (path, attribute), value in attributes.items():
        setattr(model.get_submodule(path), attribute, value)
    return list(originals)


def patched(model: nn.Module) -> bool:
    """Whether ``model`` has modules replaced by :func:`patch` (and not yet restored)."""
    return model in _ORIGINALS
