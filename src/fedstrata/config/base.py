"""The strict base of every configuration model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """Frozen, and unknown keys are errors (a typo names its field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
