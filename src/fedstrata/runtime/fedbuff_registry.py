"""The device registry under FedBuff: the clients' profiles, as the simulator keeps them.

The simulator's FedBuff (``fedstrata.api.assembly`` with ``scheduling.registry_url``,
:func:`~fedstrata.api.scheduling.registry_table`) makes the registry and the run one
source of device profiles: one ``device_profile`` row per client (device id = client
id), and no ``round_history`` (a buffered run plans no work, so it has no round to
record). A deployment knows its devices by measuring them: each client agent reports
its device in its ``Hello`` (:func:`~fedstrata.runtime.sched_build.client_profile`:
``fedstrata device bench`` figures with the configured link), and :class:`ProfileWriter`
writes it to the registry as the synchronous runtime's scheduler does
(:meth:`~fedstrata.runtime.scheduling.CenterScheduler.join`: a measured profile
replaces the registered one). The profiles time nothing in the deployment (its clock is
real); they are there for the next run, simulated or deployed, to start from.
"""

from __future__ import annotations

import logging

from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.scheduling import Registry

__all__ = ["ProfileWriter"]

log = logging.getLogger(__name__)


class ProfileWriter:
    """Writes each connecting client's device profile to ``registry`` (owned: closed
    by :meth:`close`)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._written: dict[int, DeviceReport] = {}

    @classmethod
    def open(cls, url: str) -> ProfileWriter:
        """The writer of the registry at ``url`` (SQLite path or database URL).

        Raises:
            RegistryError: the registry cannot be opened or migrated.
        """
        return cls(Registry.open(url))

    def join(self, client_id: int, report: DeviceReport | None) -> None:
        """Client ``client_id`` connected with its device ``report`` (None: it sent
        none, so nothing is written; a warning names it).

        Raises:
            RegistryError: the write failed.
        """
        if report is None:
            log.warning("client %d sent no device profile; the registry lacks it", client_id)
            return
        if self._written.get(client_id) != report:
            self.registry.upsert_devices(report.profiles(client_id))
            self._written[client_id] = report

    def close(self) -> None:
        """Close the registry."""
        self.registry.close()
