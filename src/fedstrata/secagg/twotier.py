"""Two-tier secure aggregation for a tree: devices -> edges -> center.

Each edge runs the inner protocol (Bonawitz et al., CCS 2017, with the SecAgg+
graph of Bell et al., CCS 2020) as the server of its cluster, with one change:
devices seal their self-mask shares to the center's public key
(:mod:`fedstrata.secagg.sealing`). The device pairwise masks cancel at the edge
(dropped devices' masks are recovered there from key shares), but the survivors'
self-masks stay: the edge holds ``S_e + B_e``, its cluster's sum ``S_e`` plus the
cluster mask ``B_e = sum of PRG(b_u)``, which it cannot remove.

Every edge then joins the outer protocol as a client with input ``S_e + B_e``;
the outer masks hide each edge's value from the center, which learns only
``sum_e (S_e + B_e)``. The center opens the sealed shares, rebuilds every
surviving device's seed, and subtracts ``sum_e B_e``: the cluster masks are
removed only in aggregate, so the center learns the global sum and nothing per
edge or per device. The scheme assumes edges and center do not collude.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedstrata.errors import ConfigError
from fedstrata.secagg.client import ClientProtocol
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.graph import NeighbourGraph
from fedstrata.secagg.messages import MaskedInput, SealedShares
from fedstrata.secagg.prg import SEED_BYTES, Entropy, MaskExpander, U32Vector, new_private_key
from fedstrata.secagg.recovery import rebuild_secrets
from fedstrata.secagg.sealing import open_sealed
from fedstrata.secagg.server import ServerProtocol
from fedstrata.secagg.shamir import ShamirScheme
from fedstrata.secagg.simulate import RoundStats, drive_round

__all__ = ["ClusterReport", "TwoTierResult", "TwoTierSecAgg", "remove_cluster_masks"]


@dataclass(frozen=True, eq=False)
class ClusterReport:
    """What an edge forwards to the center besides its outer-protocol messages.

    Attributes:
        threshold: the inner protocol's Shamir threshold.
        round_id: the inner round id (part of the mask derivation).
        survivors: devices whose input is in the edge's value.
        sealed: the devices' sealed self-mask shares, unopened.
        graph: the inner protocol's public neighbour graph (size, degree, seed): a
            holder's box holds the shares of its surviving neighbours, in id order.
    """

    threshold: int
    round_id: int
    survivors: frozenset[int]
    sealed: tuple[SealedShares, ...]
    graph: NeighbourGraph

    def owners(self, holder: int) -> list[int]:
        """The devices whose self-mask shares ``holder`` sealed: its surviving neighbours."""
        return sorted(int(v) for v in self.graph.neighbours(holder) if int(v) in self.survivors)


def remove_cluster_masks(
    total: U32Vector,
    reports: Sequence[ClusterReport],
    center_private: X25519PrivateKey,
    expander: MaskExpander,
) -> None:
    """Subtract every cluster mask from ``total`` in place (the center's last step).

    Raises:
        ProtocolError: a sealed box fails authentication.
        SecAggError: a device's seed has fewer than ``threshold`` shares.
    """
    for report in reports:
        shares: dict[int, Mapping[int, bytes]] = {
            box.client_id: open_sealed(
                box, center_private, report.round_id, report.owners(box.client_id)
            )
            for box in report.sealed
        }
        owners = sorted(report.survivors)
        seeds = rebuild_secrets(owners, shares, report.threshold, "self-mask seed", SEED_BYTES)
        for seed in seeds.values():
            expander.add(total, seed, report.round_id, -1)


@dataclass(frozen=True, eq=False)
class TwoTierResult:
    """The global sum and every intermediate view (for tests and accounting).

    Attributes:
        aggregate: sum of all surviving devices' inputs under surviving edges.
        edge_views: per edge, ``{device: masked input the edge received}``.
        cluster_values: per edge, ``S_e + B_e`` (what the edge computed).
        center_views: per edge, the masked outer input the center received.
        inner_stats: per edge, the inner round's costs.
        outer_stats: the outer round's costs.
    """

    aggregate: U32Vector
    edge_views: tuple[dict[int, U32Vector], ...]
    cluster_values: tuple[U32Vector, ...]
    center_views: dict[int, U32Vector]
    inner_stats: tuple[RoundStats, ...]
    outer_stats: RoundStats


def _recorder(views: dict[int, U32Vector]) -> Callable[[MaskedInput], None]:
    def record(msg: MaskedInput) -> None:
        views[msg.client_id] = msg.vector.copy()

    return record


class TwoTierSecAgg:
    """Runs two-tier rounds in-process: inner protocols per edge, one outer protocol.

    Args:
        inner: one config per edge (its devices are ids ``0 .. n_e - 1``).
        outer: the config of the protocol among edges (``num_clients`` = edges).

    Raises:
        ConfigError: the configs disagree on the number of edges or vector length.
    """

    def __init__(self, inner: Sequence[SecAggConfig], outer: SecAggConfig) -> None:
        if len(inner) != outer.num_clients:
            raise ConfigError(
                f"TwoTierSecAgg: {len(inner)} inner configs but outer.num_clients is "
                f"{outer.num_clients}"
            )
        lengths = {c.vector_length for c in inner} | {outer.vector_length}
        if len(lengths) != 1:
            raise ConfigError(f"TwoTierSecAgg: vector lengths differ across tiers: {lengths}")
        if any(c.modulus_bits != outer.modulus_bits for c in inner):
            raise ConfigError("TwoTierSecAgg: every tier must use the same modulus_bits")
        self.inner = tuple(inner)
        self.outer = outer

    def _run_edge(
        self,
        edge: int,
        inputs: Sequence[U32Vector],
        dropped: set[int],
        ctx: tuple[Entropy, bytes, int],
    ) -> tuple[U32Vector, ClusterReport, dict[int, U32Vector], RoundStats]:
        entropy, center_public, round_id = ctx
        cfg = self.inner[edge]
        scheme = ShamirScheme(cfg.num_clients, cfg.threshold)
        expander = MaskExpander(cfg.vector_length)
        devices = [
            ClientProtocol(
                cfg,
                d,
                entropy=entropy,
                scheme=scheme,
                expander=expander,
                center_public=center_public,
            )
            for d in range(cfg.num_clients)
        ]
        server = ServerProtocol(
            cfg,
            round_id,
            entropy=entropy,
            scheme=scheme,
            expander=expander,
            remove_self_masks=False,
        )
        views: dict[int, U32Vector] = {}
        value, stats = drive_round(devices, server, inputs, dropped, observe=_recorder(views))
        report = ClusterReport(
            cfg.threshold, round_id, server.survivors, server.sealed_shares, server.graph
        )
        return value.copy(), report, views, stats

    def run(
        self,
        inputs: Sequence[Sequence[U32Vector]],
        dropped: Sequence[set[int]],
        rng: np.random.Generator | None = None,
        *,
        dropped_edges: set[int] | frozenset[int] = frozenset(),
        round_id: int = 0,
    ) -> TwoTierResult:
        """One two-tier round.

        Args:
            inputs: per edge, one uint32 vector per device.
            dropped: per edge, the devices that drop after sharing keys.
            rng: seeds every party's secrets (reproducible, NOT secure); ``None``
                uses the OS CSPRNG.
            dropped_edges: edges that drop before their outer masked input; their
                clusters are left out of the sum.
            round_id: the round number.

        Raises:
            ConfigError: ``inputs`` or ``dropped`` do not have one entry per edge.
            SecAggError: too few devices or edges survive.
        """
        if len(inputs) != len(self.inner) or len(dropped) != len(self.inner):
            raise ConfigError(f"inputs and dropped need one entry per edge ({len(self.inner)})")
        entropy = Entropy(rng)
        center_key = new_private_key(entropy)
        ctx = (entropy, center_key.public_key().public_bytes_raw(), round_id)
        edges = [self._run_edge(e, inputs[e], set(dropped[e]), ctx) for e in range(len(inputs))]
        scheme = ShamirScheme(self.outer.num_clients, self.outer.threshold)
        expander = MaskExpander(self.outer.vector_length)
        clients = [
            ClientProtocol(self.outer, e, entropy=entropy, scheme=scheme, expander=expander)
            for e in range(len(edges))
        ]
        center = ServerProtocol(
            self.outer, round_id, entropy=entropy, scheme=scheme, expander=expander
        )
        views: dict[int, U32Vector] = {}
        total, outer_stats = drive_round(
            clients, center, [e[0] for e in edges], dropped_edges, observe=_recorder(views)
        )
        reports = [edges[e][1] for e in sorted(center.survivors)]
        remove_cluster_masks(total, reports, center_key, expander)
        if self.outer.modulus_bits < 32:
            total &= np.uint32((1 << self.outer.modulus_bits) - 1)
        return TwoTierResult(
            total.copy(),
            tuple(e[2] for e in edges),
            tuple(e[0] for e in edges),
            views,
            tuple(e[3] for e in edges),
            outer_stats,
        )
