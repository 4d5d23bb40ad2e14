"""The privacy families of the typed per-round records (:mod:`fedstrata.core.metrics`
lists every family): the differential-privacy budget spent (:class:`PrivacySpent`)
and secure aggregation, flat (:class:`SecAggStats`) and two-tier (:class:`SecAggTreeStats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fedstrata.core.stats_record import StatsRecord

__all__ = ["PrivacySpent", "SecAggStats", "SecAggTreeStats"]


@dataclass(frozen=True)
class PrivacySpent(StatsRecord):
    """The central-DP budget after a round, from the accountant.

    Attributes:
        epsilon_spent: ε spent so far (at the run's δ).
        epsilon_remaining: the budget's ε minus ``epsilon_spent`` (may round below 0).
        noise_multiplier: the round's σ / clip norm.
        sampling_rate: the round's Poisson sampling rate q.
        stage: the staged allocator's stage.
        server_clipped: updates the server clipped after decoding (None: no server clip).
        decoded_norm_max: largest update norm as decoded (with a server clip).
        folded_norm_max: largest update norm as folded, <= the clip norm.
        share_std: distributed DP: each client's noise share std, in ring units.
        clip_norm: adaptive clipping: the round's clip norm (the sum's sensitivity).
        tree_step: DP-FTRL: the round's leaf (1-based) in its epoch's tree.
    """

    FAMILY: ClassVar[str] = "privacy"
    INTS: ClassVar[frozenset[str]] = frozenset({"stage", "server_clipped", "tree_step"})
    SIGNED: ClassVar[frozenset[str]] = frozenset({"epsilon_remaining"})
    LEGACY: ClassVar[Mapping[str, str]] = {
        "stage": "dp_stage",
        "server_clipped": "dp_server_clipped",
        "decoded_norm_max": "dp_decoded_norm_max",
        "folded_norm_max": "dp_folded_norm_max",
        "share_std": "dp_share_std",
        "clip_norm": "dp_clip_norm",
        "tree_step": "dp_tree_step",
    }

    epsilon_spent: float
    epsilon_remaining: float
    noise_multiplier: float
    sampling_rate: float
    stage: int = 0
    server_clipped: int | None = None
    decoded_norm_max: float | None = None
    folded_norm_max: float | None = None
    share_std: float | None = None
    clip_norm: float | None = None
    tree_step: int | None = None


@dataclass(frozen=True)
class SecAggStats(StatsRecord):
    """The secure-aggregation protocol's costs in a round (one flat instance).

    Attributes:
        protocol_s: wall seconds of the protocol, all parties.
        server_s: the server's share.
        client_s_mean: mean seconds a client spent.
        client_online_s_max: longest a client had to stay online.
        dropped: cohort members whose input was not in the sum.
        bytes_up_per_client: protocol bytes a surviving client sent.
        bytes_down_per_client: protocol bytes a surviving client received.
        bandwidth_expansion: both ways' bytes over one plaintext update.
        withheld: 1 when too few clients survived for the noise distributed DP
            accounted, so the sum was not unmasked (a zero update); the cost fields
            are then None.
        lost: 1 when the protocol refused the round (too few survivors for its
            threshold): the aggregate is lost and the model unchanged.
    """

    FAMILY: ClassVar[str] = "secagg"
    INTS: ClassVar[frozenset[str]] = frozenset({"dropped", "withheld", "lost"})
    PREFIX: ClassVar[str] = "secagg_"
    LEGACY: ClassVar[Mapping[str, str]] = {"lost": "aggregate_lost"}

    protocol_s: float | None = None
    server_s: float | None = None
    client_s_mean: float | None = None
    client_online_s_max: float | None = None
    dropped: int | None = None
    bytes_up_per_client: float | None = None
    bytes_down_per_client: float | None = None
    bandwidth_expansion: float | None = None
    withheld: int | None = None
    lost: int | None = None


@dataclass(frozen=True)
class SecAggTreeStats(StatsRecord):
    """Two-tier secure aggregation in a tree round: every party's cost, summarised.

    Attributes:
        wall_s: wall seconds this process spent in the protocol.
        compute_s: every party's protocol compute, summed.
        device_s_max: the slowest device's protocol seconds.
        device_online_s_max: longest a device had to stay online.
        edge_s_max: the slowest edge's protocol seconds.
        center_s: the center's protocol seconds.
        device_bytes_up_mean: mean protocol bytes a device sent.
        edge_bytes_up_mean: mean protocol bytes an edge sent.
        clusters: edges (or nodes) that ran the inner protocol.
        survivors: clients in the secure sum.
        outer_dropouts: clusters left out of the sum (failed, below threshold).
        sat_out: clients alone in their cluster, left out of the round.
        lost_clients: delivered updates that were not in the sum.
        unmask_bytes_up: devices' unmasking-round bytes sent.
        outer_bytes_up: edges' outer-protocol bytes sent.
        weights_capped: clients whose weight was capped at the ring's maximum.
        withheld: 1 when too few clients survived for the noise distributed DP
            accounted, so the sum was not unmasked (a zero update).
        lost: 1 when the protocol refused the round: the aggregate is lost.
    """

    FAMILY: ClassVar[str] = "secagg_tree"
    PREFIX: ClassVar[str] = "secagg_tree_"
    INTS: ClassVar[frozenset[str]] = frozenset(
        {"clusters", "survivors", "outer_dropouts", "sat_out", "lost_clients"}
        | {"unmask_bytes_up", "outer_bytes_up", "weights_capped", "withheld", "lost"}
    )

    wall_s: float | None = None
    compute_s: float | None = None
    device_s_max: float | None = None
    device_online_s_max: float | None = None
    edge_s_max: float | None = None
    center_s: float | None = None
    device_bytes_up_mean: float | None = None
    edge_bytes_up_mean: float | None = None
    clusters: int | None = None
    survivors: int | None = None
    outer_dropouts: int | None = None
    sat_out: int | None = None
    lost_clients: int | None = None
    unmask_bytes_up: int | None = None
    outer_bytes_up: int | None = None
    weights_capped: int | None = None
    withheld: int | None = None
    lost: int | None = None
