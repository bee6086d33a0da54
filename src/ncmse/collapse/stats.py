"""Streaming class statistics: counts, class means and within-class scatter.

One pass over the features, any batch order, state ``O(C·p + p²)`` independent of ``N``.

Numerical method
----------------
The textbook one-pass formula ``Σ h hᵀ − N μ μᵀ`` cancels catastrophically exactly when the
features collapse (SPEC §8). We use the *shifted-data* algorithm instead: every class ``c`` gets a
fixed shift ``K_c`` (the mean of the first batch in which the class appears) and we accumulate,
in float64,

    n_c,   s_c = Σ (h − K_c),   q_c = Σ ‖h − K_c‖²,   S = Σ (h − K_{y})(h − K_{y})ᵀ.

Because ``K_c`` is within a few within-class standard deviations of ``μ_c``, the subtraction
``S − Σ_c n_c d_c d_cᵀ`` (``d_c = μ_c − K_c = s_c / n_c``) only removes a term of the size of the
within-class scatter itself: no cancellation, however small the spread. The per-batch cost is one
``B×p`` subtraction and one ``zᵀz`` GEMM, i.e. the cost of accumulating ``HᵀH``.

States with different shifts are merged exactly by Chan's parallel update on centred scatters
(:func:`merge`); :meth:`ClassStats.all_reduce_` does the same across ``torch.distributed`` ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ncmse.errors import (
    EmptyClassError,
    EmptyDataError,
    InputError,
    LabelError,
    NonFiniteError,
    ShapeError,
)

__all__ = ["ClassStats", "merge", "check_batch"]


def check_batch(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    finite: bool = True,
    label_range: bool = True,
) -> None:
    """Validate one batch of features ``[B, p]`` and integer labels ``[B]`` in ``[0, C)``.

    ``finite=False`` skips the NaN/Inf scan (a full pass over the batch); streaming callers check
    :meth:`ClassStats.check_finite` once at the end instead, since NaN/Inf always reach the sums.
    ``label_range=False`` skips the range check (one reduction and a device sync), for callers
    that check a larger block of labels later.

    Raises
    ------
    ShapeError, LabelError, NonFiniteError
        With a message naming the offending input and the fix.
    """
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ShapeError(
            "features and labels must be torch tensors; convert with torch.as_tensor(...)"
        )
    if features.device.type == "meta" or labels.device.type == "meta":
        raise InputError(
            "features/labels are meta-device tensors (shapes without data); move the model and "
            "data to a real device (model.to_empty(device=...) and load the weights) first"
        )
    if features.ndim != 2:
        raise ShapeError(
            f"features must have shape [N, p], got {tuple(features.shape)}; "
            "flatten with features.flatten(1)"
        )
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ShapeError(
            f"labels must have shape [N] = [{features.shape[0]}] to match features "
            f"{tuple(features.shape)}, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise LabelError(
            f"labels must be integers (class indices), got dtype {labels.dtype}; "
            "pass labels.long() of class indices, not one-hot or scores"
        )
    if label_range and labels.numel():
        low, high = torch.stack(torch.aminmax(labels)).tolist()  # one host read
        if low < 0 or high >= num_classes:
            raise LabelError(
                f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, found "
                f"values in [{low}, {high}]; fix num_classes or the labels"
            )
    if not features.dtype.is_floating_point:
        raise ShapeError(f"features must be floating point, got {features.dtype}")
    if finite and not _all_finite(features):
        raise NonFiniteError(
            "features contain NaN or Inf; check the model (diverged training?) or the data"
        )


def _all_finite(features: torch.Tensor) -> bool:
    """Whether every entry is finite, in one reduction without an N×p temporary: a NaN or ±Inf
    makes the sum non-finite, so a finite sum proves every entry finite; only a non-finite sum
    (a non-finite entry, or an overflow of the sum in the features' own dtype) needs the
    elementwise test. The sum runs in the features' dtype: an upcast would copy all N×p values."""
    if features.numel() == 0:
        return True
    if bool(torch.isfinite(features.sum())):
        return True
    return bool(torch.isfinite(features).all())


@dataclass(eq=False, repr=False)
class ClassStats:
    """Sufficient statistics of labelled features, updated batch by batch.

    Parameters
    ----------
    num_classes : int
        C ≥ 2.
    dim : int
        Feature dimension p.
    device, dtype
        Where and in which precision the state lives: float64 (default) or float32; features of
        any floating dtype are upcast to it.

    Attributes
    ----------
    counts : Tensor [C]        n_c (float, exact for N < 2⁵³)
    shift : Tensor [C, p]      K_c (valid where ``counts > 0``)
    sums : Tensor [C, p]       Σ_{i in c} (h_i − K_c)
    sqsums : Tensor [C]        Σ_{i in c} ‖h_i − K_c‖²
    scatter : Tensor [p, p]    Σ_i (h_i − K_{y_i})(h_i − K_{y_i})ᵀ
    input_roundoff : Tensor []  unit roundoff of the coarsest feature dtype added, as given
        (2⁻²⁴ once a float32 batch was added; 0 before any batch): the features' own rounding,
        which the rank decisions must not take for a direction of the data (SPEC §2)
    """

    num_classes: int
    dim: int
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if int(self.num_classes) < 2:
            raise InputError(
                f"num_classes must be ≥ 2 (collapse compares classes), got {self.num_classes}"
            )
        if int(self.dim) < 1:
            raise InputError(f"dim (feature dimension p) must be ≥ 1, got {self.dim}")
        if self.dtype not in (torch.float64, torch.float32):
            raise InputError(
                f"dtype of the statistics must be torch.float64 (default) or torch.float32, got "
                f"{self.dtype}; half-precision features are accumulated in float64 anyway"
            )
        self.num_classes = int(self.num_classes)
        self.dim = int(self.dim)
        self.device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every sample."""
        C, p, kw = self.num_classes, self.dim, {"device": self.device, "dtype": self.dtype}
        self.counts = torch.zeros(C, **kw)
        self.shift = torch.zeros(C, p, **kw)
        self.sums = torch.zeros(C, p, **kw)
        self.sqsums = torch.zeros(C, **kw)
        self.scatter = torch.zeros(p, p, **kw)
        self.input_roundoff = torch.zeros((), **kw)

    _STATE = ("counts", "shift", "sums", "sqsums", "scatter", "input_roundoff")

    @property
    def scatter(self) -> torch.Tensor:
        """Σ_i (h_i − K_{y_i})(h_i − K_{y_i})ᵀ, [p, p], symmetric.

        Updates add only the upper block-triangle (about half the GEMM flops, see
        :func:`_panels`); the blocks below the diagonal are copied from it when the scatter is read.
        """
        if self._lower_stale:
            for lo, hi in _panels(self.dim, self.device)[:-1]:
                self._scatter[hi:, lo:hi].copy_(self._scatter[lo:hi, hi:].T)
            self._lower_stale = False
        return self._scatter

    @scatter.setter
    def scatter(self, value: torch.Tensor) -> None:
        self._scatter = value
        self._lower_stale = False

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The whole state as named tensors (for checkpoints and torchmetrics' state)."""
        return {name: getattr(self, name) for name in self._STATE}

    @classmethod
    def from_state(cls, num_classes: int, dim: int, tensors: dict[str, torch.Tensor]) -> ClassStats:
        """The statistics whose :meth:`state_tensors` are ``tensors`` (not copied)."""
        counts = tensors["counts"]
        out = cls(num_classes, dim, device=counts.device, dtype=counts.dtype)
        for name in cls._STATE:
            if name == "input_roundoff" and name not in tensors:  # a state saved before it
                continue
            value = tensors[name]
            expected = getattr(out, name).shape
            if tuple(value.shape) != tuple(expected):
                raise ShapeError(
                    f"state tensor {name!r} has shape {tuple(value.shape)}, expected "
                    f"{tuple(expected)} for C={num_classes}, p={dim}"
                )
            setattr(out, name, value)
        return out

    def __repr__(self) -> str:
        counts = [int(round(float(n))) for n in self.counts[:10]]
        more = ", ..." if self.num_classes > 10 else ""
        return (
            f"ClassStats(num_classes={self.num_classes}, dim={self.dim}, N={self.num_samples}, "
            f"counts=[{', '.join(map(str, counts))}{more}], device={self.device}, "
            f"dtype={self.dtype})"
        )

    @property
    def num_samples(self) -> int:
        """N = Σ_c n_c."""
        return int(round(float(self.counts.sum())))

    def clone(self) -> ClassStats:
        """A deep copy."""
        out = ClassStats.__new__(ClassStats)
        out.num_classes, out.dim, out.device, out.dtype = (
            self.num_classes,
            self.dim,
            self.device,
            self.dtype,
        )
        for name in self._STATE:
            setattr(out, name, getattr(self, name).clone())
        return out

    def to_like(self, other: ClassStats) -> ClassStats:
        """This state on ``other``'s device and dtype (self when they already match)."""
        if self.device == other.device and self.dtype == other.dtype:
            return self
        out = self.clone()
        out.device, out.dtype = other.device, other.dtype
        for name in self._STATE:
            setattr(out, name, getattr(out, name).to(device=other.device, dtype=other.dtype))
        return out

    # ----------------------------------------------------------------- update
    @torch.no_grad()
    def update(
        self, features: torch.Tensor, labels: torch.Tensor, *, validate: bool = True
    ) -> None:
        """Add a batch.

        Parameters
        ----------
        features : Tensor [B, p]
            Any floating dtype; upcast to the state's dtype.
        labels : Tensor [B]
            Integer class indices in ``[0, C)``.
        validate : bool
            Check shapes, label range and finiteness (one device sync); disable only in hot loops
            whose inputs are known to be valid.
        """
        if validate:
            check_batch(features, labels, self.num_classes)
            if features.shape[1] != self.dim:
                raise ShapeError(
                    f"features have dimension {features.shape[1]} but the statistics were created "
                    f"with dim={self.dim}"
                )
        if features.shape[0] == 0:
            return
        if features.dtype.is_floating_point:  # in place, no host sync
            self.input_roundoff.clamp_(min=torch.finfo(features.dtype).eps / 2)
        y = labels.to(device=self.device, dtype=torch.long)
        if self.device.type == "cpu":
            h = features.to(device=self.device)
            if torch.promote_types(h.dtype, self.dtype) != self.dtype:
                h = h.to(self.dtype)  # float64 features into float32 statistics
            for start in range(0, h.shape[0], _CPU_ROWS):
                self._update_cpu(h[start : start + _CPU_ROWS], y[start : start + _CPU_ROWS])
        else:
            self._update_device(features.to(device=self.device, dtype=self.dtype), y)

    def _update_cpu(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """One chunk of ≤ _CPU_ROWS rows (features in any dtype that promotes to the state's).

        index_add_ straight into the state, O(B·p) per chunk whatever C (no C×p temporary). The
        deviations go into reused buffers: a fresh multi-MB tensor per chunk costs page faults
        comparable to the scatter GEMM itself.
        """
        if bool((self.counts.index_select(0, y) == 0).any()):  # a class's first rows
            self._set_new_shifts(h.to(self.dtype), y)
        gathered, z = self._workspace(h.shape[0])
        torch.index_select(self.shift, 0, y, out=gathered)
        z.copy_(h).sub_(gathered)  # (a mixed-dtype torch.sub would cast h into a temporary)
        self.counts.index_add_(0, y, torch.ones(h.shape[0], dtype=self.dtype))
        self.sums.index_add_(0, y, z)
        # ‖z‖² as a sum of squares, like the centring term Σ n_c d_c² it is later reduced by (an
        # exactly collapsed class then gives exactly 0), into the spent gather buffer
        self.sqsums.index_add_(0, y, torch.mul(z, z, out=gathered).sum(dim=1))
        self._add_gram(z)

    def _set_new_shifts(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Shift of each class first seen in this chunk: the mean of its rows here."""
        classes, inverse = torch.unique(y, return_inverse=True)
        new = self.counts[classes] == 0
        block_sums = torch.zeros(classes.numel(), self.dim, dtype=h.dtype).index_add_(0, inverse, h)
        block_counts = torch.bincount(inverse, minlength=classes.numel()).to(h.dtype)
        self.shift[classes[new]] = block_sums[new] / block_counts[new].unsqueeze(1)

    def _workspace(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two reused [rows, p] buffers of the state's dtype and device."""
        work = getattr(self, "_work", None)
        if work is None or work.shape[1] < rows:
            work = torch.empty(2, rows, self.dim, dtype=self.dtype, device=self.device)
            self._work = work
        return work[0, :rows], work[1, :rows]

    def _add_gram(self, z: torch.Tensor) -> None:
        """scatter += zᵀz, only the upper block-triangle when it pays (see :func:`_panels`)."""
        bounds = _panels(self.dim, self.device)
        if len(bounds) == 1:
            self._scatter.addmm_(z.T, z)
            return
        for lo, hi in bounds:
            self._scatter[lo:hi, lo:].addmm_(z[:, lo:hi].T, z[:, lo:])
        self._lower_stale = True

    def _update_device(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Without a host sync: few classes by one-hot GEMMs, many by sort-based index_put_
        (both deterministic, unlike atomics); new classes' shifts are set arithmetically."""
        C = self.num_classes
        onehot = None
        if C <= _ONEHOT_MAX_CLASSES:
            onehot = torch.zeros(h.shape[0], C, device=self.device, dtype=self.dtype)
            onehot.scatter_(1, y.unsqueeze(1), 1.0)
        batch_counts = _class_sums(torch.ones_like(h[:, 0]), y, C, onehot)
        new = ((batch_counts > 0) & (self.counts == 0)).to(self.dtype)
        batch_means = _class_sums(h, y, C, onehot) / batch_counts.clamp_min(1).unsqueeze(1)
        # a class without samples has shift 0, so shift + new·mean is exactly the mean for a new
        # class and exactly the old shift for the others
        self.shift.addcmul_(new.unsqueeze(1), batch_means)
        z = h - self.shift.index_select(0, y)
        self.counts += batch_counts
        if onehot is not None:
            self.sums.addmm_(onehot.T, z)
            self.sqsums.addmv_(onehot.T, torch.einsum("ij,ij->i", z, z))
        else:
            self.sums.index_put_((y,), z, accumulate=True)
            self.sqsums.index_put_((y,), torch.einsum("ij,ij->i", z, z), accumulate=True)
        self._add_gram(z)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if any added feature was NaN or Inf, or if finite features
        were too large for the state's second moments (their squares overflow the dtype).

        A non-finite feature always makes its class sum non-finite (Inf − Inf = NaN included), so
        one check of the C×p sums replaces a scan of every batch; finite sums with non-finite
        squared sums mean overflow, not bad features.
        """
        if not bool(torch.isfinite(self.sums).all()):
            raise NonFiniteError(
                "features contain NaN or Inf (or finite values so large that their sums overflow "
                f"{self.dtype}); check the model (diverged training?) or the data"
            )
        if not bool(torch.isfinite(self.sqsums).all()):
            limit = math.sqrt(torch.finfo(self.dtype).max)
            raise NonFiniteError(
                f"features are finite but too large: their spread exceeds ~{limit:.0e}, so their "
                f"second moments overflow {self.dtype}; rescale the features (e.g. divide by "
                "their largest absolute value): every scale-free metric is unchanged by scaling"
            )

    # ------------------------------------------------------------ canonical
    def class_means(self) -> torch.Tensor:
        """μ_c, shape [C, p]. Raises if a class has no samples."""
        self.require_all_classes()
        return self.shift + self.sums / self.counts.unsqueeze(1)

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Canonical (shift-free) form.

        Returns
        -------
        counts : [C]
        means : [C, p]        μ_c (zero for empty classes)
        within_sq : [C]       Σ_{i in c} ‖h_i − μ_c‖²
        within_scatter : [p, p]   Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ  (pooled, unnormalised)
        """
        safe = self.counts.clamp_min(1).unsqueeze(1)
        d = self.sums / safe  # μ_c − K_c
        means = torch.where(self.counts.unsqueeze(1) > 0, self.shift + d, torch.zeros_like(d))
        w = self.counts.unsqueeze(1) * d
        within = self.scatter - d.T @ w
        within = 0.5 * (within + within.T)
        within_sq = (self.sqsums - (d * w).sum(dim=1)).clamp_min(0)
        return self.counts.clone(), means, within_sq, within

    def _load_centred(
        self,
        counts: torch.Tensor,
        means: torch.Tensor,
        within_sq: torch.Tensor,
        within: torch.Tensor,
    ) -> None:
        """Set the state from canonical form (shift = class means)."""
        self.counts = counts
        self.shift = torch.where((counts > 0).unsqueeze(1), means, torch.zeros_like(means))
        self.sums = torch.zeros_like(means)
        self.sqsums = within_sq
        self.scatter = within

    def require_all_classes(self) -> None:
        if self.num_samples == 0:
            raise EmptyDataError("no samples were added; the features / loader are empty")
        empty = (self.counts == 0).nonzero().flatten().tolist()
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            raise EmptyClassError(
                f"class(es) {shown} have no samples, so their means are undefined; measure on a "
                f"split that contains every class, or set num_classes to the classes present"
            )

    # --------------------------------------------------------- distributed
    @torch.no_grad()
    def all_reduce_(self, group=None) -> ClassStats:
        """Replace the state, on every rank, by the merge of all ranks' states (in place).

        Two collective sums: first counts and class sums (→ global means), then each rank's
        scatter about the *global* means, which makes the sum exact (no cancellation).
        No-op when ``torch.distributed`` is not initialised.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        dist.all_reduce(self.input_roundoff, op=dist.ReduceOp.MAX, group=group)
        counts, means, within_sq, within = self.centred()
        first = torch.cat([counts.unsqueeze(1), counts.unsqueeze(1) * means], dim=1)
        dist.all_reduce(first, group=group)
        g_counts = first[:, 0]
        g_means = first[:, 1:] / g_counts.clamp_min(1).unsqueeze(1)
        delta = means - g_means  # zero where the rank has no sample of the class
        w = counts.unsqueeze(1) * delta
        second = torch.empty(
            self.num_classes + self.dim * self.dim, device=self.device, dtype=self.dtype
        )
        second[: self.num_classes] = within_sq + (delta * w).sum(dim=1)
        second[self.num_classes :] = (within + delta.T @ w).reshape(-1)
        dist.all_reduce(second, group=group)
        self._load_centred(
            g_counts,
            g_means,
            second[: self.num_classes].clone(),
            second[self.num_classes :].reshape(self.dim, self.dim).clone(),
        )
        return self


#: on an accelerator, class sums by one-hot GEMMs up to this many classes, index_put_ beyond
_ONEHOT_MAX_CLASSES = 1024

#: rows per CPU update step: the [rows, p] deviations stay in cache-sized reused buffers
_CPU_ROWS = 1024


def _panels(dim: int, device: torch.device) -> tuple[tuple[int, int], ...]:
    """Column ranges [lo, hi) of the row panels of the scatter update ``S[lo:hi, lo:] += ...``.

    With k panels the update costs (k + 1)/(2k) of the full GEMM; narrower panels are less
    efficient GEMMs. On a CPU (2 cores, MKL, p = 512, 1 024 rows): k = 8 panels of 64 columns
    take 0.70× the time of the full product. On an accelerator the full product is one kernel and
    small problems are bound by launches, so panels only start at p ≥ 1 024 (≥ 512 columns each).
    """
    if device.type == "cpu":
        k = max(1, min(8, dim // 64))
    else:
        k = max(1, min(4, dim // 512))
    if k == 1:
        return ((0, dim),)
    edges = [round(i * dim / k) for i in range(k + 1)]
    return tuple(zip(edges[:-1], edges[1:]))


def _class_sums(
    values: torch.Tensor, labels: torch.Tensor, C: int, onehot: torch.Tensor | None
) -> torch.Tensor:
    """Per-class sums of ``values`` [B, ...] → [C, ...] (device path)."""
    if onehot is not None:
        return onehot.T @ values
    out = torch.zeros((C, *values.shape[1:]), device=values.device, dtype=values.dtype)
    return out.index_put_((labels,), values, accumulate=True)


def merge(a: ClassStats, b: ClassStats) -> ClassStats:
    """Exact merge of two states (Chan et al.'s parallel update), returned as a new state.

    With per-class counts n_a, n_b and means μ_a, μ_b (δ = μ_b − μ_a):
    ``μ = μ_a + δ n_b / n``,  ``S = S_a + S_b + Σ_c (n_a n_b / n) δ_c δ_cᵀ``.
    """
    if (a.num_classes, a.dim) != (b.num_classes, b.dim):
        raise ShapeError(
            f"cannot merge statistics of shape (C={a.num_classes}, p={a.dim}) with "
            f"(C={b.num_classes}, p={b.dim})"
        )
    na, ma, qa, sa = a.centred()
    nb, mb, qb, sb = b.to_like(a).centred()
    n = na + nb
    safe = n.clamp_min(1).unsqueeze(1)
    delta = mb - ma
    both = (na > 0) & (nb > 0)
    delta = torch.where(both.unsqueeze(1), delta, torch.zeros_like(delta))
    means = torch.where((na > 0).unsqueeze(1), ma + delta * (nb.unsqueeze(1) / safe), mb)
    weight = (na * nb / n.clamp_min(1)).unsqueeze(1)
    out = ClassStats(a.num_classes, a.dim, device=a.device, dtype=a.dtype)
    out.input_roundoff = torch.maximum(a.input_roundoff, b.to_like(a).input_roundoff)
    out._load_centred(
        n,
        means,
        qa + qb + (weight * delta * delta).sum(dim=1),
        sa + sb + delta.T @ (weight * delta),
    )
    return out
