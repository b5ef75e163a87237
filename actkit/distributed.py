"""Where this process sits among the workers of a launch, and the process group of a data-parallel run.

``actkit train`` uses several processes (GPUs, machines) in two ways, both started by the launchers
people already use (``torchrun``, SLURM), never by a launcher of ours:

* **Sharded sweep** (under ``torchrun``, or with ``--shard K/N``): the sweep's planned runs are
  dealt out deterministically, run ``i`` (in the sweep's order) to worker ``i mod N``, and each
  worker trains its runs alone. Every worker computes the same plan from the same settings, which
  ``config.json`` in the output directory guards (:mod:`actkit.train`). No process group is made:
  the workers share nothing but the output directory, one atomically written record per run, so a
  worker that finishes early just exits, one that dies holds nobody up (a barrier would hang or time
  out the others), and the tasks of a SLURM array, which need not even run at the same time, work
  the same way. ``--shard K/N`` under ``torchrun`` with ``W`` processes makes ``N x W`` workers
  (worker ``K x W + RANK``): a SLURM array of multi-GPU jobs.
* **Data-parallel run** (``--parallel data``, under ``torchrun``): all the processes of the launch
  train each run together with ``DistributedDataParallel`` in one :class:`ProcessGroup` (NCCL on
  CUDA, gloo on CPU).

``torchrun`` tells each worker where it is through the environment: ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (its GPU on this machine), ``LOCAL_WORLD_SIZE``, and ``MASTER_ADDR``/``MASTER_PORT``
for the rendezvous of a process group (:class:`Launch`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch

NEEDS_GROUP = ("--parallel data needs a process group: start the command with torchrun, e.g. "
               "torchrun --nproc-per-node N -m actkit.cli.main train ... --parallel data "
               "(MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE are not set)")


class LaunchError(ValueError):
    """The launch cannot work as given (bad --shard, inconsistent torchrun variables, no process group)."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when started on its own)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None
    """The GPU of this worker on its machine (``LOCAL_RANK``); ``None`` outside torchrun."""
    local_world_size: int = 1
    rendezvous: bool = False
    """``MASTER_ADDR`` and ``MASTER_PORT`` are set: a process group can be made."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Launch":
        env = os.environ if environ is None else environ

        def number(name: str, default: int | None) -> int | None:
            text = env.get(name, "").strip()
            if not text:
                return default
            if not re.fullmatch(r"\d+", text):
                raise LaunchError(f"${name} must be a non-negative integer, got {text!r}")
            return int(text)

        world = number("WORLD_SIZE", 1)
        rank = number("RANK", 0)
        if world < 1 or rank >= world:
            raise LaunchError(f"$RANK={rank} and $WORLD_SIZE={world} do not fit: the rank must be below the "
                              "world size (these variables are torchrun's; unset them to run one process)")
        return cls(rank, world, number("LOCAL_RANK", None), number("LOCAL_WORLD_SIZE", 1),
                   bool(env.get("MASTER_ADDR")) and bool(env.get("MASTER_PORT")))

    def as_dict(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "local_world_size": self.local_world_size}


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``: it trains the planned runs ``i`` with ``i mod count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1:
            raise LaunchError(f"--shard {self.index}/{self.count}: N, the number of workers, must be at least 1")
        if not 0 <= self.index < self.count:
            raise LaunchError(f"--shard {self.index}/{self.count}: K must be between 0 and {self.count - 1} "
                              f"(K/N: worker K of N, K = 0..N-1; a SLURM array for N workers is --array=0-{self.count - 1})")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"K/N"`` (e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise LaunchError(f"--shard must look like K/N (worker K of N, K = 0..N-1), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def within(self, launch: Launch) -> "Shard":
        """This process's share when each of the ``count`` shards is itself run by a torchrun launch."""
        return Shard(self.index * launch.world_size + launch.rank, self.count * launch.world_size)

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def bind_device(device: str, launch: Launch) -> str:
    """Put this worker on its own GPU: ``cuda`` (no index) becomes ``torch.cuda.set_device(LOCAL_RANK)``.

    The device string stays ``cuda`` (it is part of every run's configuration, which must not depend
    on which worker ran it); an explicit ``cuda:N`` is left as the user asked.
    """
    if device != "cuda" or launch.local_rank is None:
        return device
    available = torch.cuda.device_count()
    if launch.local_rank >= available:
        raise LaunchError(f"$LOCAL_RANK={launch.local_rank} but this machine has {available} CUDA device(s): "
                          f"start at most {available} worker(s) per machine (torchrun --nproc-per-node {available})")
    torch.cuda.set_device(launch.local_rank)
    return device


class ProcessGroup:
    """The ``torch.distributed`` process group of a data-parallel run: NCCL for CUDA, gloo for CPU.

    Made from torchrun's environment (``env://``); one made elsewhere (already initialised) is used
    as it is and left open.
    """

    def __init__(self, device: str | torch.device, launch: Launch):
        import torch.distributed as dist

        if not dist.is_available():
            raise LaunchError("--parallel data needs torch.distributed, which this PyTorch build does not have")
        self.device = torch.device(device)
        self.owned = not dist.is_initialized()
        if self.owned:
            if not launch.rendezvous:
                raise LaunchError(NEEDS_GROUP)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size)
        self.backend = str(dist.get_backend())
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place (sum over processes) and return it."""
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def describe(self) -> dict:
        return {"backend": self.backend, "rank": self.rank, "world_size": self.world_size}
