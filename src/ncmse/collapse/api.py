"""Public measurement entry points: in-memory features, a feature stream, or a model and a loader.

All three share one path: a single streaming pass into :class:`~ncmse.collapse.stats.ClassStats`
(plus the
classifier's accuracy), then NC4 against the *final* class means — from the features themselves,
from a cache kept under a memory budget, or from a second pass — and finally the metrics
(:mod:`ncmse.collapse.geometry`) and the loss decomposition (:mod:`ncmse.collapse.lstsq`) from the
statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ncmse.collapse import geometry, lstsq, pairwise
from ncmse.collapse.decisions import TiledDecisions
from ncmse.collapse.min_samples import DeferredRows, check_min_samples
from ncmse.collapse.result import CLASSIFIER_FLAGS, FLAGS, NCResult, features_only
from ncmse.collapse.stats import ClassStats, check_batch
from ncmse.errors import (
    EmptyClassError,
    EmptyDataError,
    InputError,
    LabelError,
    NonFiniteError,
    ShapeError,
    warn_caller,
)

__all__ = [
    "check_num_classes",
    "check_options",
    "distributed_active",
    "measure_features",
    "measure_stream",
    "measure",
    "result_from_stats",
    "DEFAULT_MEMORY_BUDGET",
]

#: default budget for caching features for NC4 (bytes)
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
#: rows gathered before a statistics update (see measure_stream)
_BLOCK_ROWS = 1024

_Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _check_classifier(
    W: torch.Tensor | None, b: torch.Tensor | None, num_classes: int, dim: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if W is None:  # features only: a zero stand-in whose numbers are never reported
        if b is not None:
            raise InputError("b was given without W; pass both (or neither, for features only)")
        zero = torch.zeros(num_classes, dim or 1, dtype=torch.float64)
        return zero, zero[:, 0]
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[0] != num_classes:
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        raise ShapeError(
            f"W must be a [num_classes, p] = [{num_classes}, p] tensor (the weight of the final "
            f"nn.Linear), got {shape}"
        )
    if dim is not None and W.shape[1] != dim:
        raise ShapeError(
            f"W has {W.shape[1]} columns but the features have dimension p = {dim}; pass the "
            "weight of the layer whose input the features are"
        )
    if b is None:
        b = torch.zeros(num_classes, dtype=W.dtype, device=W.device)
    if not isinstance(b, torch.Tensor) or b.shape != (num_classes,):
        shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
        raise ShapeError(f"b must be a [num_classes] = [{num_classes}] tensor or None, got {shape}")
    if not (bool(torch.isfinite(W).all()) and bool(torch.isfinite(b).all())):
        raise NonFiniteError("the classifier (W, b) contains NaN or Inf; training diverged?")
    return W.detach(), b.detach()


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` checked: an integer ≥ 2 (InputError otherwise)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    return num_classes


def distributed_active(flag: bool | None) -> bool:
    active = dist.is_available() and dist.is_initialized()
    return active if flag is None else (flag and active)


def result_from_stats(
    stats: ClassStats,
    W: torch.Tensor | None,
    b: torch.Tensor | None,
    *,
    lam: float = 0.0,
    correct: float | None = None,
    nc4_mismatch: float | None = None,
    nc4_method: str = "unavailable",
    rtol: float | None = None,
    warn: bool = True,
    excluded: tuple[int, int] = (0, 0),
    quiet: Collection[str] = (),
) -> NCResult:
    """All SPEC §2–§3 quantities from the statistics, the classifier and the decision counts.

    The metrics are evaluated in float64 whatever the statistics' dtype; the rank decisions use
    one tolerance tied to the statistics' precision (:func:`ncmse.collapse.geometry.default_rtol`).

    Parameters
    ----------
    stats : ClassStats   (every class must have samples)
    W : [C, p], b : [C]  (both None: features only, see :func:`ncmse.collapse.result.features_only`)
    lam : float          λ of the decomposition
    correct, nc4_mismatch : over the N samples, the accuracy credits ([y ∈ A]/|A|, A the
        classifier's maximisers) and the NC4 mismatches (A shares no class with the nearest
        means), ties as in :mod:`ncmse.collapse.decisions`
    rtol : relative tolerance of every rank decision, in (0, 1)
        (default ``max(p, C)·eps(stats.dtype)·100``)
    warn : emit an :class:`~ncmse.errors.NCMSEWarning` for each degenerate-feature flag
    quiet : flags not to warn about (the caller explains them; they stay in ``flags``)
    excluded : (classes, samples) left out of ``stats`` by ``min_samples``, recorded in the result
    """
    lam = lstsq.check_lam(lam)
    stats.require_all_classes()
    C, p = stats.num_classes, stats.dim
    with_classifier = W is not None
    W, b = _check_classifier(W, b, C, p) if W is None else (W, b)
    rtol_ = geometry.default_rtol(p, C, stats.dtype) if rtol is None else geometry.check_rtol(rtol)
    counts, means, within_sq, within = (t.to(torch.float64) for t in stats.centred())
    # one tolerance for every rank decision: the statistics' precision and the features' own
    # (float32 features: rounding ~2⁻²⁴ in every direction is not a class-mean direction)
    unit = max(float(stats.input_roundoff), torch.finfo(torch.float64).eps / 2)
    tol = geometry.feature_tolerance(rtol_, unit, counts, means, within_sq)
    N = float(counts.sum())
    W = W.to(means)
    b = b.to(means)
    sigma_w = within / N
    mbar = geometry.centred_means(means)

    nc1, rank = geometry.nc1(sigma_w, mbar, rtol=tol)
    omega, singular = geometry.whitened_spectrum(sigma_w, mbar, rtol=tol)
    weights = counts / N
    moments = lstsq.Moments(weights=weights, means=means, sigma_w=sigma_w, num_samples=int(N))
    # the pairwise quantities in tiles of classes (memory O(C·p + tile²), never a C×C matrix):
    # one symmetric pass over the means' Gram, one over W Wᵀ, one over W M̄ that also gives the
    # between-class part of the loss, Σ_c π_c ‖W (μ_c − μ_G) + (W μ_G + b) − e_c‖²
    mbar_rows = mbar.T.contiguous()
    pairs = pairwise.means_pair_stats(mbar_rows, within_sq / counts)
    classifier_angles = pairwise.angle_stats(W)
    mu_g = means.mean(dim=0)
    fit, etf_wm = pairwise.cross_pass(W, mbar_rows, W @ mu_g + b, weights, etf=True)
    dec = lstsq.decompose(moments, W, b, lam, rtol=tol, fit_residual=fit)
    zero_rows = bool((W == 0).all(dim=1).any())
    flags = _flags(
        means,
        mbar,
        rank,
        singular,
        rtol_,
        num_samples=int(N),
        zero_classifier_rows=zero_rows,
        mean_at_global_mean=geometry.mean_at_global_mean(means, mbar, tol),
        min_norm_ls=dec.min_norm_ls,
    )
    nan = float("nan")
    values = {
        "nc1": nc1,
        "nc1_unnormalized": C * nc1,
        "nc1_trace_ratio": geometry.nc1_trace_ratio(sigma_w, mbar),
        "cdnv": pairs.cdnv,
        "equinorm_means": geometry.equinorm(mbar_rows),
        "equiangular_means": pairs.equiangular,
        "maxangle_means": pairs.maxangle,
        "nc3": geometry.nc3(W, mbar),
        "nc4": nan if nc4_mismatch is None else float(nc4_mismatch) / N,
        "etf_error_means": pairs.etf_error,
        "etf_error_wm": etf_wm,
    }
    classifier = {
        "equinorm_classifier": geometry.equinorm(W),
        "equiangular_classifier": classifier_angles.equiangular,
        "maxangle_classifier": classifier_angles.maxangle,
    }
    values, classifier, snr = _undefined_as_nan(values, classifier, omega, flags)
    if not with_classifier:
        flags = tuple(f for f in flags if f not in CLASSIFIER_FLAGS)
    if warn:
        for flag in flags:
            if flag not in quiet:
                warn_caller(f"ncmse: {flag}: {FLAGS[flag]}")
    result = NCResult(
        accuracy=nan if correct is None else float(correct) / N,
        loss=dec.loss,
        **classifier,
        snr=snr,
        loss_nc1=dec.loss_nc1,
        loss_nc23=dec.loss_nc23,
        loss_perp=dec.loss_perp,
        loss_ls=dec.loss_ls,
        lam=dec.lam,
        num_samples=int(N),
        num_classes=C,
        balanced=bool((counts == counts[0]).all()),
        nc4_method=nc4_method,
        flags=flags,
        num_classes_excluded=int(excluded[0]),
        num_samples_excluded=int(excluded[1]),
        **values,
    )
    return result if with_classifier else features_only(result)


def _undefined_as_nan(
    values: dict[str, float],
    classifier: dict[str, float],
    omega: torch.Tensor,
    flags: Collection[str],
) -> tuple[dict[str, float], dict[str, float], tuple[float, ...]]:
    """NaN for every quantity a flag makes undefined, never a number that reads as collapse.

    ``values``: the feature-side metrics, ``classifier``: the classifier-side ones, ``omega``
    [r]: the SNR spectrum. Returns them in that order, the spectrum as a tuple of floats.
    """
    nan = float("nan")
    if "fewer_samples_than_dimensions" in flags:  # +inf from too few samples, not from collapse
        omega = torch.where(torch.isinf(omega), torch.full_like(omega, nan), omega)
    snr = tuple(omega.tolist())  # one device→host copy, not one per value
    values, classifier = dict(values), dict(classifier)
    if "class_mean_at_global_mean" in flags:  # a zero vector's cosine is undefined, not 0
        values["equiangular_means"] = values["maxangle_means"] = nan
    if "no_between_class_spread" in flags:
        values = dict.fromkeys(values, nan)
        snr = (nan,) * len(snr)
    if "zero_classifier_rows" in flags:  # a zero row's cosine is undefined (not 0: a simplex)
        classifier["equiangular_classifier"] = classifier["maxangle_classifier"] = nan
    return values, classifier, snr


def _flags(
    means: torch.Tensor,
    mbar: torch.Tensor,
    rank: int,
    singular: bool,
    rtol: float,
    *,
    num_samples: int,
    zero_classifier_rows: bool = False,
    mean_at_global_mean: bool = False,
    min_norm_ls: bool = False,
) -> tuple[str, ...]:
    """The SPEC §2 degenerate-feature flags (and ``total_covariance_singular``, the LS solve's),
    in :data:`ncmse.collapse.result.FLAGS` order."""
    p, C = mbar.shape
    flags = []
    if geometry.no_between_class_spread(means, mbar, rtol) or rank == 0:
        flags.append("no_between_class_spread")
    if singular:
        flags.append("within_class_singular")
    if rank < min(p, C - 1) and not flags[:1] == ["no_between_class_spread"]:
        flags.append("between_class_rank_deficient")
    if mean_at_global_mean and not flags[:1] == ["no_between_class_spread"]:
        flags.append("class_mean_at_global_mean")
    if num_samples - C < p:  # rank Σ_W ≤ N − C < p
        flags.append("fewer_samples_than_dimensions")
    if zero_classifier_rows:
        flags.append("zero_classifier_rows")
    if min_norm_ls:
        flags.append("total_covariance_singular")
    return tuple(flags)


def measure_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    W: torch.Tensor | None,
    b: torch.Tensor | None = None,
    *,
    num_classes: int,
    lam: float = 0.0,
    rtol: float | None = None,
    dtype: torch.dtype = torch.float64,
    min_samples: int | None = None,
) -> NCResult:
    """Measure collapse of in-memory features.

    Parameters
    ----------
    features : Tensor [N, p]   last-layer features (input of the final linear layer), any float
    labels : Tensor [N]        integer classes in [0, C)
    W : Tensor [C, p] or None  classifier weight (None: features only — the classifier-side
                               quantities are NaN, see :func:`ncmse.collapse.result.features_only`)
    b : Tensor [C] or None     classifier bias (None = no bias)
    num_classes : int          C ≥ 2
    lam : float                λ of the MSE decomposition (SPEC §3)
    rtol : float, optional     relative tolerance of the rank decisions
    dtype : torch.dtype        precision of the statistics (float64)
    min_samples : int, optional
        Measure only the classes with at least this many samples (see :func:`measure_stream`);
        None (default): every class must have samples.

    Returns
    -------
    NCResult

    Examples
    --------
    >>> import torch, ncmse
    >>> H, y = torch.randn(300, 16), torch.arange(300) % 3
    >>> r = ncmse.measure_features(H, y, torch.randn(3, 16), torch.zeros(3), num_classes=3)
    >>> abs(r.loss - (r.loss_nc1 + r.loss_nc23 + r.loss_perp)) < 1e-10
    True
    """
    C = check_num_classes(num_classes)
    check_options(lam, rtol, dtype)
    check_batch(features, labels, C)
    if features.shape[0] == 0:
        raise EmptyDataError("features are empty (N = 0); measure on a non-empty split")
    if W is not None:
        W, b = _check_classifier(W, b, C, features.shape[1])
    # the statistics convert one block at a time, never all N rows at once (a CPU block of 1024
    # rows stays in cache-friendly, heap-served allocations; larger blocks on an accelerator)
    step = _block_rows(features.device if W is None else W.device, features.shape[1])
    views = [
        (features[start : start + step], labels[start : start + step])
        for start in range(0, features.shape[0], step)
    ]
    result = measure_stream(
        views,
        W,
        b,
        num_classes=C,
        lam=lam,
        rtol=rtol,
        dtype=dtype,
        distributed=False,
        min_samples=min_samples,
        memory_budget_bytes=2**62,
    )
    return dataclasses.replace(result, nc4_method="direct")  # every feature held: NC4 in one pass


def _reiterable(batches: _Batches | Callable[[], _Batches]) -> Callable[[], Iterator] | None:
    if callable(batches) and not hasattr(batches, "__iter__"):
        return lambda: iter(batches())
    if isinstance(batches, Iterator):  # a generator or iterator: single use
        return None
    return lambda: iter(batches)


def _check_memory_budget(memory_budget_bytes: Any) -> None:
    if not isinstance(memory_budget_bytes, int) or memory_budget_bytes < 0:
        raise InputError(f"memory_budget_bytes must be an integer ≥ 0, got {memory_budget_bytes!r}")


def check_options(lam: Any, rtol: Any, dtype: Any) -> None:
    """Validate the numeric options before any data is read (nothing is half-consumed)."""
    lstsq.check_lam(lam)
    if rtol is not None:
        geometry.check_rtol(rtol)
    if dtype not in (torch.float64, torch.float32):
        raise InputError(
            f"dtype (precision of the statistics) must be torch.float64 or torch.float32, got "
            f"{dtype!r}; features of any floating dtype, half included, are upcast to it"
        )


def measure_stream(
    batches: _Batches | Callable[[], _Batches],
    W: torch.Tensor | None,
    b: torch.Tensor | None = None,
    *,
    num_classes: int,
    lam: float = 0.0,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    rtol: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    distributed: bool | None = None,
    min_samples: int | None = None,
    quiet_flags: Collection[str] = (),
) -> NCResult:
    """Measure collapse of a stream of ``(features [B, p], labels [B])`` batches in one pass.

    NC4 compares each sample with the *final* class means. The features are cached for it while
    they fit ``memory_budget_bytes``; beyond that the stream is read a second time, which needs
    ``batches`` to be re-iterable (a list, a DataLoader) or a zero-argument callable returning a
    fresh iterable. ``W=None`` (and ``b=None``): the features alone, in one pass; the
    classifier-side quantities are NaN (:func:`ncmse.collapse.result.features_only`). With
    ``torch.distributed`` initialised (and ``distributed`` not False), each
    rank passes its shard and every rank receives the global result.

    ``min_samples=None`` (default) requires every class to have samples. An integer m ≥ 1
    measures the classes with at least m samples (over all ranks): the other classes, their
    samples and their classifier rows are left out of every quantity (decisions are the argmax
    over the measured classes) and counted in ``num_classes_excluded`` / ``num_samples_excluded``.
    ``quiet_flags``: degenerate-feature flags the caller explains in its own words (e.g. those a
    final LayerNorm causes); they are recorded in ``flags`` but not warned about again.

    On an accelerator the pass runs without a host synchronisation per block (the label range is
    checked once at the end); memory is ``O(C·p + p²)`` plus tiles, whatever N and C.
    """
    C = check_num_classes(num_classes)
    check_options(lam, rtol, dtype)
    m = check_min_samples(min_samples)
    _check_memory_budget(memory_budget_bytes)
    factory = _reiterable(batches)
    dist_on = distributed_active(distributed)
    no_classifier = W is None
    dev = torch.device(device) if device is not None else None if no_classifier else W.device

    first = _FirstPass(
        C, W, b, dev, dtype, m, cache_budget=None if no_classifier else memory_budget_bytes
    )
    for features, labels in factory() if factory is not None else iter(batches):
        first.add(features, labels)
    stats, total_counts = first.finish(dist_on)
    stats, W, b, label_map, excluded = _measured_subset(stats, first.W, first.b, total_counts, m)
    dev = first.device

    if no_classifier:  # no decision to count: no second pass
        method, source = "unavailable", iter(())
    elif first.cache is not None:
        method, source = "cache", iter(first.cache)
    elif factory is not None:
        method, source = "second_pass", factory()
    else:
        raise InputError(
            f"the features exceed memory_budget_bytes={memory_budget_bytes} and the stream is a "
            "single-use iterator, so NC4 cannot be measured; pass a re-iterable (list, DataLoader) "
            "or a callable returning a fresh iterator, or raise memory_budget_bytes"
        )
    correct, mismatch = _count_decisions(source, stats, W, b, label_map, dev, dist_on)
    return result_from_stats(
        stats,
        None if no_classifier else W,
        None if no_classifier else b,
        lam=lam,
        correct=correct,
        nc4_mismatch=mismatch,
        nc4_method=method,
        rtol=rtol,
        excluded=excluded,
        quiet=quiet_flags,
    )


class _FirstPass:
    """The single streaming pass of :func:`measure_stream`: batches → blocks → statistics.

    Batches are gathered into blocks of ≥ ``_block_rows`` rows before they reach the statistics:
    the per-batch bookkeeping (a dozen small tensor operations) then runs a few times per
    thousand samples, and the scatter GEMM is as efficient on one block as on its batches. The
    statistics are created at the first batch (its feature dimension p fixes them and checks the
    classifier). With ``cache_budget``, the batches are also kept for NC4 while they fit in that
    many bytes (``cache`` is None once they do not).
    """

    def __init__(
        self,
        num_classes: int,
        W: torch.Tensor | None,
        b: torch.Tensor | None,
        device: torch.device | None,
        dtype: torch.dtype,
        min_samples: int | None,
        *,
        cache_budget: int | None,
    ) -> None:
        self.num_classes, self.W, self.b, self.device = num_classes, W, b, device
        self.dtype, self.min_samples = dtype, min_samples
        self.stats: ClassStats | None = None
        self.deferred: DeferredRows | None = None
        self.label_bounds: torch.Tensor | None = None  # running [min, max] of device labels
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = (
            None if cache_budget is None else []
        )
        self.cache_budget = cache_budget or 0
        self.cached_bytes = 0
        self.block: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.block_rows = 0
        self.block_target = _BLOCK_ROWS

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Take one batch ``features [B, p]``, ``labels [B]``."""
        C = self.num_classes
        check_batch(features, labels, C, finite=False, label_range=False)
        if self.stats is None:
            self.W, self.b = _check_classifier(self.W, self.b, C, features.shape[1])
            self.device = features.device if self.device is None else self.device
            self.stats = ClassStats(C, features.shape[1], device=self.device, dtype=self.dtype)
            self.block_target = _block_rows(self.device, features.shape[1])
            m = self.min_samples
            if m is not None and m >= 3:  # classes with < m samples must not reach the scatter
                self.deferred = DeferredRows(C, m, self.device)
        elif features.shape[1] != self.stats.dim:
            raise ShapeError(
                f"a batch has feature dimension {features.shape[1]}, the first had {self.stats.dim}"
            )
        self.block.append((features.detach(), labels.to(features.device)))
        self.block_rows += features.shape[0]
        if self.block_rows >= self.block_target:
            self._flush()
        if self.cache is not None:
            self.cached_bytes += features.numel() * features.element_size()
            if self.cached_bytes <= self.cache_budget:
                self.cache.append((features.detach(), labels))
            else:
                self.cache = None

    def _flush(self) -> None:
        C, block = self.num_classes, self.block
        feats = block[0][0] if len(block) == 1 else torch.cat([f for f, _ in block])
        labs = block[0][1] if len(block) == 1 else torch.cat([y for _, y in block])
        self.block, self.block_rows = [], 0
        if labs.device.type == "cpu":
            check_batch(feats, labs, C, finite=False)  # the label range, once per block
        else:  # no host sync per block: track the range, keep indices valid, check at the end
            bounds = torch.stack([labs.min(), labs.max()])
            if self.label_bounds is not None:
                bounds = torch.stack([torch.minimum(self.label_bounds[0], bounds[0]),
                                      torch.maximum(self.label_bounds[1], bounds[1])])  # fmt: skip
            self.label_bounds = bounds
            labs = labs.clamp(0, C - 1)
        feats, labs = feats.to(device=self.device), labs.to(device=self.device)
        if self.deferred is not None:  # (the upcast happens inside the update)
            feats, labs = self.deferred.route(feats, labs)
        self.stats.update(feats, labs, validate=False)

    def finish(self, dist_on: bool) -> tuple[ClassStats, torch.Tensor]:
        """The global statistics (reduced across ranks when ``dist_on``) and every class's sample
        count, held-back rows included.

        Raises
        ------
        EmptyDataError, LabelError, NonFiniteError
            No batch at all; a label outside [0, C); a non-finite feature.
        """
        if self.block:
            self._flush()
        stats, C = self.stats, self.num_classes
        if stats is None:
            raise EmptyDataError(
                "the loader / stream yielded no batch; check the dataset split and the sampler"
            )
        if self.label_bounds is not None:
            low, high = self.label_bounds.tolist()
            if low < 0 or high >= C:
                raise LabelError(
                    f"labels must lie in [0, {C}) for num_classes={C}, found values in "
                    f"[{low}, {high}]; fix num_classes or the labels"
                )
        seen = None
        if self.deferred is not None:
            seen = self.deferred.seen.to(torch.float64)
            if dist_on:
                torch.distributed.all_reduce(seen)
            released = self.deferred.release(seen)
            if released is not None:
                stats.update(*released, validate=False)
        stats.check_finite()
        if dist_on:
            stats.all_reduce_()
        return stats, stats.counts if seen is None else seen.to(stats.counts)


def _count_decisions(
    source: Iterable[tuple[torch.Tensor, torch.Tensor]],
    stats: ClassStats,
    W: torch.Tensor,
    b: torch.Tensor,
    label_map: torch.Tensor | None,
    device: torch.device,
    dist_on: bool,
) -> tuple[float, float]:
    """Accuracy credits and NC4 mismatches of the samples of ``source`` against the *final*
    class means of ``stats``, tiled over classes (:class:`TiledDecisions`), summed over ranks.

    Samples whose label ``label_map`` sends to −1 (excluded classes) count for nothing.
    """
    C = len(label_map) if label_map is not None else stats.num_classes
    means = stats.class_means().to(torch.float64)
    Wd, bd = W.to(device=device, dtype=torch.float64), b.to(device=device, dtype=torch.float64)
    rule = TiledDecisions(Wd, bd, means, means.mean(dim=0))
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # [correct, nc4 mismatches]
    # the rule's block size (small batches gathered, large ones cut)
    for features, labels in _chunks(source, rule.block_rows, gather=True):
        y = labels.to(device)
        if label_map is not None:
            y = label_map[y.clamp(0, C - 1)]
        decided = rule(features.to(device), y)
        counts[0] += decided.credit.sum()
        mismatch = decided.mismatch if label_map is None else decided.mismatch & (y >= 0)
        counts[1] += mismatch.sum()
    if dist_on:
        torch.distributed.all_reduce(counts)
    return float(counts[0]), float(counts[1])


def _block_rows(device: torch.device, dim: int) -> int:
    """Rows per statistics update: 1024 on a CPU (cache-sized), ~8M elements on an accelerator
    (each update is a fixed number of kernel launches, so fewer, larger blocks)."""
    if device.type == "cpu":
        return _BLOCK_ROWS
    return max(_BLOCK_ROWS, (1 << 23) // max(1, dim))


def _chunks(
    source: Iterable[tuple[torch.Tensor, torch.Tensor]], rows: int, *, gather: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches re-cut into chunks of at most ``rows`` rows; with ``gather``, consecutive small
    batches are concatenated up to ``rows`` (fewer kernel launches on an accelerator)."""
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    pending_rows = 0
    for features, labels in source:
        for start in range(0, features.shape[0], rows):
            f, y = features[start : start + rows], labels[start : start + rows]
            if not gather:
                yield f, y
                continue
            if pending_rows + f.shape[0] > rows and pending:
                yield _concat(pending)
                pending, pending_rows = [], 0
            pending.append((f, y))
            pending_rows += f.shape[0]
    if pending:
        yield _concat(pending)


def _concat(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(parts) == 1:
        return parts[0]
    return torch.cat([f for f, _ in parts]), torch.cat([y.to(parts[0][1].device) for _, y in parts])


def _measured_subset(
    stats: ClassStats,
    W: torch.Tensor,
    b: torch.Tensor,
    total_counts: torch.Tensor,
    min_samples: int | None,
) -> tuple[ClassStats, torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """Restrict the statistics and the classifier to the classes with ≥ ``min_samples`` samples.

    Returns ``(stats, W, b, label_map, (classes excluded, samples excluded))``; ``label_map`` [C]
    maps an original label to its index among the kept classes (−1: excluded), None when every
    class is kept. ``total_counts`` are the classes' sample counts, held-back rows included.
    With ``min_samples=None`` every class must have samples (EmptyClassError otherwise).
    """
    if min_samples is None:
        stats.require_all_classes()
        return stats, W, b, None, (0, 0)
    if float(total_counts.sum()) == 0:
        raise EmptyDataError("no samples were added; the features / loader are empty")
    kept = total_counts >= min_samples
    n_kept = int(kept.sum())
    if n_kept < 2:
        raise EmptyClassError(
            f"only {n_kept} class(es) have at least min_samples={min_samples} samples, but "
            "collapse compares ≥ 2 classes; lower min_samples or measure on more data"
        )
    if n_kept == stats.num_classes:
        return stats, W, b, None, (0, 0)
    excluded = (stats.num_classes - n_kept, int(round(float(total_counts[~kept].sum()))))
    index = kept.nonzero().flatten()
    state = stats.state_tensors()
    pooled = ("scatter", "input_roundoff")
    sub = {
        name: value.index_select(0, index) for name, value in state.items() if name not in pooled
    }
    # excluded classes contribute nothing to the pooled scatter: they either have no row in the
    # statistics (held back) or one row, whose deviation from its own shift is exactly zero
    sub.update({name: state[name] for name in pooled})
    restricted = ClassStats.from_state(n_kept, stats.dim, sub)
    label_map = torch.full((stats.num_classes,), -1, dtype=torch.long, device=kept.device)
    label_map[index] = torch.arange(n_kept, device=kept.device)
    Wk = W.index_select(0, index.to(W.device))
    bk = b.index_select(0, index.to(b.device))
    return restricted, Wk, bk, label_map, excluded


def measure(
    model: nn.Module,
    loader: Iterable,
    *,
    classifier: nn.Linear | None = None,
    num_classes: int | None = None,
    lam: float = 0.0,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
    distributed: bool | None = None,
    min_samples: int | None = None,
    ignore_index: int | None = -100,
    shift_labels: bool = False,
) -> NCResult:
    """Measure collapse of a model's last-layer features on a loader of ``(inputs, labels)``.

    The input of ``classifier`` is hooked as the features; the model runs in eval mode under
    ``torch.no_grad`` on its own device, and its previous mode is restored afterwards.
    ``accuracy`` and ``nc4`` use the layer's decision ``argmax(W h + b)``.

    The default classifier is found by execution: the ``nn.Linear`` whose output is the model's
    output on the first batch (not the last one defined: an auxiliary head defined after the
    classifier is never taken for it). A model returning a tuple or dict, logits transformed after
    the last layer, or several layers producing the output: an :class:`~ncmse.errors.InputError`
    asking for ``classifier=``.

    Each sample is measured once: the padding a ``DistributedSampler`` (``drop_last=False``)
    adds to make the shards equal is dropped (the last rows of a rank's pass). A loader that
    repeats or leaves out samples (sampling with replacement, ``drop_last=True``, a custom sampler
    whose shards do not add up to the dataset under a process group) gives a
    :class:`~ncmse.errors.SamplingWarning` (see :mod:`ncmse.collapse.sampling`).

    Parameters
    ----------
    model : nn.Module (may be wrapped in DistributedDataParallel)
    loader : iterable of (x, y) batches; a re-iterable one (a DataLoader, a list) is read twice
        when the features exceed ``memory_budget_bytes``, a single-use one (a generator) raises
        :class:`~ncmse.errors.InputError` then
    classifier : the final linear layer (default: found by execution, see above)
    num_classes : C; default ``classifier.out_features``
    lam : λ of the MSE decomposition (SPEC §3)
    min_samples : measure only the classes with at least this many samples (None: all classes
        must be present); see :func:`measure_stream`
    ignore_index : positions (or samples) with this label are not measured (default −100, as
        ``nn.CrossEntropyLoss``; None: every label is a class)
    shift_labels : the class of the features at position t is the label at t + 1 (causal
        language models trained on their own ``input_ids``)

    Sequence models: the classifier's input may be ``[B, T, p]`` (any ``[..., p]``) with labels
    ``[B, T]`` of the same leading shape; every position is a sample. Batches may be dicts
    (``input_ids``, ``attention_mask``, ``labels``, …): every entry but ``labels`` is passed to
    the model as a keyword argument, and positions where ``attention_mask`` is 0 are not measured.
    Features that are the output of a ``LayerNorm`` (a transformer's last hidden state) span at
    most p − 1 dimensions, so Σ_W is singular by construction: one
    :class:`~ncmse.errors.NCMSEWarning` per measurement says so, instead of one per flag.

    Examples
    --------
    A causal language model's last hidden state (the input of ``lm_head``) against the next token:

    >>> import torch, ncmse
    >>> from torch import nn
    >>> class TinyLM(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed, self.pos = nn.Embedding(5, 3), nn.Embedding(10, 3)
    ...         self.lm_head = nn.Linear(3, 5)
    ...     def forward(self, input_ids, attention_mask=None):
    ...         h = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
    ...         return self.lm_head(torch.tanh(h))
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> ids = torch.arange(60).reshape(6, 10) % 5
    >>> mask = torch.ones_like(ids); mask[0, 7:] = 0          # padding: never measured
    >>> batches = [{"input_ids": ids, "attention_mask": mask, "labels": ids}]
    >>> model = TinyLM()
    >>> r = ncmse.measure(model, batches, classifier=model.lm_head, shift_labels=True)
    >>> r.num_samples                                          # 6·9 positions less 3 padded
    51
    """
    from ncmse.collapse.frontend import measure_model  # here: frontend imports this module

    check_min_samples(min_samples)
    check_options(lam, rtol, dtype)  # before the first batch is read
    _check_memory_budget(memory_budget_bytes)
    return measure_model(
        model,
        loader,
        classifier=classifier,
        num_classes=num_classes,
        distributed=distributed,
        device=device,
        lam=lam,
        memory_budget_bytes=memory_budget_bytes,
        dtype=dtype,
        rtol=rtol,
        min_samples=min_samples,
        ignore_index=ignore_index,
        shift_labels=shift_labels,
    )
