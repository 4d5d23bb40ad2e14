"""The parties and records of one tree round: inner protocols per edge, the outer one.

Helpers of :mod:`fedstrata.secagg.tree` (split out to keep modules small): the
state of each edge's inner protocol (devices + the edge as server, devices sealing
their self-mask shares to the center, Bonawitz et al., CCS 2017 with the two-tier
change of :mod:`fedstrata.secagg.twotier`), the outer protocol among edges, and the
pure helpers that turn a client's ring payload into its protocol input ``[w q, w]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from fedstrata.aggregation.metrics import MetricSums
from fedstrata.core.params import FloatVector
from fedstrata.errors import AggregationError, ConfigError, PayloadError
from fedstrata.secagg.client import ClientProtocol
from fedstrata.secagg.codec import RingCodec, RingMessage, lift
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.prg import Entropy, MaskExpander, PairSecrets, U32Vector
from fedstrata.secagg.server import ServerProtocol
from fedstrata.secagg.shamir import ShamirScheme
from fedstrata.secagg.simulate import PartyMeter, drive_offline
from fedstrata.secagg.twotier import ClusterReport

if TYPE_CHECKING:
    from fedstrata.secagg.options import SecAggOptions
    from fedstrata.secagg.tree_cost import TreeSecAggCost

__all__ = [
    "EdgeOutcome",
    "EdgeParties",
    "Keying",
    "ProtocolInstance",
    "TreeAggregate",
    "TreeSecAggOptions",
    "check_ring_round",
    "check_tree",
    "decode_mean",
    "edge_value",
    "metric_means",
]


@dataclass(frozen=True)
class TreeSecAggOptions:
    """Protocol parameters of :class:`TreeSecAgg`.

    Attributes:
        max_weight: cap on a client's integer aggregation weight (1: uniform).
        dropout_rate: planned dropout rate, for each protocol's degree and threshold.
        sparse_graph: SecAgg+ neighbour graph where it is secure (else the full graph).
        precompute_masks: expand masks during key agreement (off the critical path).
        security_bits: statistical security of the graph parameters.
        root_seed: seeds every simulated party's secrets per round (not secure).
        secure: run the protocol; ``False`` sums the same ring inputs in the clear
            along the same tree (the reference the protocol must equal).
        round_weights: weights times ``weight_scale`` are rounded to integers >= 1
            (settlement weights, weights quantized to ``max_weight`` levels), as in
            the flat :class:`~fedstrata.secagg.SecAggOptions`.
        weight_scale: see ``round_weights``.
        min_survivors: distributed DP: fewer surviving clients in the whole tree than
            this and the driver releases nothing (their noise shares are what the
            accountant assumed); 0: no floor.
    """

    max_weight: int = 1
    dropout_rate: float = 0.1
    sparse_graph: bool = True
    precompute_masks: bool = False
    security_bits: int = 40
    root_seed: int = 0
    secure: bool = True
    round_weights: bool = False
    weight_scale: float = 1.0
    min_survivors: int = 0

    @classmethod
    def like(cls, flat: SecAggOptions) -> TreeSecAggOptions:
        """The same protocol parameters as a flat run's (the cohort size aside: every
        cluster sizes its own protocol)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in asdict(flat).items() if k in names})

    def __post_init__(self) -> None:
        if self.max_weight < 1:
            raise ConfigError(f"TreeSecAggOptions.max_weight must be >= 1, got {self.max_weight}")
        if not (np.isfinite(self.weight_scale) and self.weight_scale > 0):
            raise ConfigError(
                f"TreeSecAggOptions.weight_scale must be finite and > 0, got {self.weight_scale}"
            )


@dataclass(frozen=True, eq=False)
class EdgeOutcome:
    """An edge after its inner protocol: what it sends up, and who is in it.

    Attributes:
        edge: the edge's name; ``region``: the region above it, if any.
        value: ``S_e + B_e``, the cluster sum under the cluster mask (``S_e``
            when not secure); its last element carries the masked weight sum.
        report: the sealed self-mask shares forwarded unopened to the center.
        survivors: client ids whose input is in ``value``.
        dropped: selected client ids recovered as dropouts.
    """

    edge: str
    region: str | None
    value: U32Vector
    report: ClusterReport | None
    survivors: frozenset[int]
    dropped: frozenset[int]


@dataclass(frozen=True, eq=False)
class TreeAggregate:
    """The round's result.

    Attributes:
        mean: the weighted mean update, dense float32 (random-k rescaled).
        ring_total: the unmasked ring sum ``[sum(w q), sum(w)]`` of the survivors.
        total_weight: ``sum(w)`` over the survivors.
        survivors: per edge that arrived, the client ids in the sum.
        failed_edges: per edge left out, why.
        cost: every party's compute and bytes.
        metrics: weighted means of the client-reported metrics of the survivors
            under the edges that arrived (metrics travel outside the protocol).
        weights_capped: clients whose weight was capped at ``max_weight``.
    """

    mean: FloatVector
    ring_total: U32Vector
    total_weight: int
    survivors: Mapping[str, frozenset[int]]
    failed_edges: Mapping[str, str]
    cost: TreeSecAggCost
    metrics: dict[str, float]
    weights_capped: int


def check_tree(clusters: Mapping[str, Sequence[int]], regions: Mapping[str, str] | None) -> None:
    """Check a round's clusters and region map.

    Raises:
        ConfigError: see :meth:`~fedstrata.secagg.tree.TreeSecAgg.start_round`.
    """
    if not clusters:
        raise ConfigError("tree secure aggregation needs at least one edge, got none")
    seen: set[int] = set()
    for edge, ids in clusters.items():
        if len(set(ids)) != len(ids) or len(ids) < 2:
            raise ConfigError(
                f"edge {edge!r}: needs >= 2 distinct clients for secure aggregation (the sum "
                f"of one client reveals it), got {list(ids)}"
            )
        if seen & set(ids):
            raise ConfigError(f"edge {edge!r}: clients {sorted(seen & set(ids))} in two edges")
        seen |= set(ids)
    if regions is not None and set(regions) != set(clusters):
        raise ConfigError(
            f"regions must map every edge to its region: edges {sorted(clusters)}, "
            f"mapped {sorted(regions)}"
        )


@dataclass(frozen=True)
class Keying:
    """What every party of a round shares in the simulation.

    Attributes:
        entropy: seeds every party's secrets (reproducible, not secure).
        expander: one PRG buffer set for every party (the simulation is serial).
        round_id: the round (part of every key and mask derivation).
        center_public: the center's X25519 key the devices seal to.
        pairs: each pair secret computed once for both ends, charged to both.
    """

    entropy: Entropy
    expander: MaskExpander
    round_id: int
    center_public: bytes | None
    pairs: PairSecrets


@dataclass(eq=False)
class ProtocolInstance:
    """One run of the protocol: its clients, server and cost meter.

    ``start`` runs the offline phase (setup, keys, shares) at once: in a deployment
    that happens while the devices train.
    """

    config: SecAggConfig
    clients: list[ClientProtocol]
    server: ServerProtocol
    meter: PartyMeter

    @classmethod
    def start(
        cls, config: SecAggConfig, scheme: ShamirScheme, keying: Keying, *, inner: bool
    ) -> ProtocolInstance:
        """Build the parties (inner: seal self-mask shares, keep self-masks) and key them."""
        center = keying.center_public if inner else None
        clients = [
            ClientProtocol(
                config,
                i,
                entropy=keying.entropy,
                scheme=scheme,
                expander=keying.expander,
                center_public=center,
                pairs=keying.pairs,
            )
            for i in range(config.num_clients)
        ]
        server = ServerProtocol(
            config,
            keying.round_id,
            entropy=keying.entropy,
            scheme=scheme,
            expander=keying.expander,
            remove_self_masks=not inner,
            pairs=keying.pairs,
        )
        meter = PartyMeter(config.num_clients, keying.pairs)
        drive_offline(clients, server, meter)
        return cls(config, clients, server, meter)

    def deliver(self, index: int, vector: U32Vector) -> None:
        """Client ``index`` masks ``vector`` and the server adds it to its sum."""
        msg = self.meter.client_input(index, self.clients[index].masked_input, vector)
        self.meter.up[index] += msg.nbytes
        self.meter.serve_input(self.server.receive_masked_input, msg)


@dataclass(eq=False)
class EdgeParties:
    """One edge's state in the round.

    Attributes:
        name: the edge; ``region``: the region above it (``None``: directly under
            the center).
        ids: the selected client ids, in local order (local id = position).
        protocol: the inner protocol (``None`` when not secure).
        plain: the plaintext sum (only when not secure).
        folded: local ids whose input is in the edge's sum.
        metrics: weighted sums of their reported metrics (outside the protocol).
        value: ``S_e + B_e`` once closed (``S_e`` when not secure).
        report: what the edge forwards to the center (sealed shares).
        failed: why the edge is out of the round (``None``: not failed).
    """

    name: str
    region: str | None
    ids: tuple[int, ...]
    protocol: ProtocolInstance | None
    plain: U32Vector | None
    folded: set[int] = field(default_factory=set)
    metrics: MetricSums = field(default_factory=MetricSums)
    value: U32Vector | None = None
    report: ClusterReport | None = None
    failed: str | None = None

    @property
    def local(self) -> dict[int, int]:
        """Client id -> local id."""
        return {cid: i for i, cid in enumerate(self.ids)}

    @property
    def arrived(self) -> bool:
        """Closed and not failed: its value is in the center's sum."""
        return self.value is not None and self.failed is None

    @property
    def survivors(self) -> frozenset[int]:
        """Client ids whose input is in the edge's value."""
        return frozenset(self.ids[i] for i in self.folded)


def check_ring_round(msg: RingMessage, round_idx: int, seed: int | None) -> None:
    """Check that a payload belongs to this round and its random-k support.

    Raises:
        PayloadError: another round, or another support seed than the first payload's.
    """
    if msg.round_idx != round_idx:
        raise PayloadError(
            f"ring payload is for round {msg.round_idx}, but this tree round is {round_idx}"
        )
    if seed is not None and msg.seed != seed:
        raise PayloadError(
            f"ring payload has support seed {msg.seed}, but this round's payloads use {seed}"
        )


def edge_value(parties: EdgeParties) -> U32Vector:
    """The value a closed edge sends up.

    Raises:
        AggregationError: the edge was not closed.
    """
    if parties.value is None:
        raise AggregationError(f"edge {parties.name!r} has no value (not closed)")
    return parties.value


def metric_means(arrived: Sequence[EdgeParties]) -> dict[str, float]:
    """Weighted means of the client metrics under the edges in the sum."""
    sums = MetricSums()
    for parties in arrived:
        sums.merge(parties.metrics)
    return sums.means()


def decode_mean(
    codec: RingCodec, total: U32Vector, seed: int, round_idx: int
) -> tuple[FloatVector, int]:
    """``sum(w q) / (scale * sum(w))`` on the support (random-k rescaled), and ``sum(w)``.

    Raises:
        AggregationError: a total weight of 0 or less.
    """
    lifted = lift(total, codec.spec.modulus_bits)
    weight = int(lifted[-1])
    if weight <= 0:
        raise AggregationError(
            f"round {round_idx}: cannot decode a secure sum with total weight {weight}"
        )
    real = lifted[:-1] / (codec.spec.scale * weight)
    return codec.to_dense(real, seed).astype(np.float32), weight
