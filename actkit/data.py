"""Datasets for ``actkit train``: MNIST, Fashion-MNIST, CIFAR-10 (through torchvision) and synthetic data.

Each split is loaded whole, as one tensor; :mod:`actkit.batches` cuts the training batches from it.

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
by torchvision.

Downloading
-----------
When nothing is found, :func:`load` downloads the dataset with torchvision's own downloader
(its mirrors, its progress bar, its MD5 checksums) into ``<data_dir>`` in torchvision's layout,
unless downloads are off (``download=False``, ``--no-download``, or ``$ACTKIT_NO_DOWNLOAD=1``,
for clusters whose compute nodes have no internet): then :class:`DatasetNotFoundError` says
where it looked and the exact command that gets the data. torchvision downloads in place and
leaves a corrupted or partial file where it failed (checked with torchvision 0.29), and the
offline search above would take such a file for an official one; so the download goes into a
temporary directory inside ``<data_dir>`` and its files are moved into place only after
torchvision has verified them. A lock file serialises concurrent downloads of one dataset into
one directory (the workers of a sweep): the first downloads, the others wait and then find it.

Splits
------
A validation split (``val_size`` images, default ``min(5000, n_train // 10)``) is carved out of
the training set by a fixed permutation (``split_seed``), identical for every run and seed;
``subset`` keeps the first N of the remaining training images in that same permutation. The
test set is always complete.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

DATA_DIR_ENV = "ACTKIT_DATA_DIR"
NO_DOWNLOAD_ENV = "ACTKIT_NO_DOWNLOAD"


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
        with tempfile.TemporaryDirectory(dir=root, prefix=".actkit-extract-") as tmp:
            extract_archive(str(archive), tmp)
            if not _has_cifar_files(Path(tmp) / _CIFAR_FOLDER):
                raise DatasetError(f"{archive} did not contain {_CIFAR_FOLDER}/ with {', '.join(_CIFAR_FILES)}")
            _move_into_place(Path(tmp) / _CIFAR_FOLDER, root / _CIFAR_FOLDER)
        return root, str(archive), looked
    raise _not_found(info, data_dir, looked)


def _move_into_place(staged: Path, target: Path) -> None:
    """Move every file of ``staged`` (complete, checked) into ``target``, each by an atomic rename.

    An interruption leaves some complete files in ``target`` and never a partial one; the
    search above wants all of a dataset's files, so it then counts the dataset as missing.
    """
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(staged.iterdir()):
        if path.is_file():
            os.replace(path, target / path.name)


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


# --------------------------------------------------------------------------------------------
# Downloading through torchvision
# --------------------------------------------------------------------------------------------
def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def downloads_allowed(download: bool | None = None) -> bool:
    """``download`` when given (``--download`` / ``--no-download``); else yes, unless ``$ACTKIT_NO_DOWNLOAD``
    is set to anything but ``0``, ``false`` or ``no``."""
    if download is not None:
        return bool(download)
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")


def _torchvision_folder(info: DatasetInfo) -> Path:
    """Where torchvision keeps the dataset's files under its root."""
    return Path(_CIFAR_FOLDER) if info.name == "cifar10" else Path(info.torchvision_class) / "raw"


@contextlib.contextmanager
def _download_lock(path: Path, log: Callable[[str], None]):
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent downloads are not serialised, each still verified
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Waiting for another process that is downloading into {path.parent} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def download_dataset(name: str, data_dir: str | os.PathLike | None = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Download ``name`` with torchvision into ``data_dir`` (torchvision's layout) and return the folder
    that holds its files. Nothing is kept unless torchvision verified it (see the module docstring)."""
    info = dataset_info(name)
    if info.torchvision_class is None:
        raise DatasetError(f"{info.name} is generated, not downloaded")
    log = log or _stderr
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = data_dir / _torchvision_folder(info)
    prefix = f".actkit-download-{info.name}-"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(data_dir, os.W_OK | os.X_OK)
    except OSError as exc:
        writable, reason = False, exc.strerror or str(exc)
    else:
        reason = "permission denied"
    if not writable:
        raise DatasetNotFoundError(f"{info.name} cannot be downloaded into {data_dir} ({reason}); "
                                   f"pass --data-dir with a writable directory")
    finder = _find_cifar if info.name == "cifar10" else _find_idx
    with _download_lock(data_dir / f".actkit-download-{info.name}.lock", log):
        with contextlib.suppress(DatasetNotFoundError):
            finder(info, data_dir)  # another process finished the download while we waited for the lock
            return target
        for stale in data_dir.glob(prefix + "*"):  # left by a killed download; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        import torchvision.datasets as tvd

        cls = getattr(tvd, info.torchvision_class)
        log(f"{info.name} is not on this machine: downloading it with torchvision into {data_dir} "
            f"(--no-download or {NO_DOWNLOAD_ENV}=1 turns this off)")
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=prefix))
        try:
            # Downloads every file of the dataset, checks each MD5 and extracts; then reads one split,
            # for CIFAR-10 after checking the MD5 of every extracted batch.
            cls(str(tmp), train=False, download=True)
            _move_into_place(tmp / _torchvision_folder(info), target)
        except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError, ...)
            reason = " ".join(str(exc).split())
            raise DatasetNotFoundError(f"downloading {info.name} into {data_dir} failed ({type(exc).__name__}: "
                                       f"{reason}); nothing was kept") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{info.name}: downloaded and verified (MD5) into {target}")
    return target


def _locate(info: DatasetInfo, data_dir: Path, download: bool | None,
            log: Callable[[str], None] | None) -> tuple[Path, str]:
    """(torchvision root, source description): found on disk, else downloaded when allowed."""
    finder = _find_cifar if info.name == "cifar10" else _find_idx
    try:
        root, source, _ = finder(info, data_dir)
        return root, source
    except DatasetNotFoundError as missing:
        if not downloads_allowed(download):
            why = "--no-download" if download is False else f"${NO_DOWNLOAD_ENV} is set; --download overrides it"
            raise DatasetNotFoundError(f"{missing}\n(Downloading is off: {why}.)") from None
        try:
            download_dataset(info.name, data_dir, log)
        except DatasetNotFoundError as failed:
            raise DatasetNotFoundError(f"{missing}\n({str(failed)[0].upper()}{str(failed)[1:]}.)") from failed
    root, source, _ = finder(info, data_dir)
    return root, source


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


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool | None = None,
         val_size: int | None = None, subset: int | None = None, split_seed: int = 0,
         log: Callable[[str], None] | None = None) -> Dataset:
    """Load ``name`` (CPU tensors), split off validation, optionally keep a training subset.

    See the module docstring for where files are looked for and when they are downloaded
    (``download``: ``True`` allow, ``False`` forbid, ``None`` allow unless ``$ACTKIT_NO_DOWNLOAD``;
    ``log`` receives the download messages, default stderr). ``subset`` keeps N training
    images (after the validation split); the test set is always the full official one.
    """
    info = dataset_info(name)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if info.name == "synthetic":
        train, test = synthetic(seed=split_seed)
        source = "generated"
    else:
        root, source = _locate(info, data_dir, download, log)
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
