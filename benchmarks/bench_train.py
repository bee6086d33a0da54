"""Overhead of the training loop and of one measurement (run: ``python benchmarks/bench_train.py``).

(a) Epoch time of the package's epoch loop (:func:`ncmse.train.loop.lockstep_epoch` of one
    :class:`~ncmse.train.loop.Trainer`) on the ``fashion-cnn-mse`` preset vs a minimal
    hand-written PyTorch loop (same model weights, data tensors, batch size, optimizer and
    loss). Measurement epochs are excluded from (a); they are (b).
(b) One measurement of the training split (:func:`ncmse.train.setup.measure_split`, i.e.
    ``ncmse.measure`` at the run's λ, plus the objective) vs one ``no_grad`` eval-mode forward
    pass over the same split.

Both sides are timed alternately, ``--repeats`` times, and the ratio of the medians is reported,
which keeps the comparison fair on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ncmse.train.config import resolve_config
from ncmse.train.loop import Trainer, lockstep_epoch
from ncmse.train.runtime import configure_torch, resolve_device
from ncmse.train.setup import build_components, measure_split


def minimal_epoch(model, x, y, batch_size: int, opt, epoch: int, num_classes: int) -> None:
    """The reference: shuffle, forward, nn.MSELoss on one-hot targets, backward, step."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        loss = F.mse_loss(model(xb), F.one_hot(yb, num_classes).to(xb.dtype))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def forward_pass(model, x, batch_size: int) -> None:
    """One eval-mode, no-grad forward pass over ``x``."""
    was = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    model.train(was)


def alternate(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall times of ``a`` and ``b``, timed alternately (one warm-up each)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-cnn-mse")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sets = ["quiet=true", "report=false", "tensorboard=false", *args.overrides]
    cfg = resolve_config(args.config, sets)
    device = resolve_device(cfg.device)
    configure_torch(cfg, device)  # num_threads of the preset, as `ncmse train` does
    trainer = Trainer(cfg, build_components(cfg, device))  # no sinks: writes no files
    net = trainer.network
    ref = copy.deepcopy(net)
    ref_opt = torch.optim.SGD(
        ref.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    x, y, c = trainer.train_x, trainer.train_y, trainer.num_classes
    epochs = iter(range(1, 10_000))

    t_loop, t_min = alternate(
        lambda: lockstep_epoch([trainer], [next(epochs)]),
        lambda: minimal_epoch(ref, x, y, cfg.batch_size, ref_opt, next(epochs), c),
        args.repeats,
    )
    bs = cfg.measure_batch_size
    t_meas, t_fwd = alternate(
        lambda: measure_split(net, trainer.loss_spec, x, y, num_classes=c, batch_size=bs),
        lambda: forward_pass(net, x, bs),
        args.repeats,
    )
    rows = [
        ("(a) train epoch: ncmse loop / minimal loop", t_loop, t_min, 1.05),
        ("(b) measurement / no-grad forward pass", t_meas, t_fwd, 1.20),
    ]
    print(
        f"config {cfg.name}: {len(x)} training samples, batch {cfg.batch_size}, "
        f"{torch.get_num_threads()} thread(s), device {trainer.device}; "
        f"median of {args.repeats}, measurement epochs excluded from (a)"
    )
    print(f"{'benchmark':<45} {'ncmse s':>9} {'reference s':>12} {'ratio':>7} {'target':>7}")
    for name, mine, base, target in rows:
        ratio = mine / base
        flag = "ok" if ratio <= target else "OVER"
        print(f"{name:<45} {mine:>9.3f} {base:>12.3f} {ratio:>7.3f} {target:>6.2f} {flag}")


if __name__ == "__main__":
    main()
