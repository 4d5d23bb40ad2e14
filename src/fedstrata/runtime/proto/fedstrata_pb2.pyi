from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("client_id", "run_id", "live_clients", "profile")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    run_id: str
    live_clients: int
    profile: ProfileReport
    def __init__(self, client_id: _Optional[int] = ..., run_id: _Optional[str] = ..., live_clients: _Optional[int] = ..., profile: _Optional[_Union[ProfileReport, _Mapping]] = ...) -> None: ...

class ProfileReport(_message.Message):
    __slots__ = ("cpu_score", "memory_gb", "network_latency_ms", "uplink_mbps", "downlink_mbps", "bf16_speedup", "fp16_speedup", "local_examples")
    CPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    NETWORK_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    UPLINK_MBPS_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_MBPS_FIELD_NUMBER: _ClassVar[int]
    BF16_SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    FP16_SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    cpu_score: float
    memory_gb: float
    network_latency_ms: float
    uplink_mbps: float
    downlink_mbps: float
    bf16_speedup: float
    fp16_speedup: float
    local_examples: int
    def __init__(self, cpu_score: _Optional[float] = ..., memory_gb: _Optional[float] = ..., network_latency_ms: _Optional[float] = ..., uplink_mbps: _Optional[float] = ..., downlink_mbps: _Optional[float] = ..., bf16_speedup: _Optional[float] = ..., fp16_speedup: _Optional[float] = ..., local_examples: _Optional[int] = ...) -> None: ...

class SchedTimings(_message.Message):
    __slots__ = ("download_s", "compute_s", "examples")
    DOWNLOAD_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    download_s: float
    compute_s: float
    examples: int
    def __init__(self, download_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., examples: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("batch_size", "lr", "epochs", "steps", "optimizer", "momentum", "weight_decay", "prox_mu")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    PROX_MU_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    lr: float
    epochs: int
    steps: int
    optimizer: str
    momentum: float
    weight_decay: float
    prox_mu: float
    def __init__(self, batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., epochs: _Optional[int] = ..., steps: _Optional[int] = ..., optimizer: _Optional[str] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ..., prox_mu: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "round_idx", "root_seed", "deadline_s", "plan", "model_bytes", "run_id")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Task.Kind]
        TRAIN: _ClassVar[Task.Kind]
        DONE: _ClassVar[Task.Kind]
    KIND_UNSPECIFIED: Task.Kind
    TRAIN: Task.Kind
    DONE: Task.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_IDX_FIELD_NUMBER: _ClassVar[int]
    ROOT_SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    kind: Task.Kind
    round_idx: int
    root_seed: int
    deadline_s: float
    plan: Plan
    model_bytes: int
    run_id: str
    def __init__(self, kind: _Optional[_Union[Task.Kind, str]] = ..., round_idx: _Optional[int] = ..., root_seed: _Optional[int] = ..., deadline_s: _Optional[float] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., model_bytes: _Optional[int] = ..., run_id: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("client_id", "round_idx", "run_id", "downlink", "downlink_version")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_IDX_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round_idx: int
    run_id: str
    downlink: bool
    downlink_version: int
    def __init__(self, client_id: _Optional[int] = ..., round_idx: _Optional[int] = ..., run_id: _Optional[str] = ..., downlink: _Optional[bool] = ..., downlink_version: _Optional[int] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("client_id", "round_idx", "total_bytes", "num_examples", "metrics", "content", "run_id", "live_clients", "timings")
    class Content(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UPDATE: _ClassVar[StreamHeader.Content]
        PARTIAL: _ClassVar[StreamHeader.Content]
    UPDATE: StreamHeader.Content
    PARTIAL: StreamHeader.Content
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_IDX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round_idx: int
    total_bytes: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    content: StreamHeader.Content
    run_id: str
    live_clients: int
    timings: SchedTimings
    def __init__(self, client_id: _Optional[int] = ..., round_idx: _Optional[int] = ..., total_bytes: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., content: _Optional[_Union[StreamHeader.Content, str]] = ..., run_id: _Optional[str] = ..., live_clients: _Optional[int] = ..., timings: _Optional[_Union[SchedTimings, _Mapping]] = ...) -> None: ...

class StreamPart(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "reason", "run_id")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    run_id: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...
