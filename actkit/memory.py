"""What autograd keeps for backward: counted, and compared on a whole network.

``saved_bytes(run)`` counts the distinct storages that autograd packs while ``run()`` executes
(``torch.autograd.graph.saved_tensors_hooks``): a tensor two layers both save (an activation's
output and the next convolution's input) counts once, which is how the memory is really held.
Parameters saved by a layer (a convolution keeps its weight) are storages too and are counted,
and reported apart.

``network_comparison`` runs one training step (forward of a classification loss) of torchvision's
ResNet-18 with its ReLUs replaced by each activation, in plain PyTorch (the registry's reference:
torch's own op, what its module calls) and after :func:`actkit.patch`: exact under each save policy
asked for (``registry.SAVE_POLICIES``: torch's choice, or y wherever f' reads it), and few-bit for the
activations that would otherwise keep x.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .names import MEMORY_MODELS
from .registry import DEFAULT_SAVE_POLICY, check_save_policy
from .patch import patch

MODELS = MEMORY_MODELS


class SavedTensorCounter:
    """Context manager: records ``{storage address: bytes}`` (``.storages``) of every storage autograd
    saves inside the block. The hook hands each tensor back unchanged, so what is computed inside
    (the first step of a training run, say) is bit-for-bit what it would be without it."""

    def __init__(self):
        self.storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def excluding(self, tensors: Iterable[torch.Tensor]) -> int:
        """Bytes saved apart from the storages of ``tensors`` (a model's parameters, kept anyway)."""
        skip = {t.untyped_storage().data_ptr() for t in tensors}
        return sum(n for ptr, n in self.storages.items() if ptr not in skip)


def saved_bytes(run: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes autograd keeps for backward after ``run()``, each storage once, leaving out the
    storages of ``exclude`` (parameters or inputs that live on anyway)."""
    with SavedTensorCounter() as counter:
        out = run()
    del out
    return counter.excluding(exclude)


@dataclass
class NetworkMemory:
    """One network and activation: bytes saved for backward in one training step."""
    model: str
    activation: str
    impl: str
    """"torch" (the PyTorch reference) or "actkit"."""
    saved_bits: int | None
    saves: str | None
    """actkit's save policy ("torch", "y", "x"; see ``registry.SAVE_POLICIES``); None for torch."""
    saved_bytes: int
    parameter_bytes: int
    """The part of ``saved_bytes`` that is the network's parameters (convolution weights, ...)."""
    batch: int
    image_size: int
    """Side of the square input images, in pixels."""

    def as_dict(self) -> dict:
        return {**asdict(self), "activation_bytes": self.activation_bytes}

    @property
    def activation_bytes(self) -> int:
        return self.saved_bytes - self.parameter_bytes


def _network(model: str, num_classes: int = 10) -> nn.Module:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def network_memory(act: str, impl: str, saved_bits: int | None = None, model: str = "resnet18", batch: int = 8,
                   image_size: int = 64, device: str = "cpu", seed: int = 0,
                   saves: str = DEFAULT_SAVE_POLICY) -> NetworkMemory:
    """Bytes saved for backward by one training step of ``model`` with every ReLU replaced by ``act``
    (actkit's modules under save policy ``saves``, few-bit where ``saved_bits`` applies)."""
    spec = registry.get(act)
    reason = spec.kind.not_pointwise
    if reason is not None:
        raise ValueError(f"{spec.name} is {reason}: it cannot stand in for a network's ReLUs")
    torch.manual_seed(seed)
    net = _network(model).to(device).train()
    patch(net, spec.name, impl="torch")  # torch's own op for every activation
    if impl == "actkit":
        patch(net, saved_bits=saved_bits, saves=check_save_policy(saves))  # the same functions, actkit's modules
    elif impl != "torch" or saved_bits or saves != DEFAULT_SAVE_POLICY:
        raise ValueError(f"impl must be 'torch' or 'actkit' (saved_bits and saves need actkit), got {impl!r}")
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    with SavedTensorCounter() as saved:
        loss = F.cross_entropy(net(x), labels)
    del loss
    return NetworkMemory(model, spec.name, impl, saved_bits or None, saves if impl == "actkit" else None, saved.total,
                         saved.total - saved.excluding(net.parameters()), batch, image_size)


def network_comparison(acts: Iterable[str], saved_bits: Sequence[int] = (),
                       saves: Sequence[str] = (DEFAULT_SAVE_POLICY,), **kwargs) -> list[dict]:
    """For each activation: torch, actkit under each save policy of ``saves``, and actkit with each of
    ``saved_bits`` (under the default policy, where it keeps x); each record has the ratio to torch
    (``vs_torch``, below 1: actkit keeps less)."""
    rows = []
    for act in acts:
        spec = registry.get(act)
        base = network_memory(act, "torch", **kwargs)
        variants = [base] + [network_memory(act, "actkit", saves=policy, **kwargs) for policy in saves]
        if spec.kind.keeps_input(spec, {}):  # few-bit replaces a saved x; y is free already
            variants += [network_memory(act, "actkit", bits, **kwargs) for bits in saved_bits if bits]
        for v in variants:
            rows.append({**v.as_dict(), "vs_torch": v.saved_bytes / base.saved_bytes,
                         "activation_vs_torch": v.activation_bytes / base.activation_bytes
                         if base.activation_bytes else None})
    return rows
