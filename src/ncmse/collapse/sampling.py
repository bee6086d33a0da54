"""Which samples a loader gives a measurement: DistributedSampler padding and coverage checks.

A measurement must count every sample of the split exactly once. Two common loaders do not:

* ``torch.utils.data.DistributedSampler`` with ``drop_last=False`` (Lightning's default under
  DDP) pads its index list to ``total_size = R·⌈N/R⌉`` by repeating its first indices, so N + pad
  samples are measured. The padded list is ``indices + indices[:pad]`` (after the shuffle) and rank
  r receives its positions ``r, r + R, r + 2R, …``: the rank's local position i holds a real
  sample iff ``r + i·R < N``, whatever the shuffle. The real samples of a rank are therefore its
  first :func:`real_count` positions, and the padding is at the end of its pass.
* Samplers drawing with replacement, ``drop_last=True`` loaders, or custom samplers under a
  process group whose shards do not add up to the dataset.

:func:`plan` reads what a ``DataLoader`` will do, :func:`check_count` compares the number of
samples measured with the number expected, and :func:`real_samples` gives the mask of real rows of
a batch, for callers that feed features themselves (``NeuralCollapseMetric.update(valid=...)``).
Where ncmse cannot know, it warns with :class:`~ncmse.errors.SamplingWarning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

from ncmse.errors import SamplingWarning, warn_caller

__all__ = ["SamplePlan", "plan", "check_count", "real_count", "real_samples"]


@dataclass(frozen=True)
class SamplePlan:
    """What a measurement over a loader should count.

    Attributes
    ----------
    real : int or None
        The number of leading rows of this process's pass that are real samples (the rest is
        DistributedSampler padding); None: every row is real.
    expected : int or None
        The samples the measurement should count in all (over every process when it is
        distributed); None: unknown.
    source : str
        How the loader draws its samples, for messages.
    """

    real: int | None = None
    expected: int | None = None
    source: str = "the loader"


def real_count(sampler: DistributedSampler) -> int:
    """The number of real (not padded) samples in this rank's pass over ``sampler``.

    ``len(range(rank, min(N, total_size), num_replicas))``: rank r holds positions
    ``r + i·R`` of the padded (or, with ``drop_last=True``, truncated) index list, of which those
    below N are real samples.
    """
    n = len(sampler.dataset)
    return len(range(sampler.rank, min(n, sampler.total_size), sampler.num_replicas))


def real_samples(sampler: Any, start: int, count: int) -> torch.Tensor:
    """Mask ``[count]`` of the rows at positions ``start … start + count − 1`` of this process's
    pass over ``sampler`` that are real samples (True) rather than DistributedSampler padding.

    For a batch ``i`` of a loader with a fixed ``batch_size``: ``start = i * batch_size``. Any
    sampler other than a ``DistributedSampler`` pads nothing (all True).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DistributedSampler
    >>> s = DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=True)
    >>> real_samples(s, 0, 3).tolist()   # rank 1 holds positions 1, 3 and 5 (padding) of 6
    [True, True, False]
    """
    positions = torch.arange(start, start + count)
    if not isinstance(sampler, DistributedSampler):
        return torch.ones(count, dtype=torch.bool)
    return positions < real_count(sampler)


def plan(loader: Any, *, distributed: bool, auto: bool = True) -> SamplePlan:
    """What a measurement over ``loader`` should count; warns where the loader drops or repeats
    samples.

    Parameters
    ----------
    loader : a ``torch.utils.data.DataLoader`` (anything else: nothing known, nothing checked)
    distributed : whether the measurement reduces over a process group
    auto : whether ``distributed`` was decided automatically (a shard measured without a process
        group is then worth a warning; an explicit ``distributed=False`` is not)
    """
    sampler = _sampler_of(loader)
    if sampler is None:
        return SamplePlan()
    dropped = _dropped_by_loader(loader, sampler)
    if dropped:
        _warn(
            f"the loader drops its last incomplete batch (drop_last=True): {dropped} sample(s) "
            "per pass are not measured; measure with a loader built with drop_last=False"
        )
    if isinstance(sampler, DistributedSampler):
        return _distributed_plan(sampler, distributed, auto, exact=not dropped)
    if _with_replacement(sampler):
        _warn(
            f"the loader's {type(sampler).__name__} draws samples with replacement: some samples "
            "are measured more than once and others not at all; measure with a loader that "
            "visits each sample once (shuffle=False or a SequentialSampler)"
        )
        return SamplePlan(source=type(sampler).__name__)
    size = _dataset_length(loader)
    if size is None and distributed:
        _warn(
            "the loader's dataset has no length, so ncmse cannot check that the processes "
            "measure each sample exactly once; give each rank a disjoint shard (an "
            "IterableDataset must split its stream by torch.distributed.get_rank() itself)"
        )
    if dropped or size is None:
        return SamplePlan(source=type(sampler).__name__)
    if distributed or isinstance(sampler, (SequentialSampler, RandomSampler)):
        return SamplePlan(expected=size, source=f"a {type(sampler).__name__}")
    return SamplePlan(source=type(sampler).__name__)  # a custom subset in one process: intended


def check_count(sample_plan: SamplePlan, counted: int, *, distributed: bool) -> None:
    """Warn when a measurement counted a number of samples other than the plan expects."""
    expected = sample_plan.expected
    if expected is None or counted == expected:
        return
    where = "over all processes " if distributed else ""
    hint = (
        "a sampler under a process group must give each rank a disjoint shard that together "
        "cover the dataset once (torch's DistributedSampler does)"
        if distributed
        else "check the loader's sampler"
    )
    _warn(
        f"ncmse.measure counted {counted} samples {where}but the dataset of the loader "
        f"({sample_plan.source}) has {expected}: samples were repeated or left out; {hint}"
    )


def _distributed_plan(
    sampler: DistributedSampler, distributed: bool, auto: bool, *, exact: bool
) -> SamplePlan:
    n = len(sampler.dataset)
    real = real_count(sampler)
    covered = min(n, sampler.total_size)
    if covered < n:
        _warn(
            f"the loader's DistributedSampler(drop_last=True) leaves out {n - covered} of the {n} "
            "samples; use drop_last=False (ncmse.measure drops the padding it adds)"
        )
    if not distributed and sampler.num_replicas > 1 and auto:
        _warn(
            f"no process group is initialised, so this process measures its DistributedSampler "
            f"shard only ({real} of the {n} samples); initialise torch.distributed in every rank "
            "for the result over the whole dataset (distributed=False: the shard, no warning)"
        )
    expected = (covered if distributed else real) if exact else None
    return SamplePlan(real=real, expected=expected, source="a DistributedSampler")


def _sampler_of(loader: Any) -> Any:
    """The sampler that orders a DataLoader's samples (inside its batch sampler if it has one)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if inner is not None:
        return inner
    return getattr(loader, "sampler", None) if batch_sampler is None else None


def _dropped_by_loader(loader: Any, sampler: Any) -> int:
    """Samples a DataLoader's ``drop_last=True`` leaves out of each pass (0 when unknown)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    size = getattr(batch_sampler, "batch_size", None)
    if not getattr(batch_sampler, "drop_last", False) or not isinstance(size, int):
        return 0
    try:
        return len(sampler) % size
    except TypeError:
        return 0


def _with_replacement(sampler: Any) -> bool:
    return bool(getattr(sampler, "replacement", False))


def _dataset_length(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset):
        return None
    try:
        return len(dataset)
    except TypeError:
        return None


def _warn(message: str) -> None:
    warn_caller(f"ncmse: {message}", SamplingWarning)
