"""Device-resident batching: training and evaluation batches cut from a loaded split (:mod:`actkit.data`).

The datasets are small, so each split lives on the training device as one tensor (uint8 for
real images, 4x smaller than float) and :class:`Batcher` cuts shuffled batches from it there:
no per-sample DataLoader, no host-to-device copy per step. Conversion to float, augmentation
(CIFAR-10: random crop with 4-pixel padding + horizontal flip) and per-dataset normalisation
happen per batch on the device. Shuffling and augmentation draw from a CPU ``torch.Generator``
the caller seeds, so the data order is the same on every device and for every activation.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from .data import DatasetError, DatasetInfo, Split


class Batcher:
    """Batches ``(x, y)`` cut from a device-resident :class:`Split`, normalised (and augmented) per batch.

    ``shuffle`` draws a permutation per epoch from ``generator`` (a CPU generator, so the order
    does not depend on the device); ``augment`` applies a random crop (``pad`` pixels, the
    padding is black before normalisation) and a horizontal flip with probability 1/2.
    A trailing batch with fewer than two images per process is dropped when training
    (BatchNorm needs two).

    ``part=(rank, world)``: the device-resident equivalent of a ``DistributedSampler`` for
    data-parallel training. Every process draws the same permutation and augmentation for the
    whole (global) batch of ``batch_size`` images and yields only its contiguous share of it
    (sizes differ by at most one), so the ``world`` processes together see exactly the batches
    one process would.
    """

    def __init__(self, split: Split, info: DatasetInfo, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, augment: bool = False, pad: int = 4,
                 drop_single: bool | None = None, part: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise DatasetError(f"batch size must be positive, got {batch_size}")
        if shuffle and generator is None:
            raise ValueError("shuffle needs a seeded torch.Generator")
        rank, world = part
        if not 0 <= rank < world:
            raise ValueError(f"part must be (rank, world) with 0 <= rank < world, got {part}")
        self.split, self.info, self.batch_size = split, info, int(batch_size)
        self.shuffle, self.generator, self.augment, self.pad = shuffle, generator, augment, pad
        self.drop_single = shuffle if drop_single is None else drop_single
        self.rank, self.world = int(rank), int(world)
        device = split.images.device
        c = info.shape[0]
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, c, 1, 1)

    @property
    def n_examples(self) -> int:
        """Images per epoch, over all processes."""
        n = len(self.split)
        tail = n % self.batch_size
        return n - tail if self.drop_single and 0 < tail < 2 * self.world and n > tail else n

    def __len__(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    def global_size(self, step: int) -> int:
        """Images in the ``step``-th batch of an epoch, over all processes."""
        return min(self.batch_size, self.n_examples - step * self.batch_size)

    def _share(self, size: int) -> tuple[int, int]:
        """This process's rows ``[lo, hi)`` of a global batch of ``size`` images."""
        return self.rank * size // self.world, (self.rank + 1) * size // self.world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = self.n_examples, self.split.images.device
        order = (torch.randperm(len(self.split), generator=self.generator)[:n].to(device)
                 if self.shuffle else None)
        for start in range(0, n, self.batch_size):
            size = min(self.batch_size, n - start)
            lo, hi = self._share(size)
            if order is None:
                x = self.split.images[start + lo:start + hi]
                y = self.split.labels[start + lo:start + hi]
            else:
                index = order[start + lo:start + hi]
                x, y = self.split.images[index], self.split.labels[index]
            yield self.prepare(x, batch_size=size, offset=lo), y

    def prepare(self, x: torch.Tensor, batch_size: int | None = None, offset: int = 0) -> torch.Tensor:
        """uint8 [0, 255] -> float [0, 1] -> augmentation -> normalisation; float input is taken as is.

        ``x`` is rows ``offset ..`` of a batch of ``batch_size`` images (default: all of it): the
        augmentation draws are made for the whole batch, so every process consumes the generator alike.
        """
        if x.dtype != torch.uint8:
            return x.float()
        x = x.float().div_(255.0)
        if self.augment:
            x = self._augment(x, x.shape[0] if batch_size is None else batch_size, offset)
        return (x - self.mean) / self.std

    def _augment(self, x: torch.Tensor, batch_size: int, offset: int) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        offsets = torch.randint(0, 2 * p + 1, (batch_size, 2), generator=self.generator)[offset:offset + b]
        flips = (torch.rand(batch_size, generator=self.generator) < 0.5)[offset:offset + b]
        offsets, flips = offsets.to(x.device), flips.to(x.device)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        cols = torch.where(flips.view(b, 1, 1, 1), cols.flip(3), cols)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return padded[batch, channel, rows, cols]
