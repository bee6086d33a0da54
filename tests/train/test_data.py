"""Tests of ncmse.train.data: sources (IDX, torchvision formats), subsets, standardisation,
loader."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ncmse.errors import DataUnavailableError, InputError
from ncmse.train import data as D
from ncmse.train.data import DATASETS, DatasetBundle, TensorLoader, load_dataset, read_idx

# ---------------------------------------------------------------------------------------------
# helpers that write tiny datasets in the real on-disk formats
# ---------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _tiny_images(n_per_class: int, channels: int, size: int, seed: int):
    """Balanced uint8 images whose content depends on the class, plus labels (class-sorted)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    x = rng.integers(0, 256, size=(len(y), channels, size, size), dtype=np.uint8)
    x[:, :, 0, 0] = (y * 20).astype(np.uint8)[:, None]
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def _write_mnist_dir(directory: Path, *, gz: bool, train_per_class: int = 6, test_per_class=3):
    directory.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = _tiny_images(train_per_class, 1, 28, seed=1)
    te_x, te_y = _tiny_images(test_per_class, 1, 28, seed=2)
    _write_idx(directory / "train-images-idx3-ubyte", tr_x[:, 0], gz=gz)
    _write_idx(directory / "train-labels-idx1-ubyte", tr_y, gz=gz)
    _write_idx(directory / "t10k-images-idx3-ubyte", te_x[:, 0], gz=gz)
    _write_idx(directory / "t10k-labels-idx1-ubyte", te_y, gz=gz)
    return tr_x, tr_y, te_x, te_y


def _unstandardize(b: DatasetBundle, x: torch.Tensor) -> np.ndarray:
    return np.rint(((x * b.std + b.mean) * 255).numpy()).astype(np.int64)


def _skip_md5(monkeypatch, module_name: str) -> None:
    """Tiny test files cannot match torchvision's md5 sums: check only that the files exist."""
    import importlib

    module = importlib.import_module(f"torchvision.datasets.{module_name}")
    monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide system-wide IDX installs (e.g. Debian's) so tests see only their tmp files."""
    monkeypatch.setattr(D, "SYSTEM_IDX_DIRS", {"mnist": (), "fashionmnist": ()})


# ---------------------------------------------------------------------------------------------
# IDX sources
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashionmnist_from_flat_idx_dir(tmp_path, gz, no_system_dirs):
    tr_x, tr_y, te_x, te_y = _write_mnist_dir(tmp_path, gz=gz)
    b = load_dataset("fashionmnist", data_dir=tmp_path, download=False)
    assert (b.name, b.num_classes, b.in_channels, b.image_size) == ("fashionmnist", 10, 1, 28)
    assert b.train_x.shape == (60, 1, 28, 28) and b.train_x.dtype == torch.float32
    assert b.test_x.shape == (30, 1, 28, 28)
    assert b.train_y.dtype == torch.int64
    np.testing.assert_array_equal(b.train_y.numpy(), tr_y)
    np.testing.assert_array_equal(b.test_y.numpy(), te_y)
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), tr_x)
    np.testing.assert_array_equal(_unstandardize(b, b.test_x), te_x)
    assert b.balanced


def test_mnist_torchvision_layout_uses_torchvision_class(tmp_path, monkeypatch, no_system_dirs):
    import torchvision.datasets as tvd

    tr_x, tr_y, _, _ = _write_mnist_dir(tmp_path / "MNIST" / "raw", gz=False)
    calls = []
    original = tvd.MNIST.__init__

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("train"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(tvd.MNIST, "__init__", spy)
    b = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert calls == [True, False]
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), tr_x)
    np.testing.assert_array_equal(b.train_y.numpy(), tr_y)


def test_system_idx_dir_is_used_only_when_no_data_dir_is_named(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    tr_x, _, _, _ = _write_mnist_dir(system, gz=True)
    monkeypatch.setattr(D, "SYSTEM_IDX_DIRS", {"mnist": (), "fashionmnist": (system,)})
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NCMSE_DATA_DIR", str(empty))
    b = load_dataset("Fashion-MNIST", download=False)  # default directory: system copy is fine
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), tr_x)
    assert D.dataset_source("fashionmnist") == str(system)
    # a directory the user names is used or refused, never silently replaced by the system copy
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("Fashion-MNIST", data_dir=empty, download=False)
    msg = str(info.value)
    assert str(empty) in msg and "train-images-idx3-ubyte[.gz]" in msg and str(system) not in msg
    assert D.dataset_source("fashionmnist", empty) == str(empty)


def test_explicit_data_dir_with_one_split_only_is_refused(tmp_path, no_system_dirs):
    _write_mnist_dir(tmp_path, gz=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").unlink()
    with pytest.raises(DataUnavailableError, match=r"test split \(t10k-images"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "empty"])
def test_damaged_gz_idx_file_is_an_error_naming_the_file(tmp_path, damage, no_system_dirs):
    _write_mnist_dir(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "not gzip": b"plain bytes" * 9,
                     "empty": b""}[damage])  # fmt: skip
    with pytest.raises((InputError, DataUnavailableError)) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(bad) in str(info.value) and "re-download" in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "fashionmnist", "cifar10", "svhn", "stl10"])
def test_missing_dataset_offline_says_how_to_get_it(tmp_path, name, no_system_dirs):
    with pytest.raises(DataUnavailableError) as info:
        load_dataset(name, data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert name in msg and "data_dir" in msg and "--data-dir" in msg
    if name == "fashionmnist":
        assert "apt-get install dataset-fashion-mnist" in msg


def test_labels_out_of_range_are_rejected(tmp_path, no_system_dirs):
    _write_mnist_dir(tmp_path, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(60, 11, dtype=np.uint8), gz=True)
    with pytest.raises(InputError, match=r"labels of the train split .* \[11, 11\]"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(InputError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(InputError, match="truncated"):
        read_idx(short)
    good = tmp_path / "good"
    _write_idx(good, np.arange(24, dtype=np.uint8).reshape(2, 3, 4), gz=True)
    np.testing.assert_array_equal(read_idx(str(good) + ".gz"), np.arange(24).reshape(2, 3, 4))


# ---------------------------------------------------------------------------------------------
# torchvision formats: CIFAR-10 pickles, SVHN .mat, STL-10 binaries
# ---------------------------------------------------------------------------------------------


def test_cifar10_pickles_through_torchvision(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "cifar")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    expected_x, expected_y = [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        x, y = _tiny_images(1 if k < 5 else 2, 3, 32, seed=10 + k)
        rows = x.reshape(len(x), 3 * 32 * 32)  # CIFAR rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": y.tolist()}, f)
        expected_x.append(x)
        expected_y.append(y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    b = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert (b.in_channels, b.image_size) == (3, 32)
    assert b.train_x.shape == (50, 3, 32, 32) and b.test_x.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), np.concatenate(expected_x[:5]))
    np.testing.assert_array_equal(b.test_y.numpy(), expected_y[5])


def test_svhn_mat_through_torchvision(tmp_path, monkeypatch):
    import scipy.io

    _skip_md5(monkeypatch, "svhn")
    expected = {}
    for split, n in (("train", 2), ("test", 1)):
        x, y = _tiny_images(n, 3, 32, seed=len(split))
        mat_y = np.where(y == 0, 10, y).reshape(-1, 1)  # SVHN stores digit 0 as label 10
        scipy.io.savemat(
            tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": mat_y}
        )
        expected[split] = (x, y)
    b = load_dataset("svhn", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), expected["train"][0])
    np.testing.assert_array_equal(b.train_y.numpy(), expected["train"][1])
    np.testing.assert_array_equal(b.test_y.numpy(), expected["test"][1])


def test_stl10_binaries_through_torchvision(tmp_path, monkeypatch):
    _skip_md5(monkeypatch, "stl10")
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "unlabeled_X.bin").write_bytes(b"")  # checked for presence, never read here
    expected = {}
    for split, n in (("train", 2), ("test", 1)):
        x, y = _tiny_images(n, 3, 96, seed=3 + n)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # column-major
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based
        expected[split] = (x, y)
    b = load_dataset("stl10", data_dir=tmp_path, download=False)
    assert (b.in_channels, b.image_size) == (3, 96)
    np.testing.assert_array_equal(_unstandardize(b, b.train_x), expected["train"][0])
    np.testing.assert_array_equal(b.train_y.numpy(), expected["train"][1])
    np.testing.assert_array_equal(b.test_y.numpy(), expected["test"][1])


# ---------------------------------------------------------------------------------------------
# digits, standardisation, subsets, names
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def test_digits_split_is_fixed_balanced_and_complete(digits):
    from sklearn.datasets import load_digits

    assert (digits.in_channels, digits.image_size, digits.num_classes) == (1, 8, 10)
    counts = digits.class_counts("train")
    assert torch.all(counts == D.DIGITS_TRAIN_PER_CLASS) and digits.balanced
    assert len(digits.train_y) + len(digits.test_y) == 1797
    again = load_dataset("digits", seed=123)  # the split itself does not depend on the seed
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    # train and test together are exactly the scikit-learn images (as a multiset)
    raw = np.rint(load_digits().images * 255 / 16).astype(np.int64).reshape(1797, -1)
    ours = np.concatenate(
        [_unstandardize(digits, digits.train_x), _unstandardize(digits, digits.test_x)]
    ).reshape(1797, -1)
    assert sorted(map(bytes, raw.astype(np.uint8))) == sorted(map(bytes, ours.astype(np.uint8)))


def test_standardisation_of_training_split(digits):
    x = digits.train_x.double()
    assert digits.mean.shape == digits.std.shape == (1, 8, 8)
    assert torch.all(torch.isfinite(digits.train_x)) and torch.all(torch.isfinite(digits.test_x))
    varying = x.std(0, unbiased=False) > 1e-6
    assert varying.sum() > 50
    assert x.mean(0).abs().max() < 1e-5
    assert torch.allclose(x.std(0, unbiased=False)[varying], torch.ones(()).double(), atol=1e-5)
    constant = ~varying  # e.g. the always-blank corner pixel: std guarded to 1, values 0
    assert constant.any()
    assert torch.all(digits.std[constant] == 1) and torch.all(x[:, constant] == 0)


def test_per_class_subset_is_balanced_and_seed_deterministic():
    a = load_dataset("digits", per_class=7, test_per_class=5, seed=3)
    b = load_dataset("digits", per_class=7, test_per_class=5, seed=3)
    c = load_dataset("digits", per_class=7, test_per_class=5, seed=4)
    assert torch.all(a.class_counts("train") == 7) and torch.all(a.class_counts("test") == 5)
    assert a.balanced
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)
    # statistics come from the subset actually used
    assert a.train_x.double().mean(0).abs().max() < 1e-5


def test_balanced_indices_validates():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    idx = D.balanced_indices(labels, 2, num_classes=3, seed=0)
    assert torch.equal(torch.bincount(labels[idx]), torch.tensor([2, 2, 2]))
    assert len(set(idx.tolist())) == 6
    with pytest.raises(InputError, match=r"per_class=3 .*class 1 has 2 samples"):
        D.balanced_indices(labels, 3, num_classes=3)
    with pytest.raises(InputError, match="positive integer"):
        D.balanced_indices(labels, 0, num_classes=3)


def test_per_class_larger_than_smallest_class_is_rejected():
    with pytest.raises(InputError, match=r"per_class=500 is larger than the smallest class"):
        load_dataset("digits", per_class=500)
    with pytest.raises(InputError, match=r"test_per_class=100"):
        load_dataset("digits", test_per_class=100)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(InputError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in DATASETS)


# ---------------------------------------------------------------------------------------------
# TensorLoader
# ---------------------------------------------------------------------------------------------


def _indexed(n: int):
    return torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n)


def test_loader_covers_every_sample_once_per_epoch():
    x, y = _indexed(103)
    loader = TensorLoader(x, y, 10, shuffle=True, seed=5)
    assert len(loader) == 11
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [10] * 10 + [3]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(seen, torch.arange(103))
    for bx, by in batches:
        assert torch.equal(bx[:, 0].long(), by)


def test_loader_order_is_a_function_of_seed_and_epoch():
    x, y = _indexed(50)

    def order(seed: int, epoch: int) -> list[int]:
        loader = TensorLoader(x, y, 8, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([b for _, b in loader]).tolist()

    assert order(1, 4) == order(1, 4)
    assert order(1, 4) != order(1, 5)
    assert order(1, 4) != order(2, 4)
    # without set_epoch each pass advances the epoch, matching set_epoch(0), set_epoch(1), ...
    loader = TensorLoader(x, y, 8, shuffle=True, seed=1)
    first = torch.cat([b for _, b in loader]).tolist()
    second = torch.cat([b for _, b in loader]).tolist()
    assert first == order(1, 0) and second == order(1, 1)


def test_loader_without_shuffle_and_drop_last():
    x, y = _indexed(25)
    loader = TensorLoader(x, y, 10, drop_last=True)
    assert len(loader) == 2
    batches = [b for _, b in loader]
    assert [b.tolist() for b in batches] == [list(range(10)), list(range(10, 20))]
    assert batches[0].data_ptr() == y.data_ptr()  # contiguous slices, no copy


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_union_is_the_global_batch(shuffle, drop_last):
    x, y = _indexed(47)
    world, per_rank = 3, 4
    single = TensorLoader(x, y, per_rank * world, shuffle=shuffle, seed=9, drop_last=drop_last)
    ranks = [
        TensorLoader(
            x, y, per_rank, shuffle=shuffle, seed=9, drop_last=drop_last, rank=r, world_size=world
        )
        for r in range(world)
    ]
    for loader in [single, *ranks]:
        loader.set_epoch(2)
    per_rank_batches = [[b for _, b in loader] for loader in ranks]
    global_batches = [b for _, b in single]
    assert all(len(batches) == len(global_batches) for batches in per_rank_batches)
    for step, global_y in enumerate(global_batches):
        shards = [batches[step] for batches in per_rank_batches]
        assert torch.equal(torch.cat(shards), global_y)
        if len(global_y) == per_rank * world:
            assert all(len(s) == per_rank for s in shards)


def test_loader_moves_data_to_device():
    x, y = _indexed(6)
    loader = TensorLoader(x, y, 4, device="cpu", shuffle=True)
    bx, by = next(iter(loader))
    assert bx.device.type == "cpu" and by.dtype == torch.int64


def test_loader_handles_dtypes_numpy_cannot_view():
    x, y = _indexed(10)
    loader = TensorLoader(x.to(torch.bfloat16), y, 4, shuffle=True, seed=1)
    for bx, by in loader:
        assert bx.dtype == torch.bfloat16
        assert torch.equal(bx[:, 0].long(), by)


def test_loader_validates_arguments():
    x, y = _indexed(6)
    with pytest.raises(InputError, match="same length"):
        TensorLoader(x, y[:5], 2)
    with pytest.raises(InputError, match="batch_size"):
        TensorLoader(x, y, 0)
    with pytest.raises(InputError, match="rank"):
        TensorLoader(x, y, 2, rank=2, world_size=2)


@pytest.mark.slow
@pytest.mark.skipif(
    not (D.SYSTEM_IDX_DIRS["fashionmnist"][0] / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("NCMSE_DATA_DIR", str(tmp_path))
    b = load_dataset("fashionmnist", download=False, per_class=50, seed=1)
    assert b.train_x.shape == (500, 1, 28, 28) and b.balanced
    assert b.test_x.shape == (10000, 1, 28, 28)
    assert torch.all(b.class_counts("test") == 1000)
