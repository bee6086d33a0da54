"""Which runs may be compared: MSE ↔ CE pairs, seed groups, claim 4 over seeds (SPEC §7).

Used by ``ncmse report`` over several runs (:mod:`ncmse.report.compare`) and by ``ncmse sweep``
(:mod:`ncmse.sweep.collect`), so both pair and count the same way.

**Pairs.** An MSE run and a cross-entropy run are paired only when their whole resolved
configurations (``config.yaml``) agree except

* the keys that belong to a loss, :data:`LOSS_KEYS`: ``loss``, ``mse_reduction``, ``rescale_k``,
  ``rescale_m`` (parameters of the loss function) and ``lam`` (the λ at which the MSE
  decomposition is reported; null = derived from the loss and the weight decay), and
  :data:`TUNED_PER_LOSS`: ``lr``, which the protocol selects for each loss separately (SPEC §6);
* the keys that name or file a run without changing what is trained or measured,
  :data:`RECORD_KEYS`: ``name`` and :data:`RUN_CONTROL_KEYS` (where data and outputs go,
  logging, checkpoint frequency, device, threads, measurement batching, how a step is launched —
  the keys a sweep also ignores when it compares a run directory with its plan).

Everything else — dataset, model and ``model_kwargs`` (width, depth, BatchNorm), weight
decay, momentum, schedule, epochs, batch size, measurement epochs, seed, precision,
``freeze_features`` — must be equal. A key missing from one config.yaml (written before the
key existed) counts as its default value in :class:`ncmse.train.config.Config`. Runs that cannot be
paired are listed with the reason (no partner with the same configuration — naming the keys in
which the closest one differs —, several candidates, not finished, no config.yaml, a loss other
than MSE or CE).

**Seed groups.** Runs whose configurations differ only in ``seed`` (and :data:`RECORD_KEYS`)
form a group: the per-run claims are counted over it as "holds in k of n", and the pairs of a
group give claim 4:

    gap_s = 100 · (test accuracy(MSE, seed s) − test accuracy(CE, seed s))   [points]
    mean ± t_{0.975, n−1} · sd / √n   (Student t, sd with ddof 1)

Claim 4 holds when that whole 95 % interval lies within ±1 point, fails when it lies wholly
outside, and is inconclusive otherwise; one pair has no interval and is inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncmse.verdicts.claims import CLAIM_IDS, claims_are_current, loss_kind, outcome_of

__all__ = [
    "GAP_THRESHOLD_PP",
    "LOSS_KEYS",
    "PAIR_FREE_KEYS",
    "OUTCOMES",
    "RECORD_KEYS",
    "RUN_CONTROL_KEYS",
    "RunEntry",
    "Pairing",
    "SOURCE_STALE",
    "TUNED_PER_LOSS",
    "claim_counts",
    "config_differences",
    "current_claims",
    "distinct_labels",
    "gap_verdict",
    "group_by_config",
    "pair_runs",
    "seed_groups",
]

#: config keys that belong to a loss: they may differ between an MSE run and its CE partner
LOSS_KEYS: tuple[str, ...] = ("loss", "mse_reduction", "rescale_k", "rescale_m", "lam")
#: keys the protocol tunes separately for each loss: the learning rate is selected per loss by
#: final test error (SPEC §6), and nn.MSELoss's mean over the C outputs makes MSE gradients ~C
#: times smaller than cross-entropy's, so the two losses' best rates differ by design
TUNED_PER_LOSS: tuple[str, ...] = ("lr",)
#: what may differ between the MSE and the CE run of a pair (besides :data:`RECORD_KEYS`)
PAIR_FREE_KEYS: tuple[str, ...] = (*LOSS_KEYS, *TUNED_PER_LOSS)
#: config keys that do not change the result of a run: where data and outputs go, logging,
#: checkpoint frequency, threads, measurement batching, how a step is launched (also ignored when
#: a sweep compares a run directory with its planned config)
RUN_CONTROL_KEYS: frozenset[str] = frozenset(
    {
        "data_dir",
        "download",
        "device",
        "num_threads",
        "checkpoint_every",
        "tensorboard",
        "quiet",
        "report",
        "dist_backend",
        "measure_batch_size",
        "memory_budget_bytes",
        "cuda_graph",  # how the step is launched, not what it computes
        "channels_last",  # memory layout: rounding-level differences only, like ``device``
    }
)
#: keys ignored when runs are compared: the run's name (a label) and :data:`RUN_CONTROL_KEYS`
RECORD_KEYS: tuple[str, ...] = ("name", *sorted(RUN_CONTROL_KEYS))
#: claim 4 holds when the 95 % interval of the mean MSE − CE gap lies within ± this, in points
GAP_THRESHOLD_PP = 1.0
#: the four outcomes of a claim (:func:`ncmse.verdicts.claims.outcome_of`), in display order
OUTCOMES: tuple[str, ...] = ("holds", "fails", "inconclusive", "not applicable")
#: accuracies are fractions k/N: a bound at exactly 1 point must not flip on rounding
_EDGE = 1e-12


@dataclass(frozen=True)
class RunEntry:
    """What the pairing needs to know about one run.

    Attributes
    ----------
    name : str
        The run's label (unique among the runs compared; :func:`distinct_labels`).
    loss : str or None
        Training loss (``mse``, ``ce``, ``rescaled_mse``).
    config : mapping or None
        The run's resolved configuration (config.yaml); None when the run has none.
    status : str or None
        summary.json ``status`` (only ``"finished"`` runs are paired).
    test_accuracy : float or None
        Final test accuracy, a fraction in [0, 1].
    claims : tuple of mapping
        The run's SPEC §7 claim records.
    describe : mapping
        ``dataset``, ``model``, ``seed`` for display.
    """

    name: str
    loss: str | None
    config: Mapping[str, Any] | None
    status: str | None = "finished"
    test_accuracy: float | None = None
    claims: tuple[Mapping[str, Any], ...] = ()
    describe: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Pairing:
    """Result of :func:`pair_runs`.

    Attributes
    ----------
    pairs : list of dict
        One record per MSE–CE pair (see :func:`pair_runs`).
    unpaired : list of dict
        ``{"run", "loss", "reason"}`` for every run that got no partner.
    groups : list of dict
        Claim 4 per seed group of pairs (see :func:`gap_verdict`).
    """

    pairs: list[dict[str, Any]]
    unpaired: list[dict[str, Any]]
    groups: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# claims of a loaded run
# --------------------------------------------------------------------------------------------

#: source of claims re-evaluated because the run recorded them in an older format
SOURCE_STALE = (
    "computed from the metrics file (the claims the run recorded predate the current rules)"
)


def current_claims(run: Any) -> tuple[list[dict[str, Any]], str]:
    """A loaded run's claims in the current schema and where they came from.

    Recorded claims are used when :func:`ncmse.verdicts.claims.claims_are_current`; stale ones are
    re-evaluated from the run's rows (:func:`ncmse.verdicts.record.run_claims` of the run without
    its
    recorded claims).
    """
    from ncmse.verdicts.record import run_claims  # lazy (as scipy below): sweep loads no scipy

    recorded = run.summary.get("claims")
    if recorded is None or claims_are_current(recorded):
        return run_claims(run)
    summary = {k: v for k, v in run.summary.items() if k != "claims"}
    claims, _ = run_claims(dataclasses.replace(run, summary=summary))
    return claims, SOURCE_STALE


# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    """:class:`ncmse.train.config.Config` defaults (imported lazily: it pulls in torch)."""
    try:
        from ncmse.train.config import Config
    except ImportError:  # pragma: no cover - torch missing
        return {}
    return Config().to_dict()


def _canonical(value: Any) -> Any:
    """A hashable, order-free form of a config value (ints and equal floats compare equal)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _compared(config: Mapping[str, Any], drop: Iterable[str]) -> dict[str, Any]:
    """The keys of ``config`` that must agree, defaults filled in, ``drop`` left out."""
    skip = set(RECORD_KEYS) | set(drop)
    full = {**_defaults(), **dict(config)}
    return {k: _canonical(v) for k, v in full.items() if k not in skip}


def _key(config: Mapping[str, Any], drop: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(_compared(config, drop).items(), key=lambda kv: kv[0]))


def config_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], *, drop: Iterable[str] = PAIR_FREE_KEYS
) -> list[str]:
    """Keys whose values differ between two configs (``drop`` and :data:`RECORD_KEYS` ignored).

    Returns
    -------
    list of str
        Sorted key names; empty when the configurations may be compared.
    """
    ca, cb = _compared(a, drop), _compared(b, drop)
    return sorted(k for k in ca.keys() | cb.keys() if ca.get(k, _MISSING) != cb.get(k, _MISSING))


_MISSING = object()


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------


def distinct_labels(paths: Sequence[str | Path]) -> list[str]:
    """The shortest path suffix of each path that no other path ends with.

    ``a/base`` and ``b/base`` → ``a/base``, ``b/base``; ``x/r1`` and ``y/r2`` → ``r1``, ``r2``.
    A path given twice keeps its whole (resolved) path.
    """
    parts = [Path(p).expanduser().resolve().parts for p in paths]
    labels = []
    for i, mine in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i]
        for k in range(1, len(mine) + 1):
            if all(p[-k:] != mine[-k:] for p in others):
                labels.append("/".join(mine[-k:]))
                break
        else:
            labels.append(str(Path(*mine)))
    return labels


# --------------------------------------------------------------------------------------------
# pairs and claim 4
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _why_not_candidate(run: RunEntry) -> str:
    """Why ``run`` cannot take part in an MSE–CE pair ("" when it can)."""
    kind = loss_kind(run.loss)
    if kind not in ("mse", "ce"):
        return f"loss {kind} is neither MSE nor cross-entropy"
    if run.status != "finished":
        return f"status {run.status or 'unknown'}: only finished runs are paired"
    if not run.config:
        return "no config.yaml: its configuration cannot be compared with a partner's"
    return ""


def _closest(run: RunEntry, others: Sequence[RunEntry]) -> str:
    """Reason text naming the closest run of the other loss and the keys it differs in."""
    partner = "CE" if loss_kind(run.loss) == "mse" else "MSE"
    if not others:
        return f"no finished {partner} run to pair with"
    diffs = [(config_differences(run.config or {}, o.config or {}), o.name) for o in others]
    keys, name = min(diffs, key=lambda d: (len(d[0]), d[1]))
    shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
    return (
        f"no {partner} run with the same configuration (apart from the loss); the closest, "
        f"{name}, differs in {shown}"
    )


def pair_runs(runs: Sequence[RunEntry]) -> Pairing:
    """Pair MSE and CE runs whose configurations agree but for the loss keys (SPEC §7, claim 4).

    Parameters
    ----------
    runs : sequence of RunEntry
        The runs compared (any loss and status).

    Returns
    -------
    Pairing
        ``pairs``: ``{"dataset", "model", "seed", "mse_run", "ce_run", "mse_test_accuracy",
        "ce_test_accuracy", "value", "reason"}`` with ``value`` = 100 · (MSE − CE) test accuracy
        in points (None, with the reason, when an accuracy is unknown), sorted by dataset,
        model, seed. ``unpaired``: the other runs with the reason. ``groups``: claim 4 per seed
        group (:func:`gap_verdict`).
    """
    unpaired: list[dict[str, Any]] = []
    candidates: list[RunEntry] = []
    for run in runs:
        reason = _why_not_candidate(run)
        if reason:
            unpaired.append({"run": run.name, "loss": loss_kind(run.loss), "reason": reason})
        else:
            candidates.append(run)
    buckets: dict[tuple, dict[str, list[RunEntry]]] = {}
    for run in candidates:
        key = _key(run.config or {}, PAIR_FREE_KEYS)
        buckets.setdefault(key, {"mse": [], "ce": []})[loss_kind(run.loss)].append(run)
    pairs = []
    for by_loss in buckets.values():
        mse, ce = by_loss["mse"], by_loss["ce"]
        if len(mse) == 1 and len(ce) == 1:
            pairs.append(_pair_record(mse[0], ce[0]))
            continue
        for run in mse + ce:
            same = mse if loss_kind(run.loss) == "mse" else ce
            other = ce if same is mse else mse
            if other and len(same) + len(other) > 2:
                reason = (
                    f"{len(mse)} MSE and {len(ce)} CE runs share this configuration (repeated "
                    "runs?): which to pair is ambiguous"
                )
            else:
                pool = [c for c in candidates if loss_kind(c.loss) != loss_kind(run.loss)]
                reason = _closest(run, pool)
            unpaired.append({"run": run.name, "loss": loss_kind(run.loss), "reason": reason})
    pairs.sort(key=lambda p: (str(p["dataset"]), str(p["model"]), _seed_order(p["seed"])))
    order = {r.name: i for i, r in enumerate(runs)}
    unpaired.sort(key=lambda u: order.get(u["run"], 0))
    return Pairing(pairs, unpaired, _gap_groups(pairs))


def _seed_order(seed: Any) -> tuple[int, Any]:
    number = _finite(seed) if not isinstance(seed, str) else None
    if number is None and isinstance(seed, str):
        try:
            number = float(seed)
        except ValueError:
            number = None
    return (0, number) if number is not None else (1, str(seed))


def _pair_record(mse: RunEntry, ce: RunEntry) -> dict[str, Any]:
    a, b = _finite(mse.test_accuracy), _finite(ce.test_accuracy)
    record: dict[str, Any] = {
        "dataset": mse.describe.get("dataset"),
        "model": mse.describe.get("model"),
        "seed": mse.describe.get("seed", (mse.config or {}).get("seed")),
        "mse_run": mse.name,
        "ce_run": ce.name,
        "mse_test_accuracy": a,
        "ce_test_accuracy": b,
        "value": None if a is None or b is None else 100.0 * (a - b),
        "reason": ""
        if a is not None and b is not None
        else ("test accuracy not measured (measure_test) in one of the runs"),  # fmt: skip
        "_key": _key(mse.config or {}, (*PAIR_FREE_KEYS, "seed")),
    }
    return record


def _gap_groups(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim 4 per seed group; removes the internal ``_key`` of each pair."""
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for pair in pairs:
        grouped.setdefault(pair.pop("_key"), []).append(pair)
    labels = _group_labels(list(grouped))
    out = []
    for members, label in zip(grouped.values(), labels):
        gaps = [p["value"] for p in members if p["value"] is not None]
        record = gap_verdict(gaps)
        record.update(
            group=label,
            dataset=members[0]["dataset"],
            model=members[0]["model"],
            seeds=[p["seed"] for p in members],
            mse_runs=[p["mse_run"] for p in members],
            ce_runs=[p["ce_run"] for p in members],
        )
        for pair in members:
            pair["group"] = label
        out.append(record)
    return out


def gap_verdict(gaps: Sequence[float]) -> dict[str, Any]:
    """Claim 4 over the paired seeds of one configuration.

    Parameters
    ----------
    gaps : sequence of float
        MSE − CE test accuracy per paired seed, in percentage points, shape (n,).

    Returns
    -------
    dict
        ``{"id": "accuracy_gap", "statement", "n", "gaps", "value", "interval", "threshold",
        "noise", "holds", "reason"}``: ``value`` the mean gap, ``interval`` the 95 % Student-t
        interval mean ± t_{0.975, n−1} · sd / √n ([mean, mean] when every gap is equal; None
        for fewer than two pairs), ``noise`` the standard error sd / √n, ``holds`` True when
        the interval lies within ±:data:`GAP_THRESHOLD_PP`, False when wholly outside, None
        otherwise (with the reason).
    """
    from scipy import stats

    values = [float(g) for g in gaps]
    n = len(values)
    record: dict[str, Any] = {
        "id": "accuracy_gap",
        "statement": "MSE test accuracy is comparable to cross-entropy on the same network and "
        "data (mean MSE − CE gap over paired seeds, 95 % interval, points)",
        "n": n,
        "gaps": values,
        "value": float(np.mean(values)) if values else None,
        "interval": None,
        "threshold": GAP_THRESHOLD_PP,
        "noise": None,
        "holds": None,
        "reason": "",
    }
    if n == 0:
        record["reason"] = "no paired seed with both test accuracies measured"
        return record
    if n == 1:
        record["reason"] = (
            f"one paired seed (gap {values[0]:+.3g} points): no confidence interval; "
            "run at least two seeds of both losses"
        )
        return record
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * sem
    mean = record["value"]
    low, high = mean - half, mean + half
    record["interval"] = [low, high]
    record["noise"] = sem
    bound = GAP_THRESHOLD_PP * (1.0 + _EDGE)
    text = f"95 % interval [{low:+.3g}, {high:+.3g}] over {n} seeds"
    if low >= -bound and high <= bound:
        record["holds"] = True
        record["reason"] = f"{text} lies within ±{GAP_THRESHOLD_PP:g} point"
    elif low > bound or high < -bound:
        record["holds"] = False
        record["reason"] = f"{text} lies wholly outside ±{GAP_THRESHOLD_PP:g} point"
    else:
        record["reason"] = (
            f"{text} overlaps the ±{GAP_THRESHOLD_PP:g} point bound: within noise of the "
            "threshold (more seeds narrow it)"
        )
    return record


# --------------------------------------------------------------------------------------------
# seed groups and "holds in k of n"
# --------------------------------------------------------------------------------------------


def group_by_config(
    runs: Sequence[RunEntry], *, drop: Sequence[str] = ("seed",)
) -> list[tuple[str, list[RunEntry]]]:
    """Runs whose configurations agree except ``drop`` (and :data:`RECORD_KEYS`), labelled.

    Returns
    -------
    list of (str, list of RunEntry)
        In first-seen order: a label (``dataset/model`` and, where the loss is compared, the
        loss, plus the keys that tell groups of the same dataset/model apart, e.g. ``lr=0.01``)
        and the group's runs. A run without a config.yaml is a group of its own, labelled by
        its name.
    """
    grouped: dict[Any, list[RunEntry]] = {}
    for index, run in enumerate(runs):
        key = _key(run.config, drop) if run.config else ("no config", index)
        grouped.setdefault(key, []).append(run)
    labels = _group_labels(list(grouped))
    return [
        (label if members[0].config else members[0].name, members)
        for members, label in zip(grouped.values(), labels)
    ]


def seed_groups(runs: Sequence[RunEntry]) -> list[dict[str, Any]]:
    """Runs that differ only by seed, each group with its claim counts.

    Returns
    -------
    list of dict
        :func:`group_by_config` groups as ``{"group", "loss", "runs", "n", "claims"}`` with
        ``claims`` = :func:`claim_counts` of the group's runs that have claim records (``n``
        counts those).
    """
    out = []
    for label, members in group_by_config(runs, drop=("seed",)):
        judged = [m for m in members if m.claims]
        out.append(
            {
                "group": label,
                "loss": loss_kind(members[0].loss),
                "runs": [m.name for m in members],
                "n": len(judged),
                "claims": claim_counts([m.claims for m in judged]),
            }
        )
    return out


def claim_counts(
    claim_lists: Sequence[Sequence[Mapping[str, Any]]],
) -> dict[str, dict[str, int]]:
    """Per claim id, how many runs it holds / fails / is inconclusive / not applicable in.

    Parameters
    ----------
    claim_lists : sequence of sequence of mapping
        One list of claim records per run. A claim missing from a run's list counts as
        inconclusive there.

    Returns
    -------
    dict
        ``{claim_id: {"holds": k, "fails": f, "inconclusive": i, "not applicable": a}}`` for
        every id of :data:`ncmse.verdicts.claims.CLAIM_IDS`; the four counts add up to the number
        of runs.
    """
    counts = {cid: dict.fromkeys(OUTCOMES, 0) for cid in CLAIM_IDS}
    for claims in claim_lists:
        by_id = {str(c.get("id")): c for c in claims}
        for cid in CLAIM_IDS:
            counts[cid][outcome_of(by_id.get(cid, {}))] += 1
    return counts


def _group_labels(keys: Sequence[Any]) -> list[str]:
    """``dataset/model`` (+ ``LOSS`` when the key holds the loss) per group key, with the keys
    that tell groups of the same dataset/model apart (``lr=0.01``)."""
    configs = []
    for key in keys:
        configs.append(dict(key) if isinstance(key, tuple) and key and key[0] != "no config"
                       else {})  # fmt: skip
    base = []
    for config in configs:
        parts = [str(config.get("dataset", "?")), str(config.get("model", "?"))]
        text = "/".join(parts)
        if "loss" in config:
            text += f" {str(config['loss']).upper()}"
        base.append(text)
    labels = []
    for i, config in enumerate(configs):
        twins = [c for j, c in enumerate(configs) if j != i and base[j] == base[i]]
        differing = sorted({k for t in twins for k in config.keys() | t.keys()
                            if config.get(k) != t.get(k)})  # fmt: skip
        extra = " ".join(f"{k}={_show(config.get(k))}" for k in differing[:4])
        labels.append(f"{base[i]} {extra}".strip())
    return labels


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return format(value, "g") if isinstance(value, float) else str(value)
