"""``NCResult.to_log_dict()``: the flat ``{name: float}`` every logger accepts (issue 21 item 6)."""

from __future__ import annotations

import math

import pytest
import torch

import ncmse
from ncmse.collapse.result import FLAGS, METRIC_NAMES


def _result(collapsed: bool) -> ncmse.NCResult:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    means = 3 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    H = means[y] + (0 if collapsed else torch.randn(90, 5, generator=g, dtype=torch.float64))
    return ncmse.measure_features(H, y, torch.randn(3, 5, generator=g), num_classes=3, lam=1e-3)


def test_every_value_is_a_float_and_matches_the_result():
    r = _result(collapsed=False)
    d = r.to_log_dict()
    assert all(isinstance(k, str) for k in d)
    assert all(type(v) is float for v in d.values())
    full = r.to_dict()
    for name in METRIC_NAMES:
        if name in ("nc4_method", "flags"):
            assert name not in d  # strings are not logged
            continue
        assert math.isclose(d[name], float(full[name]), rel_tol=0, abs_tol=0) or (
            math.isnan(d[name]) and math.isnan(float(full[name]))
        ), name
    assert d["balanced"] == 1.0


def test_snr_is_expanded_in_order():
    r = _result(collapsed=False)
    d = r.to_log_dict()
    assert len(r.snr) == 2
    assert [d["snr_1"], d["snr_2"]] == list(r.snr)
    assert "snr" not in d and "snr_3" not in d


@pytest.mark.filterwarnings("ignore::ncmse.NCMSEWarning")
def test_one_flag_key_per_flag_name_with_positive_and_negative_control():
    clean = _result(collapsed=False).to_log_dict()
    collapsed_result = _result(collapsed=True)
    collapsed = collapsed_result.to_log_dict()
    for name in FLAGS:
        assert clean[f"flag_{name}"] == 0.0  # negative control: no flag on generic features
    assert "within_class_singular" in collapsed_result.flags
    for name in FLAGS:
        assert collapsed[f"flag_{name}"] == (1.0 if name in collapsed_result.flags else 0.0)
    assert collapsed["snr_1"] == math.inf  # exact collapse: a true +inf, kept as a float
