"""Online per-device training-time prediction.

Model: ``time = overhead_s + work * s_i`` where ``s_i`` is device ``i``'s seconds per
example. Before any measurement ``s_i`` is the profile prior
``flops_per_example / (cpu_score * 1e9 * speedup)`` (the device's speed factor at the
run's precision, 1 under fp32). Each measurement updates an exponentially
weighted moving average (EWMA) of observed seconds per example, and the estimate
shrinks that average toward the prior with ``prior_strength`` pseudo-observations::

    s_i = (n_i * ewma_i + k * prior_i) / (n_i + k)

so the prior dominates at cold start and fades as ``1 / n_i``, while the EWMA keeps
tracking drift (thermal throttling, background load). This is the empirical-Bayes
shrinkage estimator of a per-device mean, the same device-level profiling used by Oort
(Lai et al., OSDI 2021) and FedScale to predict round durations.

Everything is vectorised over devices; state is four arrays (see :class:`PredictorState`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.timing import compute_s
from fedstrata.errors import ConfigError, DataError, RegistryError
from fedstrata.scheduling.records import DeviceProfiles, HistoryBatch

__all__ = [
    "PredictorConfig",
    "PredictorError",
    "PredictorState",
    "TimePredictor",
    "replay_history",
]

F64 = NDArray[np.float64]
Ids = Sequence[int] | NDArray[np.int64]


@dataclass(frozen=True)
class PredictorConfig:
    """Hyper-parameters of :class:`TimePredictor`.

    Attributes:
        ewma: weight of a new observation in the moving average, in (0, 1].
        prior_strength: pseudo-observations the profile prior counts for, >= 0.
        overhead_s: fixed seconds per round besides per-example work, >= 0.
    """

    ewma: float = 0.3
    prior_strength: float = 0.5
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.ewma <= 1:
            raise ConfigError(f"PredictorConfig.ewma must be in (0, 1], got {self.ewma}")
        if not self.prior_strength >= 0:
            raise ConfigError(
                f"PredictorConfig.prior_strength must be >= 0, got {self.prior_strength}"
            )
        if not self.overhead_s >= 0:
            raise ConfigError(f"PredictorConfig.overhead_s must be >= 0, got {self.overhead_s}")


@dataclass(frozen=True)
class PredictorError:
    """Mean absolute percentage error of the predictions, before each observation.

    Attributes:
        last_mape: MAPE over the last :meth:`TimePredictor.observe` batch (NaN if none).
        cumulative_mape: MAPE over every observation so far (NaN if none).
        observations: observations counted in ``cumulative_mape``.
    """

    last_mape: float
    cumulative_mape: float
    observations: int


@dataclass(frozen=True, eq=False)
class PredictorState:
    """The whole state of a predictor, sorted by device id (checkpointable arrays)."""

    device_id: NDArray[np.int64]
    prior_s: F64
    ewma_s: F64
    count: F64
    ape_sum: float = 0.0
    ape_count: int = 0
    last_mape: float = float("nan")


class TimePredictor:
    """Predicts each device's training seconds for a given work (examples)."""

    def __init__(
        self,
        device_ids: Ids,
        prior_s_per_example: F64 | Sequence[float],
        config: PredictorConfig | None = None,
    ) -> None:
        """Start from per-device priors of seconds per example.

        Raises:
            DataError: shapes differ, duplicate ids, or non-positive priors.
        """
        ids = np.asarray(device_ids, dtype=np.int64)
        prior = np.asarray(prior_s_per_example, dtype=np.float64)
        if ids.ndim != 1 or prior.shape != ids.shape:
            raise DataError(f"TimePredictor: {ids.shape} device ids but {prior.shape} priors")
        if not (np.isfinite(prior) & (prior > 0)).all():
            raise DataError("TimePredictor: prior seconds per example must be finite and > 0")
        order = np.argsort(ids, kind="stable")
        ids, prior = ids[order], prior[order]
        if ids.size and (np.diff(ids) == 0).any():
            raise DataError("TimePredictor: device ids must be unique")
        self.config = config or PredictorConfig()
        self._state = PredictorState(ids, prior, np.zeros_like(prior), np.zeros_like(prior))

    @classmethod
    def from_profiles(
        cls,
        profiles: DeviceProfiles,
        flops_per_example: float,
        config: PredictorConfig | None = None,
        precision: str = "fp32",
    ) -> TimePredictor:
        """Cold start from registry profiles: ``prior = flops_per_example / (flops *
        speedup)``, the devices' speed factor at ``precision`` (resolved).

        Raises:
            ConfigError: ``flops_per_example`` <= 0, or an unknown precision.
        """
        if not flops_per_example > 0:
            raise ConfigError(f"flops_per_example must be > 0, got {flops_per_example}")
        speedup = profiles.speedup(precision)
        prior = compute_s(1, flops_per_example, profiles.flops, speedup)
        return cls(profiles.device_id, prior, config)

    @property
    def state(self) -> PredictorState:
        """The current state (arrays are copies)."""
        s = self._state
        return PredictorState(
            s.device_id.copy(),
            s.prior_s.copy(),
            s.ewma_s.copy(),
            s.count.copy(),
            s.ape_sum,
            s.ape_count,
            s.last_mape,
        )

    def load_state(self, state: PredictorState) -> None:
        """Restore a state taken with :attr:`state`."""
        self._state = state

    def _index(self, device_ids: Ids) -> NDArray[np.intp]:
        want = np.asarray(device_ids, dtype=np.int64).reshape(-1)
        known = self._state.device_id
        pos = np.searchsorted(known, want).clip(0, max(known.size - 1, 0))
        if known.size == 0 or not (known[pos] == want).all():
            missing = sorted(set(want.tolist()) - set(known.tolist()))[:10]
            raise RegistryError(f"TimePredictor has no prior for devices {missing}")
        return pos

    def seconds_per_example(self, device_ids: Ids) -> F64:
        """Current estimate of each device's seconds per example.

        Raises:
            RegistryError: an unknown device.
        """
        idx = self._index(device_ids)
        s, k = self._state, self.config.prior_strength
        n = s.count[idx]
        denom = n + k
        mixed = (n * s.ewma_s[idx] + k * s.prior_s[idx]) / np.where(denom > 0, denom, 1.0)
        return np.where(denom > 0, mixed, s.prior_s[idx])

    def predict(self, device_ids: Ids, work: F64 | NDArray[np.int64] | float) -> F64:
        """Predicted training seconds for ``work`` examples on each device.

        Raises:
            RegistryError: an unknown device.
            DataError: negative work.
        """
        w = np.broadcast_to(np.asarray(work, dtype=np.float64), (len(device_ids),))
        if (w < 0).any():
            raise DataError("TimePredictor.predict: work must be >= 0")
        return self.config.overhead_s + w * self.seconds_per_example(device_ids)

    def observe(
        self,
        device_ids: Ids,
        work: F64 | NDArray[np.int64] | float,
        actual_s: F64 | Sequence[float],
    ) -> PredictorError:
        """Fold one round's measurements in; returns the error of the prior predictions.

        Raises:
            RegistryError: an unknown device.
            DataError: duplicate devices, work < 1, or negative/non-finite times.
        """
        ids = np.asarray(device_ids, dtype=np.int64)
        w = np.broadcast_to(np.asarray(work, dtype=np.float64), ids.shape)
        t = np.asarray(actual_s, dtype=np.float64)
        _check_observation(ids, w, t)
        predicted = self.predict(ids, w)
        idx = self._index(ids)
        spe = np.maximum(t - self.config.overhead_s, 0.0) / w
        s, a = self._state, self.config.ewma
        first = s.count[idx] == 0
        s.ewma_s[idx] = np.where(first, spe, (1 - a) * s.ewma_s[idx] + a * spe)
        s.count[idx] += 1
        return self._record_error(predicted, t)

    def _record_error(self, predicted: F64, actual: F64) -> PredictorError:
        ok = actual > 0
        ape = np.abs(predicted[ok] - actual[ok]) / actual[ok]
        s = self._state
        last = float(ape.mean()) if ape.size else float("nan")
        self._state = PredictorState(
            s.device_id,
            s.prior_s,
            s.ewma_s,
            s.count,
            s.ape_sum + float(ape.sum()),
            s.ape_count + int(ape.size),
            last,
        )
        return self.error

    @property
    def error(self) -> PredictorError:
        """MAPE of the last observed batch and cumulatively."""
        s = self._state
        cum = s.ape_sum / s.ape_count if s.ape_count else float("nan")
        return PredictorError(s.last_mape, cum, s.ape_count)


def _check_observation(ids: NDArray[np.int64], work: F64, actual: F64) -> None:
    if actual.shape != ids.shape or ids.ndim != 1:
        raise DataError(f"observe: {ids.shape} devices but {actual.shape} times")
    if np.unique(ids).size != ids.size:
        raise DataError("observe: each device may appear once per batch")
    if (work < 1).any():
        raise DataError("observe: work must be >= 1 example")
    if not (np.isfinite(actual) & (actual >= 0)).all():
        raise DataError("observe: actual_s must be finite and >= 0")


def replay_history(predictor: TimePredictor, history: HistoryBatch) -> PredictorError:
    """Warm a predictor from registry history, one observe per round, oldest first.

    Rows without a measured time or with no completed work are skipped; the work that
    counts is ``completed_work``.

    Raises:
        RegistryError: the history names a device the predictor does not know.
    """
    usable = np.isfinite(history.actual_s) & (history.completed_work > 0)
    rounds = history.round_idx[usable]
    for r in np.unique(rounds):
        rows = np.flatnonzero(usable & (history.round_idx == r))
        _, first = np.unique(history.device_id[rows], return_index=True)
        rows = rows[np.sort(first)]
        predictor.observe(
            history.device_id[rows], history.completed_work[rows], history.actual_s[rows]
        )
    return predictor.error
