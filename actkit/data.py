"""Datasets for ``actkit train``: MNIST, Fashion-MNIST, CIFAR-10 (through torchvision) and synthetic data.

Loading
-------
The real datasets are read by torchvision's own classes (``MNIST``, ``FashionMNIST``,
``CIFAR10``), which expect torchvision's layout under a root directory:
``<root>/<ClassName>/raw/<name>-idx?-ubyte`` for the MNIST family and
``<root>/cifar-10-batches-py/`` for CIFAR-10. :func:`load` looks, in order, in

1. ``<data_dir>`` in torchvision's layout (what ``--download`` creates);
2. ``<data_dir>`` itself, or ``<data_dir>/<ClassName>``, holding the official files
   (``train-images-idx3-ubyte.gz`` ..., gzipped or not; ``cifar-10-python.tar.gz`` or the
   extracted batches);
3. system directories: ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

Official files found outside torchvision's layout are staged into it under ``<data_dir>``
(IDX files decompressed, each written atomically; plain files symlinked), once, and then read
by torchvision. When nothing is found, :class:`DatasetNotFoundError` says where it looked and
the exact command that gets the data. ``--download`` uses torchvision's downloader (with its
checksums).

Batching
--------
The datasets are small, so each split lives on the training device as one tensor (uint8 for
real images, 4x smaller than float) and :class:`Batcher` cuts shuffled batches from it there:
no per-sample DataLoader, no host-to-device copy per step. Conversion to float, augmentation
(CIFAR-10: random crop with 4-pixel padding + horizontal flip) and per-dataset normalisation
happen per batch on the device. Shuffling and augmentation draw from a CPU ``torch.Generator``
the caller seeds, so the data order is the same on every device and for every activation.

Splits
------
A validation split (``val_size`` images, default ``min(5000, n_train // 10)``) is carved out of
the training set by a fixed permutation (``split_seed``), identical for every run and seed;
``subset`` keeps the first N of the remaining training images in that same permutation. The
test set is always complete.
"""
from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch

DATA_DIR_ENV = "ACTKIT_DATA_DIR"


class DatasetError(ValueError):
    """A dataset request that cannot be served (unknown name, bad sizes, corrupt files)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on this machine; the message says where we looked and how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    """(channels, height, width)"""
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Per-channel normalisation of images scaled to [0, 1] (the usual published values)."""
    classes: tuple[str, ...]
    torchvision_class: str | None = None
    files: tuple[str, ...] = ()
    """The official file names (without ``.gz`` for the IDX family)."""
    system_dirs: tuple[str, ...] = ()
    augment: bool = False
    """Default for ``--augment``: random crop + flip (CIFAR-10)."""
    get_hint: str = ""


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                "batches.meta")
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), tuple(str(i) for i in range(10)),
        torchvision_class="MNIST", files=_IDX_FILES,
        get_hint="on a machine with internet: actkit train --dataset mnist --download --data-dir {data_dir}"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        torchvision_class="FashionMNIST", files=_IDX_FILES, system_dirs=("/usr/share/datasets/fashion-mnist",),
        get_hint="offline on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
                 "  with internet: actkit train --dataset fashion-mnist --download --data-dir {data_dir}"),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        torchvision_class="CIFAR10", files=_CIFAR_FILES, augment=True,
        get_hint="with internet: actkit train --dataset cifar10 --download --data-dir {data_dir}\n"
                 f"  offline: copy {_CIFAR_ARCHIVE} (https://www.cs.toronto.edu/~kriz/{_CIFAR_ARCHIVE}) "
                 "into {data_dir}"),
    "synthetic": DatasetInfo(
        "synthetic", (1, 28, 28), 10, (0.0,), (1.0,), tuple(f"class{i}" for i in range(10))),
}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar_10": "cifar10"}

SYNTHETIC_TRAIN = 6000
SYNTHETIC_TEST = 1000
DEFAULT_VAL_SIZE = 5000


def dataset_info(name: str) -> DatasetInfo:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[key]


def default_data_dir() -> Path:
    """``$ACTKIT_DATA_DIR``, else ``$XDG_CACHE_HOME/actkit/datasets`` (``~/.cache/actkit/datasets``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "actkit" / "datasets"


# --------------------------------------------------------------------------------------------
# Splits and the dataset container
# --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Images ``(N, C, H, W)`` (uint8 in [0, 255], or float already normalised) and int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.ndim != 4:
            raise DatasetError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    source: str
    """Where the files were read from (or ``generated``)."""
    sizes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    def to(self, device: torch.device | str) -> "Dataset":
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "shape": list(self.info.shape),
                "num_classes": self.info.num_classes, "classes": list(self.info.classes),
                "mean": list(self.info.mean), "std": list(self.info.std), **self.sizes}


# --------------------------------------------------------------------------------------------
# Finding and staging the official files
# --------------------------------------------------------------------------------------------
def _has_idx_files(directory: Path, files: Sequence[str]) -> bool:
    return all((directory / f).is_file() or (directory / f"{f}.gz").is_file() for f in files)


def _has_cifar_files(directory: Path) -> bool:
    return all((directory / f).is_file() for f in _CIFAR_FILES)


def _writable_root(data_dir: Path) -> Path:
    """``data_dir`` if we can create files there, else a per-user temporary staging directory."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=data_dir, prefix=".actkit-probe-", delete=True)
        probe.close()
        return data_dir
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"actkit-datasets-{os.getuid() if hasattr(os, 'getuid') else 0}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _decompress_atomic(source: Path, target: Path) -> None:
    """Decompress ``source`` (.gz) to ``target`` through torchvision, renamed into place when complete."""
    from torchvision.datasets.utils import extract_archive

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".actkit-extract-") as tmp:
        extracted = Path(extract_archive(str(source), tmp))
        produced = extracted if extracted.is_file() else Path(tmp) / target.name
        os.replace(produced, target)


def _stage_idx(info: DatasetInfo, found: Path, root: Path) -> None:
    raw = root / info.torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in info.files:
        target = raw / name
        if target.is_file():
            continue
        plain, packed = found / name, found / f"{name}.gz"
        if plain.is_file():
            if target.is_symlink():
                target.unlink()
            target.symlink_to(plain.resolve())
        else:
            _decompress_atomic(packed, target)


def _find_idx(info: DatasetInfo, data_dir: Path) -> tuple[Path, str, list[str]]:
    """(torchvision root, source description, places searched) for an MNIST-family dataset."""
    tv_raw = data_dir / info.torchvision_class / "raw"
    looked = [str(tv_raw)]
    if all((tv_raw / f).is_file() for f in info.files):
        return data_dir, str(tv_raw), looked
    candidates = [tv_raw, data_dir, data_dir / info.torchvision_class, *(Path(d) for d in info.system_dirs)]
    looked = list(dict.fromkeys(str(c) for c in candidates))
    for candidate in candidates:
        if candidate.is_dir() and _has_idx_files(candidate, info.files):
            root = data_dir if candidate == tv_raw else _writable_root(data_dir)
            _stage_idx(info, candidate, root)
            return root, str(candidate), looked
    raise _not_found(info, data_dir, looked)


def _find_cifar(info: DatasetInfo, data_dir: Path) -> tuple[Path, str, list[str]]:
    folder = data_dir / _CIFAR_FOLDER
    archive = data_dir / _CIFAR_ARCHIVE
    looked = [str(folder), str(data_dir), str(archive)]
    if _has_cifar_files(folder):
        return data_dir, str(folder), looked
    if data_dir.name == _CIFAR_FOLDER and _has_cifar_files(data_dir):
        return data_dir.parent, str(data_dir), looked
    if _has_cifar_files(data_dir):  # the batches, in a folder with another name: symlink them into place
        root = _writable_root(data_dir)
        staged = root / _CIFAR_FOLDER
        staged.mkdir(parents=True, exist_ok=True)
        for name in _CIFAR_FILES:
            if not (staged / name).exists():
                (staged / name).symlink_to((data_dir / name).resolve())
        return root, str(data_dir), looked
    if archive.is_file():
        from torchvision.datasets.utils import extract_archive

        root = _writable_root(data_dir)
        extract_archive(str(archive), str(root))
        if _has_cifar_files(root / _CIFAR_FOLDER):
            return root, str(archive), looked
        raise DatasetError(f"{archive} did not contain {_CIFAR_FOLDER}/ with {', '.join(_CIFAR_FILES)}")
    raise _not_found(info, data_dir, looked)


def _not_found(info: DatasetInfo, data_dir: Path, looked: Sequence[str]) -> DatasetNotFoundError:
    what = ("the official IDX files (" + ", ".join(f"{f}[.gz]" for f in info.files) + ")"
            if info.files == _IDX_FILES else f"{_CIFAR_FOLDER}/ or {_CIFAR_ARCHIVE}")
    places = "\n".join(f"  - {p}" for p in looked)
    hint = info.get_hint.format(data_dir=data_dir)
    return DatasetNotFoundError(
        f"{info.name} not found: looked for {what} in\n{places}\n"
        f"To get it:\n  {hint}\n"
        f"or pass --data-dir DIR pointing at a directory that holds the files.")


# --------------------------------------------------------------------------------------------
# Reading through torchvision
# --------------------------------------------------------------------------------------------
class _CIFAR10Files:
    """torchvision's CIFAR10 reader with the per-file checksums relaxed to "file exists".

    torchvision verifies the MD5 of the official batches on every load; actkit also reads CIFAR-10
    re-packed in the same format (and generated test files), so the checksum is checked by
    ``--download`` (torchvision verifies the archive) and the content by shape and label checks here.
    """

    @staticmethod
    def load(root: Path, train: bool):
        from torchvision.datasets import CIFAR10

        class CIFAR10Files(CIFAR10):
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = {**CIFAR10.meta, "md5": None}

        return CIFAR10Files(str(root), train=train, download=False)


def _read_torchvision(info: DatasetInfo, root: Path, source: str) -> tuple[Split, Split]:
    import torchvision.datasets as tvd

    splits = []
    for train in (True, False):
        try:
            if info.name == "cifar10":
                ds = _CIFAR10Files.load(root, train)
                images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
            else:
                ds = getattr(tvd, info.torchvision_class)(str(root), train=train, download=False)
                images = ds.data.unsqueeze(1)
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        except (RuntimeError, ValueError, TypeError, AssertionError, EOFError, pickle.UnpicklingError,
                KeyError, OSError) as exc:
            raise DatasetError(f"could not read {info.name} from {source}: {type(exc).__name__}: {exc}") from exc
        _check_split(info, images, labels, source, "train" if train else "test")
        splits.append(Split(images, labels))
    return splits[0], splits[1]


def _check_split(info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor, source: str, which: str) -> None:
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != info.shape:
        raise DatasetError(f"{info.name} {which} images from {source} have shape {tuple(images.shape)} "
                           f"({images.dtype}); expected (N, {', '.join(map(str, info.shape))}) uint8")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{info.name} {which} set from {source}: {images.shape[0]} images but "
                           f"{labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise DatasetError(f"{info.name} {which} labels from {source} fall outside 0..{info.num_classes - 1}")


def _download(info: DatasetInfo, data_dir: Path) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.torchvision_class)
    data_dir.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        try:
            cls(str(data_dir), train=train, download=True)
        except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
            raise DatasetNotFoundError(
                f"downloading {info.name} into {data_dir} failed ({type(exc).__name__}: {exc}). "
                f"Without internet:\n  {info.get_hint.format(data_dir=data_dir)}") from exc


def synthetic(n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, seed: int = 0,
              noise: float = 4.0) -> tuple[Split, Split]:
    """A seeded 10-class image problem shaped like MNIST: a smooth random template per class,
    scaled by a random contrast and shifted by up to 2 pixels, plus Gaussian pixel noise.

    Learnable by a small CNN but not trivially (noise 4.0 on unit-variance templates: the simple
    CNN reaches about 84% after one epoch, so activations can differ); the
    images come out normalised (float32), so no further normalisation applies.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.nn.functional.interpolate(torch.randn(10, 1, 7, 7, generator=g), size=(28, 28),
                                                mode="bilinear", align_corners=False)
    templates = (templates - templates.mean()) / templates.std()
    out = []
    for n in (n_train, n_test):
        labels = torch.randint(0, 10, (n,), generator=g)
        contrast = 1.0 + 0.3 * torch.randn(n, 1, 1, 1, generator=g)
        images = templates[labels] * contrast
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        for dy in range(-2, 3):  # shift per example (grouped by offset: 25 rolls, not n)
            for dx in range(-2, 3):
                mask = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                if mask.any():
                    images[mask] = torch.roll(images[mask], shifts=(dy, dx), dims=(2, 3))
        images = images + noise * torch.randn(images.shape, generator=g)
        images = images / math.sqrt(1.0 + noise ** 2)
        out.append(Split(images.float().contiguous(), labels))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def resolve_val_size(val_size: int | None, n_train: int) -> int:
    if val_size is None:
        return min(DEFAULT_VAL_SIZE, n_train // 10)
    if val_size < 1 or val_size >= n_train:
        raise DatasetError(f"--val-size must be between 1 and {n_train - 1} (the training set has {n_train} "
                           f"images), got {val_size}")
    return int(val_size)


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = False,
         val_size: int | None = None, subset: int | None = None, split_seed: int = 0) -> Dataset:
    """Load ``name`` (CPU tensors), split off validation, optionally keep a training subset.

    See the module docstring for where files are looked for. ``subset`` keeps N training
    images (after the validation split); the test set is always the full official one.
    """
    info = dataset_info(name)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if info.name == "synthetic":
        train, test = synthetic(seed=split_seed)
        source = "generated"
    else:
        if download:
            _download(info, data_dir)
        root, source, _ = (_find_cifar if info.name == "cifar10" else _find_idx)(info, data_dir)
        train, test = _read_torchvision(info, root, source)
    n_full = len(train)
    n_val = resolve_val_size(val_size, n_full)
    order = torch.randperm(n_full, generator=torch.Generator().manual_seed(split_seed))
    val_index, train_index = order[:n_val], order[n_val:]
    if subset is not None:
        if subset < 1 or subset > len(train_index):
            raise DatasetError(f"--subset must be between 1 and {len(train_index)} for {info.name} "
                               f"({n_full} training images minus {n_val} for validation), got {subset}")
        train_index = train_index[:subset]
    sizes = {"train": int(len(train_index)), "val": int(n_val), "test": len(test), "train_full": n_full}
    return Dataset(info, train.take(train_index), train.take(val_index), test, source, sizes)


# --------------------------------------------------------------------------------------------
# Device-resident batching
# --------------------------------------------------------------------------------------------
class Batcher:
    """Batches ``(x, y)`` cut from a device-resident :class:`Split`, normalised (and augmented) per batch.

    ``shuffle`` draws a permutation per epoch from ``generator`` (a CPU generator, so the order
    does not depend on the device); ``augment`` applies a random crop (``pad`` pixels, the
    padding is black before normalisation) and a horizontal flip with probability 1/2.
    A trailing batch of a single image is dropped when training (BatchNorm needs two).
    """

    def __init__(self, split: Split, info: DatasetInfo, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, augment: bool = False, pad: int = 4,
                 drop_single: bool | None = None):
        if batch_size < 1:
            raise DatasetError(f"batch size must be positive, got {batch_size}")
        if shuffle and generator is None:
            raise ValueError("shuffle needs a seeded torch.Generator")
        self.split, self.info, self.batch_size = split, info, int(batch_size)
        self.shuffle, self.generator, self.augment, self.pad = shuffle, generator, augment, pad
        self.drop_single = shuffle if drop_single is None else drop_single
        device = split.images.device
        c = info.shape[0]
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, c, 1, 1)

    @property
    def n_examples(self) -> int:
        n = len(self.split)
        return n - 1 if self.drop_single and n % self.batch_size == 1 and n > 1 else n

    def __len__(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = self.n_examples, self.split.images.device
        order = (torch.randperm(len(self.split), generator=self.generator)[:n].to(device)
                 if self.shuffle else None)
        for start in range(0, n, self.batch_size):
            if order is None:
                x = self.split.images[start:start + self.batch_size]
                y = self.split.labels[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                x, y = self.split.images[index], self.split.labels[index]
            yield self.prepare(x), y

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [0, 1] -> augmentation -> normalisation; float input is taken as is."""
        if x.dtype != torch.uint8:
            return x.float()
        x = x.float().div_(255.0)
        if self.augment:
            x = self._augment(x)
        return (x - self.mean) / self.std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=self.generator).to(x.device)
        flips = (torch.rand(b, generator=self.generator) < 0.5).to(x.device)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        cols = torch.where(flips.view(b, 1, 1, 1), cols.flip(3), cols)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return padded[batch, channel, rows, cols]
