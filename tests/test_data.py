"""actkit.data: torchvision's loaders on files written in the official formats, the offline search,
splits, and device-resident batching."""
import dataclasses
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import (IDX_NAMES, Mirror, corrupt, make_cifar_batches, make_idx_dataset, publish_cifar, publish_idx,
                       write_idx_labels)

from actkit import data as D
from actkit.batches import Batcher

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def full_train(ds: D.Dataset):
    """Reassemble the official training set from the train + val splits (they partition it here)."""
    images = torch.cat([ds.val.images, ds.train.images])  # load() takes val first, then train, from one permutation
    labels = torch.cat([ds.val.labels, ds.train.labels])
    order = torch.randperm(ds.sizes["train_full"], generator=torch.Generator().manual_seed(0))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return images[inverse], labels[inverse]


def set_system_dirs(monkeypatch, *dirs):
    """Point Fashion-MNIST's system search path at ``dirs`` (instead of /usr/share/datasets/...)."""
    info = dataclasses.replace(D.DATASETS["fashion-mnist"], system_dirs=tuple(str(d) for d in dirs))
    monkeypatch.setitem(D.DATASETS, "fashion-mnist", info)


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide /usr/share/datasets so tests see only their own files."""
    set_system_dirs(monkeypatch)


# -- MNIST family ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_in_torchvision_layout_gzipped(tmp_path, name, folder, no_system_dirs):
    arrays = make_idx_dataset(tmp_path / folder / "raw", compress=True)
    ds = D.load(name, data_dir=tmp_path, val_size=10)
    assert ds.source == str(tmp_path / folder / "raw")
    assert ds.sizes == {"train": 50, "val": 10, "test": 20, "train_full": 60}
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == (1, 28, 28)
    images, labels = full_train(ds)
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(labels, torch.from_numpy(arrays["train"][1]).long())
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert torch.equal(ds.test.labels, torch.from_numpy(arrays["t10k"][1]).long())
    # torchvision needs the decompressed files; they were written next to the .gz files
    assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").is_file()


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_in_any_directory_are_staged(tmp_path, compress, no_system_dirs):
    official = tmp_path / "downloads"
    arrays = make_idx_dataset(official, compress=compress, seed=1)
    ds = D.load("fashion-mnist", data_dir=official, val_size=10)
    assert ds.source == str(official)
    staged = official / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    assert staged.is_file() and (staged.is_symlink() != compress)
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    images, labels = full_train(ds)
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train"][0]))


def test_system_directory_is_searched_and_staged_into_data_dir(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = make_idx_dataset(system, seed=2)
    set_system_dirs(monkeypatch, system)
    cache = tmp_path / "cache"
    ds = D.load("fashion-mnist", data_dir=cache, val_size=5)
    assert ds.source == str(system)
    assert (cache / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte").is_file()
    assert torch.equal(ds.test.labels, torch.from_numpy(arrays["t10k"][1]).long())
    # the staged copy is used from now on, even without the system directory
    set_system_dirs(monkeypatch)
    again = D.load("fashion-mnist", data_dir=cache, val_size=5)
    assert again.source == str(cache / "FashionMNIST" / "raw")
    assert torch.equal(again.test.images, ds.test.images)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_not_found_says_where_it_looked_and_how_to_get_it(tmp_path, name, monkeypatch):
    set_system_dirs(monkeypatch, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load(name, data_dir=empty, download=False)
    message = str(err.value)
    assert str(empty) in message
    assert f"actkit train --dataset {name} --download --data-dir {empty}" in message
    if name == "fashion-mnist":
        assert str(tmp_path / "nowhere") in message
        assert "sudo apt-get install dataset-fashion-mnist" in message
    if name == "cifar10":
        assert "cifar-10-python.tar.gz" in message
    assert message.endswith("(Downloading is off: --no-download.)")


def test_corrupt_idx_labels_are_reported(tmp_path, no_system_dirs):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_dataset(raw, compress=False)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.full(20, 12, dtype=np.uint8), compress=False)
    with pytest.raises(D.DatasetError, match="outside 0..9"):
        D.load("mnist", data_dir=tmp_path, val_size=5)


# -- CIFAR-10 --------------------------------------------------------------------------------
def _check_cifar(ds, train, test):
    (train_data, train_labels), (test_data, test_labels) = train, test
    assert ds.test.images.shape == (len(test_labels), 3, 32, 32)
    # pixel (c, h, w) of image i is data[i, c * 1024 + h * 32 + w]
    expected = torch.from_numpy(test_data.reshape(-1, 3, 32, 32))
    assert torch.equal(ds.test.images, expected)
    assert ds.test.labels.tolist() == test_labels
    images, labels = full_train(ds)
    assert torch.equal(images, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))
    assert labels.tolist() == train_labels


def test_cifar_batches_in_torchvision_layout(tmp_path):
    train, test = make_cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = D.load("cifar10", data_dir=tmp_path, val_size=4)
    assert ds.sizes == {"train": 36, "val": 4, "test": 6, "train_full": 40}
    assert ds.info.augment is True
    _check_cifar(ds, train, test)


def test_cifar_archive_is_extracted(tmp_path):
    build = tmp_path / "build"
    train, test = make_cifar_batches(build / "cifar-10-batches-py", seed=3)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(build / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = D.load("cifar-10", data_dir=data_dir, val_size=4)
    assert ds.source == str(data_dir / "cifar-10-python.tar.gz")
    _check_cifar(ds, train, test)


def test_cifar_batches_in_another_folder(tmp_path):
    train, test = make_cifar_batches(tmp_path / "my-cifar", seed=4)
    ds = D.load("cifar10", data_dir=tmp_path / "my-cifar", val_size=4)
    _check_cifar(ds, train, test)


# -- downloading through torchvision, from a local mirror --------------------------------------
@pytest.fixture
def mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV, raising=False)
    with Mirror(tmp_path / "mirror") as m:
        yield m


def dataset_files(data_dir: Path) -> list[str]:
    """Every file under ``data_dir`` but the download lock files, relative."""
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


def quiet(message: str) -> None:
    pass


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_a_missing_idx_dataset_is_downloaded_and_found_offline_afterwards(tmp_path, mirror, monkeypatch, name,
                                                                         folder, no_system_dirs):
    arrays = publish_idx(monkeypatch, mirror, name, seed=5)
    data_dir, messages = tmp_path / "data", []
    ds = D.load(name, data_dir=data_dir, val_size=10, log=messages.append)
    raw = data_dir / folder / "raw"
    assert ds.source == str(raw)
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    images, labels = full_train(ds)
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(labels, torch.from_numpy(arrays["train"][1]).long())
    assert messages[0] == (f"{name} is not on this machine: downloading it with torchvision into {data_dir} "
                           f"(--no-download or ACTKIT_NO_DOWNLOAD=1 turns this off)")
    assert messages[-1] == f"{name}: downloaded and verified (MD5) into {raw}"
    # torchvision's layout: the verified archives and their contents, no temporary directory left
    assert dataset_files(data_dir) == sorted(f"{folder}/raw/{n}{ext}" for n in IDX_NAMES for ext in ("", ".gz"))
    served = len(mirror.requests)
    again = D.load(name, data_dir=data_dir, val_size=10, download=False)
    assert len(mirror.requests) == served and torch.equal(again.test.images, ds.test.images)


def test_a_missing_cifar10_is_downloaded_and_extracted(tmp_path, mirror, monkeypatch):
    train, test = publish_cifar(monkeypatch, mirror, tmp_path / "build", seed=6)
    data_dir = tmp_path / "data"
    ds = D.load("cifar10", data_dir=data_dir, val_size=4, log=quiet)
    assert ds.source == str(data_dir / "cifar-10-batches-py")
    _check_cifar(ds, train, test)
    # the batches (each checked against its MD5 by torchvision); the archive is not kept
    assert dataset_files(data_dir) == sorted(f"cifar-10-batches-py/{n}" for n in D._CIFAR_FILES)


def test_a_tampered_download_is_rejected_and_nothing_is_kept(tmp_path, mirror, monkeypatch, no_system_dirs):
    """torchvision downloads in place and leaves a file that fails its MD5 check where it lies: the three
    good files plus this one would make a set that the offline search accepts, with the wrong labels."""
    publish_idx(monkeypatch, mirror, "mnist", seed=7)
    served = mirror.root / "t10k-labels-idx1-ubyte.gz"
    good = served.read_bytes()
    write_idx_labels(served, np.zeros(20, np.uint8), compress=True)  # valid IDX, not what the MD5 says
    data_dir = tmp_path / "data"
    make_idx_dataset(data_dir / ".actkit-download-mnist-killed" / "MNIST" / "raw", seed=8)  # a killed download's
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("mnist", data_dir=data_dir, log=quiet)
    message = " ".join(str(err.value).split())
    assert message.startswith(f"mnist not found: looked for the official IDX files")
    assert "Error downloading t10k-labels-idx1-ubyte.gz" in message and "File not found or corrupted" in message
    assert message.endswith("nothing was kept.)")
    assert dataset_files(data_dir) == []  # neither the verified files, nor the bad one, nor the killed download's
    with pytest.raises(D.DatasetNotFoundError, match="mnist not found"):
        D.load("mnist", data_dir=data_dir, download=False)
    served.write_bytes(good)  # the mirror repaired: the next run gets the dataset
    assert len(D.load("mnist", data_dir=data_dir, val_size=10, log=quiet).test) == 20


def test_a_corrupt_cifar_archive_is_rejected_and_not_extracted_later(tmp_path, mirror, monkeypatch):
    publish_cifar(monkeypatch, mirror, tmp_path / "build")
    corrupt(mirror.root / "cifar-10-python.tar.gz")
    data_dir = tmp_path / "data"
    with pytest.raises(D.DatasetNotFoundError, match="File not found or corrupted.*nothing was kept"):
        D.load("cifar10", data_dir=data_dir, log=quiet)
    assert dataset_files(data_dir) == []  # in place, the archive would have been extracted by the next search
    with pytest.raises(D.DatasetNotFoundError, match="cifar10 not found"):
        D.load("cifar10", data_dir=data_dir, download=False)


@pytest.mark.parametrize("value,allowed", [("1", False), ("yes", False), ("0", True), ("", True), ("false", True)])
def test_the_no_download_environment_variable(monkeypatch, value, allowed):
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, value)
    assert D.downloads_allowed() is allowed
    assert D.downloads_allowed(True) is True and D.downloads_allowed(False) is False


def test_no_download_in_the_environment_keeps_the_not_found_error(tmp_path, mirror, monkeypatch, no_system_dirs):
    publish_idx(monkeypatch, mirror, "mnist")
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("mnist", data_dir=tmp_path / "data")
    assert str(err.value).startswith("mnist not found: looked for")
    assert str(err.value).endswith("(Downloading is off: $ACTKIT_NO_DOWNLOAD is set; --download overrides it.)")
    assert mirror.requests == []
    assert len(D.load("mnist", data_dir=tmp_path / "data", download=True, val_size=10, log=quiet).test) == 20


def test_concurrent_downloads_into_one_directory_fetch_each_file_once(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV, raising=False)
    with Mirror(tmp_path / "mirror", delay=0.05) as mirror:
        publish_idx(monkeypatch, mirror, "mnist")
        D.load("mnist", data_dir=tmp_path / "alone", log=quiet, val_size=10)
        one_download = sorted(mirror.requests)
        mirror.requests.clear()
        loaded, messages, errors = {}, [], []

        def worker(i):
            try:
                loaded[i] = D.load("mnist", data_dir=tmp_path / "shared", val_size=10, log=messages.append)
            except BaseException as exc:  # reported below
                errors.append(exc)

        first = threading.Thread(target=worker, args=(0,))
        first.start()
        while not mirror.requests:  # the first holds the lock once it asks for a file
            first.join(0.01)
        second = threading.Thread(target=worker, args=(1,))
        second.start()
        first.join()
        second.join()
    assert not errors, errors
    assert sorted(mirror.requests) == one_download
    assert any(m.startswith("Waiting for another process that is downloading into") for m in messages)
    assert torch.equal(loaded[0].test.images, loaded[1].test.images)


# -- real data (Debian's dataset-fashion-mnist) ------------------------------------------------
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(),
                    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    ds = D.load("fashion-mnist", data_dir=tmp_path)
    assert ds.source == str(DEBIAN_FASHION)
    assert ds.sizes == {"train": 55000, "val": 5000, "test": 10000, "train_full": 60000}
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class
    assert torch.bincount(torch.cat([ds.train.labels, ds.val.labels])).tolist() == [6000] * 10
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    # The mean of 47 million pixels, summed in float64 so that the comparison is with the 4-digit
    # constant alone, not with an fp32 sum's rounding (whose order varies between CPUs).
    mean = torch.cat([ds.train.images, ds.val.images]).double().div(255).mean().item()
    assert mean == pytest.approx(D.DATASETS["fashion-mnist"].mean[0], abs=1e-3)


# -- splits ----------------------------------------------------------------------------------
def test_splits_are_fixed_disjoint_and_subset_is_a_prefix():
    a = D.load("synthetic", val_size=600)
    b = D.load("synthetic", val_size=600, subset=1000)
    assert a.sizes == {"train": 5400, "val": 600, "test": 1000, "train_full": 6000}
    assert torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.train.images[:1000], b.train.images) and len(b.train) == 1000
    assert torch.equal(a.test.images, b.test.images)
    assert D.resolve_val_size(None, 60000) == 5000 and D.resolve_val_size(None, 6000) == 600


@pytest.mark.parametrize("kwargs,match", [({"subset": 0}, "--subset"), ({"subset": 6000}, "--subset"),
                                          ({"val_size": 6000}, "--val-size"), ({"val_size": 0}, "--val-size")])
def test_bad_sizes_are_rejected(kwargs, match):
    with pytest.raises(D.DatasetError, match=match):
        D.load("synthetic", **kwargs)


def test_unknown_dataset():
    with pytest.raises(D.DatasetError, match="unknown dataset 'imagenet'.*mnist, fashion-mnist, cifar10, synthetic"):
        D.dataset_info("imagenet")
    assert D.dataset_info("Fashion_MNIST").name == "fashion-mnist"


def test_synthetic_is_seeded():
    a_train, a_test = D.synthetic(n_train=100, n_test=10, seed=5)
    b_train, _ = D.synthetic(n_train=100, n_test=10, seed=5)
    c_train, _ = D.synthetic(n_train=100, n_test=10, seed=6)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_train.labels, b_train.labels)
    assert not torch.equal(a_train.images, c_train.images)
    assert a_train.images.dtype == torch.float32 and a_train.images.shape == (100, 1, 28, 28)


# -- batching --------------------------------------------------------------------------------
def _uint8_split(n=10, c=1, hw=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return D.Split(torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g), torch.arange(n))


def test_batcher_normalises_and_keeps_order_without_shuffle():
    split = _uint8_split()
    info = D.DATASETS["fashion-mnist"]
    batches = list(Batcher(split, info, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    expected = (split.images.double() / 255 - info.mean[0]) / info.std[0]
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))


def test_batcher_shuffles_by_generator_and_covers_every_example():
    split = _uint8_split(n=11)
    info = D.DATASETS["mnist"]
    def epoch(seed):
        b = Batcher(split, info, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return torch.cat([y for _, y in b]).tolist()
    first = epoch(3)
    assert sorted(first) == list(range(11))
    assert epoch(3) == first and epoch(4) != first
    # a trailing batch of one image is dropped when training (BatchNorm needs two)
    b = Batcher(_uint8_split(n=9), info, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert [len(y) for _, y in b] == [4, 4] and b.n_examples == 8 and len(b) == 2


def test_augmentation_is_random_crop_and_flip():
    split = _uint8_split(n=6, c=3, hw=32, seed=1)
    info = D.DATASETS["cifar10"]
    batcher = Batcher(split, info, 6, augment=True, generator=torch.Generator().manual_seed(7))
    out = batcher.prepare(split.images)
    # reference: the same random draws, applied image by image with slicing
    g = torch.Generator().manual_seed(7)
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    assert 0 < int(flips.sum()) < 6  # the seed exercises both branches
    scaled = split.images.float() / 255
    padded = torch.nn.functional.pad(scaled, (4, 4, 4, 4))
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    for i in range(6):
        oy, ox = offsets[i].tolist()
        crop = padded[i, :, oy:oy + 32, ox:ox + 32]
        if flips[i]:
            crop = crop.flip(-1)
        torch.testing.assert_close(out[i], (crop - mean) / std)


def test_batcher_parts_make_up_the_one_process_batches():
    """The device-resident DistributedSampler: 3 processes' shares of each step are one process's batch."""
    split = _uint8_split(n=23, c=3, hw=32, seed=2)  # 8 + 8 + 7 images: the last batch splits 2/2/3
    info = D.DATASETS["cifar10"]

    def batches(part):
        return list(Batcher(split, info, 8, shuffle=True, augment=True, part=part,
                              generator=torch.Generator().manual_seed(3)))
    whole, parts = batches((0, 1)), [batches((r, 3)) for r in range(3)]
    assert len(whole) == 3 and all(len(p) == 3 for p in parts)
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[step][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[step][0] for p in parts]), x)
    assert [len(p[2][1]) for p in parts] == [2, 2, 3]
    # a trailing batch with fewer than 2 images per process is dropped (21 = 8 + 8 + 5 < 2 x 3)
    three = Batcher(_uint8_split(n=21), info, 8, shuffle=True, generator=torch.Generator(), part=(1, 3))
    assert three.n_examples == 16 and len(three) == 2 and three.global_size(1) == 8
    one = Batcher(_uint8_split(n=21), info, 8, shuffle=True, generator=torch.Generator())
    assert one.n_examples == 21 and one.global_size(2) == 5
    with pytest.raises(ValueError, match="0 <= rank < world"):
        Batcher(split, info, 8, part=(3, 3))
