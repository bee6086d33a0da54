"""``ncmse.measure_layers``: collapse of the features of several layers, in one pass over the data.

Collapse across depth (Papyan 2020; He & Su 2023): the output of each named module is hooked
during one forward pass per batch, reduced to one feature vector per sample (flattened, or a
convolution's channels averaged over its spatial positions with ``pool="avg"``) and added to that
layer's :class:`~ncmse.collapse.stats.ClassStats`. No classifier is involved: every result is
features-only (:func:`ncmse.collapse.result.features_only`), one pass, nothing cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ncmse.collapse import sampling
from ncmse.collapse.api import (
    check_num_classes,
    check_options,
    distributed_active,
    result_from_stats,
)
from ncmse.collapse.frontend import MODEL_WRAPPERS, unpack_batch
from ncmse.collapse.result import NCResult
from ncmse.collapse.stats import ClassStats, check_batch
from ncmse.errors import EmptyDataError, InputError

__all__ = ["measure_layers", "layer_features"]

_POOLS = (None, "avg")


def layer_features(output: torch.Tensor, pool: str | None) -> torch.Tensor:
    """One feature vector per sample of a layer's output ``[B, ...]``: ``[B, prod(...)]``
    (flattened), or with ``pool="avg"`` the mean over every dimension after the second
    (``[B, C, H, W]`` → ``[B, C]``, global average pooling).

    Examples
    --------
    >>> import torch
    >>> layer_features(torch.ones(2, 3, 4, 5), None).shape, layer_features(torch.ones(2, 3, 4, 5), "avg").shape
    (torch.Size([2, 60]), torch.Size([2, 3]))
    """  # noqa: E501
    if pool == "avg" and output.ndim > 2:
        return output.flatten(2).mean(dim=2)
    return output.flatten(1)


def measure_layers(
    model: nn.Module,
    loader: Iterable,
    layers: Mapping[str, nn.Module],
    *,
    num_classes: int,
    pool: str | None = None,
    lam: float = 0.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
    distributed: bool | None = None,
    ignore_index: int | None = -100,
) -> dict[str, NCResult]:
    """Measure collapse of the output of each module of ``layers`` on a loader, in one pass.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode under ``torch.no_grad`` on its own device; its mode is restored after.
    loader : iterable of ``(inputs, labels)`` (or dict) batches, labels ``[B]`` in [0, C)
        DistributedSampler padding is dropped and a loader that repeats or leaves out samples is
        reported, as in :func:`ncmse.measure`.
    layers : mapping name → module of ``model``
        Each must run exactly once per forward pass; its output ``[B, ...]`` is the features
        (see :func:`layer_features`). The order of the mapping is kept (e.g. input to output).
    num_classes : int
        C ≥ 2; every class must have samples.
    pool : None or "avg"
        None: outputs flattened to ``[B, prod(...)]``; "avg": averaged over the dimensions after
        the channels (a convolution's ``[B, C, H, W]`` → ``[B, C]``).
    lam, dtype, rtol, device, distributed
        As :func:`ncmse.measure_stream`.
    ignore_index : samples labelled with it are not measured (None: none left out)

    Returns
    -------
    dict name → NCResult
        Features-only results: ``accuracy``, ``loss``, ``loss_perp``, ``nc3``, ``nc4`` and the
        classifier geometry are NaN (:data:`ncmse.collapse.result.CLASSIFIER_METRICS`); ``nc1``, ``snr``,
        the class-mean geometry and ``loss_ls`` / ``loss_nc1`` / ``loss_nc23`` (those of the
        least-squares classifier of the layer's features) are measured.

    Examples
    --------
    >>> import torch, ncmse
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> y = torch.arange(90) % 3
    >>> x = 3 * torch.eye(4)[y] + torch.randn(90, 4)
    >>> out = ncmse.measure_layers(model, [(x, y)], {"relu1": model[1], "relu2": model[3]},
    ...                            num_classes=3)
    >>> sorted(out), out["relu1"].num_samples
    (['relu1', 'relu2'], 90)
    """  # noqa: E501
    C = check_num_classes(num_classes)
    check_options(lam, rtol, dtype)
    if pool not in _POOLS:
        raise InputError(f"pool must be None or 'avg', got {pool!r}")
    inner = model.module if isinstance(model, MODEL_WRAPPERS) else model
    if not isinstance(layers, Mapping) or not layers:
        raise InputError("layers must be a non-empty mapping {name: module of the model}")
    owned = {id(m) for m in inner.modules()}
    for name, module in layers.items():
        if not isinstance(module, nn.Module) or id(module) not in owned:
            raise InputError(
                f"layers[{name!r}] is not a module of the model; pass {{name: model.<submodule>}}"
            )
    try:
        model_device = next(inner.parameters()).device
    except StopIteration:
        model_device = torch.device("cpu")
    dev = torch.device(device) if device is not None else model_device
    dist_on = distributed_active(distributed)
    plan = sampling.plan(loader, distributed=dist_on, auto=distributed is None)
    hooks = _Hooks(layers, pool)
    stats: dict[str, ClassStats] = {}
    rows = 0
    was_training = inner.training
    inner.eval()
    try:
        with torch.no_grad(), hooks.attached():
            for feats, labels, real in _passes(inner, loader, hooks, plan.real, model_device):
                rows += real
                if ignore_index is not None:
                    keep = labels != ignore_index
                    feats = {k: v[keep.to(v.device)] for k, v in feats.items()}
                    labels = labels[keep]
                for name, h in feats.items():
                    check_batch(h, labels.to(h.device), C)
                    if name not in stats:
                        stats[name] = ClassStats(C, h.shape[1], device=dev, dtype=dtype)
                    stats[name].update(h.to(dev), labels.to(dev))
    finally:
        inner.train(was_training)
    if not stats:
        raise EmptyDataError("the loader yielded no batch; check the dataset split and the sampler")
    if dist_on:
        for s in stats.values():
            s.all_reduce_()

        total = torch.tensor([float(rows)], dtype=torch.float64, device=dev)
        dist.all_reduce(total)
        rows = int(total.item())
    sampling.check_count(plan, rows, distributed=dist_on)
    out = {}
    for name in layers:
        s = stats[name]
        s.check_finite()
        out[name] = result_from_stats(s, None, None, lam=lam, rtol=rtol)
    return out


class _Hooks:
    """Forward hooks that keep each named layer's features for the current batch."""

    def __init__(self, layers: Mapping[str, nn.Module], pool: str | None) -> None:
        self.layers, self.pool = dict(layers), pool
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str) -> Any:
        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise InputError(
                    f"layer {name!r} returns a {type(output).__name__}, not a tensor; name the "
                    "module whose output is the features"
                )
            self.outputs[name].append(layer_features(output.detach(), self.pool))

        return keep

    def take(self) -> dict[str, torch.Tensor]:
        """The features of the batch just run, one tensor ``[B, p_l]`` per layer."""
        for name, got in self.outputs.items():
            if len(got) != 1:
                raise InputError(
                    f"layer {name!r} ran {len(got)} times in one forward pass (once expected); "
                    "name a module that runs once per batch"
                )
        taken = {name: got[0] for name, got in self.outputs.items()}
        for got in self.outputs.values():
            got.clear()
        return taken


def _passes(
    model: nn.Module, loader: Iterable, hooks: _Hooks, real: int | None, device: torch.device
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor, int]]:
    """``(features per layer, labels [B'], B')`` per batch, less the rows that are padding. A
    batch made of padding alone is skipped, unless nothing was yielded yet (its empty features
    then give the layers' dimensions, so a rank whose shard is all padding still takes part in
    the reduction)."""
    seen, yielded = 0, False
    for raw in loader:
        batch = unpack_batch(raw, device)
        size = batch.rows()
        keep = size if real is None else max(0, min(size, real - seen))
        seen += size
        if keep == 0 and yielded:
            continue
        yielded = True
        for got in hooks.outputs.values():
            got.clear()
        model(*batch.args, **batch.kwargs)
        feats = {k: v[:keep] for k, v in hooks.take().items()}
        labels = batch.labels[:keep]
        yield feats, labels.to(next(iter(feats.values())).device), keep
