"""Pairwise class statistics in tiles of classes: memory ``O(C·p + tile²)``, never a C×C matrix.

Every SPEC §2–§3 quantity that is a sum over class pairs (cdnv, equiangularity and max-angle of
the means and of the classifier, the ETF Gram errors) or over the C×C residual ``W μ_c + b − e_c``
(the loss and L_NC2/3) is accumulated here over tiles ``I × J`` of classes. Each tile is one GEMM
(``t × p × t`` multiply-adds) and a few elementwise passes over a ``t × t`` block; the tile size
``t`` is chosen from a byte budget, so that ``C ≤ t`` (every small-C measurement) is a single tile
and the results of a tiled run equal those of an untiled one to rounding (≈1e-15 relative).

Numerical method
----------------
* **Standard deviations** over pairs use Chan's parallel update: each tile contributes its count,
  its mean and its centred sum of squares (two passes over the tile), combined exactly, so the
  n−1 std of ~C²/2 cosines has no ``E[x²] − E[x]²`` cancellation however close to equiangular.
* **Distances** ``‖m_c − m_c'‖²`` of the centred means come from the Gram tile as
  ``‖m_c‖² + ‖m_c'‖² − 2 m_c·m_c'`` (the means are centred by μ_G first, so a common offset of the
  features cancels before any product). The rounding error of that form is at most
  ``γ·(‖m_c‖² + ‖m_c'‖²)`` with ``γ = (p + 2)·eps``; pairs whose distance is below
  ``REFINE_RATIO · (‖m_c‖² + ‖m_c'‖²)`` are recomputed exactly from the differences, so every
  distance has relative error ≤ ``γ / REFINE_RATIO`` (≈ 8.5e-13 at p = 768, typically 1e-15).
* **ETF errors** ``‖G/‖G‖_F − Ê‖_F`` (``Ê = (I − 11ᵀ/C)/√(C−1)``) are summed directly as squares
  of ``G/g₀ − Ê`` (no ``2 − 2⟨·,·⟩`` cancellation near the ETF) with a first estimate ``g₀`` of
  ``‖G‖_F`` from p×p products (a single tile uses its own norm); ``‖G‖_F² = Σ‖G_IJ‖²`` is
  accumulated in the same pass and the
  exact identity ``‖rX + (r−1)Ê‖² = r²‖X‖² + 2r(r−1)⟨X, Ê⟩ + (r−1)²`` (``r = g₀/‖G‖_F``, ``X =
  G/g₀ − Ê``) corrects for the estimate. A second pass runs only when ``g₀`` is off by more than
  1e-3 (severe cancellation in the p×p estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "DEFAULT_TILE_BUDGET",
    "REFINE_RATIO",
    "tile_size",
    "RunningMoments",
    "AngleStats",
    "angle_stats",
    "MeansPairStats",
    "means_pair_stats",
    "cross_pass",
    "residual_sq_sum",
]

#: bytes allowed for the temporaries of one tile (a few t×t float64 blocks)
DEFAULT_TILE_BUDGET = 128 * 1024**2
#: pairs closer than this fraction of ‖m_c‖² + ‖m_c'‖² get their distance from the differences
REFINE_RATIO = 0.1
_TEMPORARIES = 3  # t×t blocks alive at once: the gram and work buffers, one temporary


def tile_size(num_classes: int, budget_bytes: int | None = None, *, itemsize: int = 8) -> int:
    """Classes per tile so that a tile's temporaries fit ``budget_bytes`` (≥ 1, ≤ C).

    ``t = ⌊√(budget / (itemsize · 3))⌋``: 128 MiB gives t = 2364 in float64.
    """
    budget = DEFAULT_TILE_BUDGET if budget_bytes is None else int(budget_bytes)
    t = math.isqrt(max(budget, 0) // (itemsize * _TEMPORARIES))
    return max(1, min(int(num_classes), t))


def _blocks(n: int, t: int) -> list[tuple[int, int]]:
    return [(start, min(start + t, n)) for start in range(0, n, t)]


class RunningMoments:
    """Count, mean and centred sum of squares of a stream of values (Chan et al.'s update).

    Combining ``(n_a, m_a, M2_a)`` with a block ``(n_b, m_b, M2_b)`` (``δ = m_b − m_a``)::

        n = n_a + n_b,   m = m_a + δ n_b / n,   M2 = M2_a + M2_b + δ² n_a n_b / n

    The count is a Python int (known without a device sync); mean and M2 stay 0-d tensors on the
    values' device until :meth:`std` is called.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        """Add a block of values (any shape)."""
        if values.numel() == 0:
            return
        var, mean = torch.var_mean(values, correction=0)
        self.add_stats(values.numel(), mean, var * values.numel())

    def add_stats(self, nb: int, mb: torch.Tensor, m2b: torch.Tensor) -> None:
        """Add a block given by its count, mean and centred sum of squares."""
        if nb == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.count + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta * delta * (self.count * nb / n)
        self.count = n

    def std(self) -> float:
        """Sample standard deviation (n−1 denominator); 0 for fewer than two values."""
        if self.count < 2:
            return 0.0
        return math.sqrt(max(float(self.m2), 0.0) / (self.count - 1))


class _Workspace:
    """Two reusable tile buffers: allocating fresh t×t blocks per tile costs more than the
    elementwise work itself (page faults of large allocations)."""

    def __init__(self, t: int, ref: torch.Tensor) -> None:
        self.gram = torch.empty(t * t, dtype=ref.dtype, device=ref.device)
        self.work = torch.empty(t * t, dtype=ref.dtype, device=ref.device)

    def views(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = rows * cols
        return self.gram[:n].view(rows, cols), self.work[:n].view(rows, cols)


class _PairAccumulator:
    """Moments and Σ|v + 1/(C−1)| of the pair values c < c' of symmetric C×C tiles.

    Off-diagonal tiles (I < J) hold each unordered pair once. A diagonal tile (I = J) holds each
    pair twice plus the diagonal: its diagonal is overwritten by exactly neutral values (never a
    subtraction that could cancel) and the symmetric sums are halved. Values are shifted by
    1/(C−1) first (≈ 0 near the simplex ETF, which also conditions the moments).
    """

    def __init__(self, C: int, ref: torch.Tensor) -> None:
        self.shift = 1.0 / (C - 1)
        self.moments = RunningMoments()
        self.abs_sum = torch.zeros((), dtype=ref.dtype, device=ref.device)

    def add(self, vals: torch.Tensor, diagonal: bool) -> None:
        """Add the tile ``vals`` (overwritten)."""
        t = vals.shape[0]
        if diagonal and t < 2:
            return
        y = vals.add_(self.shift)
        flat = y.reshape(-1)
        if diagonal:
            y.fill_diagonal_(0.0)  # |y| = 0 on the diagonal
            n = t * t - t
            self.abs_sum += 0.5 * torch.linalg.vector_norm(flat, 1)
            mean = flat.sum() / n
            y.diagonal().copy_(mean.expand(t))  # (y − mean)² = 0 on the diagonal
            flat.sub_(mean)
            self.moments.add_stats(n // 2, mean - self.shift, 0.5 * torch.dot(flat, flat))
        else:
            n = flat.numel()
            self.abs_sum += torch.linalg.vector_norm(flat, 1)
            mean = flat.sum() / n
            flat.sub_(mean)
            self.moments.add_stats(n, mean - self.shift, torch.dot(flat, flat))

    def result(self) -> AngleStats:
        pairs = self.moments.count
        return AngleStats(equiangular=self.moments.std(), maxangle=float(self.abs_sum) / pairs)


@dataclass(frozen=True)
class AngleStats:
    """Equiangularity (std of the pair cosines) and max-angle (mean |cos + 1/(C−1)|)."""

    equiangular: float
    maxangle: float


def _inv_norms(vectors: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=1)
    return 1.0 / norms.clamp_min(torch.finfo(vectors.dtype).tiny)


def _cosines_into(
    out: torch.Tensor, gram: torch.Tensor, inv_i: torch.Tensor, inv_j: torch.Tensor
) -> torch.Tensor:
    torch.mul(gram, inv_i[:, None], out=out)
    return out.mul_(inv_j[None, :])


def angle_stats(vectors: torch.Tensor, *, tile: int | None = None) -> AngleStats:
    """SPEC §2 equiangular and maxangle of the rows of ``vectors`` [C, d], over pairs c < c'.

    ``equiangular = Std_{c<c'} cos(v_c, v_c')`` (n−1 denominator; 0 for C = 2) and
    ``maxangle = Avg_{c<c'} |cos(v_c, v_c') + 1/(C−1)|``, from Gram tiles.
    """
    C = vectors.shape[0]
    t = tile_size(C) if tile is None else max(1, int(tile))
    inv = _inv_norms(vectors)
    acc = _PairAccumulator(C, vectors)
    ws = _Workspace(t, vectors)
    blocks = _blocks(C, t)
    for bi, (i0, i1) in enumerate(blocks):
        vi = vectors[i0:i1]
        for j0, j1 in blocks[bi:]:
            gram, work = ws.views(i1 - i0, j1 - j0)
            torch.mm(vi, vectors[j0:j1].T, out=gram)
            acc.add(_cosines_into(work, gram, inv[i0:i1], inv[j0:j1]), j0 == i0)
    return acc.result()


class _EtfAccumulator:
    """Σ (G/g₀ − Ê)², ΣG² and ⟨G, Ê⟩ over tiles; then the exact ETF error (module doc).

    Ê = (I − 11ᵀ/C)/√(C−1) is never formed: off the diagonal it is the constant −a
    (a = 1/(C√(C−1))), on it s − a (s = 1/√(C−1)).
    """

    def __init__(self, g0: float | None, C: int, ref: torch.Tensor) -> None:
        self.g0, self.C = g0, C  # g0 None: a single tile, whose own norm is taken
        self.s = 1.0 / math.sqrt(C - 1)
        self.a = self.s / C
        z = torch.zeros((), dtype=ref.dtype, device=ref.device)
        self.dev_sq, self.gram_sq, self.dot_target = z.clone(), z.clone(), z.clone()

    def add(self, gram: torch.Tensor, work: torch.Tensor, i0: int, j0: int, weight: float) -> None:
        """Add the tile ``gram`` = G[i0:, j0:] (read only; ``work``: scratch), ``weight`` times."""
        ti, tj = gram.shape
        flat = gram.reshape(-1)
        has_diag = max(i0, j0) < min(i0 + ti, j0 + tj)
        gram_sq = torch.dot(flat, flat)
        if self.g0 is None:
            self.g0 = math.sqrt(float(gram_sq)) or 1.0
        self.gram_sq += weight * gram_sq
        dot_t = -self.a * flat.sum()
        x = torch.mul(gram, 1.0 / self.g0, out=work)
        x += self.a
        if has_diag:
            dot_t = dot_t + self.s * gram.diagonal(offset=j0 - i0).sum()
            x.diagonal(offset=j0 - i0).sub_(self.s)
        xf = x.reshape(-1)
        self.dev_sq += weight * torch.dot(xf, xf)
        self.dot_target += weight * dot_t

    def result(self) -> tuple[float, bool]:
        """(error, reliable): ``reliable`` is False when g₀ was off by more than 1e-3."""
        g = math.sqrt(max(float(self.gram_sq), 0.0))
        if g == 0.0 or not math.isfinite(g):
            return math.nan, True
        r = self.g0 / g
        x_dot_t = float(self.dot_target) / self.g0 - 1.0  # ⟨X, Ê⟩ with ‖Ê‖_F = 1
        sq = r * r * float(self.dev_sq) + 2.0 * r * (r - 1.0) * x_dot_t + (r - 1.0) ** 2
        return math.sqrt(max(sq, 0.0)), abs(r - 1.0) <= 1e-3


def _gram_norm_estimate(a_rows: torch.Tensor, b_rows: torch.Tensor) -> float:
    """‖A Bᵀ‖_F from p×p products: ⟨AᵀA, BᵀB⟩^{1/2} (O(C·p²), no C×C matrix)."""
    value = float(((a_rows.T @ a_rows) * (b_rows.T @ b_rows)).sum())
    return math.sqrt(value) if value > 0 and math.isfinite(value) else 1.0


@dataclass(frozen=True)
class MeansPairStats:
    """Pair statistics of the centred class means (one symmetric pass)."""

    equiangular: float
    maxangle: float
    cdnv: float
    etf_error: float
    refined_pairs: int


def _cdnv_tile(
    d2: torch.Tensor,
    gram: torch.Tensor,
    mi: torch.Tensor,
    mj: torch.Tensor,
    sq: tuple[torch.Tensor, torch.Tensor],
    var: tuple[torch.Tensor, torch.Tensor],
    diagonal: bool,
    may_refine: bool,
) -> tuple[torch.Tensor, int]:
    """Σ over the tile's pairs of (σ_i² + σ_j²)/(2 d²_ij) and the number of refined pairs.

    ``d2`` is scratch of the tile's shape.
    """
    torch.add(sq[0][:, None], sq[1][None, :], out=d2)
    refined = 0
    if may_refine:
        close = (d2 - 2.0 * gram) < REFINE_RATIO * d2
        if diagonal:
            close.fill_diagonal_(False)
        idx = close.nonzero()
        del close
        refined = int(idx.shape[0])
    d2.sub_(gram, alpha=2.0).clamp_min_(0)
    if refined:
        step = max(1, (1 << 22) // max(1, mi.shape[1]))
        for chunk in idx.split(step):
            diff = mi[chunk[:, 0]] - mj[chunk[:, 1]]
            d2[chunk[:, 0], chunk[:, 1]] = (diff * diff).sum(dim=1)
    if diagonal:
        d2.fill_diagonal_(math.inf)  # (v_i + v_i)/∞ = 0: the diagonal drops out
    if float(d2.min()) == 0.0:  # coinciding means: +inf, or NaN (0/0) pair by pair
        total = ((var[0][:, None] + var[1][None, :]) / (2.0 * d2)).sum()
    else:
        inv = d2.reciprocal_()  # Σ_ij (v_i + v_j) R_ij = v_iᵀ R 1 + 1ᵀ R v_j
        ones = torch.ones_like(var[1])
        total = 0.5 * (var[0] @ torch.mv(inv, ones) + torch.mv(inv, var[1]).sum())
    return (0.5 * total if diagonal else total), refined


def means_pair_stats(
    mbar_rows: torch.Tensor, class_var: torch.Tensor, *, tile: int | None = None
) -> MeansPairStats:
    """cdnv, equiangular/maxangle of the means and the ETF error of G = M̄ᵀM̄, in one pass.

    Parameters
    ----------
    mbar_rows : Tensor [C, p]
        Centred class means ``μ_c − μ_G`` as rows.
    class_var : Tensor [C]
        σ_c² = (1/n_c) Σ_{i in c} ‖h_i − μ_c‖².
    tile : int, optional
        Classes per tile (default from :data:`DEFAULT_TILE_BUDGET`).

    Notes
    -----
    ``cdnv = Avg_{c<c'} (σ_c² + σ_c'²) / (2‖μ_c − μ_c'‖²)`` with the distance from the Gram tile and
    an exact recomputation of close pairs (module doc); ``etf_error = ‖G/‖G‖_F − Ê‖_F``.
    """
    C = mbar_rows.shape[0]
    t = tile_size(C) if tile is None else max(1, int(tile))
    sq = (mbar_rows * mbar_rows).sum(dim=1)
    inv = _inv_norms(mbar_rows)
    angles = _PairAccumulator(C, mbar_rows)
    blocks = _blocks(C, t)
    g0 = _gram_norm_estimate(mbar_rows, mbar_rows) if len(blocks) > 1 else None
    etf = _EtfAccumulator(g0, C, mbar_rows)
    ratio_sum = torch.zeros((), dtype=mbar_rows.dtype, device=mbar_rows.device)
    refined = 0
    ws = _Workspace(t, mbar_rows)
    for bi, (i0, i1) in enumerate(blocks):
        mi = mbar_rows[i0:i1]
        for j0, j1 in blocks[bi:]:
            mj = mbar_rows[j0:j1]
            gram, work = ws.views(i1 - i0, j1 - j0)
            torch.mm(mi, mj.T, out=gram)
            diagonal = j0 == i0
            etf.add(gram, work, i0, j0, 1.0 if diagonal else 2.0)  # G is symmetric
            cos = _cosines_into(work, gram, inv[i0:i1], inv[j0:j1])
            if diagonal:
                cos.fill_diagonal_(-1.0)
            # d² < ρ(‖m_i‖² + ‖m_j‖²) needs cos > 1 − ρ: look for such pairs only if one exists
            may_refine = float(cos.max()) > 1.0 - REFINE_RATIO
            angles.add(cos, diagonal)
            part, n_ref = _cdnv_tile(
                work, gram, mi, mj, (sq[i0:i1], sq[j0:j1]),
                (class_var[i0:i1], class_var[j0:j1]), diagonal, may_refine,
            )  # fmt: skip
            ratio_sum += part
            refined += n_ref
    etf_error, reliable = etf.result()
    if not reliable:  # the p×p estimate of ‖G‖_F cancelled badly: redo with the exact norm
        etf = _EtfAccumulator(math.sqrt(float(etf.gram_sq)), C, mbar_rows)
        for bi, (i0, i1) in enumerate(blocks):
            for j0, j1 in blocks[bi:]:
                gram, work = ws.views(i1 - i0, j1 - j0)
                torch.mm(mbar_rows[i0:i1], mbar_rows[j0:j1].T, out=gram)
                etf.add(gram, work, i0, j0, 1.0 if j0 == i0 else 2.0)
        etf_error, _ = etf.result()
    result = angles.result()
    return MeansPairStats(
        equiangular=result.equiangular,
        maxangle=result.maxangle,
        cdnv=float(ratio_sum) / (C * (C - 1) // 2),
        etf_error=etf_error,
        refined_pairs=refined,
    )


def cross_pass(
    left: torch.Tensor,
    right: torch.Tensor,
    offset: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    etf: bool = False,
    tile: int | None = None,
) -> tuple[float | None, float | None]:
    """One tiled pass over ``P = left · rightᵀ`` [C, C]: the weighted residual and/or the ETF error.

    Parameters
    ----------
    left : Tensor [C, p]
        A classifier (W or W_LS), rows = outputs.
    right : Tensor [C, p]
        Class means as rows, centred by any fixed vector m₀ (μ_c − m₀).
    offset : Tensor [C], optional
        ``left · m₀ + b``, so that ``P[:, c'] + offset = left μ_c' + b``.
    weights : Tensor [C], optional
        π_c' of the residual sum (requires ``offset``).
    etf : bool
        Also return ``‖P/‖P‖_F − Ê‖_F`` (SPEC §2's ETF error of ``W M̄`` when right = M̄ᵀ rows).

    Returns
    -------
    residual : ``Σ_c' π_c' ‖left μ_c' + b − e_c'‖²`` or None (no ``offset``/``weights``)
    etf_error : float or None
    """
    C = left.shape[0]
    t = tile_size(C) if tile is None else max(1, int(tile))
    blocks = _blocks(C, t)
    want_resid = offset is not None and weights is not None
    resid = torch.zeros((), dtype=left.dtype, device=left.device)
    g0 = _gram_norm_estimate(left, right) if len(blocks) > 1 else None
    acc = _EtfAccumulator(g0, C, left) if etf else None
    ws = _Workspace(t, left)

    def run(acc_: _EtfAccumulator | None, with_resid: bool) -> None:
        nonlocal resid
        for i0, i1 in blocks:
            li = left[i0:i1]
            for j0, j1 in blocks:
                prod, work = ws.views(i1 - i0, j1 - j0)
                torch.mm(li, right[j0:j1].T, out=prod)  # rows = outputs c, cols = classes c'
                if acc_ is not None:
                    acc_.add(prod, work, i0, j0, 1.0)
                if with_resid:
                    prod += offset[i0:i1, None]
                    if max(i0, j0) < min(i1, j1):
                        prod.diagonal(offset=j0 - i0).sub_(1.0)
                    resid = resid + torch.mv(prod.square_(), weights[j0:j1]).sum()

    run(acc, want_resid)
    etf_error = None
    if acc is not None:
        etf_error, reliable = acc.result()
        if not reliable:
            acc = _EtfAccumulator(math.sqrt(float(acc.gram_sq)), C, left)
            run(acc, False)
            etf_error, _ = acc.result()
    return (float(resid) if want_resid else None), etf_error


def residual_sq_sum(
    left: torch.Tensor,
    right: torch.Tensor,
    offset: torch.Tensor,
    weights: torch.Tensor,
    *,
    tile: int | None = None,
) -> float:
    """``Σ_c π_c ‖left μ_c + b − e_c‖²`` in tiles (see :func:`cross_pass`)."""
    value, _ = cross_pass(left, right, offset, weights, tile=tile)
    assert value is not None
    return value
