"""The features of the declared support (:mod:`fedstrata.config.compat`): how each is
switched on, detected and documented."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedstrata.config.compat_types import Feature

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = ["FEATURES"]

_ROBUST = ("median", "trimmed_mean", "krum")


def _sampling(c: FedConfig) -> bool:
    cpr, own = c.rounds.clients_per_round, c.data.name == "npz" or c.task is not None
    return cpr is not None and (own or cpr < c.data.num_clients)


_PAIR_FLAT = ("rounds.clients_per_round=4",)

FEATURES: tuple[Feature, ...] = (
    Feature(
        "sampling",
        "client sampling",
        "rounds.clients_per_round",
        "docs/simulator.md",
        _sampling,
        _PAIR_FLAT,
    ),
    Feature(
        "deadline",
        "round deadline",
        "rounds.deadline_s",
        "docs/scheduling.md",
        lambda c: c.rounds.deadline_s is not None,
        ("rounds.deadline_s=0.12",),
    ),
    Feature(
        "dropout",
        "client dropouts (simulated)",
        "devices.dropout_rate",
        "docs/simulator.md",
        lambda c: c.devices.dropout_rate > 0,
        ("devices.dropout_rate=0.2",),
        simulated="a deployment's clients drop out for real; devices.dropout_rate only "
        "models that in the simulator",
    ),
    Feature(
        "compression",
        "uplink compression",
        "compression.preset",
        "docs/compression.md",
        lambda c: c.compression.enabled,
        ("compression.preset=int8",),
    ),
    Feature(
        "downlink",
        "downlink compression",
        "downlink.preset",
        "docs/compression.md",
        lambda c: c.downlink.enabled,
        ("downlink.preset=int8",),
    ),
    Feature(
        "privacy",
        "differential privacy (central or distributed)",
        "privacy.mechanism",
        "docs/privacy.md",
        lambda c: c.privacy.enabled,
        ("privacy.mechanism=central",),
    ),
    Feature(
        "adaptive_clip",
        "adaptive clipping (central DP)",
        "privacy.adaptive_clip",
        "docs/privacy.md",
        lambda c: c.privacy.adaptive_clip,
        ("privacy.mechanism=central", "privacy.adaptive_clip=true"),
        needs=("privacy",),
    ),
    Feature(
        "dp_ftrl",
        "DP-FTRL tree aggregation (central DP)",
        "privacy.tree_aggregation",
        "docs/privacy.md",
        lambda c: c.privacy.tree_aggregation,
        ("privacy.mechanism=central", "privacy.tree_aggregation=true"),
        needs=("privacy",),
    ),
    Feature(
        "secagg",
        "secure aggregation",
        "secagg.enabled",
        "docs/secagg.md",
        lambda c: c.secagg.enabled,
        ("secagg.enabled=true", "secagg.dropout_rate=0.4"),
    ),
    Feature(
        "hierarchy",
        "hierarchical topology",
        "topology.mode",
        "docs/hierarchy.md",
        lambda c: c.topology.mode != "flat",
        (
            "topology.mode=auto",
            "topology.edge_size=2",
            "topology.edge_min=1",
            "topology.edge_max=4",
            "topology.region_min=1",
            "topology.region_size=2",
        ),
    ),
    Feature(
        "allocation",
        "work allocation",
        "scheduling.allocation",
        "docs/scheduling.md",
        lambda c: c.scheduling.allocation,
        ("scheduling.allocation=true", "rounds.deadline_s=0.3", "scheduling.max_steps=3"),
        needs=("deadline",),
    ),
    Feature(
        "oort",
        "Oort selection",
        "scheduling.selector",
        "docs/scheduling.md",
        lambda c: c.scheduling.selector == "oort",
        ("scheduling.selector=oort",),
    ),
    Feature(
        "overselect",
        "over-selection",
        "scheduling.overselect",
        "docs/scheduling.md",
        lambda c: c.scheduling.overselect > 0,
        ("scheduling.overselect=0.5", "rounds.deadline_s=0.3", *_PAIR_FLAT),
        needs=("allocation", "oort", "registry", "deadline"),
    ),
    Feature(
        "drop_stragglers",
        "dropping stragglers at the deadline",
        "scheduling.stragglers",
        "docs/scheduling.md",
        lambda c: c.scheduling.stragglers == "drop",
        ("scheduling.stragglers=drop", "rounds.deadline_s=0.3"),
        needs=("deadline",),
    ),
    Feature(
        "registry",
        "device registry",
        "scheduling.registry_url",
        "docs/scheduling.md",
        lambda c: c.scheduling.registry_url is not None,
        ("scheduling.registry_url={tmp}/devices.db",),
    ),
    Feature(
        "async",
        "buffered asynchronous aggregation (FedBuff)",
        "scheduling.async.enabled",
        "docs/scheduling.md",
        lambda c: c.scheduling.async_.enabled,
        (
            "scheduling.async.enabled=true",
            "scheduling.async.concurrency=4",
            "scheduling.async.buffer_size=3",
        ),
    ),
    Feature(
        "robust",
        "robust aggregator",
        "server.aggregator",
        "docs/configuration.md",
        lambda c: c.server.aggregator in _ROBUST,
        ("server.aggregator=median",),
    ),
    Feature(
        "custom_aggregator",
        "your own aggregator",
        "server.aggregator",
        "docs/tasks.md",
        lambda c: ":" in c.server.aggregator,
        ("server.aggregator=fedstrata.aggregation:CoordinateMedian",),
    ),
    Feature(
        "checkpoint",
        "checkpoints and resume",
        "checkpoint.enabled",
        "docs/resilience.md",
        lambda c: c.checkpoint.enabled,
        (
            "checkpoint.enabled=true",
            "checkpoint.disk_every=1",
            "output.run_store=true",
            "output.dir={tmp}/runs",
        ),
    ),
    Feature(
        "fedeval",
        "federated evaluation",
        "evaluation.every",
        "docs/tasks.md",
        lambda c: c.evaluation.enabled,
        ("evaluation.every=1", "evaluation.clients=3"),
    ),
)
