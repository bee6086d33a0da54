"""A torchmetrics ``Metric`` for neural collapse (optional dependency: ``torchmetrics``).

Usage in a Lightning module::

    self.nc = NeuralCollapseMetric(self.model.fc, lam=ncmse.lambda_for(weight_decay=5e-4,
                                                                       num_classes=10))
    ...
    self.nc.update(features, labels)          # in the validation/measurement step
    ...
    result = self.nc.compute()                # an ncmse.NCResult, synchronised across processes

Multi-process synchronisation: the state is not additive (each process keeps its own shifts, see
:mod:`ncmse.collapse.stats`), so every state is declared with ``dist_reduce_fx=None``; torchmetrics
then
gathers the per-process states stacked along a new leading axis, and :meth:`compute` merges them
exactly with :func:`ncmse.collapse.stats.merge`.

DistributedSampler padding: with ``drop_last=False`` (Lightning's default under DDP), a
``DistributedSampler`` repeats up to R − 1 samples so that the R shards have equal length; fed as
they come, those samples are counted twice and every quantity is that of a different data set
(N + pad samples). The padding is the last rows of a rank's pass, whatever the shuffle; pass
``valid`` to leave it out::

    from ncmse.collapse.sampling import real_samples

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loader = self.trainer.val_dataloaders                 # its sampler: the DistributedSampler
        start = batch_idx * loader.batch_size                 # the batch's first row in this pass
        self.nc.update(self.features(x), y, valid=real_samples(loader.sampler, start, len(y)))

(``start`` is the position of the batch's first row in the rank's pass: ``batch_idx *
batch_size`` for a fixed batch size.) :func:`ncmse.measure` drops the padding itself.
"""

from __future__ import annotations

import torch
from torch import nn

try:
    from torchmetrics import Metric
except ImportError as exc:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError(
        "ncmse.metric needs torchmetrics: pip install 'ncmse[lightning]' (or torchmetrics)"
    ) from exc

from ncmse.collapse import lstsq
from ncmse.collapse.api import measure_features, result_from_stats
from ncmse.collapse.decisions import TiledDecisions, classifier_credit
from ncmse.collapse.min_samples import check_min_samples
from ncmse.collapse.result import NCResult
from ncmse.collapse.stats import ClassStats, check_batch, merge
from ncmse.errors import EmptyDataError, InputError, ShapeError, warn_caller

__all__ = ["NeuralCollapseMetric"]


class NeuralCollapseMetric(Metric):
    """Streaming NC1–NC4, SNR spectrum and MSE decomposition of a classifier's input features.

    Parameters
    ----------
    classifier : nn.Linear or None
        The final layer. Every quantity is that of its weights at :meth:`compute` (see "One set of
        weights" below). None: the features of any layer, without a classifier (``num_classes``
        and ``dim`` then required); the classifier-side quantities are NaN
        (:data:`ncmse.collapse.result.CLASSIFIER_METRICS`).
    num_classes : int, optional
        Must equal ``classifier.out_features`` (the default); anything else is a
        :class:`~ncmse.errors.ShapeError` at construction.
    dim : int, optional
        The feature dimension p, only with ``classifier=None``.
    lam : float
        λ of the MSE decomposition (SPEC §3).
    keep_features : bool
        Keep the features and labels (gathered across processes) so that :meth:`compute` can
        decide every sample with the final class means (NC4) and the weights at compute
        (accuracy). Costs N·p floats; without it ``nc4`` is NaN.
    min_samples : int, optional
        Measure only the classes with at least this many samples over all processes (see
        :func:`ncmse.measure_stream`). The decisions over the measured classes are known only at
        :meth:`compute`, so this needs ``keep_features=True``; :meth:`compute` then measures the
        kept features (labels kept with them) exactly as :func:`ncmse.measure_features` does.

    Notes
    -----
    One set of weights: the statistics of the features do not depend on the classifier, so NC2–3,
    the loss and its decomposition, and the classifier geometry are those of the weights at
    :meth:`compute`. Accuracy is too: with ``keep_features=True`` every kept sample is decided at
    :meth:`compute`; without, the correct decisions are counted at :meth:`update`, and if the
    weights changed between two updates or after the last one (an optimiser step, ``copy_``,
    ``load_state_dict`` or a new parameter object, detected through the parameters' identity and
    version counters, without reading them) ``accuracy`` is NaN, with an
    :class:`~ncmse.NCMSEWarning`, rather than the accuracy of other weights. The features
    themselves are what was given to :meth:`update`: fed during training, they come from a
    network that changed between batches.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        classifier: nn.Linear | None,
        *,
        num_classes: int | None = None,
        lam: float = 0.0,
        keep_features: bool = False,
        min_samples: int | None = None,
        dim: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.min_samples = check_min_samples(min_samples)
        if self.min_samples is not None and not keep_features:
            raise InputError(
                "min_samples needs keep_features=True: accuracy and nc4 over the measured classes "
                "(argmax over the kept classes) are only known once every sample has been seen"
            )
        C, p = _shape_of(classifier, num_classes, dim)
        # a tuple keeps the layer out of the sub-modules (its parameters are not this metric's
        # state) and, unlike a closure, pickles
        self._classifier = (classifier,)
        self.num_classes, self.dim, self.lam = C, p, lstsq.check_lam(lam)
        self.keep_features = keep_features
        template = ClassStats(C, p).state_tensors()
        self._state_names = tuple(template)
        for name, value in template.items():
            self.add_state(name, default=value.clone(), dist_reduce_fx=None)
        self.add_state(
            "correct", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        if keep_features:  # accuracy and nc4 are decided at compute(), by the weights then
            self.add_state("features", default=[], dist_reduce_fx="cat")
            self.add_state("labels", default=[], dist_reduce_fx="cat")
        else:  # accuracy is counted at update(): 1 where the weights changed between updates
            self.add_state(
                "weights_changed",
                default=torch.zeros((), dtype=torch.float64),
                dist_reduce_fx="max",
            )
        self._weights_seen: _WeightsKey | None = None

    def _get_classifier(self) -> nn.Linear | None:
        return self._classifier[0]

    def _as_stats(self, index: int | None = None) -> ClassStats:
        tensors = {
            name: getattr(self, name) if index is None else getattr(self, name)[index]
            for name in self._state_names
        }
        return ClassStats.from_state(self.num_classes, self.dim, tensors)

    @torch.no_grad()
    def update(
        self, features: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Add a batch of features ``[B, p]`` and integer labels ``[B]``.

        ``valid`` : bool ``[B]``, optional — the rows to add (True); the others are ignored. Pass
        ``ncmse.collapse.sampling.real_samples(sampler, batch_idx * batch_size, B)`` to leave out
        the
        padding of a ``DistributedSampler`` (see the module docstring).
        """
        if valid is not None:
            features, labels = _valid_rows(features, labels, valid)
        stats = self._as_stats()
        if self.min_samples is not None:
            # compute() measures the kept features and labels (the measured classes are only
            # known at the end); statistics of every class would be thrown away
            check_batch(features, labels, self.num_classes)
            if features.shape[1] != self.dim:
                raise ShapeError(
                    f"features have dimension {features.shape[1]} but the classifier expects "
                    f"{self.dim}"
                )
            # as given: the features' own precision enters the rank tolerance (SPEC §2)
            self.features.append(features.detach().to(device=stats.device))
            self.labels.append(labels.detach().to(device=stats.device, dtype=torch.long))
            return
        stats.update(features, labels)
        for name, value in stats.state_tensors().items():
            setattr(self, name, value)
        if self.keep_features:
            self.features.append(features.detach().to(device=stats.device, dtype=stats.dtype))
            self.labels.append(labels.detach().to(device=stats.device, dtype=torch.long))
            return
        layer = self._get_classifier()
        if layer is None:  # features only: no decisions to count
            return
        key = _WeightsKey.of(layer)
        if self._weights_seen is not None and not self._weights_seen.same(key):
            self.weights_changed.fill_(1.0)
        self._weights_seen = key
        W = layer.weight.detach().to(device=stats.device, dtype=stats.dtype)
        b = (
            layer.bias.detach().to(W)
            if layer.bias is not None
            else torch.zeros(self.num_classes, dtype=W.dtype, device=W.device)
        )
        h = features.detach().to(W)
        self.correct += classifier_credit(
            h, W, b, labels.to(h.device)
        ).sum()  # ties: ncmse.collapse.decisions

    def forward(self, *args, **kwargs) -> None:
        """Accumulate only: NC metrics of a single batch are not meaningful."""
        self.update(*args, **kwargs)

    def _merged_stats(self) -> ClassStats:
        if self.counts.ndim == 1:
            return self._as_stats()
        merged = self._as_stats(0)
        for rank in range(1, self.counts.shape[0]):
            merged = merge(merged, self._as_stats(rank))
        return merged

    def compute(self) -> NCResult:
        """The :class:`~ncmse.NCResult` of everything seen (all processes)."""
        stats = self._merged_stats()
        layer = self._get_classifier()
        W = b = None
        if layer is not None:
            W = layer.weight.detach().to(device=stats.device, dtype=stats.dtype)
            b = layer.bias.detach().to(W) if layer.bias is not None else None
            if b is None:
                b = torch.zeros(self.num_classes, dtype=W.dtype, device=W.device)
        if self.min_samples is not None:
            return self._compute_subset(W, b, stats.dtype)
        correct, mismatch, method = None, None, "unavailable"
        if layer is not None:
            correct = self._update_time_accuracy(layer)
        if self.keep_features and layer is not None:
            data = _gathered(self.features)
            if isinstance(data, torch.Tensor) and data.numel():
                means = stats.class_means().to(torch.float64)
                rule = TiledDecisions(W.double(), b.double(), means, means.mean(dim=0))
                decided = rule(data, _gathered(self.labels).to(data.device))
                correct = float(decided.credit.sum())
                mismatch, method = float(decided.mismatch.sum()), "cache"
        return result_from_stats(
            stats,
            W,
            b,
            lam=self.lam,
            correct=correct,
            nc4_mismatch=mismatch,
            nc4_method=method,
        )

    def reset(self) -> None:
        """Clear the state (and the record of the weights the accuracy was counted with)."""
        super().reset()
        self._weights_seen = None

    def _update_time_accuracy(self, layer: nn.Linear) -> float | None:
        """The correct decisions counted at update(), or None (accuracy NaN, with a warning) when
        the weights changed between the updates or since the last one: that count would be the
        accuracy of other weights than every other quantity's."""
        if self.keep_features:
            return None
        changed = bool(self.weights_changed.max() > 0)
        if self._weights_seen is not None and not self._weights_seen.same(_WeightsKey.of(layer)):
            changed = True
        if not changed:
            return float(self.correct)
        warn_caller(
            "ncmse: NeuralCollapseMetric: accuracy is NaN: the classifier's weights changed "
            "between update() calls or since the last one, so the decisions counted at update() "
            "are not those of the weights compute() measures with; pass keep_features=True to "
            "decide every sample with the weights at compute()"
        )
        return None

    def _compute_subset(
        self, W: torch.Tensor | None, b: torch.Tensor | None, dtype: torch.dtype
    ) -> NCResult:
        """Every quantity over the classes with ≥ min_samples samples, from the kept features."""
        features, labels = _gathered(self.features), _gathered(self.labels)
        if not isinstance(features, torch.Tensor) or features.numel() == 0:
            raise EmptyDataError("no samples were added to the metric before compute()")
        result = measure_features(
            features,
            labels,
            W,
            b,
            num_classes=self.num_classes,
            lam=self.lam,
            dtype=dtype,
            min_samples=self.min_samples,
        )
        result.nc4_method = "cache" if W is not None else "unavailable"
        return result


def _shape_of(classifier: nn.Linear | None, num_classes: int | None, dim: int | None) -> tuple:
    """``(C, p)`` of the metric: the classifier's, or ``num_classes`` and ``dim`` without one."""
    if classifier is None:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (num_classes, dim))
        if not ok or num_classes < 2 or dim < 1:
            raise InputError(
                "without a classifier, pass num_classes (≥ 2) and dim (the feature dimension p, "
                f"≥ 1); got num_classes={num_classes!r}, dim={dim!r}"
            )
        return num_classes, dim
    if not isinstance(classifier, nn.Linear):
        raise InputError(f"classifier must be an nn.Linear, got {type(classifier).__name__}")
    C = classifier.out_features
    if num_classes is not None and num_classes != C:
        raise ShapeError(
            f"num_classes={num_classes!r} but the classifier has out_features={C} (one "
            "output per class); pass num_classes=classifier.out_features or the matching layer"
        )
    if dim is not None and dim != classifier.in_features:
        raise ShapeError(
            f"dim={dim!r} but the classifier has in_features={classifier.in_features}; leave dim "
            "out when a classifier is given"
        )
    return C, classifier.in_features


class _WeightsKey:
    """Which weights a classifier holds, without reading them: the parameter objects (held, so
    that a freed one's address cannot be reused by a new one), their storage and their version
    counters (bumped by every in-place change: an optimiser step, ``copy_``, ``load_state_dict``).
    """

    def __init__(self, params: tuple[torch.Tensor | None, ...]) -> None:
        self.params = params
        self.marks = tuple(
            None if t is None else (t.data_ptr(), t._version, t.device) for t in params
        )

    @classmethod
    def of(cls, layer: nn.Linear) -> _WeightsKey:
        return cls((layer.weight, layer.bias))

    def same(self, other: _WeightsKey) -> bool:
        return (
            all(a is b for a, b in zip(self.params, other.params, strict=True))
            and self.marks == other.marks
        )


def _valid_rows(
    features: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a batch that ``valid`` (bool ``[B]``) marks True."""
    valid = torch.as_tensor(valid)
    if valid.dtype != torch.bool or valid.ndim != 1 or valid.shape[0] != labels.shape[0]:
        raise ShapeError(
            f"valid must be a bool mask of shape [B] = [{labels.shape[0]}] (True: a real sample), "
            f"got {valid.dtype} {tuple(valid.shape)}"
        )
    return features[valid.to(features.device)], labels[valid.to(labels.device)]


def _gathered(state: object) -> object:
    """A list state (one process) or its concatenation (after torchmetrics' sync)."""
    if isinstance(state, list):
        return torch.cat(state) if state else None
    return state
