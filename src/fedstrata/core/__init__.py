"""NumPy-only core types: parameter specs, updates, payloads, contexts, clocks."""

from fedstrata.core.clock import Clock, MonotonicClock, VirtualClock
from fedstrata.core.context import ClientContext, RoundContext, derive_rng, derive_seed
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import HEADER_SIZE, CodecId, Payload
from fedstrata.core.training import (
    ArrayDataset,
    EvalResult,
    LocalPlan,
    OptimizerKind,
    Trainer,
    TrainerFactory,
    TrainResult,
)
from fedstrata.core.update import Update, validate_vector

__all__ = [
    "HEADER_SIZE",
    "ArrayDataset",
    "ClientContext",
    "Clock",
    "CodecId",
    "EvalResult",
    "FloatVector",
    "LocalPlan",
    "MonotonicClock",
    "OptimizerKind",
    "ParamSpec",
    "Payload",
    "RoundContext",
    "TrainResult",
    "Trainer",
    "TrainerFactory",
    "Update",
    "VirtualClock",
    "derive_rng",
    "derive_seed",
    "validate_vector",
]
