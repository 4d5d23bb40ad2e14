"""SQLAlchemy Core tables of the device registry (the schema at the head revision).

The migrations under ``migrations/versions`` build this schema step by step; a test
compares the migrated database with this metadata so the two never drift.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)

__all__ = ["device_profile", "metadata", "model_partitions", "round_history"]

metadata = MetaData()

device_profile = Table(
    "device_profile",
    metadata,
    Column("device_id", BigInteger, primary_key=True, autoincrement=False),
    Column("cpu_score", Float, nullable=False),  # GFLOP/s
    Column("memory_gb", Float, nullable=False),
    Column("network_latency", Float, nullable=False),  # one-way, ms
    Column("avg_train_time", Float, nullable=True),  # EWMA of measured training seconds
    Column("last_update", DateTime(timezone=True), nullable=False),
    Column("uplink_mbps", Float, nullable=False, server_default=text("10.0")),
    Column("downlink_mbps", Float, nullable=False, server_default=text("50.0")),
    Column("availability", Float, nullable=False, server_default=text("1.0")),
    Column("bf16_speedup", Float, nullable=False, server_default=text("1.0")),  # vs fp32
    Column("fp16_speedup", Float, nullable=False, server_default=text("1.0")),
)

model_partitions = Table(
    "model_partitions",
    metadata,
    Column("partition_id", Integer, primary_key=True, autoincrement=False),
    Column("required_memory", Float, nullable=False),  # GB
    Column("compute_intensity", Float, nullable=False),  # relative FLOPs per example
    Column("name", String(128), nullable=False, server_default=text("''")),
)

round_history = Table(
    "round_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("device_id", BigInteger, ForeignKey("device_profile.device_id"), nullable=False),
    Column("round_idx", Integer, nullable=False),
    Column("assigned_work", BigInteger, nullable=False),
    Column("completed_work", BigInteger, nullable=False),
    Column("predicted_s", Float, nullable=True),
    Column("actual_s", Float, nullable=True),
    Column("status", String(16), nullable=False),
    Index("ix_round_history_device_round", "device_id", "round_idx"),
    Index("ix_round_history_round", "round_idx"),
)
