from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecAggPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECAGG_NONE: _ClassVar[SecAggPhase]
    SECAGG_SETUP: _ClassVar[SecAggPhase]
    SECAGG_KEYS: _ClassVar[SecAggPhase]
    SECAGG_SHARES: _ClassVar[SecAggPhase]
    SECAGG_INPUT: _ClassVar[SecAggPhase]
    SECAGG_UNMASK: _ClassVar[SecAggPhase]
    SECAGG_CLUSTER: _ClassVar[SecAggPhase]
SECAGG_NONE: SecAggPhase
SECAGG_SETUP: SecAggPhase
SECAGG_KEYS: SecAggPhase
SECAGG_SHARES: SecAggPhase
SECAGG_INPUT: SecAggPhase
SECAGG_UNMASK: SecAggPhase
SECAGG_CLUSTER: SecAggPhase

class Hello(_message.Message):
    __slots__ = ("client_id", "run_id", "live_clients", "profile", "tier_node", "tier_profiles")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TIER_NODE_FIELD_NUMBER: _ClassVar[int]
    TIER_PROFILES_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    run_id: str
    live_clients: int
    profile: ProfileReport
    tier_node: str
    tier_profiles: _containers.RepeatedCompositeFieldContainer[TierProfile]
    def __init__(self, client_id: _Optional[int] = ..., run_id: _Optional[str] = ..., live_clients: _Optional[int] = ..., profile: _Optional[_Union[ProfileReport, _Mapping]] = ..., tier_node: _Optional[str] = ..., tier_profiles: _Optional[_Iterable[_Union[TierProfile, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("download_s", "compute_s", "examples", "steps", "has_steps")
    DOWNLOAD_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    HAS_STEPS_FIELD_NUMBER: _ClassVar[int]
    download_s: float
    compute_s: float
    examples: int
    steps: int
    has_steps: bool
    def __init__(self, download_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., examples: _Optional[int] = ..., steps: _Optional[int] = ..., has_steps: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("kind", "round_idx", "root_seed", "deadline_s", "plan", "model_bytes", "run_id", "partial_work", "min_fraction", "partial_weighted", "tier_work", "tier_scheduled", "eval_clients")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Task.Kind]
        TRAIN: _ClassVar[Task.Kind]
        DONE: _ClassVar[Task.Kind]
        EVALUATE: _ClassVar[Task.Kind]
    KIND_UNSPECIFIED: Task.Kind
    TRAIN: Task.Kind
    DONE: Task.Kind
    EVALUATE: Task.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_IDX_FIELD_NUMBER: _ClassVar[int]
    ROOT_SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_WORK_FIELD_NUMBER: _ClassVar[int]
    MIN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_WEIGHTED_FIELD_NUMBER: _ClassVar[int]
    TIER_WORK_FIELD_NUMBER: _ClassVar[int]
    TIER_SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    EVAL_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    kind: Task.Kind
    round_idx: int
    root_seed: int
    deadline_s: float
    plan: Plan
    model_bytes: int
    run_id: str
    partial_work: bool
    min_fraction: float
    partial_weighted: bool
    tier_work: _containers.RepeatedCompositeFieldContainer[TierAssignment]
    tier_scheduled: bool
    eval_clients: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kind: _Optional[_Union[Task.Kind, str]] = ..., round_idx: _Optional[int] = ..., root_seed: _Optional[int] = ..., deadline_s: _Optional[float] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., model_bytes: _Optional[int] = ..., run_id: _Optional[str] = ..., partial_work: _Optional[bool] = ..., min_fraction: _Optional[float] = ..., partial_weighted: _Optional[bool] = ..., tier_work: _Optional[_Iterable[_Union[TierAssignment, _Mapping]]] = ..., tier_scheduled: _Optional[bool] = ..., eval_clients: _Optional[_Iterable[int]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("client_id", "round_idx", "run_id", "downlink", "downlink_version", "evaluation")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_IDX_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round_idx: int
    run_id: str
    downlink: bool
    downlink_version: int
    evaluation: bool
    def __init__(self, client_id: _Optional[int] = ..., round_idx: _Optional[int] = ..., run_id: _Optional[str] = ..., downlink: _Optional[bool] = ..., downlink_version: _Optional[int] = ..., evaluation: _Optional[bool] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("client_id", "round_idx", "total_bytes", "num_examples", "metrics", "content", "run_id", "live_clients", "tier_reports", "tier_profiles", "timings", "secagg_phase", "secagg_support_seed", "evaluation")
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
    TIER_REPORTS_FIELD_NUMBER: _ClassVar[int]
    TIER_PROFILES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SECAGG_PHASE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_SUPPORT_SEED_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round_idx: int
    total_bytes: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    content: StreamHeader.Content
    run_id: str
    live_clients: int
    tier_reports: _containers.RepeatedCompositeFieldContainer[TierMemberReport]
    tier_profiles: _containers.RepeatedCompositeFieldContainer[TierProfile]
    timings: SchedTimings
    secagg_phase: SecAggPhase
    secagg_support_seed: int
    evaluation: bool
    def __init__(self, client_id: _Optional[int] = ..., round_idx: _Optional[int] = ..., total_bytes: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., content: _Optional[_Union[StreamHeader.Content, str]] = ..., run_id: _Optional[str] = ..., live_clients: _Optional[int] = ..., tier_reports: _Optional[_Iterable[_Union[TierMemberReport, _Mapping]]] = ..., tier_profiles: _Optional[_Iterable[_Union[TierProfile, _Mapping]]] = ..., timings: _Optional[_Union[SchedTimings, _Mapping]] = ..., secagg_phase: _Optional[_Union[SecAggPhase, str]] = ..., secagg_support_seed: _Optional[int] = ..., evaluation: _Optional[bool] = ...) -> None: ...

class StreamPart(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "reason", "run_id", "secagg_message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SECAGG_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    run_id: str
    secagg_message: bytes
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., run_id: _Optional[str] = ..., secagg_message: _Optional[bytes] = ...) -> None: ...

class SecAggSetup(_message.Message):
    __slots__ = ("round_id", "graph_seed", "party_id", "center_public", "parties", "degree", "threshold")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    CENTER_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    graph_seed: int
    party_id: int
    center_public: bytes
    parties: int
    degree: int
    threshold: int
    def __init__(self, round_id: _Optional[int] = ..., graph_seed: _Optional[int] = ..., party_id: _Optional[int] = ..., center_public: _Optional[bytes] = ..., parties: _Optional[int] = ..., degree: _Optional[int] = ..., threshold: _Optional[int] = ...) -> None: ...

class SecAggKeys(_message.Message):
    __slots__ = ("client_id", "enc_public", "mask_public")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENC_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    enc_public: bytes
    mask_public: bytes
    def __init__(self, client_id: _Optional[int] = ..., enc_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ...) -> None: ...

class SecAggKeyDirectory(_message.Message):
    __slots__ = ("round_id", "client_ids", "enc_publics", "mask_publics")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    ENC_PUBLICS_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLICS_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_ids: _containers.RepeatedScalarFieldContainer[int]
    enc_publics: bytes
    mask_publics: bytes
    def __init__(self, round_id: _Optional[int] = ..., client_ids: _Optional[_Iterable[int]] = ..., enc_publics: _Optional[bytes] = ..., mask_publics: _Optional[bytes] = ...) -> None: ...

class SecAggShareKeys(_message.Message):
    __slots__ = ("client_id", "recipients", "ciphertexts")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    recipients: _containers.RepeatedScalarFieldContainer[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, client_id: _Optional[int] = ..., recipients: _Optional[_Iterable[int]] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SecAggShareBundle(_message.Message):
    __slots__ = ("round_id", "senders", "ciphertexts")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SENDERS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    senders: _containers.RepeatedScalarFieldContainer[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, round_id: _Optional[int] = ..., senders: _Optional[_Iterable[int]] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SecAggMaskedInput(_message.Message):
    __slots__ = ("client_id", "round_id", "length", "modulus_bits", "packed")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round_id: int
    length: int
    modulus_bits: int
    packed: bytes
    def __init__(self, client_id: _Optional[int] = ..., round_id: _Optional[int] = ..., length: _Optional[int] = ..., modulus_bits: _Optional[int] = ..., packed: _Optional[bytes] = ...) -> None: ...

class SecAggUnmaskRequest(_message.Message):
    __slots__ = ("round_id", "survivors", "dropped")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    survivors: _containers.RepeatedScalarFieldContainer[int]
    dropped: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, round_id: _Optional[int] = ..., survivors: _Optional[_Iterable[int]] = ..., dropped: _Optional[_Iterable[int]] = ...) -> None: ...

class SecAggSealed(_message.Message):
    __slots__ = ("client_id", "ephemeral_public", "ciphertext")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    ephemeral_public: bytes
    ciphertext: bytes
    def __init__(self, client_id: _Optional[int] = ..., ephemeral_public: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SecAggUnmaskResponse(_message.Message):
    __slots__ = ("client_id", "seed_owners", "seed_shares", "key_owners", "key_shares", "sealed")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_OWNERS_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_OWNERS_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    seed_owners: _containers.RepeatedScalarFieldContainer[int]
    seed_shares: _containers.RepeatedScalarFieldContainer[bytes]
    key_owners: _containers.RepeatedScalarFieldContainer[int]
    key_shares: _containers.RepeatedScalarFieldContainer[bytes]
    sealed: SecAggSealed
    def __init__(self, client_id: _Optional[int] = ..., seed_owners: _Optional[_Iterable[int]] = ..., seed_shares: _Optional[_Iterable[bytes]] = ..., key_owners: _Optional[_Iterable[int]] = ..., key_shares: _Optional[_Iterable[bytes]] = ..., sealed: _Optional[_Union[SecAggSealed, _Mapping]] = ...) -> None: ...

class SecAggClusterReport(_message.Message):
    __slots__ = ("threshold", "round_id", "survivors", "sealed", "graph_size", "graph_degree", "graph_seed", "clients")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAPH_DEGREE_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    round_id: int
    survivors: _containers.RepeatedScalarFieldContainer[int]
    sealed: _containers.RepeatedCompositeFieldContainer[SecAggSealed]
    graph_size: int
    graph_degree: int
    graph_seed: int
    clients: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, threshold: _Optional[int] = ..., round_id: _Optional[int] = ..., survivors: _Optional[_Iterable[int]] = ..., sealed: _Optional[_Iterable[_Union[SecAggSealed, _Mapping]]] = ..., graph_size: _Optional[int] = ..., graph_degree: _Optional[int] = ..., graph_seed: _Optional[int] = ..., clients: _Optional[_Iterable[int]] = ...) -> None: ...

class TierProfile(_message.Message):
    __slots__ = ("client_id", "profile")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    profile: ProfileReport
    def __init__(self, client_id: _Optional[int] = ..., profile: _Optional[_Union[ProfileReport, _Mapping]] = ...) -> None: ...

class TierAssignment(_message.Message):
    __slots__ = ("client_id", "steps")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    steps: int
    def __init__(self, client_id: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class TierMemberReport(_message.Message):
    __slots__ = ("client_id", "examples", "download_s", "compute_s", "upload_s", "status", "train_loss", "has_loss", "steps", "has_steps", "has_timings")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACCEPTED: _ClassVar[TierMemberReport.Status]
        LATE: _ClassVar[TierMemberReport.Status]
        FAILED: _ClassVar[TierMemberReport.Status]
    ACCEPTED: TierMemberReport.Status
    LATE: TierMemberReport.Status
    FAILED: TierMemberReport.Status
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    HAS_LOSS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    HAS_STEPS_FIELD_NUMBER: _ClassVar[int]
    HAS_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    examples: int
    download_s: float
    compute_s: float
    upload_s: float
    status: TierMemberReport.Status
    train_loss: float
    has_loss: bool
    steps: int
    has_steps: bool
    has_timings: bool
    def __init__(self, client_id: _Optional[int] = ..., examples: _Optional[int] = ..., download_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., upload_s: _Optional[float] = ..., status: _Optional[_Union[TierMemberReport.Status, str]] = ..., train_loss: _Optional[float] = ..., has_loss: _Optional[bool] = ..., steps: _Optional[int] = ..., has_steps: _Optional[bool] = ..., has_timings: _Optional[bool] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ("client_id", "num_examples", "metrics", "error")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    error: str
    def __init__(self, client_id: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., error: _Optional[str] = ...) -> None: ...

class EvalReport(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EvalResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EvalResult, _Mapping]]] = ...) -> None: ...
