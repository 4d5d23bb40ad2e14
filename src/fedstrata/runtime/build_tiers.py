"""Aggregator tiers from a :class:`~fedstrata.runtime.build.Deployment`.

A tier has two halves: :func:`edge_center`, the client-facing
:class:`~fedstrata.runtime.center.Center` serving its own clients (every connected
client trains in every round its parent runs; under ``scheduling`` its work sized by
the tier's own scheduler, or under a ``topology`` section by the center's), and
:func:`tier_aggregator`, the :class:`~fedstrata.runtime.aggregator.TierAggregator` that
registers with the parent and sends the partial up (re-compressed, or under secure
aggregation the edge's masked cluster sum). :func:`over_tiers` equips a center whose
participants are tiers. :meth:`Deployment.edge`, :meth:`Deployment.tier` and
:meth:`Deployment.center` call them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from fedstrata.aggregation import WeightedMean
from fedstrata.builders import server_optimizer
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.errors import ConfigError
from fedstrata.runtime.aggregator import TierAggregator
from fedstrata.runtime.center import Center
from fedstrata.runtime.fedeval_build import tier_desk
from fedstrata.runtime.parent_link import ParentLink
from fedstrata.runtime.secagg_tier import EdgeSecure, edge_rounds
from fedstrata.runtime.support import check_tiers
from fedstrata.runtime.tier_combos import TierClients, check_tier_combos
from fedstrata.runtime.tier_periods import TreeSpec, partial_grace_s

if TYPE_CHECKING:
    from fedstrata.runtime.build import Deployment
    from fedstrata.runtime.monitor import TierMonitor
    from fedstrata.runtime.parent_link import Reconnect
    from fedstrata.runtime.scheduling import CenterScheduler
    from fedstrata.runtime.tier_sched import EdgeFollower

__all__ = ["edge_center", "over_tiers", "tier_aggregator"]


def edge_center(
    dep: Deployment,
    clients: int,
    *,
    chunk_bytes: int,
    start_timeout_s: float | None,
    secagg_timeout_s: float,
) -> Center:
    """The client-facing center of a tier of ``dep`` serving ``clients`` clients (see
    :meth:`Deployment.edge`); ``secagg_timeout_s`` bounds a secure-aggregation step.

    Raises:
        ConfigError: ``clients`` < 1, or what tiers refuse.
    """
    if clients < 1:
        raise ConfigError(f"an aggregator tier needs clients >= 1, got {clients}")
    cfg = dep.config
    check_tiers(cfg)
    check_tier_combos(cfg, dep.num_clients)
    policy = RoundPolicy(None, 1, cfg.rounds.deadline_s, cfg.seed)
    settings = dep._settings(chunk_bytes, 1, clients)
    scheduler: CenterScheduler | EdgeFollower | None = None
    if cfg.topology.mode == "flat":
        scheduler = dep._scheduler()  # sizes its own clients' work
    elif cfg.scheduling.enabled:  # the center decides for the tree
        from fedstrata.runtime.tier_sched import EdgeFollower  # deferred: SQLAlchemy

        scheduler = EdgeFollower()
    secure = dep._secure()
    center = Center(
        dataclasses.replace(settings, start_timeout_s=start_timeout_s),
        coordinator=RoundCoordinator(policy, selector=scheduler),
        aggregator=WeightedMean() if secure is None else secure[1],
        # unused: the parent applies
        server_optimizer=server_optimizer(cfg.server, cfg.project_dir),
        codec=dep.uplink_codec(),
        downlink=dep.downlink_server(),  # a relay of the parent's messages
        scheduler=scheduler,
    )
    if secure is not None:
        center.secure = edge_rounds(secure[1], secagg_timeout_s)
    center.evaluation = tier_desk(dep, center)
    return center


def tier_aggregator(
    dep: Deployment,
    parent: ParentLink,
    center: Center,
    monitor: TierMonitor | None,
    *,
    tier_id: int,
    reconnect: Reconnect | None,
    node: str | None,
) -> TierAggregator:
    """The aggregator tier of ``dep`` serving ``center`` under ``parent`` (see
    :meth:`Deployment.tier`)."""
    secure = center.secure
    tree = None if dep.config.topology.mode == "flat" else TreeSpec.of(dep.config, dep.num_clients)
    if secure is None:
        agg = TierAggregator(
            parent, center, dep.size, monitor, codec=dep.partial_codec(),
            tier_id=tier_id, reconnect=reconnect, tree=tree, node=node,
        )  # fmt: skip
    else:
        edge = EdgeSecure.of(parent, secure.aggregator, secure)  # type: ignore[arg-type]
        agg = TierAggregator(
            parent, center, dep.size, monitor,
            tier_id=tier_id, reconnect=reconnect, secure=edge, tree=tree, node=node,
        )  # fmt: skip
    region = tree is not None and node is not None and tree.is_region(node)
    if tree is not None and region:
        tree.serve_region(center)  # its children are edge tiers
    if tree is not None and dep.config.scheduling.enabled:  # the center decides
        from fedstrata.runtime.tier_sched import follow  # deferred: SQLAlchemy

        agg.follower = follow(center, region=region)
    return agg


def over_tiers(dep: Deployment, center: Center) -> None:
    """Equip a center whose participants are aggregator tiers: ``min_clients`` over
    the tiers' clients; under a topology, the grace for the edges' partials past the
    deadline and, under ``scheduling``, the tree's scheduler (tier_sched.py)."""
    cfg, r = dep.config, dep.config.rounds
    center.tiers = TierClients(r.min_clients)
    if cfg.topology.mode == "flat":
        return
    hops = 2 if cfg.topology.regions else 1  # edges under regions send up later
    center.wait_grace_s = hops * partial_grace_s(r.deadline_s)
    if cfg.scheduling.enabled:
        from fedstrata.runtime.tier_sched import tree_scheduler  # deferred: SQLAlchemy

        flops = dep.trainer.flops_per_example
        center.tree_sched = tree_scheduler(cfg, flops, dep.size, dep.num_clients)
