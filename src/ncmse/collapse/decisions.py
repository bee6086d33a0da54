"""Classifier and nearest-class-mean decisions over many classes, tiled, with ties as sets.

For each sample h the two SPEC §2 decisions are ``argmax_c (W h + b)_c`` (accuracy, nc4) and
``argmin_c ‖h − μ_c‖`` (nc4). The nearest mean is computed from centred features ``x = h − m₀``
(m₀ = μ_G), so that a common offset of the features cancels before any product (SPEC §2):

    −½‖h − μ_c‖² + ½‖x‖² = x·m̄_c − ½‖m̄_c‖²,   m̄_c = μ_c − m₀

and the classifier's scores are ``W h + b`` as the network computes them. The classes are processed
in tiles of ``t`` classes with a running top two per sample, so memory is ``O(B·t)`` for a block of
B samples, whatever C.

Ties (SPEC §2)
--------------
A class whose float64 score is within the tie tolerance τ of the best is a maximiser too:

    A(h) = {c : (W h + b)_c ≥ max − τ_cls(h)},   τ_cls(h) = k·(max_c ‖w_c‖·‖h‖ + max_c |b_c|)
    B(h) = {c : x·m̄_c − ½‖m̄_c‖² ≥ max − τ_ncc(h)},   τ_ncc(h) = k·(‖x‖ + r)·(r + ‖m₀‖)

with ``r = max_c ‖m̄_c‖`` and ``k = 4·(p + 6)·u`` (u = 2⁻⁵³): twice the worst-case rounding of a
length-p float64 dot product with its inputs, so any summation order, BLAS kernel or processor finds
the same sets for exactly tied classes. NC4 counts a sample when A ∩ B = ∅; the accuracy credits
a sample ``[y ∈ A] / |A|`` — the expected accuracy of a uniformly random tie-break (1/C for a
classifier that outputs a constant, never 1). Samples whose top-two gap exceeds τ (almost all) have
singleton sets and need no second look; the others get their sets from a second pass over the
classes, on those samples only.

float32 screening
-----------------
In ``precision="float32"`` the tile GEMMs run in float32 on centred scores and keep the two best
scores per sample. With unit roundoff u of the float32 GEMM (2⁻²⁴ in IEEE mode; 2⁻¹¹ with TF32,
2⁻⁸ with bf16 reduced-precision matmuls) and every input rounded once to float32, each computed
score obeys

    |ŝ_c − s_c| ≤ E(x) = 1.01 · (p + 6) · u · (‖x‖ · max_c ‖v_c‖ + max_c |β_c|)

(standard dot-product bound γ_{p+1} ≤ (p+1)u/(1 − (p+1)u) on |x|·|v| ≤ ‖x‖‖v‖, plus the input and
bias roundings; features and V are scaled by powers of two first, which is exact, so that neither
overflows nor underflows). A sample whose float32 top-two gap exceeds ``2·E(x) + 2·τ`` has a
float64 gap above τ — a singleton tie set with the same winner; every other sample is decided in
float64 as above. The decisions therefore equal the float64 ones (tested against an independent
reference, exact and near ties included). For random features at C = 50k, p = 768 about 1 % of
the samples are re-decided.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "Decisions",
    "TiledDecisions",
    "classifier_credit",
    "tie_coefficient",
    "float32_unit_roundoff",
    "DEFAULT_CLASS_TILE",
]

#: classes per tile of the decision GEMMs
DEFAULT_CLASS_TILE = 4096

#: bytes of the score buffers of one block of samples on an accelerator (CPU: 1024-row blocks)
_BLOCK_BYTES = 64 * 1024**2


class Decisions(NamedTuple):
    """The two SPEC §2 decisions of B samples, ties taken as sets.

    credit : Tensor [B] float64 or None
        ``[y ∈ A] / |A|`` (A: the classifier's maximisers); None when no labels were given.
    mismatch : Tensor [B] bool
        True when A and the set of nearest means share no class (NC4).
    """

    credit: torch.Tensor | None
    mismatch: torch.Tensor


def float32_unit_roundoff(device: torch.device | None = None) -> float:
    """Unit roundoff of float32 matmuls under the current precision settings (conservative)."""
    modes = {torch.get_float32_matmul_precision()}
    for obj, attr in (
        (getattr(torch.backends, "cuda", None), "matmul"),
        (getattr(torch.backends, "mkldnn", None), "matmul"),
    ):
        mm = getattr(obj, attr, None) if obj is not None else None
        value = getattr(mm, "fp32_precision", None)
        if isinstance(value, str):
            modes.add(value)
    if getattr(getattr(torch.backends.cuda, "matmul", None), "allow_tf32", False):
        modes.add("tf32")
    if "bf16" in modes or "medium" in modes:
        return 2.0**-8
    if "tf32" in modes or "high" in modes:
        return 2.0**-11
    return 2.0**-24


def _pow2_scale(value: torch.Tensor) -> torch.Tensor:
    """2^-k with 2^k ≈ value (1 where value is 0 or not finite), as a tensor (no host sync)."""
    ok = torch.isfinite(value) & (value > 0)
    k = torch.where(ok, torch.floor(torch.log2(torch.where(ok, value, 1.0))), 0.0)
    return torch.exp2(-k)


class TiledDecisions:
    """``(argmax(W h + b), argmin_c ‖h − μ_c‖)`` for blocks of samples, tiled over classes.

    Parameters
    ----------
    W : Tensor [C, p], b : Tensor [C]
        The classifier (restricted to the measured classes, if any were excluded).
    means : Tensor [C, p]
        Class means μ_c.
    centre : Tensor [p]
        m₀ (μ_G); the result does not depend on it mathematically, only numerically.
    precision : {"auto", "float32", "float64"}
        Score precision; "auto" picks float32 (with the exact re-decision) when the decisions
        dominate the cost on a CPU (2C > p and C ≥ 64) and float64 otherwise (float64 GEMMs are as
        fast as float32 on data-centre GPUs).
    tile : int
        Classes per tile.
    dtype : torch.dtype
        Precision of the exact decisions (float64).
    """

    def __init__(
        self,
        W: torch.Tensor,
        b: torch.Tensor,
        means: torch.Tensor,
        centre: torch.Tensor,
        *,
        precision: str = "auto",
        tile: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if precision not in ("auto", "float32", "float64"):
            raise ValueError(f"precision must be 'auto', 'float32' or 'float64', got {precision!r}")
        self.device = means.device
        self.dtype = dtype
        C, p = W.shape
        self.num_classes, self.dim = C, p
        if precision == "auto":
            precision = (
                "float32" if (self.device.type == "cpu" and 2 * C > p and C >= 64) else ("float64")
            )
        self.precision = precision
        self.tile = max(1, int(tile or DEFAULT_CLASS_TILE))
        self.centre = centre.to(device=self.device, dtype=dtype)
        W64 = W.to(device=self.device, dtype=dtype)
        b64 = b.to(W64)
        mbar = means.to(dtype) - self.centre
        V = torch.cat([W64, mbar])  # [2C, p]; rows < C: classifier, ≥ C: means
        half_sq = -0.5 * (mbar * mbar).sum(dim=1)
        centred_beta = torch.cat([W64 @ self.centre + b64, half_sq])  # scores of x = h − m₀
        # rows reordered tile by tile ([W_J; M̄_J] contiguous), so that a tile is a view
        order = torch.cat([self._rows(j0, j1) for j0, j1 in self._tiles()])
        self.V = V[order].contiguous()
        self.beta = torch.cat([b64, half_sq])[order].contiguous()  # float64: W h + b uncentred
        # tie tolerances τ_f = a_f·‖·‖ + c_f (module docstring), per family
        coef = tie_coefficient(p, dtype)
        wmax, r = W64.norm(dim=1).max(), mbar.norm(dim=1).max()
        spread = r + self.centre.norm()
        self._tau_a = coef * torch.stack([wmax, spread])
        self._tau_c = torch.stack([coef * b64.abs().max(), (coef * r) * spread])  # no overflow
        self.redecided = 0
        self.tied = 0
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._V32 = None
        if precision == "float32":
            vnorm = V.norm(dim=1)
            self.vmax = torch.stack([vnorm[:C].max(), vnorm[C:].max()])  # [2]
            self.bmax = torch.stack([centred_beta[:C].abs().max(), centred_beta[C:].abs().max()])
            self.v_scale = _pow2_scale(self.vmax)  # per family (classifier, means)
            fam = torch.cat([self.v_scale[0].expand(C), self.v_scale[1].expand(C)])[order]
            self._V32 = (self.V * fam.unsqueeze(1)).to(torch.float32)
            self._beta_scaled = centred_beta[order] * fam  # float64; scaled per block by x's
            self.unit_roundoff = float32_unit_roundoff(self.device)

    # -------------------------------------------------------------- helpers
    def _buffer(self, numel: int, dtype: torch.dtype, use: str = "scores") -> torch.Tensor:
        """A reused flat buffer per (use, dtype): a fresh multi-MB tensor per tile or block costs
        page faults that rival the GEMM itself on a CPU."""
        buf = self._buffers.get((use, dtype))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._buffers[(use, dtype)] = buf
        return buf[:numel]

    def _inputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, x = h − m₀) in ``dtype``, in reused buffers (the cast is a copy, no temporary)."""
        if torch.promote_types(features.dtype, self.dtype) != self.dtype:
            features = features.to(self.dtype)
        h = self._buffer(features.numel(), self.dtype, "features").view(features.shape)
        x = self._buffer(features.numel(), self.dtype, "centred").view(features.shape)
        h.copy_(features)
        return h, torch.sub(h, self.centre, out=x)

    def _tiles(self) -> list[tuple[int, int]]:
        C, t = self.num_classes, self.tile
        return [(s, min(s + t, C)) for s in range(0, C, t)]

    def _rows(self, j0: int, j1: int) -> torch.Tensor:
        """Row indices of V for the classes [j0, j1): classifier rows then mean rows."""
        idx = torch.arange(j0, j1, device=self.device)
        return torch.cat([idx, idx + self.num_classes])

    def _tau(self, hnorm: torch.Tensor, xnorm: torch.Tensor) -> torch.Tensor:
        """Tie tolerances [2, B] (classifier, nearest mean) of samples with norms ‖h‖, ‖h − m₀‖."""
        return self._tau_a.unsqueeze(1) * torch.stack([hnorm, xnorm]) + self._tau_c.unsqueeze(1)

    def _tile_scores(
        self, h: torch.Tensor, x: torch.Tensor, j0: int, j1: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 scores [B, w] of classes [j0, j1): ``W h + b`` and ``x·m̄_c − ½‖m̄_c‖²``."""
        w = j1 - j0
        V, beta = self.V[2 * j0 : 2 * j1], self.beta[2 * j0 : 2 * j1]
        out = self._buffer(h.shape[0] * 2 * w, x.dtype).view(2, h.shape[0], w)
        torch.addmm(beta[:w], h, V[:w].T, out=out[0])
        torch.addmm(beta[w:], x, V[w:].T, out=out[1])
        return out[0], out[1]

    def _exact(self, h: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None) -> Decisions:
        """float64 decisions of features h [B, p] (x = h − m₀): a running top-two over tiles;
        samples whose top-two gap is within the tie tolerance get their tie sets."""
        B = x.shape[0]
        best1 = torch.full((2, B), -math.inf, dtype=self.dtype, device=self.device)
        best2 = best1.clone()
        arg = torch.zeros(2, B, dtype=torch.long, device=self.device)
        for j0, j1 in self._tiles():
            for f, scores in enumerate(self._tile_scores(h, x, j0, j1)):
                best1[f], best2[f], arg[f] = _merge_top2(scores, j0, best1[f], best2[f], arg[f])
        tau = self._tau(h.norm(dim=1), x.norm(dim=1))
        credit = None if labels is None else (arg[0] == labels).to(self.dtype)
        mismatch = arg[0] != arg[1]
        tied = (~(best1 - best2 > tau)).any(dim=0).nonzero().flatten()  # NaN-safe
        if tied.numel():
            self.tied += int(tied.numel())
            sub = None if labels is None else labels[tied]
            c, m = self._tie_sets(h[tied], x[tied], sub, best1[:, tied] - tau[:, tied])
            mismatch[tied] = m
            if credit is not None:
                credit[tied] = c
        return Decisions(credit, mismatch)

    def _tie_sets(
        self, h: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Credit and mismatch of samples from their tie sets {c : s_c ≥ low_f} (low [2, R])."""
        R = x.shape[0]
        size = torch.zeros(R, dtype=self.dtype, device=self.device)
        hit = torch.zeros(R, dtype=torch.bool, device=self.device)
        share = torch.zeros(R, dtype=torch.bool, device=self.device)
        for j0, j1 in self._tiles():
            cls, ncc = self._tile_scores(h, x, j0, j1)
            in_a = cls >= low[0].unsqueeze(1)
            share |= (in_a & (ncc >= low[1].unsqueeze(1))).any(dim=1)
            size += in_a.sum(dim=1)
            if labels is not None:
                local = labels - j0
                inside = (local >= 0) & (local < j1 - j0)
                pick = in_a.gather(1, local.clamp(0, j1 - j0 - 1).unsqueeze(1)).squeeze(1)
                hit |= inside & pick
        return hit.to(self.dtype) / size, ~share

    @property
    def block_rows(self) -> int:
        """Samples decided at a time: 1024 on a CPU (cache-sized), else as many as keep the
        ``[rows, 2·tile]`` float64 scores within 64 MB (≥ 1024)."""
        if self.device.type == "cpu":
            return 1024
        return max(1024, _BLOCK_BYTES // (16 * min(self.num_classes, self.tile)))

    def __call__(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> Decisions:
        """:class:`Decisions` of features [B, p] (and their labels [B], for the accuracy credit),
        in blocks of :attr:`block_rows` samples (memory independent of B)."""
        features = features.to(self.device)
        if labels is not None:
            labels = labels.to(self.device)
        rows = self.block_rows
        if features.shape[0] <= rows:
            return self._decide(features, labels)
        parts = [
            self._decide(features[i : i + rows], None if labels is None else labels[i : i + rows])
            for i in range(0, features.shape[0], rows)
        ]
        credit = None if labels is None else torch.cat([d.credit for d in parts])
        return Decisions(credit, torch.cat([d.mismatch for d in parts]))

    def _decide(self, features: torch.Tensor, labels: torch.Tensor | None) -> Decisions:
        h, x = self._inputs(features)
        if self.precision == "float64" or x.shape[0] == 0:
            return self._exact(h, x, labels)
        return self._float32(h, x, labels)

    def _float32(self, h: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None) -> Decisions:
        """Screen in float32 (centred scores); samples not certainly decided go to float64."""
        B = x.shape[0]
        xnorm = x.norm(dim=1)  # [B]
        xs = _pow2_scale(xnorm.max())
        x32 = (x * xs).to(torch.float32)
        beta32 = (self._beta_scaled * xs).to(torch.float32)
        neg = torch.tensor(-math.inf, dtype=torch.float32, device=self.device)
        best1 = neg.expand(2, B).clone()
        best2 = neg.expand(2, B).clone()
        arg = torch.zeros(2, B, dtype=torch.long, device=self.device)
        for j0, j1 in self._tiles():
            w = j1 - j0
            V, beta = self._V32[2 * j0 : 2 * j1], beta32[2 * j0 : 2 * j1]
            out = self._buffer(B * 2 * w, torch.float32).view(B, 2 * w)
            scores = torch.addmm(beta, x32, V.T, out=out).view(B, 2, w)
            for f in range(2):
                best1[f], best2[f], arg[f] = _merge_top2(
                    scores[:, f], j0, best1[f], best2[f], arg[f]
                )
        # error bound per sample and family, in the scaled units of the float32 scores
        u = self.unit_roundoff
        vmax_s = self.vmax * self.v_scale  # [2]
        bmax_s = self.bmax * self.v_scale * xs
        bound = (
            1.01
            * (self.dim + 6)
            * u
            * ((xnorm * xs).unsqueeze(0) * vmax_s.unsqueeze(1) + bmax_s.unsqueeze(1))
        )
        tau = self._tau(h.norm(dim=1), xnorm) * (self.v_scale * xs).unsqueeze(1)
        gap = best1.double() - best2.double()
        # a gap above 2·bound + 2·τ leaves a float64 gap above τ: a singleton tie set, the same
        # winner; every other sample (NaN gaps included) is decided in float64
        unsure = ~(gap > 2.0 * bound + 2.0 * tau)
        credit = None if labels is None else (arg[0] == labels).to(self.dtype)
        mismatch = arg[0] != arg[1]
        rows = unsure.any(dim=0).nonzero().flatten()
        if rows.numel():
            self.redecided += int(rows.numel())
            sub = None if labels is None else labels[rows]
            exact = self._exact(h[rows], x[rows], sub)
            mismatch[rows] = exact.mismatch
            if credit is not None:
                credit[rows] = exact.credit
        return Decisions(credit, mismatch)


def _merge_top2(
    scores: torch.Tensor,
    j0: int,
    best1: torch.Tensor,
    best2: torch.Tensor,
    arg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold a tile's scores [B, w] (classes j0…) into a running (best, second best, argbest).
    The scores are spent: the best of each row is overwritten in place (no B×w temporary)."""
    v1, i1 = scores.max(dim=1)
    if scores.shape[1] > 1:
        v2 = scores.scatter_(1, i1.unsqueeze(1), -math.inf).amax(dim=1)
    else:
        v2 = torch.full_like(v1, -math.inf)
    better = v1 > best1
    new2 = torch.maximum(torch.minimum(v1, best1), torch.maximum(v2, best2))
    return torch.where(better, v1, best1), new2, torch.where(better, i1 + j0, arg)


def classifier_credit(
    features: torch.Tensor, W: torch.Tensor, b: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Accuracy credit [B] of ``argmax(W h + b)`` with ties as sets (no class means needed).

    ``credit = [y ∈ A] / |A|`` with ``A = {c : s_c ≥ max s − τ_cls(h)}``, ``s = W h + b`` in
    float64 and ``τ_cls`` the tolerance of :class:`TiledDecisions` — the same value as the
    decisions pass gives, for callers that see the samples before the class means are known.
    """
    W = W.to(torch.float64)
    h = features.to(W)
    scores = torch.addmm(b.to(W), h, W.T)
    tau = tie_coefficient(W.shape[1]) * (W.norm(dim=1).max() * h.norm(dim=1) + b.to(W).abs().max())
    in_a = scores >= (scores.amax(dim=1) - tau).unsqueeze(1)
    hit = in_a.gather(1, labels.to(h.device).long().unsqueeze(1)).squeeze(1)
    return hit.to(W.dtype) / in_a.sum(dim=1)


def tie_coefficient(dim: int, dtype: torch.dtype = torch.float64) -> float:
    """``4·(p + 6)·u``: twice the worst-case rounding bound of a length-p float64 dot product
    (u = eps/2), the factor of both tie tolerances."""
    return 4.0 * (int(dim) + 6) * torch.finfo(dtype).eps / 2
