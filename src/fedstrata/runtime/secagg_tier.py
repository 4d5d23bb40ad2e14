"""Two-tier secure aggregation through edge aggregators (issue 13 part 1).

The simulator's two-tier masks (:mod:`fedstrata.secagg.twotier`) between processes:

* an **edge** serves its clients with a :class:`~.secagg_rounds.SecureRounds` of its
  own that keeps the self-masks (``remove_self_masks=False``): the clients' pairwise
  masks cancel (or are recovered) at the edge, which ends with ``S_e + B_e``, its
  cluster's sum under the cluster mask it cannot remove; its clients seal their
  self-mask shares to the center's key, which the edge learns from its parent's setup;
* the edge is a party of the **outer** protocol at the center (:class:`EdgeSecure`):
  it sends its cluster report (survivors, the sealed shares unopened, the inner
  graph; ``CLUSTER``) and ``S_e + B_e`` masked again (``INPUT``);
* the **center** (:class:`OuterRound`) unmasks the outer sum ``Σ_e (S_e + B_e)``,
  opens the sealed shares and subtracts ``Σ_e B_e``
  (:func:`~fedstrata.secagg.twotier.remove_cluster_masks`): the cluster masks cancel
  only in aggregate. The edge sees single clients only masked, the center single
  edges only masked; the global sum is exact and decoded as in the simulator.

An edge that dies is an outer dropout (its cluster leaves the round's sum); an edge
whose inner round failed withdraws. No gRPC in this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.errors import FedstrataError, ProtocolError, SecAggError, TransportError
from fedstrata.runtime.records import UploadHeader
from fedstrata.runtime.secagg_client import Prepared, SecAggLink, SecureClient
from fedstrata.runtime.secagg_rounds import SecureRounds
from fedstrata.runtime.secagg_session import SecureRound
from fedstrata.runtime.secagg_wire import Phase, cluster_clients, decode_cluster, encode_cluster
from fedstrata.secagg import SecAggAggregator
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.graph import NeighbourGraph
from fedstrata.secagg.prg import Entropy, MaskExpander, U32Vector, new_private_key
from fedstrata.secagg.twotier import ClusterReport, remove_cluster_masks

__all__ = ["EdgeSecure", "OuterRound", "cohort_config", "edge_rounds", "outer_rounds"]

log = logging.getLogger(__name__)


def cohort_config(agg: SecAggAggregator, n: int) -> SecAggConfig:
    """The protocol's parameters for a cohort of ``n`` parties (one tier of two), with
    the aggregator's vector, ring and security settings."""
    o = agg.options
    return SecAggConfig.for_cohort(
        n, agg.codec.count + 1, o.dropout_rate, security_bits=o.security_bits,
        sparse=o.sparse_graph, modulus_bits=agg.codec.spec.modulus_bits,
        precompute_masks=o.precompute_masks,
    )  # fmt: skip


class OuterRound(SecureRound):
    """The center's outer protocol among its edges; see the module docstring."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._key = new_private_key(Entropy())
        kw["center_public"] = self._key.public_key().public_bytes_raw()
        super().__init__(*args, **kw)
        self.reports: dict[int, ClusterReport] = {}

    def _other(self, phase: Phase, party: int, data: bytes) -> None:
        if phase is not Phase.CLUSTER or party in self.reports:
            super()._other(phase, party, data)
        if self.steps[Phase.INPUT].closed.is_set():
            raise ProtocolError(f"round {self.rnd.round_idx}: cluster report after the inputs")
        self.reports[party] = decode_cluster(data)
        self.rnd.tier_clients[self.rnd.cohort[party]] = cluster_clients(data)  # tier_combos

    def _input_arrived(self, party: int, data: bytes, header: UploadHeader) -> None:
        if party not in self.reports:
            raise ProtocolError(f"edge party {party} sent its input before its cluster report")
        super()._input_arrived(party, data, header)

    def finalize(self, state: Any) -> FloatVector:
        """The round's mean; every cluster empty (all edges sat out): nothing to decode.

        Raises:
            SecAggError: no client's input is in the sum (the model stays), or the
                round was abandoned.
        """
        if self.total is not None and self.abandoned is None and self.survivors() == 0:
            raise SecAggError(f"round {self.rnd.round_idx}: every cluster was empty")
        return super().finalize(state)

    def survivors(self) -> int:
        """Clients whose inputs are in the sum: the surviving devices of each edge whose
        masked input arrived."""
        sent = self.steps[Phase.INPUT].received
        return sum(len(r.survivors) for p, r in self.reports.items() if p in sent)

    def _unmasked(self, total: U32Vector) -> U32Vector:
        """Remove the cluster masks of the edges in the outer sum (in aggregate)."""
        reports = [self.reports[p] for p in sorted(self.server.survivors)]
        remove_cluster_masks(total, reports, self._key, MaskExpander(total.shape[0]))
        bits = self.server.config.modulus_bits
        if bits < 32:
            total &= np.uint32((1 << bits) - 1)
        return total


def outer_rounds(agg: SecAggAggregator, timeout_s: float) -> SecureRounds:
    """The center's secure rounds over edges (parties: the edges of each round)."""
    return SecureRounds(
        agg, phase_timeout_s=timeout_s, round_type=OuterRound,
        config_for=lambda n: cohort_config(agg, n),
    )  # fmt: skip


def edge_rounds(agg: SecAggAggregator, timeout_s: float) -> SecureRounds:
    """An edge's secure rounds over its clients (the cluster mask stays on the sum)."""
    return SecureRounds(
        agg, phase_timeout_s=timeout_s, remove_self_masks=False,
        config_for=lambda n: cohort_config(agg, n),
    )  # fmt: skip


@dataclass(eq=False)
class EdgeSecure:
    """An edge's half of the outer protocol, and the link to its inner rounds.

    Attributes:
        client: the outer protocol's client half over the parent link.
        inner: the edge's own secure rounds (its clients).
    """

    client: SecureClient
    inner: SecureRounds

    @classmethod
    def of(cls, parent: SecAggLink, agg: SecAggAggregator, inner: SecureRounds) -> EdgeSecure:
        return cls(SecureClient(parent, agg, "examples", seals=False), inner)

    async def begin(self, round_idx: int) -> asyncio.Task[Prepared]:
        """The outer setup (the key the edge's clients seal to), then the outer key
        agreement in the background while the clients train.

        Raises:
            ProtocolError: the parent refused the setup.
            TransportError: the connection failed.
        """
        setup = await self.client.setup(round_idx)
        self.inner.center_public = setup.center_public
        return asyncio.get_running_loop().create_task(self.client.agree(round_idx, setup))

    async def sit_out(
        self, outer: asyncio.Task[Prepared], round_idx: int, support_seed: int, why: str
    ) -> tuple[bool, str]:
        """Take part in the outer round with an empty cluster: fewer than 2 selected
        clients (the simulator's sit-out), so no inner round runs; the edge sends a
        report of no survivors and a zero input (weight 0), which the outer masks hide
        and which adds nothing, so the center's sum is the other clusters' exactly
        (the simulator's outer protocol over the clusters only) and no party drops out.

        Raises:
            TransportError: the connection failed.
        """
        prepared = await outer
        log.warning("edge: round %d: an empty cluster in the outer round: %s", round_idx, why)
        empty = ClusterReport(1, round_idx, frozenset(), (), NeighbourGraph(2, 1, 0))
        try:
            await self.client.step(round_idx, Phase.CLUSTER, encode_cluster(empty))
        except TransportError:
            raise
        except FedstrataError as exc:
            return False, str(exc)
        zero = np.zeros(self.client.agg.codec.count + 1, dtype=np.uint32)
        return await self.client.send_input(prepared, round_idx, zero, support_seed, {})

    async def finish(
        self, outer: asyncio.Task[Prepared], round_idx: int, metrics: Mapping[str, float]
    ) -> tuple[bool, str]:
        """Send the cluster report and ``S_e + B_e`` (masked) to the parent; withdraw
        when the inner round has no sum.

        Raises:
            TransportError: the connection failed.
        """
        prepared = await outer
        inner = self.inner.current
        if inner is None or inner.total is None or inner.rnd.round_idx != round_idx:
            why = "no cluster sum" if inner is None else (inner.abandoned or "no cluster sum")
            log.warning("edge: round %d: withdrawing from the outer round: %s", round_idx, why)
            await self.client.withdraw(round_idx)
            return False, why
        server = inner.server
        report = ClusterReport(
            server.config.threshold, server.round_id, server.survivors, inner.sealed,
            server.graph,
        )  # fmt: skip
        try:
            clients = [inner.rnd.cohort[i] for i in sorted(server.survivors)]
            await self.client.step(round_idx, Phase.CLUSTER, encode_cluster(report, clients))
        except TransportError:
            raise
        except FedstrataError as exc:
            return False, str(exc)
        return await self.client.send_input(
            prepared,
            round_idx,
            inner.total,
            inner.seed or 0,
            metrics,
        )
