"""``NeuralCollapseCallback`` for the Hugging Face ``Trainer``: measure neural collapse of a
sequence model's last hidden state (the input of its output layer) and log it.

Example
-------
::

    from transformers import Trainer
    from ncmse.integrations.transformers import NeuralCollapseCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    trainer.add_callback(NeuralCollapseCallback(trainer, every_n_steps=500))
    trainer.train()      # logs nc/nc1, nc/nc4, nc/snr_1, … through trainer.log

By default the classifier is ``model.get_output_embeddings()`` (``lm_head``), the class of the
hidden state at position t is the label at t + 1 (``shift_labels=True``, as a causal LM's loss),
positions labelled −100 or masked by ``attention_mask`` are not measured, and only the tokens that
occur are measured (``min_samples=1``: a vocabulary is never all present).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    import transformers
except ImportError:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "ncmse.integrations.transformers needs transformers: pip install transformers"
    ) from None

from torch import nn

import ncmse
from ncmse.errors import InputError
from ncmse.integrations import log_values, resolve_layer

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(transformers.TrainerCallback):
    """Measure collapse with :func:`ncmse.measure` at the end of every epoch (or every
    ``every_n_steps`` optimiser steps) and log :meth:`ncmse.NCResult.to_log_dict` with
    ``trainer.log``.

    Parameters
    ----------
    trainer : transformers.Trainer
        The trainer whose ``log`` receives the values (a callback is not given its trainer).
    loader : iterable of batches, optional
        Dicts with ``input_ids``, ``attention_mask``, ``labels``, …; default: the trainer's
        training dataloader. With several processes a ``loader`` is required (an
        :class:`~ncmse.errors.InputError` at ``on_train_begin`` otherwise): a ``DataLoader`` with
        a ``DistributedSampler`` (``drop_last=False``), because the training dataloader that
        accelerate prepares may repeat samples to even out the processes' batches, which ncmse
        cannot see.
    every_n_steps : int, optional
        Measure every this many optimiser steps instead of at the end of each epoch.
    layer : nn.Linear or str, optional
        The classifier whose input is measured, or its name (default
        ``model.get_output_embeddings()``).
    prefix : str
        Put before every logged name (default ``"nc/"``).
    shift_labels, min_samples, **measure_options
        Passed to :func:`ncmse.measure` (defaults ``True`` and ``1`` here; ``lam``,
        ``ignore_index``, ``memory_budget_bytes``, …).

    Attributes
    ----------
    last_result : ncmse.NCResult or None
        The latest measurement.
    """

    def __init__(
        self,
        trainer: Any,
        loader: Iterable | None = None,
        *,
        every_n_steps: int | None = None,
        layer: Any = None,
        prefix: str = "nc/",
        shift_labels: bool = True,
        min_samples: int | None = 1,
        **measure_options: Any,
    ) -> None:
        if not callable(getattr(trainer, "log", None)):
            raise InputError(
                f"trainer must be the transformers.Trainer that logs the values, got "
                f"{type(trainer).__name__}: NeuralCollapseCallback(trainer, ...)"
            )
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):  # fmt: skip
            raise InputError(f"every_n_steps must be an integer ≥ 1 or None, got {every_n_steps!r}")
        self.trainer, self.loader, self.every_n_steps = trainer, loader, every_n_steps
        self.layer, self.prefix = layer, prefix
        self.measure_options = dict(shift_labels=shift_labels, min_samples=min_samples,
                                    **measure_options)  # fmt: skip
        self.last_result = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.loader is None and getattr(args, "world_size", 1) > 1:
            raise InputError(
                f"with {args.world_size} processes the Trainer's training dataloader (prepared "
                "by accelerate) may repeat samples to even out the processes' batches, and "
                "ncmse cannot see which; pass NeuralCollapseCallback(trainer, loader=DataLoader("
                "dataset, sampler=DistributedSampler(dataset, shuffle=False), collate_fn=...))"
            )
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.every_n_steps is None:
            self._measure(kwargs)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._measure(kwargs)
        return control

    def _measure(self, event: dict[str, Any]) -> None:
        model = event.get("model")
        model = self.trainer.model if model is None else model
        loader = self.loader if self.loader is not None else event.get("train_dataloader")
        if loader is None:
            raise InputError(
                "the Trainer gave no training dataloader; pass "
                "NeuralCollapseCallback(trainer, loader=<a DataLoader of dict batches>)"
            )
        inner = getattr(model, "module", model)
        result = ncmse.measure(
            model, loader, classifier=self._classifier(inner), **self.measure_options
        )
        self.last_result = result
        self.trainer.log(log_values(result, self.prefix))

    def _classifier(self, model: nn.Module) -> nn.Linear:
        if self.layer is not None:
            return resolve_layer(model, self.layer)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if not isinstance(head, nn.Linear):
            raise InputError(
                f"{type(model).__name__} has no nn.Linear output layer "
                "(get_output_embeddings()); pass layer=<the final nn.Linear or its name>"
            )
        return head
