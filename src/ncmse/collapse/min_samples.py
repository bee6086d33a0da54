"""Measuring over the classes with at least m samples (vocabularies with rare or absent classes).

Convention (docs/ARCHITECTURE.md, "Measured class subset"): with ``min_samples = m`` the measured
set is the classes with n_c ≥ m in the whole split (all processes together) and their samples.
Every quantity is that of the sub-problem: features, class means, Σ_W, μ_G, the classifier rows
``W[kept]`` and ``b[kept]``, one-hot targets in R^{C_kept}, decisions ``argmax`` over the kept
classes only. The result records how many classes and samples were left out.

A streaming pass cannot know in advance which classes will reach m samples, so
:class:`DeferredRows` holds back the first m − 1 rows of every class; rows after the (m−1)-th go
straight to the statistics. At the end, the held rows of classes that reached m (over all
processes) are added, and those of the other classes are dropped: the statistics are exactly those
of the kept samples, never a difference of sums. The rows held are at most (m − 1)·C.
"""

from __future__ import annotations

import torch

from ncmse.errors import InputError

__all__ = ["DeferredRows", "check_min_samples"]


def check_min_samples(min_samples: object) -> int | None:
    """``None`` (every class must have samples) or an integer m ≥ 1."""
    if min_samples is None:
        return None
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InputError(
            f"min_samples must be None (every class must be present) or an integer ≥ 1, got "
            f"{min_samples!r}; e.g. min_samples=2 measures the classes with at least 2 samples"
        )
    return min_samples


class DeferredRows:
    """Hold back the first ``m − 1`` rows of every class until the final class counts are known.

    Parameters
    ----------
    num_classes : int
    min_samples : int
        m ≥ 2 (for m = 1 nothing needs holding: absent classes have no rows).
    device : torch.device
        Where the per-class counts live (the labels' device).
    """

    def __init__(self, num_classes: int, min_samples: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.min_samples = min_samples
        self.seen = torch.zeros(num_classes, dtype=torch.long, device=device)
        self._held: list[tuple[torch.Tensor, torch.Tensor]] = []

    def route(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep this block's rows that are among the first m − 1 of their class; return the rest.

        The rank of a row within its class is ``seen[y]`` (rows of earlier blocks) plus the number
        of earlier rows of the same class in this block (from a stable sort of the labels).
        """
        y = labels.to(self.seen.device, torch.long)
        B = y.shape[0]
        order = torch.sort(y, stable=True).indices
        ys = y[order]
        block_counts = torch.bincount(y, minlength=self.num_classes)
        starts = torch.cumsum(block_counts, 0) - block_counts
        rank_sorted = torch.arange(B, device=y.device) - starts[ys]
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        hold = (self.seen[y] + rank) < (self.min_samples - 1)
        self.seen += block_counts
        if not bool(hold.any()):
            return features, labels
        keep = ~hold
        hold_f = hold.to(features.device)
        self._held.append((features[hold_f], labels[hold.to(labels.device)]))
        return features[keep.to(features.device)], labels[keep.to(labels.device)]

    @property
    def held_rows(self) -> int:
        return sum(int(y.shape[0]) for _, y in self._held)

    def release(self, total_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The held rows of classes with ``total_counts ≥ m`` (None when there are none).

        ``total_counts`` [C] are the final counts over every process (each process's ``seen``,
        all-reduced).
        """
        if not self._held:
            return None
        feats = torch.cat([f for f, _ in self._held])
        labs = torch.cat([y for _, y in self._held])
        self._held = []
        kept = total_counts.to(labs.device)[labs] >= self.min_samples
        if not bool(kept.any()):
            return None
        return feats[kept.to(feats.device)], labs[kept]
