"""The typed result of one measurement (SPEC §2–§3 names)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "NCResult",
    "METRIC_NAMES",
    "FLAGS",
    "CLASSIFIER_METRICS",
    "CLASSIFIER_FLAGS",
    "features_only",
    "flatten_row",
]


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

    def to_log_dict(self) -> dict[str, float]:
        """Flat ``{name: float}`` for experiment loggers (Lightning ``log_dict``, the HF Trainer's
        ``log``, TensorBoard, W&B): no strings, lists or booleans.

        Every scalar of :data:`METRIC_NAMES` that is a number (``balanced`` as 0/1), ``snr``
        expanded to ``snr_1 … snr_k``, and one ``flag_<name>`` per name of :data:`FLAGS`: 1.0
        when the flag holds, 0.0 otherwise (so a flag's curve exists in every run). Numeric
        ``extras`` are included; ``nc4_method`` and other strings are not.

        Examples
        --------
        >>> import torch, ncmse
        >>> H, y = torch.randn(60, 4, dtype=torch.float64), torch.arange(60) % 3
        >>> d = ncmse.measure_features(H, y, torch.randn(3, 4), num_classes=3).to_log_dict()
        >>> d["snr_1"] >= d["snr_2"], d["flag_within_class_singular"], d["num_samples"]
        (True, 0.0, 60.0)
        >>> all(type(v) is float for v in d.values())
        True
        """
        out: dict[str, float] = {}
        for name, value in self.to_dict().items():
            if name == "snr":
                out.update({f"snr_{j}": float(v) for j, v in enumerate(value, start=1)})
            elif isinstance(value, (bool, int, float)):
                out[name] = float(value)
        for name in FLAGS:
            out[f"flag_{name}"] = 1.0 if name in self.flags else 0.0
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
    "class_mean_at_global_mean": (
        "a class mean coincides with the global mean (up to rounding), so its direction is "
        "undefined: equiangular_means and maxangle_means are NaN"
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


#: the quantities that need a classifier (W, b): NaN when features are measured without one.
#: ``loss_ls``, ``loss_nc1`` and ``loss_nc23`` stay: they are those of the least-squares
#: classifier, functions of the features alone (SPEC §3).
CLASSIFIER_METRICS: tuple[str, ...] = (
    "accuracy", "loss", "loss_perp", "nc3", "nc4", "equinorm_classifier",
    "equiangular_classifier", "maxangle_classifier", "etf_error_wm",
)  # fmt: skip

#: flags about the classifier, never raised without one
CLASSIFIER_FLAGS: tuple[str, ...] = ("zero_classifier_rows",)


def features_only(result: NCResult) -> NCResult:
    """``result`` with every quantity of :data:`CLASSIFIER_METRICS` NaN (a measurement of the
    features without a classifier: ``W=None``)."""
    return replace(result, **dict.fromkeys(CLASSIFIER_METRICS, math.nan))


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
