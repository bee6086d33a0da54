"""The learning-rate schedule of a training config and its gradient-flow time (SPEC §6, §9).

The trainer (:mod:`ncmse.train.loop`) multiplies the learning rate by ``lr_gamma`` after the epochs
:func:`lr_milestones` names (``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch), so
epoch ``e`` (1-based) trains at

    η(e) = lr · γ^{#{m ∈ milestones : m < e}}

for every one of its ``steps`` optimiser steps. Gradient-flow time is learning rate × steps:

    τ(e) = Σ_{k ≤ steps·e} η_k = steps · Σ_{e' = 1..e} η(e'),        τ(0) = 0.

A run records τ as it trains (metrics column ``flow_time``); :func:`flow_times` reconstructs it
from the config and :func:`steps_per_epoch` for runs that did not. The trainer measures at the
epochs :func:`measurement_epochs` names (epoch 0 and log-spaced ones). Torch-free.

Examples
--------
>>> lr_milestones(300, [1 / 3, 2 / 3])
[100, 200]
>>> steps_per_epoch(1200, 128)
10
>>> cfg = {"epochs": 6, "lr": 0.1, "lr_gamma": 0.1, "lr_milestones": [0.5], "batch_size": 128}
>>> [round(float(t), 12) for t in flow_times(cfg, steps_per_epoch(1200, 128))]
[0.0, 1.0, 2.0, 3.0, 3.1, 3.2, 3.3]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ncmse.errors import ConfigError

__all__ = ["epoch_learning_rates", "flow_times", "lr_drop_epochs", "lr_milestones",
           "measurement_epochs", "steps_per_epoch"]  # fmt: skip


def lr_milestones(epochs: int, fractions: Sequence[float]) -> list[int]:
    """Epoch indices (scheduler steps) at which the learning rate is multiplied by ``lr_gamma``.

    The learning rate drops between epoch ``m`` and epoch ``m + 1`` for every ``m`` returned.
    """
    return sorted({max(1, int(round(f * epochs))) for f in fractions})


def steps_per_epoch(num_samples: int, batch_size: int, *, drop_last: bool = False) -> int:
    """Optimiser steps in one epoch of ``num_samples`` samples in (global) batches.

    The trainer's loader (:class:`ncmse.train.data.TensorLoader`) keeps the last partial batch
    (``drop_last=False``): ⌈N / B⌉ steps; with ``drop_last`` ⌊N / B⌋. Under DDP ``batch_size`` is
    the global batch (every rank takes the same number of steps).
    """
    n, b = int(num_samples), int(batch_size)
    if n < 1 or b < 1:
        raise ConfigError(f"need num_samples >= 1 and batch_size >= 1, got {n} and {b}")
    return n // b if drop_last else -(-n // b)


def _schedule_keys(config: Mapping[str, Any]) -> tuple[int, float, float, list[float]]:
    from ncmse.train.config import Config  # lazy: this module (read by verdicts) loads no torch

    default = Config()
    try:
        epochs = int(config.get("epochs", default.epochs))
        lr = float(config.get("lr", default.lr))
        gamma = float(config.get("lr_gamma", default.lr_gamma))
        fractions = [float(f) for f in config.get("lr_milestones", default.lr_milestones) or []]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the config's schedule (epochs, lr, lr_gamma, lr_milestones) is not numeric: {exc}; "
            "fix config.yaml"
        ) from None
    if epochs < 0 or not (math.isfinite(lr) and math.isfinite(gamma)):
        raise ConfigError(
            f"the config's schedule is not usable (epochs={epochs}, lr={lr}, lr_gamma={gamma}); "
            "fix config.yaml"
        )
    return epochs, lr, gamma, fractions


def lr_drop_epochs(config: Mapping[str, Any]) -> list[int]:
    """Epochs ``m`` after which the config's learning rate changes (η(m + 1) ≠ η(m))."""
    epochs, _, gamma, fractions = _schedule_keys(config)
    if gamma == 1.0:
        return []
    return [m for m in lr_milestones(epochs, fractions) if m < epochs]


def epoch_learning_rates(config: Mapping[str, Any]) -> NDArray[np.float64]:
    """η(e) of epochs e = 1..epochs, shape (epochs,), as the trainer's scheduler sets them.

    The rate is multiplied by γ at each milestone, as ``MultiStepLR`` does, so the values are
    the scheduler's to the last bit.
    """
    epochs, lr, gamma, fractions = _schedule_keys(config)
    milestones = set(lr_milestones(epochs, fractions))
    rates = np.empty(epochs, dtype=np.float64)
    current = lr
    for e in range(1, epochs + 1):
        rates[e - 1] = current
        if e in milestones:
            current *= gamma
    return rates


def flow_times(config: Mapping[str, Any], steps: int) -> NDArray[np.float64]:
    """τ(e) for e = 0..epochs, shape (epochs + 1,): Σ η over the optimiser steps up to epoch e.

    Parameters
    ----------
    config : mapping
        A training config (``config.yaml``): ``epochs``, ``lr``, ``lr_gamma`` and
        ``lr_milestones`` (missing keys take :class:`ncmse.train.config.Config`'s defaults).
    steps : int
        Optimiser steps per epoch (:func:`steps_per_epoch`).
    """
    if int(steps) < 1:
        raise ConfigError(f"need at least one optimiser step per epoch, got {steps}")
    tau = np.zeros(1 + _schedule_keys(config)[0], dtype=np.float64)
    np.cumsum(epoch_learning_rates(config) * int(steps), out=tau[1:])
    return tau


def measurement_epochs(
    epochs: int, points: int = 50, explicit: list[int] | None = None
) -> list[int]:
    """Epoch 0 and log-spaced measurement epochs in [1, epochs], always including 1 and ``epochs``.

    Epoch 0 is the network as initialised, before any step (SPEC §6): the "first" measurement
    of the SPEC §7 verdicts is then the untrained state.

    Parameters
    ----------
    epochs : int
        Length of the run.
    points : int
        Target number of distinct epochs ≥ 1 (fewer when ``epochs < points``: then every epoch).
    explicit : list of int, optional
        Use these epochs instead (sorted, deduplicated; 0 means "before training").

    Returns
    -------
    list of int
        Sorted distinct epochs.
    """
    if explicit is not None:
        return sorted({int(e) for e in explicit if 0 <= int(e) <= epochs})
    if epochs <= points:
        return list(range(0, epochs + 1))
    raw = points
    chosen: list[int] = []
    while raw <= 20 * points:
        grid = np.unique(np.rint(np.logspace(0.0, math.log10(epochs), raw)).astype(int))
        chosen = sorted({1, epochs, *grid.tolist()})
        if len(chosen) >= points:
            break
        raw += 1
    return [0, *chosen]
