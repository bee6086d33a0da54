"""Two gloo processes measuring disjoint shards give the single-process result."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ncmse
from ncmse.stats import ClassStats

C, P = 4, 6


def _data():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([30, 45, 25, 40])
    y = torch.repeat_interleave(torch.arange(C), counts)
    y = y[torch.randperm(len(y), generator=g)]
    mu = 3 * torch.randn(C, P, generator=g, dtype=torch.float64)
    H = (mu[y] + torch.randn(len(y), P, generator=g, dtype=torch.float64)).float()
    layer = torch.nn.Linear(P, C)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(C, P, generator=g))
        layer.bias.copy_(torch.randn(C, generator=g))
    return H, y, layer


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        H, y, layer = _data()
        # uneven shards, rank 1 missing class 0 entirely: the reduction must still be exact
        mask = (y == 0) | (torch.arange(len(y)) % 3 == 0) if rank == 0 else None
        if rank == 1:
            mask = (y != 0) & (torch.arange(len(y)) % 3 != 0)
        Hs, ys = H[mask], y[mask]
        batches = [(Hs[i : i + 16], ys[i : i + 16]) for i in range(0, len(ys), 16)]
        r = ncmse.measure_stream(batches, layer.weight, layer.bias, num_classes=C, lam=0.02)
        stats = ClassStats(C, P)
        for hb, yb in batches:
            stats.update(hb, yb)
        stats.all_reduce_()
        from ncmse.metric import NeuralCollapseMetric

        metric = NeuralCollapseMetric(layer, lam=0.02, keep_features=True)
        for hb, yb in batches:
            metric.update(hb, yb)
        m = metric.compute()
        out = {"stream": r.to_dict(), "metric": m.to_dict(), "means": stats.class_means().tolist()}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    H, y, layer = _data()
    ref = ncmse.measure_features(H, y, layer.weight, layer.bias, num_classes=C, lam=0.02)
    ref_d = ref.to_dict()
    ref_means = torch.stack([H[y == c].double().mean(0) for c in range(C)])
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            got = json.load(f)
        torch.testing.assert_close(torch.tensor(got["means"], dtype=torch.float64), ref_means)
        for key in ("stream", "metric"):
            for name, value in ref_d.items():
                if isinstance(value, float):
                    assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, name)
            assert got[key]["snr"] == pytest.approx(ref_d["snr"], rel=1e-9)
        assert got["metric"]["nc4_method"] == "cache"


def test_metric_single_process_matches_measure_features():
    from ncmse.metric import NeuralCollapseMetric

    H, y, layer = _data()
    metric = NeuralCollapseMetric(layer, lam=0.1, keep_features=True)
    for i in range(0, len(y), 32):
        metric(H[i : i + 32], y[i : i + 32])
    got = metric.compute().to_dict()
    ref = ncmse.measure_features(H, y, layer.weight, layer.bias, num_classes=C, lam=0.1)
    for name, value in ref.to_dict().items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    metric.reset()
    metric.update(H, y)
    assert metric.compute().nc1 == pytest.approx(ref.nc1, rel=1e-9)
    no_cache = NeuralCollapseMetric(layer, lam=0.1)
    no_cache.update(H, y)
    r = no_cache.compute()
    assert r.nc4_method == "unavailable" and r.nc4 != r.nc4  # NaN without kept features
