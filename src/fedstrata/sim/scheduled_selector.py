"""The coordinator's selector for scheduled rounds, shared with the runtime: see
:mod:`fedstrata.scheduling.scheduled_selector`."""

from fedstrata.scheduling.scheduled_selector import ScheduledSelector

__all__ = ["ScheduledSelector"]
