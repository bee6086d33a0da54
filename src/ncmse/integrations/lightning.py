"""``NeuralCollapseCallback`` for Lightning: measure neural collapse every k epochs and log it.

Example
-------
::

    import lightning as L
    from ncmse.integrations.lightning import NeuralCollapseCallback

    trainer = L.Trainer(max_epochs=30, callbacks=[NeuralCollapseCallback(every_n_epochs=5)])
    trainer.fit(module, train_loader)   # logs nc/nc1, nc/nc4, nc/snr_1, … through module.log_dict

Under DDP every rank measures its shard and :func:`ncmse.measure` combines them exactly, each
sample once (the duplicates a ``DistributedSampler`` adds are dropped); every rank then holds the
same global values, which are logged without further reduction (the logger writes on rank 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError(
            "ncmse.integrations.lightning needs Lightning: pip install lightning"
        ) from None

import torch

import ncmse
from ncmse.errors import InputError
from ncmse.integrations import log_values, resolve_layer

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(pl.Callback):
    """Measure collapse of a layer's input features with :func:`ncmse.measure` at the end of every
    ``every_n_epochs``-th training epoch and log :meth:`ncmse.NCResult.to_log_dict` with
    ``pl_module.log_dict``.

    Parameters
    ----------
    loader : iterable of batches, optional
        What to measure on (e.g. the training split without augmentation, ``shuffle=False``).
        Default: the trainer's training loader (its ``DistributedSampler`` under DDP).
    every_n_epochs : int
        Measure after epochs k − 1, 2k − 1, … (0-based ``current_epoch``).
    layer : nn.Linear or str, optional
        The classifier whose input is measured, or its name in the module
        (``"model.fc"``). Default: the ``nn.Linear`` whose output is the module's output.
    prefix : str
        Put before every logged name (default ``"nc/"``: ``nc/nc1``, ``nc/snr_1``, …).
    **measure_options
        Passed to :func:`ncmse.measure` (``lam``, ``num_classes``, ``min_samples``,
        ``shift_labels``, ``ignore_index``, ``memory_budget_bytes``, …).

    Attributes
    ----------
    last_result : ncmse.NCResult or None
        The latest measurement (on every rank).
    """

    def __init__(
        self,
        loader: Iterable | None = None,
        *,
        every_n_epochs: int = 1,
        layer: Any = None,
        prefix: str = "nc/",
        **measure_options: Any,
    ) -> None:
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int):
            raise InputError(f"every_n_epochs must be an integer ≥ 1, got {every_n_epochs!r}")
        if every_n_epochs < 1:
            raise InputError(f"every_n_epochs must be an integer ≥ 1, got {every_n_epochs!r}")
        self.loader, self.every_n_epochs, self.layer = loader, every_n_epochs, layer
        self.prefix, self.measure_options = prefix, measure_options
        self.last_result = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return

        loader = self.loader if self.loader is not None else _train_loader(trainer)
        result = ncmse.measure(
            pl_module,
            loader,
            classifier=resolve_layer(pl_module, self.layer),
            **self.measure_options,
        )
        self.last_result = result
        # the values are global on every rank already: no reduction across processes
        pl_module.log_dict(log_values(result, self.prefix), sync_dist=False)


def _train_loader(trainer: pl.Trainer) -> Iterable:
    loader = trainer.train_dataloader
    if isinstance(loader, torch.utils.data.DataLoader):
        return loader
    raise InputError(
        f"the trainer's training loader is a {type(loader).__name__}, not one DataLoader; pass "
        "NeuralCollapseCallback(loader=<the DataLoader to measure on>)"
    )
