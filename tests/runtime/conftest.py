"""Fixtures of the runtime tests; the helpers live in ``rthelpers``."""

from __future__ import annotations

import pytest
from rthelpers import SMALL, run_federation

from fedstrata.config import load_config
from fedstrata.runtime import Deployment, deployment


@pytest.fixture(scope="session")
def small_config():
    return load_config(overrides=SMALL)


@pytest.fixture(scope="session")
def small_deployment(small_config) -> Deployment:
    return deployment(small_config)


@pytest.fixture
def federation():
    """``await federation(dep, ...)``: see :func:`run_federation`."""
    return run_federation
