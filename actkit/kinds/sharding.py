"""How the kinds' custom ops run on DTensors: one sharding rule, stated per kind by its special dim.

A DTensor (``torch.distributed.tensor``) takes the traced route (its type is not ``torch.Tensor``),
so it reaches the custom ops that :func:`.base.define_ops` makes, and DTensor asks for their sharding
strategy: which placements of the inputs each op can run on, shard by shard, and which placements its
outputs then have. One rule answers for every kind. Each kind names its *special dim* of x (a
function of the op's arguments, forward and backward alike):

* none (elementwise): any ``Shard(d)`` or ``Replicate`` is kept, as ``torch.nn.functional.silu`` keeps it;
* the reduced dim (row-wise) and the split dim (the one-tensor GLU): kept when that dim is whole on
  every rank, else DTensor redistributes x first (to whichever placement costs least), as it does
  for ``torch.softmax`` and for ``F.silu(a) * b`` of ``x.chunk(2, dim)``;
* the channel dim (learnable), with the parameter it indexes: x may be sharded on any dim. A
  per-channel parameter is then ``Shard(0)`` when x is sharded on the channel dim, else
  ``Replicate``, and its gradient, a sum over the elements of each channel, is ``Partial("sum")``
  whenever x is sharded on a dim the parameter does not follow (each rank has summed its own shard).

Every tensor of an op is either the parameter (or its gradient) or "like x": x, the saved y,
``grad``, the output, the gradients of x, a and b; all of those share one placement. ``Partial``
inputs are reduced first (the activations are not linear).

Few-bit ops are the exception: their saved codes are packed per rank, in the memory order of each
rank's shard, so no placement of a global tensor describes them. A DTensor's few-bit call runs on
its local shard instead (:func:`on_local_shards`), where the codes never leave the rank, and the
gradient comes back in x's placements.

Importing ``torch.distributed.tensor`` costs about a second, so actkit never imports it: the rules
wait in :data:`_waiting` until a call on the traced route finds it loaded (:func:`ready`), which it
must be wherever a DTensor exists.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

_DTENSOR = "torch.distributed.tensor"


@dataclass(frozen=True)
class Rule:
    """A kind's sharding rule (see the module doc)."""

    special_dim: Callable[[dict], int | None] | None = None
    """The special dim of x from an op's arguments by name (tensors as DTensor's strategies, which
    have ``shape`` and ``ndim``), or None: pointwise. Called for the forward and the backward op."""
    parameter: str | None = None
    """The argument that the special dim indexes (learnable: ``weight``); x may then be sharded on
    the special dim, with the parameter sharded alike. Without one, the special dim must be whole."""


POINTWISE = Rule()

_waiting: list[tuple] = []  # (forward op, backward op, rule) until torch.distributed.tensor is loaded


def declare(name: str, rule: Rule) -> None:
    """Give ``actkit::<name>`` and ``actkit::<name>_backward`` this rule (now, or once DTensor is loaded)."""
    ops = getattr(torch.ops.actkit, name).default, getattr(torch.ops.actkit, f"{name}_backward").default
    if _DTENSOR in sys.modules:
        _register(*ops, rule)
    else:
        _waiting.append((*ops, rule))


def ready() -> bool:
    """Called on the traced route before a custom op: registers the waiting rules once DTensor is loaded."""
    if _waiting and _DTENSOR in sys.modules:
        while _waiting:
            _register(*_waiting.pop())
    return True


# torch.compile calls it while tracing (a DTensor's sharding is propagated then) rather than tracing into
# it and guarding on _waiting: what torch.compiler.assume_constant_result sets, without importing
# torch._dynamo (which imports torch.distributed.tensor: more than a second at `import actkit`).
ready._dynamo_marked_constant = True


def is_dtensor(x) -> bool:
    if _DTENSOR not in sys.modules:  # no DTensor can exist before its module is loaded
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(x, DTensor)


def on_local_shards(fn, x):
    """``fn`` of each rank's shard of the DTensor ``x``, as a DTensor with x's placements (a ``Partial``
    x reduced first); autograd brings the gradient back to x's placements and runs fn's own backward
    on the shards. For an elementwise fn that keeps x's layout (the few-bit ops)."""
    from torch.distributed.tensor import DTensor, Replicate

    placements = tuple(Replicate() if p.is_partial() else p for p in x.placements)
    if placements != tuple(x.placements):
        x = x.redistribute(x.device_mesh, placements)
    y = fn(x.to_local())
    return DTensor.from_local(y, x.device_mesh, placements, run_check=False, shape=x.shape, stride=x.stride())


# DTensor runs an op on its shards inside its __torch_dispatch__, where the dispatch keys of functorch
# and autograd are excluded: torch.func.vjp there fails ("Cannot access storage of TensorWrapper").
_DIFFERENTIATION_KEYS = tuple(getattr(torch._C.DispatchKey, k) for k in (
    "FuncTorchDynamicLayerFrontMode", "FuncTorchDynamicLayerBackMode", "FuncTorchGradWrapper", "ADInplaceOrView",
    "AutogradFunctionality", "AutogradOther", "AutogradNestedTensor"))


def differentiable_inside_dispatch(body):
    """A custom op's body that may differentiate (the PyTorch backward of a composite reference or of a
    learnable parameter is a torch.func.vjp), runnable inside a tensor subclass's __torch_dispatch__: there
    it runs with functorch's and autograd's dispatch keys back on; elsewhere as it is."""
    front_mode = torch._C.DispatchKey.FuncTorchDynamicLayerFrontMode

    @functools.wraps(body)
    def run(*args):
        if not torch._C._dispatch_tls_is_dispatch_key_excluded(front_mode):
            return body(*args)
        exclude = torch._C._dispatch_tls_local_exclude_set()
        for key in _DIFFERENTIATION_KEYS:
            exclude = exclude.remove(key)
        with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude):
            return body(*args)

    return run


# -- the rule as DTensor's op strategies ---------------------------------------------------------------
# Registered as torch.distributed.tensor.experimental.register_sharding does it (register_op_strategy, with
# expand_to_full_mesh_op_strategy making every mesh dim's combination), not through it: register_sharding
# gives an op as many output placements as its schema has returns, and a GLU's backward returns Tensor[]
# (dx, or da and db). tests/test_dtensor.py runs these rules against torch's own placements.
def _tensor_args(op) -> list[tuple[str, bool]]:
    """(name, optional) of the op's tensor arguments, in order."""
    out = []
    for arg in op._schema.arguments:
        kind = arg.type.getElementType() if isinstance(arg.type, torch.OptionalType) else arg.type
        if isinstance(kind, torch.TensorType):
            out.append((arg.name, isinstance(arg.type, torch.OptionalType)))
    return out


def _register(forward, backward, rule: Rule) -> None:
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._op_schema import RuntimeSchemaInfo

    inputs = _tensor_args(forward)
    propagator = DTensor._op_dispatcher.sharding_propagator
    for op, outputs in ((forward, lambda args: ["out"] * len(forward._schema.returns)),
                        (backward, lambda args: [n for n, optional in inputs if not optional or args.get(n) is not None])):
        names = [a.name for a in op._schema.arguments]
        first_constant = next(i for i, a in enumerate(op._schema.arguments) if not _is_tensor(a.type))
        # The constants from the first non-tensor argument on (dim among them) key DTensor's cache.
        propagator.register_op_strategy(op, _strategy(rule, names, outputs, _returns_list(op)),
                                        RuntimeSchemaInfo(static_argnum=first_constant))


def _is_tensor(kind) -> bool:
    kind = kind.getElementType() if isinstance(kind, (torch.OptionalType, torch.ListType)) else kind
    return isinstance(kind, torch.TensorType)


def _returns_list(op) -> bool:
    returns = op._schema.returns
    return len(returns) == 1 and isinstance(returns[0].type, torch.ListType)


def _strategy(rule: Rule, names: list[str], outputs, returns_list: bool):
    """DTensor's strategy function of one op: every placement the rule allows, for all mesh dims."""
    from torch.distributed.tensor._op_schema import OpStrategy
    from torch.distributed.tensor._ops.utils import expand_to_full_mesh_op_strategy
    from torch.distributed.tensor.placement_types import Partial, Replicate, Shard

    def strategy(op_schema):
        args = dict(zip(names, op_schema.args_schema))
        tensors = [n for n, v in args.items() if isinstance(v, OpStrategy)]
        out_names = outputs(args)
        ndim = args[tensors[0]].ndim
        special = rule.special_dim(args) if rule.special_dim else None
        rows = []
        for p in (Replicate(), *(Shard(d) for d in range(ndim))):
            follows = isinstance(p, Shard) and p.dim == special  # the parameter is sharded along with x
            if follows and rule.parameter is None:
                continue  # the reduced or split dim must be whole on each rank

            def placement(name, gradient):
                if name != rule.parameter:
                    return p
                if follows:
                    return Shard(0)
                return Partial() if gradient and isinstance(p, Shard) else Replicate()

            rows.append([placement(n, True) for n in out_names] + [placement(n, False) for n in tensors])
        # A Tensor[] return needs its specs as a sequence (any meta: DTensor puts the real one in after).
        metas = [args[tensors[0]].tensor_meta] * len(out_names) if returns_list else None
        return expand_to_full_mesh_op_strategy(op_schema.get_mesh_from_args(), op_schema, rows,
                                               input_index=len(out_names), output_tensor_meta=metas)

    return strategy


def channel_dim(args: dict) -> int | None:
    """The learnable kind's special dim: dim 1 (as torch.nn.PReLU), when the parameter has one entry per channel."""
    x, weight = args["x"], args["weight"]
    return 1 if x.ndim >= 2 and math.prod(weight.shape) > 1 else None
