"""NeuralCollapseMetric: its classifier's shape checked at construction, and accuracy and the
other quantities from one set of weights (issue 19 items 7 and 14)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ncmse
from ncmse.errors import ShapeError

pytest.importorskip("torchmetrics")
from ncmse.metric import NeuralCollapseMetric  # noqa: E402

C, P = 4, 6


@pytest.mark.parametrize("k", [2, 3, 5, 14])
def test_num_classes_other_than_the_classifier_outputs_is_a_shape_error(k):
    layer = torch.nn.Linear(P, C)
    with pytest.raises(ShapeError, match=rf"num_classes={k}.*out_features={C}") as info:
        NeuralCollapseMetric(layer, num_classes=k)
    assert "\n" not in str(info.value)
    assert NeuralCollapseMetric(layer, num_classes=C).num_classes == C  # the matching one is fine


def _clusters(n: int = 200):
    g = torch.Generator().manual_seed(7)
    y = torch.randperm(n, generator=g) % C
    means = 3 * torch.randn(C, P, generator=g, dtype=torch.float64)
    H = means[y] + torch.randn(n, P, generator=g, dtype=torch.float64)
    layer = torch.nn.Linear(P, C).double()
    with torch.no_grad():  # W0: a poor classifier; W1 (set later): the class means, ~perfect
        layer.weight.copy_(torch.randn(C, P, generator=g, dtype=torch.float64))
        layer.bias.zero_()
    return H, y, means, layer


def _reference(H, y, layer, lam=0.01):
    W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    return ncmse.measure_features(H, y, W, b, num_classes=C, lam=lam).to_dict()


def _assert_same(got: dict, want: dict, skip=()) -> None:
    for name, value in want.items():
        if isinstance(value, float) and name not in skip:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def _feed(metric, H, y, layer, change):
    """Two halves of the data, the classifier changed as ``change`` says."""
    half = len(y) // 2
    metric.update(H[:half], y[:half])
    if change == "between_updates":
        change_weights(layer)
    metric.update(H[half:], y[half:])
    if change in ("before_compute", "replaced"):
        change_weights(layer, replace=change == "replaced")


def change_weights(layer, replace=False):
    g = torch.Generator().manual_seed(11)
    new = layer.weight.detach() + 5 * torch.randn(C, P, generator=g, dtype=torch.float64)
    if replace:
        layer.weight = torch.nn.Parameter(new)
    else:
        with torch.no_grad():  # an optimiser step: in place
            layer.weight.copy_(new)


CHANGES = ["between_updates", "before_compute", "replaced"]


@pytest.mark.parametrize("change", CHANGES)
def test_kept_features_give_every_quantity_from_the_weights_at_compute(change):
    """Issue 19 item 14: with keep_features, accuracy too comes from the weights at compute()."""
    H, y, _, layer = _clusters()
    before = _reference(H, y, layer)
    metric = NeuralCollapseMetric(layer, lam=0.01, keep_features=True)
    _feed(metric, H, y, layer, change)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: one set of weights
        got = metric.compute().to_dict()
    want = _reference(H, y, layer)
    assert abs(want["accuracy"] - before["accuracy"]) > 0.05  # the change matters
    _assert_same(got, want)


@pytest.mark.parametrize("change", CHANGES)
def test_accuracy_of_other_weights_is_nan_with_a_warning(change):
    """Without kept features the accuracy of update-time weights is not reported as the
    accuracy of the weights at compute(): NaN, with a warning saying why."""
    H, y, _, layer = _clusters()
    metric = NeuralCollapseMetric(layer, lam=0.01)
    _feed(metric, H, y, layer, change)
    with pytest.warns(ncmse.NCMSEWarning, match="changed between update"):
        got = metric.compute().to_dict()
    assert math.isnan(got["accuracy"])
    _assert_same(got, _reference(H, y, layer), skip=("accuracy", "nc4"))
    # after reset, updates and compute at one set of weights give the accuracy again
    metric.reset()
    metric.update(H, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = metric.compute().to_dict()
    _assert_same(again, _reference(H, y, layer), skip=("nc4",))


def test_unchanged_weights_keep_the_update_time_accuracy():
    """Negative control: no change, no warning, the same accuracy as measure_features."""
    H, y, _, layer = _clusters()
    for keep in (False, True):
        metric = NeuralCollapseMetric(layer, lam=0.01, keep_features=keep)
        _feed(metric, H, y, layer, change=None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = metric.compute().to_dict()
        _assert_same(got, _reference(H, y, layer), skip=() if keep else ("nc4",))
