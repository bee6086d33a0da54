"""Tests of ncmse.train.models: every network builds, maps images to scores and ends in its
classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncmse.errors import ConfigError, InputError
from ncmse.train.models import MODELS, build_model, classifier_of, count_parameters

BIG = {"vgg19", "resnet34", "resnet50", "densenet121"}
CASES = [
    (name, channels, size)
    for name in MODELS
    for channels, size in ((1, 28), (3, 32))
    if not (name in BIG and channels == 1)  # the biggest models: one size keeps the suite cheap
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny batches gain nothing from intra-op threads, which stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _final_linear_output(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model output and the output of its last nn.Linear on the same forward pass."""
    captured = {}
    handle = classifier_of(model).register_forward_hook(
        lambda mod, inp, out: captured.update(out=out, features=inp[0])
    )
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, captured["out"]


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_model_maps_images_to_scores_through_final_linear(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        out, linear_out = _final_linear_output(model, x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # the classifier is the last operation: its output *is* the model output
    assert torch.equal(out, linear_out)
    last = classifier_of(model)
    assert isinstance(last, nn.Linear) and last.out_features == 7
    assert list(model.modules())[-1] is last


@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg11", "resnet18", "densenet40"])
def test_tiny_8px_digits_inputs_work(name):
    model = build_model(name, num_classes=10, in_channels=1, image_size=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", ["vgg11", "densenet40"])
def test_stl10_sized_inputs_work(name):
    model = build_model(name, num_classes=10, in_channels=3, image_size=96).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_vgg_keeps_only_pools_that_fit():
    def pools(size: int) -> int:
        model = build_model("vgg11", num_classes=10, in_channels=1, image_size=size)
        return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())

    assert (pools(32), pools(28), pools(8)) == (5, 4, 3)


def test_small_image_stems():
    resnet = build_model("resnet18", num_classes=10, in_channels=1, image_size=28)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert resnet.conv1.in_channels == 1 and isinstance(resnet.maxpool, nn.Identity)
    dense = build_model("densenet40", num_classes=10, in_channels=3, image_size=32)
    assert dense.features.conv0.kernel_size == (3, 3) and dense.features.conv0.stride == (1, 1)
    assert isinstance(dense.features.pool0, nn.Identity)
    # DenseNet-BC-40: 3 dense blocks of 6 bottleneck layers with growth rate 12
    blocks = [m for n, m in dense.features.named_children() if n.startswith("denseblock")]
    assert len(blocks) == 3 and all(len(b) == 6 for b in blocks)


def test_mlp_and_cnn_options():
    small = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=32, depth=2)
    big = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=64, depth=3)
    assert count_parameters(small) < count_parameters(big)
    assert classifier_of(small).in_features == 32
    no_bn = build_model("mlp", num_classes=10, in_channels=1, image_size=8, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_bn.modules())
    cnn = build_model("cnn", num_classes=10, in_channels=3, image_size=32, width=8, hidden=40)
    assert classifier_of(cnn).in_features == 40


def test_cnn_trains_one_step_in_train_mode():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=28, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    target = nn.functional.one_hot(y, 10).float()
    losses = []
    for _ in range(3):
        loss = nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_build_model_errors():
    with pytest.raises(InputError) as info:
        build_model("alexnet", num_classes=10, in_channels=3, image_size=32)
    assert all(name in str(info.value) for name in MODELS)
    with pytest.raises(InputError, match="num_classes"):
        build_model("mlp", num_classes=1, in_channels=3, image_size=32)
    with pytest.raises(InputError, match="in_channels"):
        build_model("cnn", num_classes=10, in_channels=0, image_size=32)
    with pytest.raises(ConfigError, match="widht.*width, depth, batch_norm"):
        build_model("mlp", num_classes=10, in_channels=1, image_size=8, widht=3)
    with pytest.raises(ConfigError, match="no extra options"):
        build_model("resnet18", num_classes=10, in_channels=3, image_size=32, width=3)


def test_classifier_of_rejects_models_without_linear():
    with pytest.raises(InputError, match="no nn.Linear"):
        classifier_of(nn.Sequential(nn.Conv2d(1, 1, 1)))
