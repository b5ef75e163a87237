"""The kinds of activation: what each answers for the rest of actkit, and where its ops live.

A registry spec's ``kind`` is one of the :class:`Kind` objects below. Code outside this package
asks the object (``spec.kind.pointwise``, ``spec.kind.learnable``, ``spec.kind.ops.apply(...)``)
and never compares kind names.

Each kind's ops are one module of this package (:mod:`.elementwise`, :mod:`.learnable`,
:mod:`.rowwise`, :mod:`.glu`; the few-bit variant of the elementwise kind is :mod:`.fewbit`),
built on :mod:`.base`. A kind module provides:

* ``resolve(*key)``: the bound op for the constants its custom ops carry (also what unpickling calls);
* ``apply(spec, x, *args, **kwargs)``, ``functional(spec)``, ``parameters(spec)``: actkit.functional;
* ``init_module(module, *args, **kwargs)``, ``module_kwargs(module)`` (also what reprs show) and, unless
  ``init_module`` installs the bound op as ``module.forward``, ``module_forward(module, x)``: actkit.nn;
* ``init_reference(module, *args, **kwargs)`` and ``reference_forward(module, x)``: the plain-PyTorch
  modules that ``actkit.patch(..., impl="torch")`` installs.

A new kind is a module (an :class:`.base.Implementation` and a :class:`.base.BoundOp` for its math,
one :func:`.base.define_ops` call for its custom ops, and the functions above), a :class:`Kind` added
with :func:`register` (actkit's own are declared below, so that the registry names them without
importing torch; a kind from outside actkit registers itself in its module), and ``kind=`` on its
registry specs; the benchmarks also want its byte model (``actkit.bench.cases.KINDS``). README
"Extending actkit" walks through it, and tests/test_extending.py adds one at runtime.

This module imports nothing from actkit (the registry imports it); a kind's ops module is imported
when first asked for.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True, eq=False)
class Kind:
    """One kind of activation and the questions the rest of actkit asks about it."""

    name: str
    pointwise: bool
    """Every output element is f of one input element: a curve f(x) can show it and it can fill a
    network's activation slot."""
    not_pointwise: str | None
    """What it is instead, worded for an error message (None when pointwise)."""
    scalar_params: bool
    """Its parameters are numbers bound when the op is made (``spec.bind``): it can gate a GLU."""
    few_bit: bool
    """``saved_bits`` applies: its backward can read f' from k-bit codes (:mod:`.fewbit`)."""
    learnable: bool
    """It holds a learnable parameter tensor (``num_parameters``: one shared, or one per channel)."""
    normalises: bool
    """It normalises over a dimension (``dim``), as softmax does."""
    gated: bool
    """A gated linear unit act(a) * b: two inputs (or x's two halves), half as many outputs as inputs."""
    module: str
    """The full name of the module that holds its ops (``actkit.kinds.elementwise``)."""
    save_policy: bool = False
    """``saves=`` (``registry.SAVE_POLICIES``) chooses whether autograd keeps x or y; the other kinds
    keep what torch's op keeps (x and the parameter; softmax's y; a GLU's a and b) and take no policy."""

    @property
    def ops(self):
        """The kind's ops module (imported on first use)."""
        return importlib.import_module(self.module)

    @property
    def module_forward(self):
        """``module_forward(module, x)`` for actkit.nn, or None where ``init_module`` installs the bound
        op itself as the module's forward (no Python frame of ours per call)."""
        return getattr(self.ops, "module_forward", None)

    def module_repr(self, module) -> str:
        """A module's arguments as its repr shows them: ``negative_slope=0.1, saved_bits=2``."""
        return ", ".join(f"{k}={_shown(v)}" for k, v in self.ops.module_kwargs(module).items())

    def keeps_input(self, spec, params, saves: str = "torch") -> bool:
        """Whether autograd keeps x with these parameters under save policy ``saves``, so that a few-bit
        backward saves memory."""
        return self.few_bit and spec.saves_under(saves, {**spec.defaults, **params}) == "x"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"

    def __reduce__(self):  # specs are pickled with their kind: one object per kind
        return get, (self.name,)


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


KINDS: dict[str, Kind] = {}
"""Every kind by name, in the order they were registered."""


def register(kind: Kind) -> Kind:
    """Add a kind; its name must be new. Returns it: ``KIND = register(Kind(...))``."""
    if not isinstance(kind, Kind):
        raise TypeError(f"register takes a Kind, got {type(kind).__name__}")
    if kind.name in KINDS:
        raise ValueError(f"activation kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


ELEMENTWISE = register(Kind("elementwise", pointwise=True, not_pointwise=None, scalar_params=True, few_bit=True,
                            learnable=False, normalises=False, gated=False, module=f"{__name__}.elementwise",
                            save_policy=True))
"""f(x) with up to two scalar parameters: the generic kernels and custom ops."""
LEARNABLE = register(Kind("learnable", pointwise=True, not_pointwise=None, scalar_params=False, few_bit=False,
                          learnable=True, normalises=False, gated=False, module=f"{__name__}.learnable"))
"""f(x, a) with a learnable a, shared or one per channel (dim 1): PReLU, Swish-beta."""
ROWWISE = register(Kind("rowwise", pointwise=False,
                        not_pointwise="a row-wise activation (it normalises over a dimension)", scalar_params=False,
                        few_bit=False, learnable=False, normalises=True, gated=False, module=f"{__name__}.rowwise"))
"""A normalisation over one dimension: softmax, log_softmax."""
GLU = register(Kind("glu", pointwise=False,
                    not_pointwise="a gated linear unit (act(a) * b of two halves of its input: half as many "
                                  "outputs as inputs)",
                    scalar_params=False, few_bit=False, learnable=False, normalises=False, gated=True,
                    module=f"{__name__}.glu"))
"""A gated linear unit act(a) * b of two halves of x (or two tensors)."""


def get(kind: str | Kind) -> Kind:
    """The kind named ``kind`` (a Kind is returned as is); ValueError naming the known kinds otherwise."""
    if isinstance(kind, Kind):
        return kind
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation kind {kind!r}; known: {', '.join(KINDS)}") from None
