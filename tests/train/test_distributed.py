"""Two gloo processes measuring disjoint shards give the single-process result."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ncmse
from ncmse.collapse.stats import ClassStats

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


def _rare_data():
    """C = 6: class 4 has 3 samples (2 on rank 0, 1 on rank 1: below 3 on each rank, 3 in
    all), class 5 has 2 (excluded at min_samples=3)."""
    g = torch.Generator().manual_seed(1)
    y = torch.cat([torch.arange(4).repeat(20), torch.tensor([4, 4, 4, 5, 5])])
    H = 3 * torch.randn(6, P, generator=g, dtype=torch.float64)[y]
    H = H + torch.randn(len(y), P, generator=g, dtype=torch.float64)
    W, b = torch.randn(6, P, generator=g, dtype=torch.float64), torch.randn(6, generator=g)
    shard0 = torch.cat([torch.arange(0, 80, 2), torch.tensor([80, 81, 83])])
    shard1 = torch.cat([torch.arange(1, 80, 2), torch.tensor([82, 84])])
    return H, y, W, b.double(), (shard0, shard1)


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
        Hr, yr, Wr, br, shards = _rare_data()
        Hr, yr = Hr[shards[rank]], yr[shards[rank]]
        rare = [(Hr[i : i + 7], yr[i : i + 7]) for i in range(0, len(yr), 7)]
        subset = ncmse.measure_stream(rare, Wr, br, num_classes=6, lam=0.02, min_samples=3)
        out = {"stream": r.to_dict(), "metric": m.to_dict(), "means": stats.class_means().tolist(),
               "subset": subset.to_dict()}  # fmt: skip
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
    # min_samples across ranks: held-back rows are released by the global counts
    Hr, yr, Wr, br, _ = _rare_data()
    sub = ncmse.measure_features(Hr, yr, Wr, br, num_classes=6, lam=0.02, min_samples=3).to_dict()
    assert sub["num_classes"] == 5 and sub["num_classes_excluded"] == 1
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            got = json.load(f)["subset"]
        for name, value in sub.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert got["num_samples_excluded"] == 2 and got["num_samples"] == 83


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


def test_objective_ignores_an_empty_shard_batch():
    """Under DDP the last global batch can leave a rank an empty batch: its criterion (a mean
    over zero samples, NaN) must add nothing to the rank's objective sum."""
    from torch import nn

    from ncmse.train.setup import _ObjectiveLoader

    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 2, 1, 1, 0])
    target = nn.functional.one_hot(y, 3).double()
    criterion = nn.MSELoss()
    batches = [(out[:3], y[:3]), (out[3:], y[3:]), (out[:0], y[:0])]
    loader = _ObjectiveLoader(batches)
    for xb, _ in loader:
        loader.add(lambda o, t: criterion(o, nn.functional.one_hot(t, 3).to(o)), xb)
    expected = float(((out.double() - target) ** 2).mean(dim=1).mean())
    assert loader.objective(world_size=1) == pytest.approx(expected, rel=1e-6)  # float32 loss
