"""Dataset files in the official formats, and a local HTTP mirror serving them to torchvision's downloader.

The writers produce what the original sites publish: IDX files (MNIST, Fashion-MNIST), gzipped
like the originals or not, and CIFAR-10's python pickle batches (and their ``.tar.gz``). The
:class:`Mirror` serves a directory on 127.0.0.1 (a thread of ``http.server``); ``publish_*`` put
a small dataset on it and point torchvision's class attributes (mirrors, URLs, MD5 sums) at it,
so the download path runs end to end without internet.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd

from actkit import data as D

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# -- writers for the official formats ----------------------------------------------------------
def write_idx_images(path: Path, images: np.ndarray, compress: bool) -> None:
    payload = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_idx_labels(path: Path, labels: np.ndarray, compress: bool) -> None:
    payload = struct.pack(">II", 2049, labels.shape[0]) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def make_idx_dataset(directory: Path, n_train=60, n_test=20, compress=True, seed=0):
    """The four official IDX files (gzipped like the originals, or not) in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx_images(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx_labels(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[split] = (images, labels)
    return arrays


def make_cifar_batches(directory: Path, per_batch=8, n_test=6, seed=0):
    """CIFAR-10's python pickle batches: data uint8 (N, 3072) in R, G, B planes, labels a list."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(), "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh)
        if name == "test_batch":
            test = (batch["data"], batch["labels"])
        else:
            train_data.append(batch["data"])
            train_labels += batch["labels"]
    with open(directory / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(D.DATASETS["cifar10"].classes), "num_vis": 3072,
                     "num_cases_per_batch": per_batch}, fh)
    return (np.concatenate(train_data), train_labels), test


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- a local mirror ----------------------------------------------------------------------------
class Mirror:
    """``root`` served over HTTP on 127.0.0.1; ``requests`` lists the paths asked for, in order.

    ``delay`` seconds are slept before every response (to hold a download open while another
    process or thread tries to start one).
    """

    def __init__(self, root: Path, delay: float = 0.0):
        self.root, self.delay = Path(root), delay
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                time.sleep(mirror.delay)
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        handler = functools.partial(Handler, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> "Mirror":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish_idx(monkeypatch, mirror: Mirror, name: str, seed: int = 0, **sizes) -> dict:
    """Put a small MNIST-family dataset on ``mirror`` as the four official ``.gz`` files and point
    torchvision's class (``mirrors``, ``resources`` with their MD5 sums) at it. Returns the arrays."""
    arrays = make_idx_dataset(mirror.root, seed=seed, **sizes)
    cls = getattr(tvd, D.DATASETS[name].torchvision_class)
    monkeypatch.setattr(cls, "mirrors", [mirror.url])
    monkeypatch.setattr(cls, "resources", [(f"{n}.gz", md5(mirror.root / f"{n}.gz")) for n in IDX_NAMES])
    return arrays


def publish_cifar(monkeypatch, mirror: Mirror, build: Path, seed: int = 0):
    """Put a small CIFAR-10 on ``mirror`` as ``cifar-10-python.tar.gz`` and point torchvision's CIFAR10
    (``url``, ``tgz_md5`` and the MD5 of every batch) at it. Returns ``(train, test)`` as the writer does."""
    folder = build / "cifar-10-batches-py"
    train, test = make_cifar_batches(folder, seed=seed)
    archive = mirror.root / tvd.CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    monkeypatch.setattr(tvd.CIFAR10, "url", mirror.url + archive.name)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5(archive))
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, md5(folder / n)] for n, _ in tvd.CIFAR10.train_list])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [[n, md5(folder / n)] for n, _ in tvd.CIFAR10.test_list])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return train, test


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of ``path`` (same size, different MD5)."""
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
