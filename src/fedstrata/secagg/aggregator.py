"""Secure aggregation inside the simulator: a center-only aggregator that runs the protocol.

:class:`SecAggAggregator` collects the accepted clients' ring vectors
(:class:`~fedstrata.secagg.RingCodec` payloads) and, at ``finalize``, runs the real
Bonawitz et al. (CCS 2017) / SecAgg+ (Bell et al., CCS 2020) protocol over them with
:func:`~fedstrata.secagg.simulate_round_detailed`, measuring every party's compute and
bytes. Design notes (``docs/secagg.md``, "In the simulator"):

* **Dropouts.** All ``expected_cohort`` clients complete key agreement; those that
  never reach the aggregator (failed, late) drop before the masked input, so the
  server recovers their masks (the protocol's worst case). When some secret has
  fewer than ``threshold`` surviving holders besides its owner (full graph: fewer
  than ``threshold + 1`` survivors), ``finalize`` raises
  :class:`~fedstrata.errors.SecAggError` (the protocol refuses before any reveal).
* **Weights.** Client ``i`` inputs ``[w_i * q_i, w_i]`` (mod ``2^b``) with an integer
  weight ``w_i <= max_weight``: the server learns ``sum(w q)`` and ``sum(w)``, never a
  single weight. (A deployed client multiplies before masking; the simulator does it
  on the same plaintext input.) The ring cannot overflow when
  ``expected_cohort * max_weight * (L + noise_bound) <= 2^(modulus_bits - 1) - 1``
  (checked, :func:`~fedstrata.secagg.codec.ring_bits`). With ``round_weights`` fractional weights
  (``scheduling.allocation``'s partial work, Issue 12 part 4) are scaled by
  ``weight_scale`` and rounded to the nearest integer >= 1.
* **Survivors.** Below ``min_survivors`` accepted clients the sum is never unmasked
  (distributed DP accounted the noise of that many shares): a zero update.
* **Memory** is O(cohort x sent coordinates) (100 x 9,610 x 4 B = 3.8 MB on W1):
  ``mergeable`` is false, center only (trees use ``TwoTierSecAgg``).
* **Validation.** Ring elements are range-checked before masking, so a malformed
  payload raises :class:`~fedstrata.errors.PayloadError` and never corrupts the sum
  (a deployed server cannot check masked inputs: that needs range proofs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import final

import numpy as np

from fedstrata.aggregation.protocol import (
    UNKNOWN_CLIENT,
    check_metrics,
    check_size,
    check_vector,
)
from fedstrata.core.context import RoundContext, derive_rng
from fedstrata.core.metrics import SecAggStats
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.state import ClientStateStore
from fedstrata.core.statepart import StatePart
from fedstrata.errors import (
    AggregationError,
    ConfigError,
    PayloadError,
    SecAggError,
)
from fedstrata.pipeline.stage import Codec
from fedstrata.secagg.codec import (
    NoiseFn,
    RingCodec,
    RingMessage,
    RingSpec,
    SupportFn,
    check_ring_fits,
    lift,
)
from fedstrata.secagg.codec import quantize_to_ring as _quantize
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.cost import ProtocolCost, protocol_cost
from fedstrata.secagg.options import SecAggOptions, SecAggReport
from fedstrata.secagg.prg import U32Vector
from fedstrata.secagg.ring_input import integer_weight, weighted_input
from fedstrata.secagg.ring_state import RingState, check_round, ring_sum
from fedstrata.secagg.simulate import RoundStats, simulate_round_detailed

__all__ = [
    "RingState",
    "SecAggAggregator",
    "SecAggOptions",
    "SecAggReport",
    "ring_sum",
    "secagg_components",
]

logger = logging.getLogger(__name__)


@final
class SecAggAggregator:
    """Center-only aggregator that runs secure aggregation at ``finalize``.

    Also a ``RoundHook`` of the simulator (``start`` / ``aggregate`` / ``finish``):
    registered as one, it reports :meth:`SecAggReport.stats` in each round's metrics.
    See the module docstring for cohort, weights, memory and validation.
    """

    def __init__(self, codec: RingCodec, options: SecAggOptions) -> None:
        """Check the ring capacity and derive the protocol's parameters.

        Raises:
            ConfigError: ``expected_cohort * max_weight`` inputs could overflow the
                ring, or the protocol parameters are invalid.
        """
        spec = codec.spec
        n = options.expected_cohort
        try:
            check_ring_fits(spec, n * options.max_weight)
        except ConfigError as exc:
            raise ConfigError(
                f"secure aggregation: cohort {n} x max_weight {options.max_weight} "
                f"does not fit: {exc}"
            ) from exc
        self.codec = codec
        self.options = options
        self.config = SecAggConfig.for_cohort(
            n,
            codec.count + 1,
            options.dropout_rate,
            security_bits=options.security_bits,
            sparse=options.sparse_graph,
            modulus_bits=spec.modulus_bits,
            precompute_masks=options.precompute_masks,
        )
        self.last_stats: SecAggReport | None = None
        self.withheld: set[int] = set()
        self.lost: set[int] = set()  # rounds the protocol refused (too few survivors)

    @property
    def mergeable(self) -> bool:
        return False

    def init(self, size: int) -> RingState:
        """An empty round for a model of ``size`` parameters.

        Raises:
            ShapeError: ``size`` is not a non-negative integer.
            AggregationError: ``size`` differs from the codec's.
        """
        if check_size(size) != self.codec.size:
            raise AggregationError(
                f"secure aggregator built for {self.codec.size} parameters, got size {size}"
            )
        return RingState(size)

    def accumulate(
        self,
        state: RingState,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> RingState:
        """Quantize a dense update (round to nearest) and collect it.

        Raises:
            AggregationError: the codec is sparse (needs the round's support: send
                payloads), or the cohort is full.
            ShapeError: wrong shape or dtype; InvalidUpdateError: NaN/Inf or bad weight.
        """
        if self.codec.sparse:
            raise AggregationError(
                f"client {client_id}: a sparse ring codec needs encoded payloads, not vectors"
            )
        check_vector(vector, state.size, client_id)
        msg = RingMessage(state.round_idx or 0, 0, _quantize(vector, self.codec.spec, None))
        return self._collect(state, msg, weight, client_id, metrics)

    def accumulate_payload(
        self,
        state: RingState,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> RingState:
        """Validate a ring payload and collect it; ``state`` is unchanged on error.

        Raises:
            AggregationError: ``codec`` is not a ring codec of this spec and size, or
                the cohort is full.
            PayloadError: malformed payload, or one from another round or support.
            InvalidUpdateError: a bad weight or non-finite metrics.
        """
        self._check_codec(codec)
        try:
            msg = self.codec.decode_ring(payload)
            check_round(state, msg)
        except PayloadError as exc:
            logger.warning("client %d: rejected malformed ring payload: %s", client_id, exc)
            raise
        return self._collect(state, msg, weight, client_id, metrics)

    def merge(self, a: RingState, b: RingState) -> RingState:
        """Raises: AggregationError: always (secure aggregation runs at the center only)."""
        raise AggregationError(
            "SecAggAggregator is center-only (mergeable is false); use TwoTierSecAgg for trees"
        )

    def finalize(self, state: RingState) -> FloatVector:
        """Run the protocol over the collected inputs and return the weighted mean.

        Raises:
            AggregationError: nothing collected, or a total weight of 0.
            SecAggError: too few clients survive to unmask.
        """
        if not state.inputs:
            raise AggregationError("cannot finalize secure aggregation with no updates")
        if len(state.inputs) < self.options.min_survivors:
            return self.withhold(state.round_idx or 0, len(state.inputs))
        try:
            ring_total = self._ring_total(state)
        except SecAggError:
            self.lost.add(state.round_idx or 0)
            raise
        return self.decode_total(ring_total, state.seed, len(state.inputs))

    def decode_total(self, ring_total: U32Vector, seed: int, count: int) -> FloatVector:
        """The weighted mean from the unmasked ring sum ``[sum w q, sum w]`` of ``count``
        clients (random-k support ``seed``): what the protocol reveals, decoded. The
        runtime's center calls it with the sum its protocol round unmasked.

        Raises:
            AggregationError: a total weight of 0.
        """
        total = lift(ring_total, self.codec.spec.modulus_bits)
        weight = int(total[-1])
        if weight <= 0:
            raise AggregationError(
                f"cannot finalize secure aggregation with total weight {weight} ({count} updates)"
            )
        real = total[:-1] / (self.codec.spec.scale * weight)
        return self.codec.to_dense(real, seed).astype(np.float32)

    def withhold(self, round_idx: int, survivors: int) -> FloatVector:
        """A zero update: too few survivors (``survivors`` < ``min_survivors``) for the
        noise that was accounted; the sum is never unmasked."""
        logger.warning(
            "round %d: only %d clients survived, fewer than the %d whose noise shares "
            "distributed DP accounts; the sum is not unmasked (zero update)",
            round_idx, survivors, self.options.min_survivors,
        )  # fmt: skip
        self.withheld.add(round_idx)
        return np.zeros(self.codec.size, dtype=np.float32)

    def finalize_metrics(self, state: RingState) -> dict[str, float]:
        """Weighted mean of each client metric (metrics travel outside the protocol)."""
        return state.metrics.means()

    # RoundHook: report the protocol's costs in the round's metrics.
    @property
    def applies_every_round(self) -> bool:
        """A round below ``min_clients`` leaves the model unchanged."""
        return False

    def state_dict(self) -> StatePart:
        """The rounds withheld or lost (the protocol itself starts afresh each round)."""
        return StatePart(meta={"withheld": sorted(self.withheld), "lost": sorted(self.lost)})

    def load_state_dict(self, part: StatePart) -> None:
        """Raises: CheckpointCorrupt: the part is not this aggregator's state."""
        self.withheld = {int(r) for r in part.value("withheld")}
        self.lost = {int(r) for r in part.value("lost")}

    def start(self, round_idx: int) -> None:
        """Nothing to prepare before a round."""

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        """The aggregate, unchanged."""
        return mean

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> SecAggStats | None:
        """The round's :meth:`SecAggReport.stats` (None if the round was not finalized);
        a withheld or lost round says so."""
        if round_idx in self.withheld:
            return SecAggStats(withheld=1)
        if round_idx in self.lost:
            return SecAggStats(lost=1)
        report = self.last_stats
        if report is None or report.round_idx != round_idx:
            return None
        return report.stats()

    def round_cost(self, round_idx: int) -> ProtocolCost | None:
        """The protocol's per-client costs of ``round_idx`` (None: it did not run)."""
        report = self.last_stats
        if report is None or report.round_idx != round_idx:
            return None
        return report.cost

    def _check_codec(self, codec: Codec) -> None:
        mine = self.codec
        if not (
            isinstance(codec, RingCodec) and codec.spec == mine.spec and codec.size == mine.size
        ):
            raise AggregationError(
                f"secure aggregation needs payloads of a RingCodec with spec {self.codec.spec} "
                f"and size {self.codec.size}; got codec {codec.name!r}"
            )

    def _weight(self, state: RingState, weight: float, client_id: int) -> int:
        o = self.options
        w, capped = integer_weight(
            weight, o.max_weight, client_id, rounding=o.round_weights, scale=o.weight_scale
        )
        if capped:
            logger.warning(
                "client %d: weight %s capped at max_weight %d (ring capacity)",
                client_id, weight, o.max_weight,
            )  # fmt: skip
            state.capped += 1
        return w

    def _collect(
        self,
        state: RingState,
        msg: RingMessage,
        weight: float,
        client_id: int,
        metrics: Mapping[str, float] | None,
    ) -> RingState:
        checked = check_metrics(metrics, client_id)
        if len(state.inputs) >= self.options.expected_cohort:
            raise AggregationError(
                f"client {client_id}: more updates than expected_cohort "
                f"{self.options.expected_cohort}"
            )
        w = self._weight(state, weight, client_id)
        folded = weighted_input(msg.values, w, self.codec.spec.modulus_bits)
        state.round_idx, state.seed = msg.round_idx, msg.seed
        state.inputs.append(folded)
        state.client_ids.append(client_id)
        state.weights.append(w)
        state.metrics.add(checked, float(w))
        return state

    def _ring_total(self, state: RingState) -> U32Vector:
        """The ring sum: by the protocol (``secure``) or in the clear."""
        opts, accepted = self.options, len(state.inputs)
        round_idx = state.round_idx or 0
        if not opts.secure:
            return ring_sum(state.inputs, self.codec.spec.modulus_bits)
        zeros = np.zeros(self.codec.count + 1, dtype=np.uint32)
        inputs = [*state.inputs, *([zeros] * (opts.expected_cohort - accepted))]
        dropped = frozenset(range(accepted, opts.expected_cohort))
        rng = derive_rng(opts.root_seed, round_idx, -1, "secagg")
        start = time.perf_counter()
        # Every party runs in this process: each X25519 pair secret is computed once for
        # both ends; each party is still charged what it pays when deployed (PairSecrets).
        result = simulate_round_detailed(
            inputs, dropped, self.config, rng, round_id=round_idx, share_pair_secrets=True
        )
        wall = time.perf_counter() - start
        state.report = self._report(state, result.stats, result.survivors, wall)
        self.last_stats = state.report
        logger.info(
            "round %d: secure aggregation of %d/%d clients in %.3f s",
            round_idx, accepted, opts.expected_cohort, wall,
        )  # fmt: skip
        return result.aggregate

    def _report(
        self, state: RingState, stats: RoundStats, survivors: frozenset[int], wall_s: float
    ) -> SecAggReport:
        alive = np.array(sorted(survivors), dtype=np.int64)
        client_s = stats.client_offline_s + stats.client_online_s
        return SecAggReport(
            round_idx=state.round_idx or 0,
            cohort=self.options.expected_cohort,
            accepted=len(state.inputs),
            degree=self.config.degree,
            threshold=self.config.threshold,
            protocol_wall_s=wall_s,
            client_online_s_max=float(stats.client_online_s.max()),
            client_s_mean=float(client_s[alive].mean()),
            server_s=stats.server_offline_s + stats.server_online_s,
            bytes_up_per_client=float(stats.bytes_up[alive].mean()),
            bytes_down_per_client=float(stats.bytes_down[alive].mean()),
            plaintext_bytes=4 * self.codec.size,
            weights_capped=state.capped,
            cost=protocol_cost(
                stats, state.client_ids, self.codec.count + 1, self.codec.spec.modulus_bits
            ),
        )


def secagg_components(
    spec: RingSpec,
    options: SecAggOptions,
    size: int,
    support_fn: SupportFn | None = None,
    *,
    noise_fn: NoiseFn | None = None,
    state_store: ClientStateStore | None = None,
) -> tuple[RingCodec, SecAggAggregator]:
    """The client codec and the server aggregator of secure aggregation, consistent.

    Args:
        spec: how updates enter the ring.
        options: cohort, weight cap and protocol parameters.
        size: model parameters.
        support_fn: the random-k draw when ``spec.density < 1``
            (``fedstrata.compress.randk_support``).
        noise_fn: each client's distributed-DP noise share (added in the ring).
        state_store: clients' error-feedback residuals (``spec.error_feedback``).

    Raises:
        ConfigError: the ring would overflow, or an invalid parameter.
    """
    codec = RingCodec(spec, size, support_fn, noise_fn, state_store)
    return codec, SecAggAggregator(codec, options)
