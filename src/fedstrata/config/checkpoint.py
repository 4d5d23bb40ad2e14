"""Checkpoint tiers: how often each tier is written and how many checkpoints it keeps."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from fedstrata.config.base import Strict as _Strict

__all__ = ["CheckpointConfig"]

_MASK = "**********"


class CheckpointConfig(_Strict):
    """Checkpoint tiers (docs/resilience.md): a memory ring, local disk, object storage.

    A tier writes after round r when r is a multiple of its ``*_every`` (0 turns it
    off). The disk tier lives in the run directory's ``checkpoints/``; the object tier
    at ``object_url`` (``s3://bucket/prefix``, or a local path such as a shared mount).
    S3 credentials: prefer the environment (``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``); a secret given here is never logged and is written
    masked to the run directory's config.yaml.
    """

    enabled: bool = Field(
        False,
        description="checkpoint every round so `fedstrata run --resume` can continue "
        "(flat and tree simulators; every tier off when false)",
    )
    memory_every: int = Field(1, ge=0, description="memory snapshot every N rounds (0: off)")
    memory_keep: int = Field(3, ge=1, description="rounds the memory ring keeps")
    disk_every: int = Field(10, ge=0, description="local-disk checkpoint every N rounds (0: off)")
    disk_keep: int = Field(3, ge=1, description="checkpoints kept on disk")
    object_url: str | None = Field(
        None,
        description="object-storage tier: s3://bucket/prefix or a local path (null: off)",
        min_length=1,
    )
    object_every: int = Field(100, ge=0, description="object-storage checkpoint every N rounds")
    object_keep: int = Field(3, ge=1, description="checkpoints kept in object storage")
    object_endpoint_url: str | None = Field(
        None, description="S3 endpoint of an S3-compatible server (http://host:port)"
    )
    object_key: str | None = Field(None, description="S3 access key id (default: environment)")
    object_secret: SecretStr | None = Field(
        None, description="S3 secret key (default: environment; never logged)"
    )

    @field_validator("object_secret")
    @classmethod
    def _not_masked(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == _MASK:
            raise ValueError(
                "object_secret is the masked placeholder a run directory's config.yaml "
                "records; give the secret again or set AWS_SECRET_ACCESS_KEY"
            )
        return value

    def storage_options(self) -> dict[str, Any]:
        """fsspec options of the object tier (includes the secret: never log this)."""
        options: dict[str, Any] = {}
        if self.object_endpoint_url is not None:
            options["endpoint_url"] = self.object_endpoint_url
        if self.object_key is not None:
            options["key"] = self.object_key
        if self.object_secret is not None:
            options["secret"] = self.object_secret.get_secret_value()
        return options
