"""The one exception tree of fedstrata.

Every error fedstrata raises on purpose derives from :class:`FedstrataError`, so
callers can catch the whole family with one ``except``. The tree::

    FedstrataError
    ├── ConfigError              invalid configuration (names the field, value and rule)
    │   └── MissingDependencyError   an optional dependency is missing; says what to
    │                                pip install (also an ``ImportError``)
    ├── DataError                unreadable or inconsistent client/evaluation data
    ├── ShapeError               a vector or array does not match the ParamSpec
    ├── TaskError                the user's task code failed or returned something
    │                            unusable (names the user's function and the problem)
    ├── PayloadError             malformed bytes on the wire (bad magic, version,
    │                            length, checksum, index range, codec parameters)
    ├── PipelineError            stages that do not chain, or a stage misused
    ├── AggregationError         aggregator misuse (empty aggregate, merge of
    │                            incompatible partials, robust aggregator at an inner tier)
    ├── ClientError              a client failed; carries ``client_id`` and ``reason``
    │   └── InvalidUpdateError   a client's update is NaN/Inf or of the wrong shape
    ├── ProtocolError            a participant broke the round or secure-aggregation protocol
    │   ├── RunEndedError        the run a participant (re)connected to is over
    │   ├── NodeClaimedError     a second aggregator tier claims a node of the tree
    │   └── SecAggError          secure aggregation failed (e.g. below threshold)
    ├── TransportError           network failure between processes
    │   └── DeadlineError        a deadline passed
    ├── PrivacyBudgetExhausted   the next round would exceed the (epsilon, delta) budget
    ├── CheckpointError          a checkpoint could not be written or read
    │   └── CheckpointCorrupt    a checkpoint failed its checksum or format check
    └── RegistryError            the device registry is unreachable or inconsistent

Errors are never signalled by returning ``None``; user input is never checked with
``assert``.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "CheckpointCorrupt",
    "CheckpointError",
    "ClientError",
    "ConfigError",
    "DataError",
    "DeadlineError",
    "FedstrataError",
    "InvalidUpdateError",
    "MissingDependencyError",
    "NodeClaimedError",
    "PayloadError",
    "PipelineError",
    "PrivacyBudgetExhausted",
    "ProtocolError",
    "RegistryError",
    "RunEndedError",
    "SecAggError",
    "ShapeError",
    "TaskError",
    "TransportError",
]


class FedstrataError(Exception):
    """Base of every error raised by fedstrata."""


class ConfigError(FedstrataError):
    """A configuration value is invalid; the message names the field and the rule."""


class MissingDependencyError(ConfigError, ImportError):
    """What was asked for needs an optional dependency that is not installed.

    The message names the missing package and what to install, e.g.
    ``pip install 'fedstrata[postgres]'``. It is also an :class:`ImportError`, so code
    that probes for the package with ``except ImportError`` keeps working.

    Attributes:
        package: the importable name of the missing package (``"psycopg"``).
        install: the requirement that brings it (``"fedstrata[postgres]"``).
    """

    def __init__(self, package: str, install: str, needed_for: str) -> None:
        super().__init__(
            f"{needed_for} needs the package {package!r}, which is not installed: "
            f"pip install '{install}'"
        )
        self.name = package
        self.package = package
        self.install = install


class DataError(FedstrataError):
    """Client or evaluation data is missing, unreadable or inconsistent."""


class ShapeError(FedstrataError):
    """An array does not have the shape or size the parameter spec requires."""


class TaskError(FedstrataError):
    """The user's task (model factory, data, loss, loop, metrics) failed or misbehaved.

    The message names the user's function (``module.qualname``) and what was wrong:
    a module that does not import, a factory returning a non-module, data of the
    wrong dtype or shape, a training loop that raised or produced NaN, parameters
    whose shapes differ from the global model's.
    """


class PayloadError(FedstrataError):
    """Bytes received on the wire do not form a valid payload."""


class PipelineError(FedstrataError):
    """Pipeline stages do not chain, or a stage was used out of order."""


class AggregationError(FedstrataError):
    """An aggregator was misused (empty finalize, incompatible merge, wrong tier)."""


class ClientError(FedstrataError):
    """A client failed during a round.

    Attributes:
        client_id: the failing client.
        reason: a short human-readable cause, logged and stored in the run store.
    """

    def __init__(self, client_id: int, reason: str) -> None:
        super().__init__(f"client {client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


class InvalidUpdateError(ClientError):
    """A client's update contains NaN/Inf or does not match the model's shape."""


class ProtocolError(FedstrataError):
    """A participant violated the round or secure-aggregation protocol."""


class RunEndedError(ProtocolError):
    """The run a participant (re)connected to is over: the center refused its session."""


class NodeClaimedError(ProtocolError):
    """An aggregator tier claims an edge or region of the tree that another live tier
    serves: the parent refused its session."""


class SecAggError(ProtocolError):
    """Secure aggregation could not complete (e.g. survivors below the threshold)."""


class TransportError(FedstrataError):
    """Network failure between fedstrata processes."""


class DeadlineError(TransportError):
    """A deadline passed before the operation completed."""


class PrivacyBudgetExhausted(FedstrataError):
    """Running the next round would spend more privacy budget than allowed."""


class CheckpointError(FedstrataError):
    """A checkpoint could not be written or read."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint failed its checksum or format validation."""


class RegistryError(FedstrataError):
    """The device registry is unreachable or holds inconsistent data."""
