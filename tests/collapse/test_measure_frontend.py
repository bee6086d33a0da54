"""``ncmse.measure(model, loader)``: which samples it counts (DistributedSampler padding, loaders
that drop or repeat samples) and which layer it takes as the classifier (issues 19 and 21)."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

import ncmse
from ncmse.collapse.sampling import real_samples
from ncmse.errors import InputError, SamplingWarning

C, P, N_ODD = 4, 6, 101


def _data(n: int = N_ODD):
    """Float64 inputs, labels and an MLP whose final layer is ``model[-1]``."""
    g = torch.Generator().manual_seed(0)
    y = torch.randperm(n, generator=g) % C
    X = 2 * torch.randn(C, 5, generator=g, dtype=torch.float64)[y]
    X = X + torch.randn(n, 5, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, P), nn.Tanh(), nn.Linear(P, C)).double()
    return X, y, model


def _reference(X, y, model, lam=0.01):
    """The float64 single-process result on the unpadded data."""
    with torch.no_grad():
        feats = model[:-1](X)
    return ncmse.measure_features(feats, y, model[-1].weight, model[-1].bias, num_classes=C,
                                  lam=lam)  # fmt: skip


def _assert_same(got: dict, want: dict) -> None:
    for name, value in want.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert got["num_samples"] == want["num_samples"]


class _ListSampler(Sampler):
    """A custom sampler: the given indices, in order."""

    def __init__(self, indices):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class _Stream(torch.utils.data.IterableDataset):
    """An iterable dataset that shards itself by rank."""

    def __init__(self, X, y, rank, world):
        self.X, self.y, self.rank, self.world = X, y, rank, world

    def __iter__(self):
        return zip(self.X[self.rank :: self.world], self.y[self.rank :: self.world])


def _sampling_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SamplingWarning)]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from ncmse.metric import NeuralCollapseMetric

        X, y, model = _data()
        ds = TensorDataset(X, y)
        sampler = DistributedSampler(ds, shuffle=True, seed=3)
        loader = DataLoader(ds, batch_size=16, sampler=sampler)
        out = {}
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out["measure"] = ncmse.measure(model, loader, lam=0.01).to_dict()
            out["measure_second_pass"] = ncmse.measure(
                model, loader, lam=0.01, memory_budget_bytes=0
            ).to_dict()
        out["measure_warnings"] = _sampling_warnings(record)
        masked = NeuralCollapseMetric(model[-1], lam=0.01, keep_features=True)
        unmasked = NeuralCollapseMetric(model[-1], lam=0.01)
        with torch.no_grad():
            for i, (xb, yb) in enumerate(loader):
                feats = model[:-1](xb)
                masked.update(feats, yb, valid=real_samples(sampler, i * 16, len(yb)))
                unmasked.update(feats, yb)
        out["metric"] = masked.compute().to_dict()
        out["metric_unmasked"] = unmasked.compute().to_dict()
        # a custom sampler that gives every rank the whole dataset: each sample counted twice
        overlapping = DataLoader(ds, batch_size=16, sampler=_ListSampler(range(N_ODD)))
        disjoint = DataLoader(ds, batch_size=16, sampler=_ListSampler(range(rank, N_ODD, world)))
        for name, source in (("overlapping", overlapping), ("disjoint", disjoint)):
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                out[name] = ncmse.measure(model, source, lam=0.01).to_dict()
            out[f"{name}_warnings"] = _sampling_warnings(record)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            stream = DataLoader(_Stream(X, y, rank, world), batch_size=16)
            out["iterable"] = ncmse.measure(model, stream, lam=0.01).to_dict()
        out["iterable_warnings"] = _sampling_warnings(record)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_sampler_padding_is_measured_once(tmp_path):
    """Issue 21 item 1: N = 101 on 2 ranks, DistributedSampler pads one duplicate; every result
    must equal the single-process float64 result on the 101 samples."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    X, y, model = _data()
    want = _reference(X, y, model).to_dict()
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            got = json.load(f)
        for key in ("measure", "measure_second_pass", "metric", "disjoint"):
            _assert_same(got[key], want)
        assert got["measure_warnings"] == [] and got["disjoint_warnings"] == []
        # negative controls: the padding is real, and a custom sampler repeating samples warns
        assert got["metric_unmasked"]["num_samples"] == N_ODD + 1
        assert got["overlapping"]["num_samples"] == 2 * N_ODD
        assert len(got["overlapping_warnings"]) == 1
        assert "202 samples" in got["overlapping_warnings"][0]
        assert "101" in got["overlapping_warnings"][0]
        # an IterableDataset cannot be checked: measured as given, with a warning saying so
        _assert_same(got["iterable"], want)
        assert len(got["iterable_warnings"]) == 1 and "cannot check" in got["iterable_warnings"][0]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("rank", [0, 1])
def test_one_shard_of_a_distributed_sampler_drops_its_padding(rank, shuffle):
    """Without a process group (distributed=False) a rank measures its shard: the sampler's
    indices less the padding, whatever the shuffle."""
    X, y, model = _data()
    ds = TensorDataset(X, y)
    sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=shuffle, seed=5)
    indices = list(sampler)
    real = indices[: len(range(rank, N_ODD, 2))]
    assert len(indices) - len(real) == rank  # rank 1 holds the one padded duplicate
    loader = DataLoader(ds, batch_size=8, sampler=sampler)
    got = ncmse.measure(model, loader, lam=0.01, distributed=False).to_dict()
    _assert_same(got, _reference(X[real], y[real], model).to_dict())
    mask = torch.cat([real_samples(sampler, s, 8) for s in range(0, len(indices), 8)])
    assert mask[: len(indices)].tolist() == [i < len(real) for i in range(len(indices))]


def test_loaders_that_drop_or_repeat_samples_warn():
    X, y, model = _data(n=104)
    ds = TensorDataset(X, y)
    quiet = [
        DataLoader(ds, batch_size=8, drop_last=True),  # 104 = 13 batches of 8: nothing dropped
        DataLoader(ds, batch_size=10, sampler=DistributedSampler(ds, 2, 0, drop_last=True)),
        DataLoader(ds, batch_size=10, shuffle=True),
    ]
    loud = {
        "drop_last=True": DataLoader(ds, batch_size=10, drop_last=True),
        "replacement": DataLoader(
            ds, batch_size=10, sampler=torch.utils.data.RandomSampler(ds, replacement=True)
        ),  # fmt: skip
        "drop_last=True)": DataLoader(
            TensorDataset(X[:103], y[:103]),
            batch_size=10,
            sampler=DistributedSampler(TensorDataset(X[:103], y[:103]), 2, 0, drop_last=True),
        ),
    }
    for loader in quiet:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            ncmse.measure(model, loader, distributed=False)
        assert _sampling_warnings(record) == []
    for words, loader in loud.items():
        with pytest.warns(SamplingWarning, match=words.replace("(", r"\(").replace(")", r"\)")):
            ncmse.measure(model, loader, distributed=False)


def test_a_shard_measured_without_a_process_group_warns():
    X, y, model = _data()
    ds = TensorDataset(X, y)
    loader = DataLoader(ds, batch_size=16, sampler=DistributedSampler(ds, 2, 1))
    with pytest.warns(SamplingWarning, match="50 of the 101 samples"):
        r = ncmse.measure(model, loader)
    assert r.num_samples == 50


# ----------------------------------------------------------------------------- the classifier
class _AuxAfter(nn.Module):
    """``fc`` is the classifier; ``aux`` (defined after it) is a training-only auxiliary head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Linear(5, P), nn.Tanh())
        self.fc = nn.Linear(P, C)
        self.aux = nn.Linear(5, C)
        self.aux_logits = None

    def forward(self, x):
        self.aux_logits = self.aux(x)  # for an auxiliary loss; not the model's output
        return self.fc(self.body(x))


class _HeadFirst(nn.Module):
    """The head is defined before the body (the last nn.Linear defined is the body's)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.head = nn.Linear(P, C)
        self.body = nn.Sequential(nn.Linear(5, 14), nn.Tanh(), nn.Linear(14, P), nn.Tanh())

    def forward(self, x):
        return self.head(self.body(x)).view(x.shape[0], C)  # a same-shape view is still logits


class _Wrapped(nn.Linear):
    """A Linear subclass that delegates to an inner Linear: two layers produce one tensor."""

    def __init__(self) -> None:
        super().__init__(P, C)
        self.inner = nn.Linear(P, C)

    def forward(self, x):
        return self.inner(x)


class _Ambiguous(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.kind = kind
        self.body = nn.Sequential(nn.Linear(5, P), nn.Tanh())
        self.fc = _Wrapped() if kind == "wrapped" else nn.Linear(P, C)
        self.aux = nn.Linear(P, C)

    def forward(self, x):
        h = self.body(x)
        logits = self.fc(h)
        if self.kind == "tuple":
            return logits, self.aux(h)
        if self.kind == "dict":
            return {"logits": logits}
        if self.kind == "scaled":
            return 2 * logits
        if self.kind == "in_place":
            return logits.add_(self.aux(h))
        return logits


def _float_loader(n: int = 120):
    g = torch.Generator().manual_seed(6)
    y = torch.randperm(n, generator=g) % C
    X = 2 * torch.randn(C, 5, generator=g)[y] + torch.randn(n, 5, generator=g)
    return X, y, DataLoader(TensorDataset(X, y), batch_size=32)


def _features_result(model, head, body, X, y):
    with torch.no_grad():
        feats = body(X)
    return ncmse.measure_features(feats, y, head.weight, head.bias, num_classes=C, lam=0.01)


@pytest.mark.parametrize("model_type", [_AuxAfter, _HeadFirst])
def test_the_classifier_is_the_layer_whose_output_the_model_returns(model_type):
    """Issue 19 item 4: the layer is found by execution, not by definition order."""
    X, y, loader = _float_loader()
    model = model_type()
    head = model.fc if model_type is _AuxAfter else model.head
    want = _features_result(model, head, model.body, X, y).to_dict()
    _assert_same(ncmse.measure(model, loader, lam=0.01).to_dict(), want)
    # the explicit classifier gives the same, and measuring the auxiliary head stays possible
    _assert_same(ncmse.measure(model, loader, lam=0.01, classifier=head).to_dict(), want)
    if model_type is _AuxAfter:
        aux = ncmse.measure(model, loader, lam=0.01, classifier=model.aux).to_dict()
        _assert_same(aux, _features_result(model, model.aux, nn.Identity(), X, y).to_dict())


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("tuple", "returns a tuple"),
        ("dict", "returns a dict"),
        ("wrapped", "several nn.Linear layers produce the model's output"),
        ("scaled", "no nn.Linear .* produces its output"),
        ("in_place", "no nn.Linear .* produces its output"),
    ],
)
def test_an_undecidable_classifier_asks_for_it(kind, message):
    X, y, loader = _float_loader()
    model = _Ambiguous(kind)
    with pytest.raises(InputError, match=message) as info:
        ncmse.measure(model, loader)
    assert "classifier=" in str(info.value) and "\n" not in str(info.value)
    if kind in ("tuple", "dict", "scaled"):  # named explicitly, it is measured
        got = ncmse.measure(model, loader, lam=0.01, classifier=model.fc).to_dict()
        _assert_same(got, _features_result(model, model.fc, model.body, X, y).to_dict())


def test_a_plain_model_is_unchanged_and_its_mode_restored():
    """Positive control: a standard classifier (Sequential ending in its head) is found."""
    X, y, loader = _float_loader()
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, P), nn.Dropout(0.3), nn.Tanh(), nn.Linear(P, C))
    model.train()
    got = ncmse.measure(model, loader, lam=0.01).to_dict()
    assert model.training
    model.eval()
    want = _features_result(model, model[-1], model[:-1], X, y).to_dict()
    _assert_same(got, want)
    _assert_same(ncmse.measure(nn.DataParallel(model), loader, lam=0.01).to_dict(), want)


def test_a_classifier_run_twice_per_batch_is_an_error():
    """A layer applied twice (e.g. weight tying by reuse) has no single input to measure."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(5, C)
            self.fc = nn.Linear(C, C)

        def forward(self, x):
            return self.fc(self.fc(self.body(x)))

    _, _, loader = _float_loader()
    with pytest.raises(InputError, match="ran 2 times in one forward pass") as info:
        ncmse.measure(Twice(), loader)
    assert "measure_stream" in str(info.value)


def test_an_explicit_shard_measurement_does_not_warn():
    X, y, model = _data()
    ds = TensorDataset(X, y)
    loader = DataLoader(ds, batch_size=16, sampler=DistributedSampler(ds, 2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        assert ncmse.measure(model, loader, distributed=False).num_samples == 50
