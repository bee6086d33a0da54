"""``ncmse.measure(model, loader)``: features of a model's final layer, fed to ``measure_stream``.

Two decisions are made here, both from what actually runs:

* **The classifier** is the ``nn.Linear`` whose output *is* the model's output, found by running
  the first batch with forward hooks on every ``nn.Linear`` (:func:`final_linear`). Definition
  order says nothing: an auxiliary head defined after ``fc``, or a head defined before the body,
  would otherwise be taken for the classifier.
* **The samples**: the rows of DistributedSampler padding are dropped, and loaders that repeat or
  drop samples are reported (:mod:`ncmse.collapse.sampling`).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ncmse.collapse import sampling
from ncmse.collapse.api import check_num_classes, distributed_active, measure_stream
from ncmse.collapse.result import NCResult
from ncmse.errors import EmptyDataError, InputError, ShapeError

__all__ = ["final_linear", "measure_model"]

_ASK = "pass classifier=<the final nn.Linear> to ncmse.measure"
#: wrappers run through their ``.module`` (one process, one device: no replicas of the hooks)
_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def final_linear(model: nn.Module, inputs: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` whose output is ``model(inputs)``, found by running the model once.

    Every ``nn.Linear`` gets a forward hook that keeps a weak reference to each output it
    produces and that output's version counter; the classifier is the layer whose output is the
    very tensor the model returns (or a same-shape view of it), unmodified in place since.

    Raises
    ------
    InputError
        The model has no ``nn.Linear``, returns something other than a tensor (a tuple, a dict),
        no ``nn.Linear`` produces its output (it is transformed after the last layer), or several
        do. Each message asks for ``classifier=``.
    """
    names = {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not names:
        raise InputError(f"{type(model).__name__} has no nn.Linear layer; {_ASK}")
    produced: dict[nn.Linear, list[tuple[weakref.ref, int]]] = {m: [] for m in names}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[module].append((weakref.ref(output), output._version))

    handles = [m.register_forward_hook(record) for m in names]
    try:
        out = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        raise InputError(
            f"{type(model).__name__} returns a {type(out).__name__}, not one tensor of logits, so "
            f"ncmse cannot tell which layer is the classifier; {_ASK}"
        )
    found = [m for m, outputs in produced.items() if any(_is_output(r, v, out) for r, v in outputs)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(
            f"no nn.Linear of {type(model).__name__} produces its output (the logits are "
            f"transformed after the last layer, or computed without nn.Linear); {_ASK}"
        )
    listed = ", ".join(repr(names[m] or type(model).__name__) for m in found)
    raise InputError(f"several nn.Linear layers produce the model's output ({listed}); {_ASK}")


def _is_output(ref: weakref.ref, version: int, out: torch.Tensor) -> bool:
    """Whether a recorded layer output is the model's output ``out``, unmodified since."""
    tensor = ref()
    if tensor is None or tensor._version != version:
        return False
    if tensor is out:
        return True
    return out._base is tensor and out.shape == tensor.shape  # e.g. .view(B, C) of [B, C] logits


def measure_model(
    model: nn.Module,
    loader: Iterable,
    *,
    classifier: nn.Linear | None,
    num_classes: int | None,
    distributed: bool | None,
    device: torch.device | str | None,
    **options: Any,
) -> NCResult:
    """The implementation of :func:`ncmse.measure` (see there); ``options`` go to
    :func:`ncmse.measure_stream`."""
    inner = model.module if isinstance(model, _WRAPPERS) else model
    if classifier is not None and not isinstance(classifier, nn.Linear):
        raise InputError(f"classifier must be an nn.Linear, got {type(classifier).__name__}")
    try:
        model_device = next(inner.parameters()).device
    except StopIteration:
        model_device = torch.device("cpu")
    dist_on = distributed_active(distributed)
    plan = sampling.plan(loader, distributed=dist_on, auto=distributed is None)

    # the first batch is read once, both to find the classifier and as the start of the first
    # pass (a single-use loader keeps all its batches)
    first_pass = iter(loader)
    first = next(first_pass, None)
    if first is None:
        raise EmptyDataError("the loader yielded no batch; check the dataset split and the sampler")
    was_training = inner.training
    inner.eval()
    try:
        with torch.no_grad():
            layer = classifier
            if layer is None:
                layer = final_linear(inner, _split(first)[0].to(model_device))
            C = check_num_classes(layer.out_features if num_classes is None else num_classes)
            if layer.out_features != C:
                raise ShapeError(
                    f"the classifier has {layer.out_features} outputs but num_classes={C}; pass "
                    "the matching classifier or num_classes"
                )
            features = _Features(inner, layer, model_device, plan.real)
            passes = iter([itertools.chain([first], first_pass)])

            def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                return features.of(next(passes, None) or iter(loader))

            # a single-use loader stays single-use: measure_stream then caches its features under
            # the budget or raises, instead of reading an exhausted iterator a second time
            stream = batches() if isinstance(loader, Iterator) else batches
            with features.hooked():
                result = measure_stream(
                    stream,
                    layer.weight,
                    layer.bias,
                    num_classes=C,
                    device=torch.device(device) if device is not None else model_device,
                    distributed=distributed,
                    **options,
                )
    finally:
        inner.train(was_training)
    counted = result.num_samples + result.num_samples_excluded
    sampling.check_count(plan, counted, distributed=dist_on)
    return result


def _split(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise InputError(
            f"the loader must yield (inputs, labels) pairs; got {type(batch).__name__}"
        )
    return batch[0], batch[1]


class _Features:
    """The input of ``layer`` for each batch of a pass, less the rows that are sampler padding.

    Parameters
    ----------
    real : rows of a pass that are real samples (the leading ones); None: all
    """

    def __init__(
        self, model: nn.Module, layer: nn.Linear, device: torch.device, real: int | None
    ) -> None:
        self.model, self.layer, self.device, self.real = model, layer, device, real
        self.captured: list[torch.Tensor] = []

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """Context: the layer's input is captured while it is open."""
        handle = self.layer.register_forward_pre_hook(self._capture)
        try:
            yield
        finally:
            handle.remove()

    def _capture(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.captured.append(inputs[0].detach().flatten(1))

    def of(self, batches: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features [B', p], labels [B'])`` per batch; B' < B only for padding rows. A batch
        made of padding alone is skipped, unless nothing was yielded yet (an empty batch then
        carries the feature dimension, so a rank whose shard is all padding still takes part)."""
        seen, yielded = 0, False
        for batch in batches:
            x, y = _split(batch)
            y = torch.as_tensor(y)
            keep = y.shape[0] if self.real is None else max(0, min(y.shape[0], self.real - seen))
            seen += y.shape[0]
            if keep == 0 and yielded:
                continue
            feats = self._forward(x)
            labels = y.to(feats.device)
            if keep < y.shape[0]:
                feats, labels = feats[:keep], labels[:keep]
            yielded = True
            yield feats, labels

    def _forward(self, x: Any) -> torch.Tensor:
        self.captured.clear()
        self.model(x.to(self.device, non_blocking=True))
        if len(self.captured) != 1:
            raise InputError(
                f"the classifier layer ran {len(self.captured)} times in one forward pass (once "
                "expected); pass classifier=<a final nn.Linear that runs once per batch>, or "
                "compute the features yourself and call ncmse.measure_stream"
            )
        return self.captured[0]
