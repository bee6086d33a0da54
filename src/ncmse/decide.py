"""Classifier and nearest-class-mean decisions over many classes, tiled, exact to float64.

For each sample h the two SPEC §2 decisions are ``argmax_c (W h + b)_c`` (accuracy, nc4) and
``argmin_c ‖h − μ_c‖`` (nc4). Both are computed from centred features ``x = h − m₀`` (m₀ = μ_G):

    W h + b          = W x + (W m₀ + b)
    −½‖h − μ_c‖² + ½‖x‖² = x·(μ_c − m₀) − ½‖μ_c − m₀‖²

so a common offset of the features cancels before any product (SPEC §2, numerical requirements),
and both are "score = x·v_c + β_c, take the first argmax". The classes are processed in tiles of
``t`` rows of V = [W; M̄] with a running (best score, best index) per sample, so memory is
``O(B·t)`` for a block of B samples, whatever C.

float32 scores, float64 decisions
---------------------------------
In ``precision="float32"`` the tile GEMMs run in float32 and keep the two best scores per sample.
With unit roundoff u of the float32 GEMM (2⁻²⁴ in IEEE mode; 2⁻¹¹ with TF32, 2⁻⁸ with bf16
reduced-precision matmuls) and every input rounded once to float32, each computed score obeys

    |ŝ_c − s_c| ≤ E(x) = 1.01 · (p + 6) · u · (‖x‖ · max_c ‖v_c‖ + max_c |β_c|)

(standard dot-product bound γ_{p+1} ≤ (p+1)u/(1 − (p+1)u) on |x|·|v| ≤ ‖x‖‖v‖, plus the input and
bias roundings; features and V are scaled by powers of two first, which is exact, so that neither
overflows nor underflows). A sample whose float32 top-two gap exceeds ``2·E(x)`` has the same
winner in exact arithmetic; every other sample (ties included) is re-decided from float64 scores of
all classes, with the first maximum winning as in ``torch.argmax``. The decisions therefore equal
the float64 decisions (tested against them, adversarial near-ties included). For random features
at C = 50k, p = 768 about 1 % of the samples are re-decided.
"""

from __future__ import annotations

import math

import torch

__all__ = ["TiledDecisions", "float32_unit_roundoff", "DEFAULT_CLASS_TILE"]

#: classes per tile of the decision GEMMs
DEFAULT_CLASS_TILE = 4096

#: bytes of the score buffers of one block of samples on an accelerator (CPU: 1024-row blocks)
_BLOCK_BYTES = 64 * 1024**2


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
        mbar = means.to(dtype) - self.centre
        V = torch.cat([W64, mbar])  # [2C, p]; rows < C: classifier, ≥ C: means
        beta = torch.cat([W64 @ self.centre + b.to(W64), -0.5 * (mbar * mbar).sum(dim=1)])
        # rows reordered tile by tile ([W_J; M̄_J] contiguous), so that a tile is a view
        order = torch.cat([self._rows(j0, j1) for j0, j1 in self._tiles()])
        self.V, self.beta = V[order].contiguous(), beta[order].contiguous()
        self.redecided = 0
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._V32 = None
        if precision == "float32":
            vnorm = V.norm(dim=1)
            self.vmax = torch.stack([vnorm[:C].max(), vnorm[C:].max()])  # [2]
            self.bmax = torch.stack([beta[:C].abs().max(), beta[C:].abs().max()])
            self.v_scale = _pow2_scale(self.vmax)  # per family (classifier, means)
            fam = torch.cat([self.v_scale[0].expand(C), self.v_scale[1].expand(C)])[order]
            self._V32 = (self.V * fam.unsqueeze(1)).to(torch.float32)
            self._beta_scaled = self.beta * fam  # float64; scaled per block by the x scale
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

    def _centred(self, features: torch.Tensor) -> torch.Tensor:
        """x = h − m₀ in ``dtype``, into a reused buffer (the cast is a copy, no temporary)."""
        if torch.promote_types(features.dtype, self.dtype) != self.dtype:
            features = features.to(self.dtype)
        x = self._buffer(features.numel(), self.dtype, "features").view(features.shape)
        return x.copy_(features).sub_(self.centre)

    def _tiles(self) -> list[tuple[int, int]]:
        C, t = self.num_classes, self.tile
        return [(s, min(s + t, C)) for s in range(0, C, t)]

    def _rows(self, j0: int, j1: int) -> torch.Tensor:
        """Row indices of V for the classes [j0, j1): classifier rows then mean rows."""
        idx = torch.arange(j0, j1, device=self.device)
        return torch.cat([idx, idx + self.num_classes])

    def _exact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 decisions of centred features x [B, p]: running first-argmax over tiles."""
        B = x.shape[0]
        best = torch.full((2, B), -math.inf, dtype=self.dtype, device=self.device)
        arg = torch.zeros(2, B, dtype=torch.long, device=self.device)
        for j0, j1 in self._tiles():
            w = j1 - j0
            V, beta = self.V[2 * j0 : 2 * j1], self.beta[2 * j0 : 2 * j1]
            scores = torch.addmm(beta, x, V.T, out=self._buffer(B * 2 * w, x.dtype).view(B, 2 * w))
            scores = scores.view(B, 2, w)
            val, idx = scores.max(dim=2)  # first maximum within the tile
            better = val.T > best  # strict: an earlier tile wins ties
            best = torch.where(better, val.T, best)
            arg = torch.where(better, idx.T + j0, arg)
        return arg[0], arg[1]

    @property
    def block_rows(self) -> int:
        """Samples decided at a time: 1024 on a CPU (cache-sized), else as many as keep the
        ``[rows, 2·tile]`` float64 scores within 64 MB (≥ 1024)."""
        if self.device.type == "cpu":
            return 1024
        return max(1024, _BLOCK_BYTES // (16 * min(self.num_classes, self.tile)))

    def __call__(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classifier [B], ncc [B])`` int64 decisions for features [B, p], in blocks of
        :attr:`block_rows` samples (memory independent of B)."""
        features = features.to(self.device)
        rows = self.block_rows
        if features.shape[0] <= rows:
            return self._decide(features)
        parts = [self._decide(features[i : i + rows]) for i in range(0, features.shape[0], rows)]
        return torch.cat([c for c, _ in parts]), torch.cat([n for _, n in parts])

    def _decide(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._centred(features)
        if self.precision == "float64" or x.shape[0] == 0:
            return self._exact(x)
        return self._float32(x)

    def _float32(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
            v1, i1 = scores.max(dim=2)  # [B, 2]
            if w > 1:
                scores.scatter_(2, i1.unsqueeze(2), -math.inf)
                v2 = scores.amax(dim=2)
            else:
                v2 = neg.expand(B, 2)
            v1, v2, i1 = v1.T, v2.T, i1.T + j0
            better = v1 > best1
            best2 = torch.maximum(torch.minimum(v1, best1), torch.maximum(v2, best2))
            best1 = torch.where(better, v1, best1)
            arg = torch.where(better, i1, arg)
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
        gap = best1.double() - best2.double()
        unsure = ~(gap > 2.0 * bound)  # NaN-safe: a NaN gap is unsure
        rows = unsure.any(dim=0).nonzero().flatten()
        if rows.numel():
            self.redecided += int(rows.numel())
            cls, ncc = self._exact(x[rows])
            exact = torch.stack([cls, ncc])
            arg[:, rows] = torch.where(unsure[:, rows], exact, arg[:, rows])
        return arg[0], arg[1]
