"""The pair matrix (issue 12 part 3): every accepted pair of features really runs.

For each feature, :data:`EVIDENCE` declares what a run records when the feature is on
(compression: an uplink ratio above 1; privacy: the epsilon spent; ...). A pair of
features is either refused by the configuration check (with its declared reason, see
``docs/compatibility.md``) or trains a tiny federation for two rounds, after which
both features' evidence must be in the run's records; a pair that is accepted but
lacks a feature's evidence is *silently ignored*, which must never happen. Used by
``tests/test_composition.py`` and ``bench/composition.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstrata.api.runner import RunResult, run
from fedstrata.config import FedConfig, load_config
from fedstrata.config.compat import Feature
from fedstrata.config.compat_table import PAIR_BASE, feature_overrides, pair_refusal
from fedstrata.monitoring import RoundMetrics

__all__ = ["EVIDENCE", "TINY", "Evidence", "PairOutcome", "missing_evidence", "run_features"]

TINY: tuple[str, ...] = (
    *PAIR_BASE,
    "data.name=synthetic",
    "data.num_clients=8",
    "data.synthetic_max_samples=40",
    "model.kind=logreg",
    "client.epochs=1",
    "rounds.rounds=2",
    "sim.workers=0",
    "output.run_store=false",
    "output.report=false",
    "output.progress=false",
)
"""A federation that trains two rounds in a fraction of a second (every feature off)."""

Check = Callable[[FedConfig, RunResult], bool]


@dataclass(frozen=True)
class Evidence:
    """What a run records when a feature is on.

    Attributes:
        what: the evidence in words.
        check: whether a run's records hold it.
        control: overrides that switch the feature back off; when set, the evidence is
            that the final model differs from the run with them (the feature is not
            otherwise recorded, e.g. the aggregation rule).
    """

    what: str
    check: Check
    control: tuple[str, ...] = ()


def _last(r: RunResult) -> RoundMetrics:
    return r.simulation.rounds[-1]


def _every(family: str, r: RunResult) -> bool:
    """Every round recorded the typed record of ``family`` (a ``RoundMetrics`` field)."""
    return all(getattr(m, family) is not None for m in r.simulation.rounds)


def _sampled(c: FedConfig, r: RunResult) -> bool:
    trained = sum(m.clients_selected for m in r.simulation.rounds)
    return trained < c.rounds.rounds * c.data.num_clients


def _deadline(c: FedConfig, r: RunResult) -> bool:
    """Every round's collection ends by the deadline (secure aggregation's unmasking
    legs, ``protocol_sim_s``, run after it)."""
    limit = c.rounds.deadline_s
    return limit is not None and all(
        m.sim_round_s - ((m.codec and m.codec.protocol_sim_s) or 0.0) <= limit + 1e-9
        for m in r.simulation.rounds
    )


def _epsilon(c: FedConfig, r: RunResult) -> bool:
    privacy = _last(r).privacy
    return privacy is not None and 0 < privacy.epsilon_spent <= c.privacy.epsilon * (1 + 1e-6)


def _allocated(c: FedConfig, r: RunResult) -> bool:
    schedule, top = _last(r).schedule, c.scheduling.max_steps or 10**9
    return schedule is not None and schedule.target_s > 0 and schedule.mean_steps <= top


def _compressed(c: FedConfig, r: RunResult) -> bool:
    """The codec's own ratio: secure aggregation's key and share messages, which a
    tiny model's update does not outweigh, are not the codec's."""
    return all(
        m.codec is not None and (m.codec.payload_ratio or m.codec.uplink_ratio) > 1
        for m in r.simulation.rounds
    )


def _downlink(c: FedConfig, r: RunResult) -> bool:
    codec = _last(r).codec
    return codec is not None and codec.downlink_bytes_per_client < 4 * r.num_params


def _tiered(c: FedConfig, r: RunResult) -> bool:
    tiers = _last(r).tiers
    return tiers is not None and tiers.edge_ingress_bytes > 0


def _overselected(c: FedConfig, r: RunResult) -> bool:
    k = c.rounds.clients_per_round or c.data.num_clients
    return any(m.clients_selected > k for m in r.simulation.rounds)


def _whole_or_dropped(c: FedConfig, r: RunResult) -> bool:
    """Scheduler stats every round and no partial work: a late device is dropped."""
    return all(m.schedule is not None and m.schedule.partial == 0 for m in r.simulation.rounds)


def _checkpointed(c: FedConfig, r: RunResult) -> bool:
    from fedstrata.checkpoint import checkpointer_from_config
    from fedstrata.checkpoint.snapshot import EngineSnapshot

    if r.run_dir is None or not c.checkpoint.enabled:
        return False
    with checkpointer_from_config(c.checkpoint, r.run_dir) as sink:
        found = sink.latest()
    done = len(r.simulation.rounds)
    return found is not None and EngineSnapshot.from_bytes(found[1]).rounds_done == done


EVIDENCE: dict[str, Evidence] = {
    "sampling": Evidence("fewer clients trained than every client every round", _sampled),
    "deadline": Evidence(
        "every round's collection (sim_round_s less codec.protocol_sim_s) within "
        "rounds.deadline_s",
        _deadline,
    ),
    "dropout": Evidence(
        "clients that dropped out counted as failed",
        lambda c, r: sum(m.clients_failed for m in r.simulation.rounds) > 0,
    ),
    "compression": Evidence(
        "the codec's own uplink ratio (codec.payload_ratio under secure aggregation, "
        "else codec.uplink_ratio) > 1 every round",
        _compressed,
    ),
    "downlink": Evidence("codec.downlink_bytes_per_client below the dense model", _downlink),
    "privacy": Evidence("privacy.epsilon_spent recorded, within privacy.epsilon", _epsilon),
    "adaptive_clip": Evidence(
        "privacy.clip_norm (the adapted norm) recorded every round",
        lambda c, r: all(m.privacy and m.privacy.clip_norm for m in r.simulation.rounds),
    ),
    "dp_ftrl": Evidence(
        "privacy.tree_step (the round's leaf in its epoch's tree) recorded every round",
        lambda c, r: all(m.privacy and m.privacy.tree_step for m in r.simulation.rounds),
    ),
    "secagg": Evidence(
        "secure-aggregation protocol stats (secagg, or secagg_tree on a tree) every round",
        lambda c, r: _every("secagg", r) or _every("secagg_tree", r),
    ),
    "hierarchy": Evidence("tiers.edge_ingress_bytes recorded", _tiered),
    "allocation": Evidence("a round target and steps within scheduling.max_steps", _allocated),
    "oort": Evidence("scheduler stats (schedule) every round", lambda c, r: _every("schedule", r)),
    "overselect": Evidence("more clients selected than rounds.clients_per_round", _overselected),
    "drop_stragglers": Evidence(
        "scheduler stats every round with no partial work (late devices dropped)",
        _whole_or_dropped,
    ),
    "registry": Evidence(
        "device profiles merged with the registry", lambda c, r: "device profiles" in r.notes
    ),
    "async": Evidence(
        "staleness of buffered updates (fedbuff) recorded", lambda c, r: _every("fedbuff", r)
    ),
    "robust": Evidence(
        "final model differs from the weighted mean's",
        lambda c, r: True,
        control=("server.aggregator=mean",),
    ),
    "custom_aggregator": Evidence(
        "final model differs from the weighted mean's",
        lambda c, r: True,
        control=("server.aggregator=mean",),
    ),
    "fedeval": Evidence(
        "federated evaluations recorded", lambda c, r: len(r.simulation.fed_evals) > 0
    ),
    "checkpoint": Evidence(
        "the run directory's newest checkpoint holds the engine after the last round",
        _checkpointed,
    ),
}


@dataclass(frozen=True)
class PairOutcome:
    """What became of a set of features switched on together.

    Attributes:
        features: their keys.
        refused: the configuration check's message, or None when it ran.
        missing: keys of the features whose evidence the run lacks (silently ignored).
    """

    features: tuple[str, ...]
    refused: str | None
    missing: tuple[str, ...] = ()


def _run(overrides: Sequence[str]) -> tuple[FedConfig, RunResult]:
    config = load_config(overrides=[*TINY, *overrides])
    return config, run(config)


def missing_evidence(
    features: Sequence[Feature], config: FedConfig, result: RunResult, extra: Sequence[str]
) -> tuple[str, ...]:
    """Keys of ``features`` whose declared evidence ``result`` lacks.

    ``extra`` are the overrides of the run, replayed with a feature's control.
    """
    missing = []
    for f in features:
        ev = EVIDENCE[f.key]
        ok = ev.check(config, result)
        if ok and ev.control:
            _, plain = _run([*extra, *ev.control])
            ok = not np.array_equal(plain.simulation.params, result.simulation.params)
        if not ok:
            missing.append(f.key)
    return tuple(missing)


def run_features(features: Sequence[Feature], scratch: Path) -> PairOutcome:
    """Switch ``features`` on in :data:`TINY`: refused, or run and check the evidence.

    ``scratch`` holds what a feature writes (the device registry).
    """
    keys = tuple(f.key for f in features)
    if len(features) == 2:
        refused = pair_refusal(*features)
        if refused is not None:
            return PairOutcome(keys, refused)
    overrides = feature_overrides(features, str(scratch))
    config, result = _run(overrides)
    return PairOutcome(keys, None, missing_evidence(features, config, result, overrides))
