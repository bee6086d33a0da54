"""A torchmetrics ``Metric`` for neural collapse (optional dependency: ``torchmetrics``).

Usage in a Lightning module::

    self.nc = NeuralCollapseMetric(self.model.fc, lam=ncmse.lambda_for(weight_decay=5e-4,
                                                                       num_classes=10))
    ...
    self.nc.update(features, labels)          # in the validation/measurement step
    ...
    result = self.nc.compute()                # an ncmse.NCResult, synchronised across processes

Multi-process synchronisation: the state is not additive (each process keeps its own shifts, see
:mod:`ncmse.stats`), so every state is declared with ``dist_reduce_fx=None``; torchmetrics then
gathers the per-process states stacked along a new leading axis, and :meth:`compute` merges them
exactly with :func:`ncmse.stats.merge`.
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

from ncmse import lstsq
from ncmse.api import result_from_stats
from ncmse.decide import TiledDecisions, classifier_credit
from ncmse.errors import EmptyDataError, InputError, ShapeError
from ncmse.result import NCResult
from ncmse.stats import ClassStats, check_batch, merge
from ncmse.subset import check_min_samples

__all__ = ["NeuralCollapseMetric"]


class NeuralCollapseMetric(Metric):
    """Streaming NC1–NC4, SNR spectrum and MSE decomposition of a classifier's input features.

    Parameters
    ----------
    classifier : nn.Linear
        The final layer; its *current* weights are read by :meth:`compute` (and by :meth:`update`
        for the accuracy of each batch).
    num_classes : int, optional
        Defaults to ``classifier.out_features``.
    lam : float
        λ of the MSE decomposition (SPEC §3).
    keep_features : bool
        Keep the features (gathered across processes) so that :meth:`compute` can measure NC4
        against the final class means. Costs N·p floats; without it ``nc4`` is NaN.
    min_samples : int, optional
        Measure only the classes with at least this many samples over all processes (see
        :func:`ncmse.measure_stream`). The decisions over the measured classes are known only at
        :meth:`compute`, so this needs ``keep_features=True``; :meth:`compute` then measures the
        kept features (labels kept with them) exactly as :func:`ncmse.measure_features` does.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        classifier: nn.Linear,
        *,
        num_classes: int | None = None,
        lam: float = 0.0,
        keep_features: bool = False,
        min_samples: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.min_samples = check_min_samples(min_samples)
        if self.min_samples is not None and not keep_features:
            raise InputError(
                "min_samples needs keep_features=True: accuracy and nc4 over the measured classes "
                "(argmax over the kept classes) are only known once every sample has been seen"
            )
        if not isinstance(classifier, nn.Linear):
            raise InputError(f"classifier must be an nn.Linear, got {type(classifier).__name__}")
        C = classifier.out_features if num_classes is None else int(num_classes)
        p = classifier.in_features
        # a tuple keeps the layer out of the sub-modules (its parameters are not this metric's
        # state) and, unlike a closure, pickles
        self._classifier = (classifier,)
        self.num_classes, self.dim, self.lam = C, p, lstsq._check_lam(lam)
        self.keep_features = keep_features
        template = ClassStats(C, p).state_tensors()
        self._state_names = tuple(template)
        for name, value in template.items():
            self.add_state(name, default=value.clone(), dist_reduce_fx=None)
        self.add_state(
            "correct", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        if keep_features:
            self.add_state("features", default=[], dist_reduce_fx="cat")
        if self.min_samples is not None:
            self.add_state("labels", default=[], dist_reduce_fx="cat")

    def _get_classifier(self) -> nn.Linear:
        return self._classifier[0]

    def _as_stats(self, index: int | None = None) -> ClassStats:
        tensors = {
            name: getattr(self, name) if index is None else getattr(self, name)[index]
            for name in self._state_names
        }
        return ClassStats.from_state(self.num_classes, self.dim, tensors)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of features ``[B, p]`` and integer labels ``[B]``."""
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
        layer = self._get_classifier()
        W = layer.weight.detach().to(device=stats.device, dtype=stats.dtype)
        b = (
            layer.bias.detach().to(W)
            if layer.bias is not None
            else torch.zeros(self.num_classes, dtype=W.dtype, device=W.device)
        )
        h = features.detach().to(W)
        self.correct += classifier_credit(h, W, b, labels).sum()  # ties: ncmse.decide
        if self.keep_features:  # only the features: NC4 compares two decisions, not the labels
            self.features.append(features.detach().to(W.dtype))

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
        W = layer.weight.detach().to(device=stats.device, dtype=stats.dtype)
        b = layer.bias.detach().to(W) if layer.bias is not None else None
        if b is None:
            b = torch.zeros(self.num_classes, dtype=W.dtype, device=W.device)
        if self.min_samples is not None:
            return self._compute_subset(W, b, stats.dtype)
        mismatch, method = None, "unavailable"
        if self.keep_features:
            data = _gathered(self.features)
            if isinstance(data, torch.Tensor) and data.numel():
                means = stats.class_means().to(torch.float64)
                rule = TiledDecisions(W.double(), b.double(), means, means.mean(dim=0))
                mismatch, method = float(rule(data).mismatch.sum()), "cache"
        return result_from_stats(
            stats,
            W,
            b,
            lam=self.lam,
            correct=float(self.correct),
            nc4_mismatch=mismatch,
            nc4_method=method,
        )

    def _compute_subset(self, W: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> NCResult:
        """Every quantity over the classes with ≥ min_samples samples, from the kept features."""
        from ncmse.api import measure_features

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
        result.nc4_method = "cache"
        return result


def _gathered(state: object) -> object:
    """A list state (one process) or its concatenation (after torchmetrics' sync)."""
    if isinstance(state, list):
        return torch.cat(state) if state else None
    return state
