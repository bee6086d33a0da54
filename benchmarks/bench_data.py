"""Benchmark the data path: TensorLoader (in-memory tensors) vs a per-sample torchvision pipeline.

Both loaders serve the same images (Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
when installed, else synthetic uint8 images of the same shape) in shuffled batches of 128:

* ``TensorLoader``: ncmse's path. Images are standardised once into a float32 tensor; a batch is one
  ``index_select``.
* ``torchvision DataLoader``: ``torchvision.datasets.FashionMNIST`` with per-sample
  ``ToTensor()`` + ``Normalize(mean, std)`` (one PIL image per sample per epoch) and
  ``torch.utils.data.DataLoader``.

Usage::

    python benchmarks/bench_data.py [--n 60000] [--batch-size 128] [--epochs 2] [--workers 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ncmse.train.data import SYSTEM_IDX_DIRS, TensorLoader, read_idx, standardize


def _source_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` uint8 images [n, 28, 28] and labels: Fashion-MNIST if installed, else synthetic."""
    for directory in SYSTEM_IDX_DIRS["fashionmnist"]:
        images = directory / "train-images-idx3-ubyte.gz"
        labels = directory / "train-labels-idx1-ubyte.gz"
        if images.is_file() and labels.is_file():
            x, y = read_idx(images), read_idx(labels)
            reps = -(-n // len(x))
            return (
                np.tile(x, (reps, 1, 1))[:n],
                np.tile(y, reps)[:n],
                f"Fashion-MNIST ({directory})",
            )
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return x, rng.integers(0, 10, size=n).astype(np.uint8), "synthetic uint8 28x28"


def _write_torchvision_layout(root: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write uncompressed IDX files where torchvision.datasets.FashionMNIST looks for them."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 0x08, arr.ndim])
            header += b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
            (raw / f"{split}-{kind}-ubyte").write_bytes(header + arr.tobytes())


def _time_epochs(make_iter: Callable[[int], Iterable], epochs: int, n: int) -> float:
    """Mean wall time of one full pass; checks that every pass serves ``n`` samples."""
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        served = sum(int(by.shape[0]) for _, by in make_iter(epoch))
        times.append(time.perf_counter() - start)
        if served != n:
            raise RuntimeError(f"a pass served {served} samples instead of {n}")
    return float(np.mean(times))


def run(n: int, batch_size: int, epochs: int, workers: int, seed: int = 0) -> list[dict]:
    """Time both data paths; returns one row per method."""
    from torchvision import datasets, transforms

    x_np, y_np, source = _source_images(n, seed)
    print(
        f"data: {source}, {n} images, batch {batch_size}, torch threads {torch.get_num_threads()}"
    )
    rows = []

    start = time.perf_counter()
    x_u8 = torch.from_numpy(x_np).unsqueeze(1)
    mean = x_u8.double().mean(0) / 255.0
    std = (x_u8.double() / 255.0).std(0, unbiased=False).clamp_min(1e-8)
    x = standardize(x_u8, mean, std)
    y = torch.from_numpy(y_np.astype(np.int64))
    prep = time.perf_counter() - start
    loader = TensorLoader(x, y, batch_size, shuffle=True, seed=seed)

    def tensor_iter(epoch: int):
        loader.set_epoch(epoch)
        return loader

    rows.append(
        {"method": "TensorLoader (in-memory)", "epoch_s": _time_epochs(tensor_iter, epochs, n)}
    )
    rows[-1]["setup_s"] = prep

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _write_torchvision_layout(Path(tmp), x_np, y_np)
        channel_mean, channel_std = float(x_np.mean() / 255), float(x_np.std() / 255)
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((channel_mean,), (channel_std,))]
        )
        ds = datasets.FashionMNIST(tmp, train=True, transform=transform, download=False)
        setup = time.perf_counter() - start
        generator = torch.Generator().manual_seed(seed)
        dl = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=generator
        )
        label = f"torchvision DataLoader (ToTensor+Normalize, {workers} workers)"
        rows.append({"method": label, "epoch_s": _time_epochs(lambda e: dl, epochs, n)})
        rows[-1]["setup_s"] = setup

    base = rows[-1]["epoch_s"]
    for row in rows:
        row["samples_per_s"] = n / row["epoch_s"]
        row["speedup"] = base / row["epoch_s"]
    return rows


def _print_table(rows: list[dict]) -> None:
    width = max(len(r["method"]) for r in rows)
    print(f"{'method':<{width}}  {'setup s':>8}  {'epoch s':>8}  {'samples/s':>11}  {'speedup':>8}")
    for r in rows:
        print(
            f"{r['method']:<{width}}  {r['setup_s']:8.3f}  {r['epoch_s']:8.3f}  "
            f"{r['samples_per_s']:11.0f}  {r['speedup']:7.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per method (mean)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args(argv)
    rows = run(args.n, args.batch_size, args.epochs, args.workers)
    _print_table(rows)
    ratio = rows[0]["speedup"]
    verdict = "OK" if ratio >= 3 else "MISSED"
    print(f"TensorLoader is {ratio:.1f}x faster per epoch (target >= 3x): {verdict}")
    return 0 if ratio >= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
