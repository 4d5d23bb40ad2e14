"""Fixtures of the runtime tests; the helpers live in ``rthelpers``."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

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


@pytest.fixture
def processes():
    """``(ctx, started)``: a forkserver context (torch and the runtime preloaded) and the
    list of processes a test started; any still alive are killed at the end."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime.commands", "fedstrata.torch_adapter"])
    started: list[Any] = []
    yield ctx, started
    for p in started:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)
