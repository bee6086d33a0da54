"""The typed result of one measurement (SPEC §2–§3 names)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NCResult", "METRIC_NAMES", "FLAGS", "flatten_row"]


@dataclass
class NCResult:
    """Every SPEC §2 and §3 quantity of one split, plus provenance.

    ``snr`` holds the singular values ω_1 ≥ … ≥ ω_{min(p, C−1)} of Σ_W^{-1/2} M̄.
    ``nc4_method`` is ``"direct"`` (features in memory), ``"cache"`` (streamed, cached under the
    memory budget), ``"second_pass"`` (streamed twice) or ``"unavailable"``.
    ``flags`` names the degenerate-feature conditions of SPEC §2 that hold (:data:`FLAGS`); in
    :meth:`to_dict` and files they are one ``;``-joined string (empty when none).
    ``num_classes`` and ``num_samples`` describe the measured set; with ``min_samples`` the classes
    with fewer samples (and those samples) are left out and counted in ``num_classes_excluded``
    and ``num_samples_excluded`` (both 0 when every class was measured).
    """

    accuracy: float
    loss: float
    nc1: float
    nc1_unnormalized: float
    nc1_trace_ratio: float
    cdnv: float
    equinorm_means: float
    equinorm_classifier: float
    equiangular_means: float
    equiangular_classifier: float
    maxangle_means: float
    maxangle_classifier: float
    nc3: float
    nc4: float
    snr: tuple[float, ...]
    etf_error_means: float
    etf_error_wm: float
    loss_nc1: float
    loss_nc23: float
    loss_perp: float
    loss_ls: float
    lam: float
    num_samples: int
    num_classes: int
    balanced: bool
    nc4_method: str
    flags: tuple[str, ...] = ()
    num_classes_excluded: int = 0
    num_samples_excluded: int = 0
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def loss_perp_ratio(self) -> float:
        """L_⊥ / L."""
        return self.loss_perp / self.loss if self.loss > 0 else math.nan

    def to_dict(self) -> dict:
        """Flat dict keyed by SPEC names (``snr`` as a list); ``extras`` merged in."""
        out = asdict(self)
        extras = out.pop("extras")
        out["snr"] = list(self.snr)
        out["flags"] = ";".join(self.flags)
        out["loss_perp_ratio"] = self.loss_perp_ratio
        out.update(extras)
        return out


#: the scalar metric names, in a stable order (for CSV columns)
METRIC_NAMES: tuple[str, ...] = (
    "accuracy", "loss", "nc1", "nc1_unnormalized", "nc1_trace_ratio", "cdnv",
    "equinorm_means", "equinorm_classifier", "equiangular_means", "equiangular_classifier",
    "maxangle_means", "maxangle_classifier", "nc3", "nc4", "etf_error_means", "etf_error_wm",
    "loss_nc1", "loss_nc23", "loss_perp", "loss_ls", "loss_perp_ratio", "lam",
    "num_samples", "num_classes", "balanced", "nc4_method", "flags", "num_classes_excluded",
    "num_samples_excluded",
)  # fmt: skip

#: the degenerate-feature flags of SPEC §2, with what each means for the numbers
FLAGS: dict[str, str] = {
    "no_between_class_spread": (
        "all class means coincide (dead or constant features?); nc1, nc3, cdnv, nc4, the "
        "equinorm/angle/ETF metrics of the means and snr are NaN"
    ),
    "within_class_singular": (
        "Σ_W is singular; snr holds generalised singular values (+inf along class-mean "
        "directions without within-class spread)"
    ),
    "between_class_rank_deficient": (
        "rank of the centred class means M̄ is below min(p, C − 1) (coinciding or collinear "
        "class means); nc1 uses the pseudo-inverse on the spanned subspace"
    ),
    "fewer_samples_than_dimensions": (
        "N − C < p: Σ_W is singular whatever the network does (a small split or a wide layer); "
        "an ω that would be +inf is NaN, it says nothing about collapse"
    ),
    "zero_classifier_rows": (
        "a row of W is zero, so its angles are undefined: equiangular_classifier and "
        "maxangle_classifier are NaN (with W = 0 also equinorm_classifier, nc3 and etf_error_wm)"
    ),
    "total_covariance_singular": (
        "Σ_T + λI is singular within the rank tolerance; the LS classifier is the minimum-norm "
        "one: exact when Σ_T is truly singular at λ = 0 (dead or duplicated features), otherwise "
        "loss_nc1, loss_nc23 and loss_perp are approximate"
    ),
}


def flatten_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """CSV form of a metrics row: list values (``snr``, ``test_snr``) expanded to
    ``snr_1 … snr_{C−1}``, as in metrics.csv."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, (list, tuple)):
            for j, item in enumerate(value, start=1):
                flat[f"{key}_{j}"] = item
        else:
            flat[key] = value
    return flat
