"""Networks of the paper, adapted to small images, plus two small models for CPU runs.

Every model ends in one ``nn.Linear`` (the classifier) applied to the penultimate features, and that
layer is the last ``nn.Linear`` in ``model.modules()``, so the measurement code finds it
automatically.  The big networks reuse torchvision's definitions:

* VGG11/13/19 with BatchNorm: torchvision's ``make_layers`` and configurations, first convolution
  taking ``in_channels``, max-pools that would shrink the feature map below 1 pixel dropped, global
  average pooling and a single ``Linear(512, num_classes)``.
* ResNet18/34/50: torchvision's ResNet with a 3×3 stride-1 first convolution and no max-pool.
* DenseNet121 (torchvision) and DenseNet40-BC (torchvision's ``DenseNet`` with growth rate 12 and
  three blocks of 6 bottleneck layers), both with a 3×3 stride-1 stem and no max-pool.
"""

from __future__ import annotations

import types
from collections.abc import Callable

from torch import Tensor, nn

from ncmse.errors import ConfigError, InputError

__all__ = [
    "MODELS",
    "build_model",
    "check_model_kwargs",
    "classifier_of",
    "count_parameters",
    "freeze_features",
    "CNN",
    "MLP",
    "VGG",
]

MODELS: tuple[str, ...] = (
    "mlp",
    "cnn",
    "vgg11",
    "vgg13",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet40",
    "densenet121",
)


class MLP(nn.Module):
    """Fully connected network: ``depth`` hidden layers of ``width`` units, then the classifier.

    Parameters
    ----------
    in_features : int
        Flattened input size.
    num_classes : int
        Output size.
    width : int
        Hidden units per layer.
    depth : int
        Number of hidden layers (at least 1).
    batch_norm : bool
        Use BatchNorm1d after every hidden linear layer.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        width: int = 512,
        depth: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            layers.append(nn.Linear(size, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            size = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores ``[B, num_classes]``."""
        return self.classifier(self.features(x))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class CNN(nn.Module):
    """Small convolutional network for CPU runs.

    Three 3×3 conv-BN-ReLU stages with ``width``, ``2 width`` and ``4 width`` channels (max-pooling
    after the first two while the map is at least 2 pixels), adaptive average pooling to 2×2, one
    hidden fully connected layer of ``hidden`` units and the classifier.

    Parameters
    ----------
    in_channels, num_classes, image_size : int
        Input channels, output size and input side in pixels.
    width : int
        Channels of the first stage.
    hidden : int
        Size of the penultimate (feature) layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        width: int = 16,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, cin = image_size, in_channels
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            layers += _conv_bn_relu(cin, cout)
            if stage < 2 and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        layers += [nn.Linear(4 * cin, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores ``[B, num_classes]``."""
        return self.classifier(self.features(x))


class VGG(nn.Module):
    """VGG with BatchNorm for small images, built from torchvision's layer configuration.

    Parameters
    ----------
    config : str
        torchvision configuration key: ``"A"`` (VGG11), ``"B"`` (VGG13), ``"D"`` (VGG16),
        ``"E"`` (VGG19).
    in_channels, num_classes, image_size : int
        Input channels, output size and input side in pixels.
    """

    def __init__(self, config: str, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers  # lazy: slow, for the big nets only

        features = make_layers(cfgs[config], batch_norm=True)
        first = features[0]
        features[0] = nn.Conv2d(in_channels, first.out_channels, kernel_size=3, padding=1)
        size = image_size
        for i, layer in enumerate(features):
            if isinstance(layer, nn.MaxPool2d):
                if size >= 2:
                    size //= 2
                else:  # the map is already 1×1: pooling again would empty it
                    features[i] = nn.Identity()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cfgs[config][-2], num_classes)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores ``[B, num_classes]``."""
        return self.classifier(self.pool(self.features(x)))


def _small_stem(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _resnet(depth: int, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import resnet18, resnet34, resnet50

    ctor = {18: resnet18, 34: resnet34, 50: resnet50}[depth]
    net = ctor(weights=None, num_classes=num_classes)
    net.conv1 = _small_stem(in_channels, net.conv1.out_channels)
    net.maxpool = nn.Identity()
    return net


def _densenet(kind: str, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import DenseNet, densenet121

    if kind == "densenet121":
        net = densenet121(weights=None, num_classes=num_classes)
    else:  # DenseNet-BC, depth 40 = 3 blocks * 6 bottleneck layers * 2 convs + 4
        net = DenseNet(
            growth_rate=12,
            block_config=(6, 6, 6),  # type: ignore[arg-type]
            num_init_features=24,
            bn_size=4,
            num_classes=num_classes,
        )
    net.features.conv0 = _small_stem(in_channels, net.features.conv0.out_channels)
    net.features.pool0 = nn.Identity()
    return net


_KWARGS: dict[str, tuple[str, ...]] = {
    "mlp": ("width", "depth", "batch_norm"),
    "cnn": ("width", "hidden"),
}
#: option -> (type, smallest value or None) of the models' extra options
_KWARG_TYPES: dict[str, tuple[type, int | None]] = {
    "width": (int, 1),
    "depth": (int, 1),
    "hidden": (int, 1),
    "batch_norm": (bool, None),
}


def check_model_kwargs(name: str, kwargs: dict) -> None:
    """Reject options ``name`` does not accept and values of the wrong type or range.

    Raises
    ------
    ConfigError
        Naming the option, the value and what is expected (before any training starts).
    """
    key = name.lower() if isinstance(name, str) else name
    allowed = _KWARGS.get(key, ())
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        hint = f"it accepts: {', '.join(allowed)}" if allowed else "it takes no extra options"
        raise ConfigError(f"model {key!r} got unknown option(s) {', '.join(unknown)}; {hint}")
    for option, value in kwargs.items():
        typ, low = _KWARG_TYPES[option]
        if typ is bool:
            ok = isinstance(value, bool)
            want = "true or false"
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= (low or 0)
            want = f"an integer >= {low}"
        if not ok:
            raise ConfigError(
                f"model_kwargs.{option}={value!r} is invalid for model {key!r}: must be {want} "
                f"(e.g. --set model_kwargs.{option}="
                f"{'true' if typ is bool else {'width': 512, 'depth': 3, 'hidden': 128}[option]})"
            )


def _check_args(
    name: str, num_classes: int, in_channels: int, image_size: int, kwargs: dict
) -> str:
    if not isinstance(name, str) or name.lower() not in MODELS:
        raise InputError(f"unknown model {name!r}; valid names are: {', '.join(MODELS)}")
    key = name.lower()
    for arg, value, low in (
        ("num_classes", num_classes, 2),
        ("in_channels", in_channels, 1),
        ("image_size", image_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{arg} must be an integer >= {low}, got {value!r}")
    check_model_kwargs(key, kwargs)
    return key


def build_model(
    name: str, *, num_classes: int, in_channels: int, image_size: int, **kwargs: object
) -> nn.Module:
    """Build a network whose last operation is an ``nn.Linear`` classifier.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    num_classes : int
        Number of outputs.
    in_channels : int
        Image channels (1 or 3 for the datasets of the paper; any positive value works).
    image_size : int
        Side of the square input images in pixels (sizes the pooling of mlp, cnn and VGG).
    **kwargs
        ``mlp``: ``width`` (512), ``depth`` (3), ``batch_norm`` (True);
        ``cnn``: ``width`` (16), ``hidden`` (128). Other models take none.

    Returns
    -------
    torch.nn.Module
        Maps ``[B, in_channels, image_size, image_size]`` to ``[B, num_classes]``.

    Raises
    ------
    InputError
        Unknown name or invalid sizes.
    ConfigError
        Options the model does not accept.
    """
    key = _check_args(name, num_classes, in_channels, image_size, kwargs)
    builders: dict[str, Callable[[], nn.Module]] = {
        "mlp": lambda: MLP(in_channels * image_size**2, num_classes, **kwargs),  # type: ignore[arg-type]
        "cnn": lambda: CNN(in_channels, num_classes, image_size, **kwargs),  # type: ignore[arg-type]
        "vgg11": lambda: VGG("A", in_channels, num_classes, image_size),
        "vgg13": lambda: VGG("B", in_channels, num_classes, image_size),
        "vgg19": lambda: VGG("E", in_channels, num_classes, image_size),
        "resnet18": lambda: _resnet(18, in_channels, num_classes),
        "resnet34": lambda: _resnet(34, in_channels, num_classes),
        "resnet50": lambda: _resnet(50, in_channels, num_classes),
        "densenet40": lambda: _densenet("densenet40", in_channels, num_classes),
        "densenet121": lambda: _densenet("densenet121", in_channels, num_classes),
    }
    return builders[key]()


def classifier_of(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in ``model.modules()`` (the classifier of every model here).

    Raises
    ------
    InputError
        If the model contains no ``nn.Linear``.
    """
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise InputError(f"{type(model).__name__} has no nn.Linear layer to use as classifier")
    return last


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train(mode)`` of a frozen module: whatever ``mode``, it (and its children) stay in eval."""
    return nn.Module.train(module, False)


def freeze_features(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every layer of ``model`` but its classifier; returns the classifier's parameters.

    The classifier is the final ``nn.Linear`` (:func:`classifier_of`). Every other parameter
    stops requiring gradients, and every module that does not contain the classifier
    stays in eval mode even when the training loop calls ``model.train()``: BatchNorm layers
    normalise with their running statistics *as initialised* (which they never update) and
    dropout is off, so the features are one fixed function of the input — those the classifier
    is trained on are exactly those measured (in eval mode). Keeping BatchNorm in train mode
    instead would train the classifier on batch-normalised features that differ from the
    measured ones.

    Parameters
    ----------
    model : nn.Module
        The network (not a DDP wrapper).

    Returns
    -------
    list of nn.Parameter
        The parameters left to train (weight and bias of the classifier).
    """
    head = classifier_of(model)
    keep = {id(p) for p in head.parameters()}
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
    for module in model.modules():
        if not any(sub is head for sub in module.modules()):
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
            module.eval()
    return list(head.parameters())
