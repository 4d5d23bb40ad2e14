"""A client's side of a :class:`~fedstrata.runtime.build.Deployment`: its agent.

:func:`client_agent` builds the :class:`~fedstrata.runtime.client.ClientAgent` of one
client on its own machine: its data (loaded here), its trainer, its uplink pipeline
(privacy stages, the secure-aggregation ring or the compression chain, with the
error-feedback residuals it keeps across center terms), its secure-aggregation half,
its downlink replica, the device profile it reports to a scheduler, the reconnection
jitter and its federated-evaluation data. :meth:`Deployment.client` calls it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from fedstrata.coordinator.round_logic import Weighting
from fedstrata.core.context import derive_seed
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import LocalData, Trainer
from fedstrata.errors import ConfigError
from fedstrata.runtime.client import ClientAgent
from fedstrata.runtime.client_link import Backoff, CenterLink, Sleep
from fedstrata.runtime.downlink import DownlinkReplica
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.secagg_client import SecureClient

if TYPE_CHECKING:
    from fedstrata.runtime.build import Deployment

__all__ = ["client_agent", "device_profile"]


def client_agent(
    dep: Deployment,
    link: CenterLink,
    client_id: int,
    trainer: Trainer | None,
    *,
    backoff: Backoff | None,
    sleep: Sleep,
    profile: DeviceReport | None,
) -> ClientAgent:
    """The agent of ``client_id`` of ``dep`` over ``link`` (see :meth:`Deployment.client`).

    Raises:
        ConfigError: ``client_id`` is not a client of the federation.
        TaskError: the task's data function failed or returned unusable data.
    """
    if not 0 <= client_id < dep.num_clients:
        raise ConfigError(f"client_id must be in [0, {dep.num_clients}), got {client_id}")
    data = dep.local_data(client_id)
    trainer = trainer or dep.factory()
    rng = np.random.default_rng(derive_seed(dep.config.seed, 0, client_id, "reconnect"))
    residuals = MemoryStateStore()  # kept across center terms (client_terms.py)
    secure = dep._secure(store=lambda: residuals)
    pipe = dep._pipeline(None if secure is None else secure[0], lambda: residuals)
    weighting: Weighting = "uniform" if dep.config.privacy.enabled else "examples"
    agent = ClientAgent(
        link,
        client_id,
        trainer,
        data,
        pipe,
        backoff=backoff,
        rng=rng,
        sleep=sleep,
        new_pipeline=functools.partial(dep.client_pipeline, residuals),
        downlink=DownlinkReplica() if dep.config.downlink.enabled else None,
        profile=profile or device_profile(dep, trainer, data, client_id),
        secure=None if secure is None else SecureClient(link, secure[1], weighting),  # type: ignore[arg-type]
        residuals=residuals,
    )
    if dep.fed_eval is not None:
        agent.eval_data = dep.fed_eval.eval_data(client_id)
    return agent


def device_profile(
    dep: Deployment, trainer: Trainer, data: LocalData, client_id: int
) -> DeviceReport | None:
    """This device measured at start-up, for the scheduler or FedBuff's registry
    (:func:`~fedstrata.runtime.sched_build.client_profile`); None when neither is on."""
    if not (dep.config.scheduling.enabled or dep.config.scheduling.registry_url):
        return None  # a profile for the scheduler, or FedBuff's registry
    from fedstrata.runtime.sched_build import client_profile  # deferred: SQLAlchemy

    return client_profile(dep.config, trainer, data, client_id)
