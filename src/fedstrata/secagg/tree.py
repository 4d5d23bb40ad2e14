"""Secure aggregation at every tier of an aggregation tree (issue 12 part 4).

Two-tier masks (:mod:`fedstrata.secagg.twotier`; Bonawitz et al., CCS 2017 with
the SecAgg+ graph of Bell et al., CCS 2020) driven one event at a time, so a tree
driver can fold updates as they arrive and charge the protocol's compute and bytes
to its simulated clocks:

* :meth:`TreeSecAgg.start_round` takes the round's clusters (edge name -> selected
  client ids) and runs key agreement in every edge (devices seal their self-mask
  shares to the center's key) and among the edges (the outer protocol).
* :meth:`TreeRound.fold` validates a client's :class:`~fedstrata.secagg.RingCodec`
  payload (range-checked before masking: a malformed payload raises
  :class:`~fedstrata.errors.PayloadError` and touches no sum), forms ``[w q, w]``
  with the integer weight, masks it, and adds it into its edge's masked sum.
* :meth:`TreeRound.close_edge` ends an edge's inner protocol with the clients that
  delivered; selected clients that failed or were late are dropouts, their pairwise
  masks recovered *at the edge*. The edge holds ``S_e + B_e``: its cluster sum plus
  the cluster mask (the survivors' self-masks), which it cannot remove. An edge
  with too few survivors raises :class:`~fedstrata.errors.SecAggError` naming the
  edge and the counts, before any share is revealed, and is left out of the round
  (an outer dropout); the driver catches it and goes on.
* :meth:`TreeRound.fail_edge` marks an edge whose value never reaches the center.
* :meth:`TreeRound.finalize` runs the outer protocol over the edges that arrived
  (the others are outer dropouts), opens the sealed shares, removes the cluster
  masks *in aggregate*, and decodes ``sum(w q) / sum(w)`` (random-k rescaled), as
  :class:`~fedstrata.secagg.SecAggAggregator` does. With one edge there is no outer
  protocol: the center removes ``B_e`` and learns ``S_e``, which is the global sum.

**Regions forward.** A region tier runs no masking of its own: it relays its
edges' outer messages and sealed shares (its bytes are reported, its compute is
zero). Device masks cancel in the edge, cluster masks at the center, as the issue
asks; a middle tier of masks would add a third key agreement and hide nothing the
outer masks do not already hide from the region.

Threat model: edges and the center do not collude (as for ``TwoTierSecAgg``);
an edge sees single devices only masked, the center single edges only masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import final

import numpy as np

from fedstrata.aggregation.protocol import UNKNOWN_CLIENT, check_metrics
from fedstrata.core.context import derive_rng
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError, ConfigError, PayloadError, SecAggError
from fedstrata.pipeline.stage import Codec
from fedstrata.secagg.codec import RingCodec, check_ring_fits
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.prg import (
    Entropy,
    MaskExpander,
    PairSecrets,
    U32Vector,
    new_private_key,
)
from fedstrata.secagg.ring_input import integer_weight, weighted_input
from fedstrata.secagg.shamir import ShamirScheme
from fedstrata.secagg.simulate import drive_unmask
from fedstrata.secagg.tree_cost import TreeSecAggCost, assemble_cost, forward_report
from fedstrata.secagg.tree_parties import (
    EdgeOutcome,
    EdgeParties,
    Keying,
    ProtocolInstance,
    TreeAggregate,
    TreeSecAggOptions,
    check_ring_round,
    check_tree,
    decode_mean,
    edge_value,
    metric_means,
)
from fedstrata.secagg.twotier import ClusterReport, remove_cluster_masks

__all__ = ["EdgeOutcome", "TreeAggregate", "TreeRound", "TreeSecAgg", "TreeSecAggOptions"]

logger = logging.getLogger(__name__)


@final
class TreeSecAgg:
    """Secure aggregation for a tree of aggregators (see the module docstring).

    Args:
        codec: the clients' ring codec (spec, model size, random-k support).
        options: weight cap and protocol parameters.
    """

    def __init__(self, codec: RingCodec, options: TreeSecAggOptions) -> None:
        self.codec = codec
        self.options = options
        self._configs: dict[int, tuple[SecAggConfig, ShamirScheme]] = {}

    def protocol_config(self, num_clients: int) -> tuple[SecAggConfig, ShamirScheme]:
        """The (cached) protocol parameters for ``num_clients`` parties.

        Raises:
            ConfigError: fewer than 2 parties, or invalid parameters.
        """
        if num_clients not in self._configs:
            opts = self.options
            config = SecAggConfig.for_cohort(
                num_clients,
                self.codec.count + 1,
                opts.dropout_rate,
                security_bits=opts.security_bits,
                sparse=opts.sparse_graph,
                modulus_bits=self.codec.spec.modulus_bits,
                precompute_masks=opts.precompute_masks,
            )
            scheme = ShamirScheme(config.num_clients, config.threshold)
            self._configs[num_clients] = (config, scheme)
        return self._configs[num_clients]

    def start_round(
        self,
        round_idx: int,
        clusters: Mapping[str, Sequence[int]],
        regions: Mapping[str, str] | None = None,
    ) -> TreeRound:
        """Open a round: key agreement in every edge and among the edges.

        Args:
            round_idx: the round (the payloads must name it).
            clusters: edge name -> the client ids selected under it (>= 2 each).
            regions: edge name -> region name, for a three-tier tree (regions
                forward; see the module docstring).

        Raises:
            ConfigError: no edge, an edge with fewer than 2 clients (its sum would
                reveal the client), a client in two edges, regions that do not
                cover the edges, or a cohort whose weighted sum could overflow.
        """
        check_tree(clusters, regions)
        self._check_capacity(sum(len(ids) for ids in clusters.values()))
        return TreeRound(self, round_idx, clusters, regions or {})

    def _check_capacity(self, cohort: int) -> None:
        w = self.options.max_weight
        try:
            check_ring_fits(self.codec.spec, cohort * w)
        except ConfigError as exc:
            raise ConfigError(
                f"tree secure aggregation: cohort {cohort} x max_weight {w} does not fit: {exc}"
            ) from exc


@final
class TreeRound:
    """The sans-IO state of every party in one tree round.

    Built by :meth:`TreeSecAgg.start_round`. The simulation holds every party's
    state; ``center_key`` is the center's and is used only at :meth:`finalize`.
    Not thread-safe.
    """

    def __init__(
        self,
        tree: TreeSecAgg,
        round_idx: int,
        clusters: Mapping[str, Sequence[int]],
        regions: Mapping[str, str],
    ) -> None:
        self.tree = tree
        self.round_idx = round_idx
        self.wall_s = 0.0
        self._seed: int | None = None
        self._capped = 0
        self._done = False
        self._center_unmask_s = 0.0
        with self._timed():
            entropy = Entropy(derive_rng(tree.options.root_seed, round_idx, -1, "secagg-tree"))
            self.center_key = new_private_key(entropy)
            public = self.center_key.public_key().public_bytes_raw()
            expander = MaskExpander(tree.codec.count + 1)
            keying = Keying(entropy, expander, round_idx, public, PairSecrets())
            self._keying = keying
            self.edges = {
                name: self._start_edge(name, tuple(ids), regions.get(name), keying)
                for name, ids in clusters.items()
            }
            self._outer = self._start_outer(len(self.edges), keying)

    def _start_edge(
        self, name: str, ids: tuple[int, ...], region: str | None, keying: Keying
    ) -> EdgeParties:
        if not self.tree.options.secure:
            plain = np.zeros(self.tree.codec.count + 1, dtype=np.uint32)
            return EdgeParties(name, region, ids, None, plain)
        config, scheme = self.tree.protocol_config(len(ids))
        return EdgeParties(
            name, region, ids, ProtocolInstance.start(config, scheme, keying, inner=True), None
        )

    def _start_outer(self, num_edges: int, keying: Keying) -> ProtocolInstance | None:
        if num_edges < 2 or not self.tree.options.secure:
            return None
        config, scheme = self.tree.protocol_config(num_edges)
        return ProtocolInstance.start(config, scheme, keying, inner=False)

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s += time.perf_counter() - start

    def _edge(self, edge: str, open_only: bool = True) -> EdgeParties:
        if self._done:
            raise AggregationError(f"round {self.round_idx}: already finalized")
        if edge not in self.edges:
            raise AggregationError(f"round {self.round_idx}: unknown edge {edge!r}")
        parties = self.edges[edge]
        if open_only and (parties.value is not None or parties.failed is not None):
            raise AggregationError(f"round {self.round_idx}: edge {edge!r} is already closed")
        return parties

    def fold(
        self,
        edge: str,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Validate a client's ring payload, mask it and add it into its edge.

        The round is unchanged when this raises.

        Raises:
            AggregationError: unknown or closed edge, a client not selected under it
                or folded twice, or a codec that is not this ring codec.
            PayloadError: malformed payload, or one of another round or support.
            InvalidUpdateError: a bad weight or non-finite metrics.
        """
        with self._timed():
            parties = self._edge(edge)
            local = parties.local.get(client_id)
            if local is None or local in parties.folded:
                raise AggregationError(
                    f"round {self.round_idx}: client {client_id} is not selected under edge "
                    f"{edge!r} or was already folded"
                )
            vector, checked, w = self._protocol_input(codec, payload, weight, client_id, metrics)
            if parties.protocol is not None:
                parties.protocol.deliver(local, vector)
            elif parties.plain is not None:
                np.add(parties.plain, vector, out=parties.plain)
            parties.folded.add(local)
            parties.metrics.add(checked, float(w))

    def _protocol_input(
        self,
        codec: Codec,
        payload: Payload,
        weight: float,
        client_id: int,
        metrics: Mapping[str, float] | None,
    ) -> tuple[U32Vector, dict[str, float], int]:
        mine = self.tree.codec
        if not (
            isinstance(codec, RingCodec) and (codec.spec, codec.size) == (mine.spec, mine.size)
        ):
            raise AggregationError(
                f"tree secure aggregation needs payloads of a RingCodec with spec {mine.spec} "
                f"and size {mine.size}; got codec {codec.name!r}"
            )
        try:
            msg = mine.decode_ring(payload)
            check_ring_round(msg, self.round_idx, self._seed)
        except PayloadError as exc:
            logger.warning("round %d: client %d: rejected ring payload: %s",
                           self.round_idx, client_id, exc)  # fmt: skip
            raise
        checked = check_metrics(metrics, client_id)
        o = self.tree.options
        w, capped = integer_weight(
            weight, o.max_weight, client_id, rounding=o.round_weights, scale=o.weight_scale
        )
        if capped:
            logger.warning("client %d: weight %s capped at %d", client_id, weight, w)
        self._capped += int(capped)
        self._seed = msg.seed
        return weighted_input(msg.values, w, mine.spec.modulus_bits), checked, w

    def close_edge(self, edge: str) -> EdgeOutcome:
        """End the edge's inner protocol with the clients folded so far.

        Raises:
            AggregationError: unknown or already closed edge.
            SecAggError: too few survivors to unmask (named with the counts); the
                edge is then out of the round, nothing was revealed.
        """
        with self._timed():
            parties = self._edge(edge)
            if parties.protocol is None:
                parties.value = parties.plain
            else:
                parties.value = self._unmask_edge(parties, parties.protocol)
            assert parties.value is not None  # set just above
            survivors = parties.survivors
            return EdgeOutcome(
                edge,
                parties.region,
                parties.value,
                parties.report,
                survivors,
                frozenset(parties.ids) - survivors,
            )

    def _unmask_edge(self, parties: EdgeParties, protocol: ProtocolInstance) -> U32Vector:
        selected, delivered = len(parties.ids), len(parties.folded)
        try:
            value = drive_unmask(protocol.clients, protocol.server, protocol.meter)
        except SecAggError as exc:
            parties.failed = f"{delivered} of {selected} clients delivered: {exc}"
            raise SecAggError(
                f"round {self.round_idx}: edge {parties.name!r}: {delivered} of {selected} "
                f"selected clients delivered, threshold {protocol.config.threshold}; the "
                f"edge is left out of the round ({exc})"
            ) from exc
        if delivered < selected:  # expected; the round's summary warns about lost updates
            logger.info(
                "round %d: edge %r recovered %d dropped clients",
                self.round_idx, parties.name, selected - delivered,
            )  # fmt: skip
        server = protocol.server
        parties.report = ClusterReport(
            protocol.config.threshold,
            self.round_idx,
            server.survivors,
            server.sealed_shares,
            server.graph,
        )
        return value.copy()

    def fail_edge(self, edge: str, reason: str) -> None:
        """Leave an edge out of the round (it failed or its value arrived late).

        Raises:
            AggregationError: unknown edge, or the round is finalized.
        """
        parties = self._edge(edge, open_only=False)
        if parties.failed is None:
            parties.failed = reason
            logger.warning("round %d: edge %r left out: %s", self.round_idx, edge, reason)

    def finalize(self) -> TreeAggregate:
        """Unmask the sum over the edges that arrived and decode the weighted mean.

        Edges neither closed nor failed are left out ("not closed before
        finalize"). The round ends here, whether it succeeds or raises.

        Raises:
            SecAggError: no edge arrived, or too few for the outer protocol.
            AggregationError: a total weight of 0, or the round already finalized.
        """
        if self._done:
            raise AggregationError(f"round {self.round_idx}: already finalized")
        with self._timed():
            for parties in self.edges.values():
                if parties.value is None and parties.failed is None:
                    self.fail_edge(parties.name, "not closed before finalize")
            self._done = True
            arrived = [p for p in self.edges.values() if p.arrived]
            if not arrived:
                raise SecAggError(
                    f"round {self.round_idx}: no edge delivered its cluster value "
                    f"(failed: {self._failed()})"
                )
            total, self._center_unmask_s = self._center_total(arrived)
            mean, weight = decode_mean(self.tree.codec, total, self._seed or 0, self.round_idx)
        cost = self.cost()
        return TreeAggregate(
            mean,
            total,
            weight,
            {p.name: p.survivors for p in arrived},
            self._failed(),
            cost,
            metric_means(arrived),
            self._capped,
        )

    def cost(self) -> TreeSecAggCost:
        """Every party's compute and bytes so far (e.g. a device's after its fold)."""
        return assemble_cost(self.edges, self._outer, self._center_unmask_s, self.wall_s)

    def _failed(self) -> dict[str, str]:
        return {p.name: p.failed for p in self.edges.values() if p.failed is not None}

    def _center_total(self, arrived: list[EdgeParties]) -> tuple[U32Vector, float]:
        outer = self._outer
        if outer is None:
            total = np.add.reduce([edge_value(p) for p in arrived], dtype=np.uint32)
        else:
            total = self._unmask_outer(outer)
        if not self.tree.options.secure:
            return self._reduce(total), 0.0
        start = time.perf_counter()
        reports = [forward_report(p) for p in arrived]
        remove_cluster_masks(total, reports, self.center_key, self._keying.expander)
        return self._reduce(total), time.perf_counter() - start

    def _unmask_outer(self, outer: ProtocolInstance) -> U32Vector:
        names = list(self.edges)
        for index, name in enumerate(names):
            parties = self.edges[name]
            if parties.arrived and parties.value is not None:
                outer.deliver(index, parties.value)
        try:
            return drive_unmask(outer.clients, outer.server, outer.meter).copy()
        except SecAggError as exc:
            arrived = len(outer.server.survivors)
            raise SecAggError(
                f"round {self.round_idx}: {arrived} of {len(names)} edges delivered, outer "
                f"threshold {outer.config.threshold} (failed: {self._failed()}) ({exc})"
            ) from exc

    def _reduce(self, total: U32Vector) -> U32Vector:
        total &= np.uint32((1 << self.tree.codec.spec.modulus_bits) - 1)
        return total

    @property
    def outer(self) -> ProtocolInstance | None:
        """The outer protocol among the edges (``None``: one edge, or not secure)."""
        return self._outer
