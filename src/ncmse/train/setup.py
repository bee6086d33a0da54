"""What a config builds (data, network, loss, optimizer, loader, step) and the measurement of
one split at the run's λ.

Shared by ``ncmse train`` (the trainer is built from these and measures with
:func:`measure_split`) and ``ncmse measure`` (rebuilds the components of a checkpoint's config).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import ncmse
from ncmse.collapse.api import DEFAULT_MEMORY_BUDGET
from ncmse.errors import ConfigError, NCMSEWarning
from ncmse.train.config import Config
from ncmse.train.data import TensorLoader, load_dataset
from ncmse.train.distributed import DistInfo
from ncmse.train.losses import LossSpec, build_loss
from ncmse.train.models import build_model, classifier_of, freeze_features
from ncmse.train.schedule import lr_milestones
from ncmse.train.step import FastStep
from ncmse.train.userref import build_user_model, is_reference, load_user_dataset

__all__ = [
    "Components",
    "build_components",
    "build_optimizer",
    "build_step",
    "build_train_loader",
    "config_loss",
    "load_config_dataset",
    "measure_split",
    "scaled_classifier",
]


@dataclass
class Components:
    """Data, model and loss of a config (what ``ncmse measure`` rebuilds from a checkpoint)."""

    bundle: Any
    model: nn.Module
    loss: LossSpec
    device: torch.device


def load_config_dataset(cfg: Config) -> Any:
    """The dataset a run's config names (:func:`ncmse.train.data.load_dataset` with its data
    keys)."""
    if is_reference(cfg.dataset):
        return load_user_dataset(cfg)
    return load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        per_class=cfg.per_class,
        test_per_class=cfg.test_per_class,
        seed=cfg.seed,
    )


def build_components(cfg: Config, device: torch.device, *, bundle: Any = None) -> Components:
    """Load the dataset (unless ``bundle`` holds it), build the model (seeded by ``cfg.seed``)
    and the loss.

    Raises
    ------
    DataUnavailableError
        From :func:`ncmse.train.data.load_dataset` when the dataset is not available offline.
    """
    bundle = bundle or load_config_dataset(cfg)
    torch.manual_seed(cfg.seed)
    if is_reference(cfg.model):
        model = build_user_model(cfg, bundle).to(device)
        return Components(bundle, model, config_loss(cfg, bundle.num_classes), device)
    model = build_model(
        cfg.model,
        num_classes=bundle.num_classes,
        in_channels=bundle.in_channels,
        image_size=bundle.image_size,
        **cfg.model_kwargs,
    ).to(device)
    return Components(bundle, model, config_loss(cfg, bundle.num_classes), device)


def config_loss(cfg: Config, num_classes: int) -> LossSpec:
    """The training criterion of a config and the λ of its decomposition."""
    return build_loss(
        cfg.loss,
        num_classes=num_classes,
        weight_decay=cfg.weight_decay,
        reduction=cfg.mse_reduction,
        rescale_k=cfg.rescale_k,
        rescale_m=cfg.rescale_m,
        lam=cfg.lam,
    )


def build_optimizer(cfg: Config, network: nn.Module) -> tuple[torch.optim.SGD, Any]:
    """The run's SGD optimizer (of the classifier alone with ``freeze_features``) and its
    learning-rate schedule: ×``lr_gamma`` after the epochs :func:`lr_milestones` names, the
    scheduler stepped once per epoch."""
    params = freeze_features(network) if cfg.freeze_features else network.parameters()
    optimizer = torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, lr_milestones(cfg.epochs, cfg.lr_milestones), gamma=cfg.lr_gamma
    )
    return optimizer, scheduler


def build_train_loader(
    cfg: Config, x: torch.Tensor, y: torch.Tensor, dist_info: DistInfo
) -> TensorLoader:
    """The shuffled training batches of this rank: its shard of every global batch of
    ``cfg.batch_size``, in the order of ``cfg.seed``.

    Raises
    ------
    ConfigError
        If ``batch_size`` is not divisible by the number of processes.
    """
    world = dist_info.world_size
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is not divisible by the {world} processes; "
            f"set --set batch_size to a multiple of {world}"
        )
    return TensorLoader(
        x,
        y,
        cfg.batch_size // world,
        shuffle=True,
        seed=cfg.seed,
        rank=dist_info.rank,
        world_size=world,
    )


def build_step(
    cfg: Config,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device,
    dist_info: DistInfo,
    batch_size: int,
) -> FastStep:
    """The run's training step: eager on the CPU (:class:`~ncmse.train.step.TrainStep`'s
    numbers, bit for bit), CUDA-graphed on one GPU, the network wrapped in
    DistributedDataParallel under torchrun."""
    model = network
    if dist_info.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
    return FastStep(
        model,
        optimizer,
        criterion,
        precision=cfg.precision,
        channels_last=cfg.channels_last,
        cuda_graph=cfg.cuda_graph,
        batch_size=batch_size,
    )


@contextlib.contextmanager
def scaled_classifier(layer: nn.Linear, scale: float) -> Iterator[None]:
    """Temporarily multiply a linear layer's weight and bias by ``scale`` (restored exactly)."""
    if scale == 1.0:
        yield
        return
    saved = [p.detach().clone() for p in layer.parameters()]
    try:
        with torch.no_grad():
            for p in layer.parameters():
                p.mul_(scale)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(layer.parameters(), saved):
                p.copy_(s)


def measure_split(
    model: nn.Module,
    loss: LossSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int,
    memory_budget_bytes: int | None = None,
    dist_info: DistInfo | None = None,
    min_samples: int | None = None,
) -> dict[str, Any]:
    """All SPEC metrics of one split at the loss's λ, plus ``objective`` (rank-sharded under DDP).

    ``objective`` (SPEC §2) is the training criterion ``loss.module`` averaged over the split, on
    the outputs of the same eval-mode forward pass that yields the features (the classifier
    scale of the rescaled MSE undone), weight decay excluded.

    Parameters
    ----------
    model : nn.Module
        The (unwrapped) network.
    loss : LossSpec
        Supplies λ, the classifier scale (1/M for the rescaled MSE) and the criterion.
    x, y : Tensor
        The whole split (every rank passes the whole split and measures its shard).
    min_samples : int, optional
        Measure only the classes with at least this many samples (``ncmse measure
        --min-samples``); ``objective`` stays the criterion over the whole split.
    """
    info = dist_info or DistInfo()
    loader = _ObjectiveLoader(
        TensorLoader(x, y, batch_size, rank=info.rank, world_size=info.world_size)
    )
    layer = classifier_of(model)
    budget = memory_budget_bytes if memory_budget_bytes is not None else DEFAULT_MEMORY_BUDGET
    scale = loss.classifier_scale

    def on_output(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        loader.add(loss.module, output / scale if scale != 1.0 else output)

    handle = layer.register_forward_hook(on_output)
    try:
        # degenerate-feature flags are reported by the trainer (console line, summary.json)
        with scaled_classifier(layer, scale), warnings.catch_warnings():
            warnings.simplefilter("ignore", NCMSEWarning)
            result = ncmse.measure(
                model,
                loader,
                classifier=layer,
                num_classes=num_classes,
                lam=loss.lam,
                memory_budget_bytes=budget,
                min_samples=min_samples,
            )
    finally:
        handle.remove()
    row = result.to_dict()
    row["objective"] = loader.objective(info.world_size)
    return row


class _ObjectiveLoader:
    """A loader that remembers each batch's labels, so a forward hook can evaluate the criterion.

    Only the first pass counts (a measurement may read the split twice).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.passes = 0
        self.labels: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.count = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        for xb, yb in self.inner:
            self.labels = yb
            yield xb, yb
        self.labels = None

    def add(self, criterion: nn.Module, output: torch.Tensor) -> None:
        if self.passes != 1 or self.labels is None or len(self.labels) == 0:
            return  # an empty shard batch (DDP) adds nothing; its mean loss would be NaN
        y = self.labels.to(output.device)
        value = criterion(output, y).detach().double() * len(y)
        self.total = value if self.total is None else self.total + value
        self.count += len(y)

    def objective(self, world_size: int) -> float:
        device = self.total.device if self.total is not None else torch.device("cpu")
        both = torch.stack(
            [
                self.total
                if self.total is not None
                else torch.zeros((), dtype=torch.float64, device=device),
                torch.tensor(float(self.count), dtype=torch.float64, device=device),
            ]
        )
        if world_size > 1:
            dist.all_reduce(both)
        total, count = both.tolist()
        return total / count if count else math.nan
