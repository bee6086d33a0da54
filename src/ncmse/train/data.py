"""Datasets of the paper as in-memory tensors, balanced subsets and a fast tensor loader.

Every dataset of SPEC §6 (MNIST, FashionMNIST, CIFAR10, SVHN, STL10) is read once through
torchvision's dataset class (``download=True`` fetches it when online; ``data_dir`` points at a
local copy) and kept as one uint8 tensor, so no image is decoded per sample and per epoch.  MNIST
and Fashion-MNIST are also read straight from a directory of raw IDX files (``.gz`` or not), such
as the one Debian's ``dataset-fashion-mnist`` package installs.  ``digits`` is scikit-learn's
bundled 8×8 digits data set with a fixed balanced train split; it needs no files and no network.

Images are standardised pixel-wise with the mean and standard deviation of the training split that
is actually used (after any ``per_class`` subsetting); there is no augmentation.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor

from ncmse.errors import DataUnavailableError, InputError

__all__ = [
    "DATASETS",
    "DIGITS_TRAIN_PER_CLASS",
    "SYSTEM_IDX_DIRS",
    "DatasetBundle",
    "TensorLoader",
    "balanced_indices",
    "dataset_source",
    "default_data_dir",
    "load_dataset",
    "read_idx",
    "standardize",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashionmnist", "cifar10", "svhn", "stl10")

#: Training images per class of the fixed ``digits`` split; the remaining images form the test set.
DIGITS_TRAIN_PER_CLASS = 120

#: Directories where distributions install raw IDX files (Debian: ``apt-get install dataset-*``).
SYSTEM_IDX_DIRS: dict[str, tuple[Path, ...]] = {
    "fashionmnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (Path("/usr/share/datasets/mnist"),),
}

_IDX_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TV_FOLDER = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_ALT_FOLDERS = {"mnist": ("mnist", "MNIST"), "fashionmnist": ("fashion-mnist", "fashion_mnist")}
_HOW_TO_GET = {
    "mnist": "put the four IDX files (train-images-idx3-ubyte.gz, ...) in data_dir",
    "fashionmnist": (
        "put the four IDX files (train-images-idx3-ubyte.gz, ...) in data_dir, "
        "or install them with `apt-get install dataset-fashion-mnist`"
    ),
    "cifar10": "put the extracted cifar-10-batches-py/ folder in data_dir",
    "svhn": "put train_32x32.mat and test_32x32.mat in data_dir",
    "stl10": "put the extracted stl10_binary/ folder in data_dir",
}
# Errors torchvision raises when files are missing/corrupt or the download fails.
_TV_ERRORS = (RuntimeError, URLError, OSError, ValueError)


@dataclass
class DatasetBundle:
    """A dataset held as standardised tensors.

    Attributes
    ----------
    name : str
        Dataset name, one of :data:`DATASETS`.
    num_classes, in_channels, image_size : int
        Number of classes, image channels and (square) image side in pixels.
    train_x, test_x : Tensor
        ``[N, C, H, W]`` float32 images, standardised with the training mean/std.
    train_y, test_y : Tensor
        ``[N]`` int64 labels in ``[0, num_classes)``.
    mean, std : Tensor
        ``[C, H, W]`` pixel-wise statistics of the (subsetted) training split, on the [0, 1] scale.
        Pixels with zero spread have ``std`` set to 1.
    balanced : bool
        Whether every class has the same number of training samples.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: Tensor
    std: Tensor
    balanced: bool

    def class_counts(self, split: str = "train") -> Tensor:
        """Number of samples per class of ``split`` (``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise InputError(f"split must be 'train' or 'test', got {split!r}")
        y = self.train_y if split == "train" else self.test_y
        return torch.bincount(y, minlength=self.num_classes)


# --------------------------------------------------------------------------------------------
# Raw sources: each returns (images uint8 [N, C, H, W], labels int64 [N]) for one split.
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST file format), gzip-compressed or not.

    Parameters
    ----------
    path : str or Path
        File name; a ``.gz`` suffix means gzip compression.

    Returns
    -------
    numpy.ndarray
        The array with the shape stored in the file header.

    Raises
    ------
    InputError
        If the header is not a valid IDX header, the payload has the wrong size, or a ``.gz``
        file is truncated or not gzip data (the message names the file).
    DataUnavailableError
        If the file cannot be read.
    """
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        what = "truncated" if isinstance(exc, EOFError) else "not valid gzip data"
        raise InputError(
            f"IDX file {path} is {what} ({type(exc).__name__}: {exc}); re-download it"
        ) from None
    except OSError as exc:
        raise DataUnavailableError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InputError(
            f"{path} is truncated or corrupt: header announces shape {shape} "
            f"({expected} bytes) but {len(raw) - header} bytes follow; re-download it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx_pair(directory: Path, train: bool) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of one split in ``directory``, or None if absent."""
    found = []
    for stem in _IDX_STEMS[train]:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if (directory / name).is_file():
                found.append(directory / name)
                break
        else:
            return None
    return found[0], found[1]


def _idx_search_dirs(name: str, root: Path, explicit: bool = False) -> list[Path]:
    """Directories that may hold raw IDX files of ``name``, most specific first.

    The system-wide installs (:data:`SYSTEM_IDX_DIRS`) are searched only when ``root`` is the
    default directory: a ``data_dir`` the user names is used or refused, never replaced.
    """
    dirs = [root, root / _TV_FOLDER[name] / "raw"]
    dirs += [root / alt for alt in _ALT_FOLDERS[name]]
    if not explicit:
        dirs += list(SYSTEM_IDX_DIRS[name])
    return dirs


def _idx_file_names(train: bool) -> str:
    return ", ".join(f"{stem}[.gz]" for stem in _IDX_STEMS[train])


def _load_idx_dir(directory: Path, train: bool) -> tuple[Tensor, Tensor]:
    """Read one split from a directory of IDX files."""
    pair = _find_idx_pair(directory, train)
    if pair is None:
        raise DataUnavailableError(
            f"no IDX files of the {'train' if train else 'test'} split in {directory}"
        )
    images, labels = (read_idx(p) for p in pair)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(
            f"IDX files in {directory} do not fit: images {images.shape}, labels {labels.shape}; "
            "expected [N, H, W] and [N]"
        )
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _torchvision_mnist_present(name: str, root: Path) -> bool:
    raw = root / _TV_FOLDER[name] / "raw"
    return all((raw / stem).is_file() for t in (True, False) for stem in _IDX_STEMS[t])


def _unavailable(
    name: str, root: Path, download: bool, err: Exception | None, explicit: bool = False
) -> DataUnavailableError:
    why = "download=False" if not download else "the download failed"
    if err is not None:
        why += f" (torchvision: {type(err).__name__}: {err})"
    where = f"the data_dir you named, {root}," if explicit else f"{root}"
    looked = ""
    if name in _TV_FOLDER:
        dirs = ", ".join(str(d) for d in _idx_search_dirs(name, root, explicit))
        looked = f" (looked for {_idx_file_names(True)}, {_idx_file_names(False)} in {dirs})"
    return DataUnavailableError(
        f"dataset {name!r} was not found in {where}{looked} and {why}. To fix: "
        f"{_HOW_TO_GET[name]} and pass data_dir=... (CLI: --data-dir ...), or run online with "
        "download=True."
    )


def _mnist_source(name: str, root: Path, explicit: bool) -> Path | None:
    """Directory the MNIST-like files of ``name`` are read from (None: torchvision download).

    Raises
    ------
    DataUnavailableError
        If an explicit ``data_dir`` holds only one split's files.
    """
    if _torchvision_mnist_present(name, root):
        return root
    for directory in _idx_search_dirs(name, root, explicit):
        train, test = _find_idx_pair(directory, True), _find_idx_pair(directory, False)
        if train and test:
            return directory
        if explicit and (train or test):
            missing = "test" if train else "train"
            raise DataUnavailableError(
                f"data_dir {directory} holds the IDX files of one split but not those of the "
                f"{missing} split ({_idx_file_names(missing == 'train')}); add them there or "
                "pass another --data-dir"
            )
    return None


def _load_mnist_like(
    name: str, root: Path, download: bool, train: bool, explicit: bool = False
) -> tuple[Tensor, Tensor]:
    """MNIST/Fashion-MNIST: torchvision layout, else raw IDX files, else download."""
    from torchvision import datasets  # lazy (as sklearn below): slow imports, for some data only

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    source = _mnist_source(name, root, explicit)
    if source == root and _torchvision_mnist_present(name, root):
        ds = cls(str(root), train=train, download=False)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()
    if source is not None:
        return _load_idx_dir(source, train)
    if not download:
        raise _unavailable(name, root, download, None, explicit)
    try:
        ds = cls(str(root), train=train, download=True)
    except _TV_ERRORS as err:
        raise _unavailable(name, root, download, err, explicit) from err
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def _torchvision_split(name: str, root: Path, download: bool, train: bool) -> object:
    from torchvision import datasets

    try:
        if name == "cifar10":
            return datasets.CIFAR10(str(root), train=train, download=download)
        split = "train" if train else "test"
        if name == "svhn":
            return datasets.SVHN(str(root), split=split, download=download)
        return datasets.STL10(str(root), split=split, download=download)
    except _TV_ERRORS as err:
        raise _unavailable(name, root, download, err) from err


def _load_torchvision_color(
    name: str, root: Path, download: bool, train: bool
) -> tuple[Tensor, Tensor]:
    """CIFAR10 / SVHN / STL10 through torchvision, as uint8 ``[N, 3, H, W]``."""
    ds = _torchvision_split(name, root, download, train)
    data = np.asarray(ds.data)  # type: ignore[attr-defined]
    if name == "cifar10":
        data = data.transpose(0, 3, 1, 2)  # torchvision keeps CIFAR as NHWC
        labels = np.asarray(ds.targets)  # type: ignore[attr-defined]
    else:
        labels = np.asarray(ds.labels)  # type: ignore[attr-defined]
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8))
    return x, torch.from_numpy(labels.astype(np.int64))


def _digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8×8 digits with a fixed balanced training split (rest is test).

    The split does not depend on any seed: the first :data:`DIGITS_TRAIN_PER_CLASS` images of every
    class, in a fixed shuffled order, form the training set.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(20220101).permutation(len(labels))
    train_mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        train_mask[members[:DIGITS_TRAIN_PER_CLASS]] = True
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    tr = torch.from_numpy(train_mask)
    return x[tr], y[tr], x[~tr], y[~tr]


# --------------------------------------------------------------------------------------------
# Subsets and standardisation
# --------------------------------------------------------------------------------------------


def balanced_indices(
    labels: Tensor, per_class: int, *, num_classes: int, seed: int = 0, what: str = "per_class"
) -> Tensor:
    """Indices of a balanced subset with ``per_class`` samples of every class.

    Parameters
    ----------
    labels : Tensor
        ``[N]`` integer labels.
    per_class : int
        Samples to draw from every class (without replacement).
    num_classes : int
        Number of classes; every class must have at least ``per_class`` samples.
    seed : int
        The subset is a pure function of ``(labels, per_class, seed)``.
    what : str
        Name of the argument, used in error messages.

    Returns
    -------
    Tensor
        Sorted int64 indices, ``per_class * num_classes`` of them.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise InputError(f"{what} must be a positive integer, got {per_class!r}")
    counts = torch.bincount(labels, minlength=num_classes)
    smallest = int(counts.min())
    if per_class > smallest:
        raise InputError(
            f"{what}={per_class} is larger than the smallest class "
            f"(class {int(counts.argmin())} has {smallest} samples); use {what} <= {smallest}"
        )
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    chosen = [
        rng.choice(np.flatnonzero(y == c), size=per_class, replace=False)
        for c in range(num_classes)
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def _pixel_stats(x: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Pixel-wise mean and population std of uint8 images on the [0, 1] scale, in float64."""
    n = x.shape[0]
    if n == 0:
        raise InputError("cannot standardise an empty training split")
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    for start in range(0, n, chunk):
        total += x[start : start + chunk].to(torch.float64).sum(0)
    mean = total / (255.0 * n)
    sq = torch.zeros_like(total)
    for start in range(0, n, chunk):
        sq += (x[start : start + chunk].to(torch.float64) / 255.0 - mean).square().sum(0)
    return mean, (sq / n).sqrt()


def standardize(x: Tensor, mean: Tensor, std: Tensor, chunk: int = 8192) -> Tensor:
    """``(x / 255 - mean) / std`` as float32, chunked to bound the float64 temporaries.

    Parameters
    ----------
    x : Tensor
        ``[N, C, H, W]`` uint8 images.
    mean, std : Tensor
        ``[C, H, W]`` statistics on the [0, 1] scale; ``std`` must be positive.

    Returns
    -------
    Tensor
        ``[N, C, H, W]`` float32.
    """
    scale = (1.0 / (255.0 * std)).to(torch.float32)
    shift = (mean / std).to(torch.float32)
    out = torch.empty(x.shape, dtype=torch.float32)
    for start in range(0, x.shape[0], chunk):
        torch.sub(
            x[start : start + chunk].to(torch.float32) * scale,
            shift,
            out=out[start : start + chunk],
        )
    return out


# --------------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$NCMSE_DATA_DIR`` if set, else ``~/.cache/ncmse/data``."""
    env = os.environ.get("NCMSE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ncmse" / "data"


def _raw_splits(
    name: str, root: Path, download: bool, explicit: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if name == "digits":
        return _digits_split()
    if name in _TV_FOLDER:
        train_x, train_y = _load_mnist_like(name, root, download, True, explicit)
        test_x, test_y = _load_mnist_like(name, root, download, False, explicit)
        return train_x, train_y, test_x, test_y
    train_x, train_y = _load_torchvision_color(name, root, download, True)
    test_x, test_y = _load_torchvision_color(name, root, download, False)
    return train_x, train_y, test_x, test_y


def dataset_source(name: str, data_dir: str | Path | None = None) -> str | None:
    """The directory :func:`load_dataset` reads ``name`` from (None: built in, e.g. digits).

    For MNIST and Fashion-MNIST without an explicit ``data_dir`` this may be a system-wide
    install (:data:`SYSTEM_IDX_DIRS`); what a run records as the data it used.
    """
    key = _check_name(name)
    if key == "digits":
        return None
    explicit = data_dir is not None
    root = Path(data_dir).expanduser() if explicit else default_data_dir()
    if key in _TV_FOLDER:
        with contextlib.suppress(DataUnavailableError):
            source = _mnist_source(key, root, explicit)
            if source is not None:
                return str(source.resolve())
    return str(root.resolve())


def _check_labels(name: str, root: Path, train_y: Tensor, test_y: Tensor, num_classes: int) -> None:
    """Reject label files with values outside ``[0, num_classes)`` (a corrupt or foreign copy)."""
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) == 0:
            raise DataUnavailableError(f"the {split} split of {name!r} under {root} is empty")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise InputError(
                f"labels of the {split} split of {name!r} under {root} lie in [{lo}, {hi}], "
                f"outside [0, {num_classes}); the local copy is corrupt or not {name}: replace it"
            )


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise InputError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; valid names are: {', '.join(DATASETS)}")
    return key


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
) -> DatasetBundle:
    """Load a dataset as standardised in-memory tensors.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case and ``-``/``_`` are ignored, so ``"Fashion-MNIST"`` works).
    data_dir : str or Path, optional
        Directory with a local copy (torchvision layout, or raw IDX files for MNIST and
        Fashion-MNIST); also where downloads go. A directory named here is used or refused,
        never silently replaced. Defaults to :func:`default_data_dir`; then, for MNIST and
        Fashion-MNIST, the Debian install paths (e.g. ``/usr/share/datasets/fashion-mnist``)
        are tried before downloading (:func:`dataset_source` says which directory was used).
    download : bool
        Whether torchvision may download a missing dataset.
    per_class, test_per_class : int, optional
        Draw a balanced subset with this many samples of every class from the training/test split
        (PNAS protocol: MNIST 5000, SVHN 4600). ``None`` keeps the whole split.
    seed : int
        Seed of the subsets; the result is a pure function of the arguments.

    Returns
    -------
    DatasetBundle

    Raises
    ------
    InputError
        Unknown name, or ``per_class``/``test_per_class`` larger than the smallest class.
    DataUnavailableError
        The dataset is not on disk and cannot be downloaded.
    """
    key = _check_name(name)
    explicit = data_dir is not None
    root = Path(data_dir).expanduser() if explicit else default_data_dir()
    if explicit and root.exists() and not root.is_dir():
        raise DataUnavailableError(
            f"data_dir {root} is not a directory; pass the directory that holds the files"
        )
    train_x, train_y, test_x, test_y = _raw_splits(key, root, download, explicit)
    num_classes = 10
    _check_labels(key, root, train_y, test_y, num_classes)
    if per_class is not None:
        idx = balanced_indices(train_y, per_class, num_classes=num_classes, seed=seed)
        train_x, train_y = train_x[idx], train_y[idx]
    if test_per_class is not None:
        idx = balanced_indices(
            test_y, test_per_class, num_classes=num_classes, seed=seed + 1, what="test_per_class"
        )
        test_x, test_y = test_x[idx], test_y[idx]
    mean, std = _pixel_stats(train_x)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    counts = torch.bincount(train_y, minlength=num_classes)
    return DatasetBundle(
        name=key,
        num_classes=num_classes,
        in_channels=int(train_x.shape[1]),
        image_size=int(train_x.shape[-1]),
        train_x=standardize(train_x, mean, std),
        train_y=train_y.contiguous(),
        test_x=standardize(test_x, mean, std),
        test_y=test_y.contiguous(),
        mean=mean.to(torch.float32),
        std=std.to(torch.float32),
        balanced=bool((counts == counts[0]).all()),
    )


# --------------------------------------------------------------------------------------------
# TensorLoader
# --------------------------------------------------------------------------------------------


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, epoch)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)]).generate_state(2)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return g


def _numpy_view(t: Tensor) -> np.ndarray | None:
    """A numpy view sharing ``t``'s memory, or None where numpy cannot represent it."""
    if t.device.type != "cpu":
        return None
    try:
        return t.detach().numpy()
    except (TypeError, RuntimeError):  # e.g. bfloat16
        return None


def _gather(t: Tensor, view: np.ndarray | None, idx: Tensor) -> Tensor:
    """Rows ``idx`` of ``t`` as a new tensor."""
    if view is None:
        return t.index_select(0, idx)
    return torch.from_numpy(np.take(view, idx.numpy(), axis=0))


class TensorLoader:
    """Mini-batches from in-memory tensors, without per-sample decoding.

    Parameters
    ----------
    x, y : Tensor
        Inputs ``[N, ...]`` and targets ``[N]``; both are moved to ``device`` once.
    batch_size : int
        Per-rank batch size; the global batch has ``batch_size * world_size`` samples.
    shuffle : bool
        Shuffle every epoch; the order is a pure function of ``(seed, epoch)``.
    seed : int
        Seed of the shuffle.
    drop_last : bool
        Drop the final incomplete global batch.
    device : torch.device or str, optional
        Where the tensors (and therefore the batches) live. ``None`` keeps them where they are.
    rank, world_size : int
        Distributed sharding: every global batch is split contiguously into ``world_size`` parts
        and rank ``r`` gets part ``r`` (parts of a final incomplete batch differ in size by at most
        one and may be empty when it has fewer than ``world_size`` samples), so ``K`` processes see
        the same global batches as one process with ``batch_size * K``.

    Notes
    -----
    Iterating uses the current epoch and then advances it by one, so a loader that is never told
    its epoch still reshuffles each pass; call :meth:`set_epoch` before each epoch (as the trainer
    does) for exact resume.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise InputError(
                f"x and y must have the same length, got {len(x)} and {len(y)}; "
                "pass matching inputs and labels"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(
                f"need 0 <= rank < world_size and world_size >= 1, got rank={rank}, "
                f"world_size={world_size}"
            )
        self.x = x if device is None else x.to(device)
        self.y = y if device is None else y.to(device)
        # CPU batches are gathered with numpy: single-threaded and much faster than a small
        # multi-threaded index_select, which stalls when the cores are busy.
        self._x_np = _numpy_view(self.x)
        self._y_np = _numpy_view(self.y)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def global_batch_size(self) -> int:
        """Samples per global batch (all ranks together)."""
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose shuffle order the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, g = len(self.x), self.global_batch_size
        return n // g if self.drop_last else -(-n // g)

    def order(self, epoch: int | None = None) -> Tensor:
        """The sample order of ``epoch`` (default: the current one), int64 on CPU."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=_epoch_generator(self.seed, epoch))

    def _shard(self, batch: Tensor) -> Tensor:
        if self.world_size == 1:
            return batch
        return torch.tensor_split(batch, self.world_size)[self.rank]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(self.epoch)
        self.epoch += 1
        g = self.global_batch_size
        contiguous = not self.shuffle
        if not contiguous:
            order = order.to(self.x.device)
        for b in range(len(self)):
            idx = self._shard(order[b * g : (b + 1) * g])
            if len(idx) == 0:
                yield self.x[:0], self.y[:0]
            elif contiguous:
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                yield self.x[lo:hi], self.y[lo:hi]
            else:
                yield _gather(self.x, self._x_np, idx), _gather(self.y, self._y_np, idx)
