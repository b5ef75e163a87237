"""The names the command line offers before it imports anything heavy.

``actkit --help`` (and shell completion, which runs the program on every TAB) lists datasets, models
and implementations in its option help. Those lists live here, free of torch, and the library modules
that own the real tables take them from here, so there is one spelling of each (tests/test_cli_startup.py
checks that the tables and these names agree).
"""
from __future__ import annotations

import os
from pathlib import Path

DATASETS = ("mnist", "fashion-mnist", "cifar10", "synthetic")
"""The image datasets of ``actkit train`` (the keys of :data:`actkit.data.DATASETS`, in that order)."""

MODELS = ("convnet", "simple")
"""The reference CNNs: the names :data:`actkit.models.MODELS` registers, in its order."""

IMPLS = ("actkit", "torch", "compile")
"""The implementations of a model's activation slots: actkit's kernels, the eager PyTorch reference,
torch.compile of the eager model."""

PARALLEL_MODES = ("none", "data")
"""How ``actkit train`` uses the processes of a torchrun launch."""

MEMORY_MODELS = ("resnet18",)
"""The networks ``actkit memory`` measures."""

TOY_DATASETS = ("moons", "circles", "spirals")
"""The generated 2-D problems of :mod:`actkit.toy` (``actkit boundary``)."""

GLU_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh", "reglu", "glu")
"""The gated linear units of the registry (``actkit bench-glu-block --act``)."""

DATA_DIR_ENV = "ACTKIT_DATA_DIR"
NO_DOWNLOAD_ENV = "ACTKIT_NO_DOWNLOAD"


def default_data_dir() -> Path:
    """``$ACTKIT_DATA_DIR``, else ``$XDG_CACHE_HOME/actkit/datasets`` (``~/.cache/actkit/datasets``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "actkit" / "datasets"
