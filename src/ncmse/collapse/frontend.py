"""``ncmse.measure(model, loader)``: features of a model's final layer, fed to ``measure_stream``.

Two decisions are made here, both from what actually runs:

* **The classifier** is the ``nn.Linear`` whose output *is* the model's output, found by running
  the first batch with forward hooks on every ``nn.Linear`` (:func:`final_linear`). Definition
  order says nothing: an auxiliary head defined after ``fc``, or a head defined before the body,
  would otherwise be taken for the classifier.
* **The samples**: the rows of DistributedSampler padding are dropped, and loaders that repeat or
  drop samples are reported (:mod:`ncmse.collapse.sampling`).

Sequence models: the classifier's input ``[..., p]`` is kept with its leading shape, so every
position is a sample whose class is the label at the same position (``shift_labels``: at the next
one); positions labelled ``ignore_index`` or masked out by ``attention_mask`` are never measured.
Batches are ``(inputs, labels)`` pairs or dicts (``input_ids``, ``attention_mask``, ``labels``, …)
whose entries other than ``labels`` are passed to the model as keyword arguments.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ncmse.collapse import sampling
from ncmse.collapse.api import check_num_classes, distributed_active, measure_stream
from ncmse.collapse.result import NCResult
from ncmse.errors import EmptyDataError, InputError, NCMSEWarning, ShapeError

__all__ = ["MODEL_WRAPPERS", "final_linear", "measure_model", "unpack_batch"]

_ASK = "pass classifier=<the final nn.Linear> to ncmse.measure"
#: wrappers run through their ``.module`` (one process, one device: no replicas of the hooks)
MODEL_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def final_linear(model: nn.Module, inputs: Any) -> nn.Linear:
    """The ``nn.Linear`` whose output is ``model(inputs)`` (``model(**inputs)`` for a mapping),
    found by running the model once.

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
        out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
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
    ignore_index: int | None = -100,
    shift_labels: bool = False,
    **options: Any,
) -> NCResult:
    """The implementation of :func:`ncmse.measure` (see there); ``options`` go to
    :func:`ncmse.measure_stream`."""
    inner = model.module if isinstance(model, MODEL_WRAPPERS) else model
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise InputError(f"ignore_index must be an integer or None, got {ignore_index!r}")
    if not isinstance(shift_labels, bool):
        raise InputError(f"shift_labels must be True or False, got {shift_labels!r}")
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
                unpacked = unpack_batch(first, model_device)
                layer = final_linear(inner, unpacked.kwargs or unpacked.args[0])
            C = check_num_classes(layer.out_features if num_classes is None else num_classes)
            if layer.out_features != C:
                raise ShapeError(
                    f"the classifier has {layer.out_features} outputs but num_classes={C}; pass "
                    "the matching classifier or num_classes"
                )
            positions = _Positions(ignore_index, shift_labels)
            features = _Features(inner, layer, model_device, plan.real, positions)
            passes = iter([itertools.chain([first], first_pass)])

            def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                return features.of(next(passes, None) or iter(loader))

            # a single-use loader stays single-use: measure_stream then caches its features under
            # the budget or raises, instead of reading an exhausted iterator a second time
            stream = batches() if isinstance(loader, Iterator) else batches
            measure_device = torch.device(device) if device is not None else model_device
            note = _LayerNormNote(features, C, float(options.get("lam", 0.0)))
            with features.hooked():
                result = measure_stream(
                    stream,
                    layer.weight,
                    layer.bias,
                    num_classes=C,
                    device=measure_device,
                    distributed=distributed,
                    quiet_flags=note.quiet,
                    **options,
                )
            note.report(result)
            rows = features.rows_counted(dist_on, measure_device)
    finally:
        inner.train(was_training)
    sampling.check_count(plan, rows, distributed=dist_on)
    return result


@dataclass
class _Batch:
    """One batch, split into what the model is called with and what is measured."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    labels: torch.Tensor
    mask: torch.Tensor | None  # attention_mask: 0 at padding positions

    def rows(self) -> int:
        return int(self.labels.shape[0]) if self.labels.ndim else 1


def unpack_batch(batch: Any, device: torch.device) -> _Batch:
    """``(inputs, labels, ...)`` or a mapping with ``labels`` (and e.g. ``input_ids``,
    ``attention_mask``), inputs moved to ``device``."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise InputError(
                f"a dict batch must hold 'labels' (the class of each position); got keys "
                f"{sorted(batch)}"
            )
        kwargs = {k: _to(v, device) for k, v in batch.items() if k != "labels"}
        mask = kwargs.get("attention_mask")
        return _Batch((), kwargs, torch.as_tensor(batch["labels"]), mask)
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise InputError(
            "the loader must yield (inputs, labels) pairs or dicts with 'labels' (and the model's "
            f"keyword inputs, e.g. input_ids, attention_mask); got {type(batch).__name__}"
        )
    return _Batch((_to(batch[0], device),), {}, torch.as_tensor(batch[1]), None)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class _Positions:
    """Which positions of a batch are samples, and their classes.

    Features ``[B, ..., p]`` and labels ``[B, ...]`` of the same leading shape; with
    ``shift_labels`` (causal language models) the class of ``features[:, t]`` is
    ``labels[:, t + 1]``, and the last position has none. A position is measured unless its label
    is ``ignore_index`` or the ``attention_mask`` is 0 at it (with ``shift_labels``: at it or at
    the position of its label).
    """

    ignore_index: int | None
    shift_labels: bool

    def select(
        self, feats: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [n, p], labels [n])`` of the measured positions."""
        labels = labels.to(feats.device)
        mask = None if mask is None else mask.to(feats.device).bool()
        if self.shift_labels:
            if feats.ndim < 3 or labels.ndim < 2:
                raise ShapeError(
                    f"shift_labels=True needs sequence features [B, T, p] and labels [B, T]; got "
                    f"features {tuple(feats.shape)} and labels {tuple(labels.shape)}"
                )
            feats, labels = feats[:, :-1], labels[:, 1:]
            if mask is not None:
                mask = mask[:, :-1] & mask[:, 1:]
        if tuple(labels.shape) != tuple(feats.shape[:-1]):
            raise ShapeError(
                f"the classifier's input has shape {tuple(feats.shape)} ([..., p]) but the labels "
                f"{tuple(labels.shape)}: one label per position is needed (a causal language "
                "model whose labels are its input_ids needs shift_labels=True)"
            )
        keep = torch.ones_like(labels, dtype=torch.bool)
        if self.ignore_index is not None:
            keep &= labels != self.ignore_index
        if mask is not None:
            if mask.shape != keep.shape:
                raise ShapeError(
                    f"attention_mask has shape {tuple(mask.shape)} but the labels "
                    f"{tuple(labels.shape)}; they must match"
                )
            keep &= mask
        p = feats.shape[-1]
        if bool(keep.all()):
            return feats.reshape(-1, p), labels.reshape(-1)
        flat = keep.reshape(-1)
        return feats.reshape(-1, p)[flat], labels.reshape(-1)[flat]


class _Features:
    """The input of ``layer`` for each batch of a pass, less the rows that are sampler padding.

    Parameters
    ----------
    real : rows of a pass that are real samples (the leading ones); None: all
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Linear,
        device: torch.device,
        real: int | None,
        positions: _Positions,
    ) -> None:
        self.model, self.layer, self.device, self.real = model, layer, device, real
        self.positions = positions
        self.captured: list[torch.Tensor] = []
        self.rows = 0  # rows (samples or sequences) of the last pass that are not padding
        self.layernorm: str | None = None  # the LayerNorm whose output the features are
        self._norm_outputs: dict[str, tuple[torch.Tensor, int]] = {}

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """Context: the layer's input is captured while it is open."""
        handles = [self.layer.register_forward_pre_hook(self._capture)]
        for name, module in self.model.named_modules():
            if isinstance(module, nn.LayerNorm):
                handles.append(module.register_forward_hook(self._norm_hook(name)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _norm_hook(self, name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self._norm_outputs[name] = (output, output._version)

        return record

    def _capture(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        if self.layernorm is None:
            self.layernorm = _normed_by(x, self._norm_outputs)
        self.captured.append(x.detach())

    def of(self, batches: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features [n, p], labels [n])`` per batch: the measured positions (all rows for
        ``[B, p]`` features), less the rows that are padding. A batch without any is skipped,
        unless nothing was yielded yet (an empty batch then carries the feature dimension, so a
        rank whose shard is all padding still takes part)."""
        seen, yielded = 0, False
        self.rows = 0
        for raw in batches:
            batch = unpack_batch(raw, self.device)
            size = batch.rows()
            keep = size if self.real is None else max(0, min(size, self.real - seen))
            seen += size
            self.rows += keep
            if keep == 0 and yielded:
                continue
            feats = self._forward(batch)
            labels, mask = batch.labels, batch.mask
            if keep < size:
                feats, labels = feats[:keep], labels[:keep]
                mask = None if mask is None else mask[:keep]
            feats, labels = self.positions.select(feats, labels, mask)
            if feats.shape[0] == 0 and yielded:
                continue
            yielded = True
            yield feats, labels

    def rows_counted(self, distributed: bool, device: torch.device) -> int:
        """The rows of the last pass, summed over the processes when distributed."""
        if not distributed:
            return self.rows

        total = torch.tensor([float(self.rows)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return int(total.item())

    def _forward(self, batch: _Batch) -> torch.Tensor:
        self.captured.clear()
        self._norm_outputs.clear()
        self.model(*batch.args, **batch.kwargs)
        self._norm_outputs.clear()
        if len(self.captured) != 1:
            raise InputError(
                f"the classifier layer ran {len(self.captured)} times in one forward pass (once "
                "expected); pass classifier=<a final nn.Linear that runs once per batch>, or "
                "compute the features yourself and call ncmse.measure_stream"
            )
        return self.captured[0]


def _normed_by(x: torch.Tensor, outputs: dict[str, tuple[torch.Tensor, int]]) -> str | None:
    """The name of the LayerNorm over the last dimension whose output ``x`` holds the rows of
    (the tensor or a view of it with the same last dimension, unmodified since), or None."""
    for name, (out, version) in outputs.items():
        if out._version != version or out.shape[-1] != x.shape[-1]:
            continue
        same_rows = out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        if same_rows and out.stride(-1) == x.stride(-1):
            return name
    return None


#: flags that LayerNorm'd features raise by construction (the second needs p ≤ C − 1, the
#: third λ = 0); they stay in ``result.flags``, explained by one message instead of three
_LAYERNORM_FLAGS = ("within_class_singular", "between_class_rank_deficient",
                    "total_covariance_singular")  # fmt: skip


class _LayerNormNote:
    """The flags that the features' LayerNorm explains, known once the first batch has run
    (:attr:`quiet` is filled then, before the result's flags are warned about), and the one
    message, in a transformer user's words, that replaces their warnings."""

    def __init__(self, features: _Features, num_classes: int, lam: float) -> None:
        self.features, self.num_classes, self.lam = features, num_classes, lam
        self.quiet = _Quiet(self)

    def expected(self) -> set[str]:
        if self.features.layernorm is None:
            return set()
        flags = {"within_class_singular"}
        if self.features.layer.in_features <= self.num_classes - 1:
            flags.add("between_class_rank_deficient")
        if self.lam == 0:
            flags.add("total_covariance_singular")
        return flags

    def report(self, result: NCResult) -> None:
        explained = [flag for flag in result.flags if flag in self.expected()]
        if not explained:
            return
        name, p = self.features.layernorm, self.features.layer.in_features
        warnings.warn(
            f"ncmse: the features are the output of LayerNorm {name!r}, which centres each "
            f"feature vector over its p = {p} coordinates: every vector (less the LayerNorm's "
            "bias, divided by its gain) sums to zero, so the features span at most p − 1 "
            "dimensions and the within-class covariance Σ_W is singular by construction. This is "
            "expected for a transformer's hidden states, not a defect: nc1 and snr are computed "
            f"on the spanned subspace. Flags raised by it: {', '.join(explained)} (kept in "
            "result.flags)",
            NCMSEWarning,
            stacklevel=4,
        )


class _Quiet:
    """A live view of :meth:`_LayerNormNote.expected` (membership tests only)."""

    def __init__(self, note: _LayerNormNote) -> None:
        self.note = note

    def __contains__(self, flag: object) -> bool:
        return flag in self.note.expected()

    def __iter__(self) -> Iterator[str]:
        return iter(self.note.expected())

    def __len__(self) -> int:
        return len(self.note.expected())
