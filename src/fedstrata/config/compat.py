"""Declared feature support (issue 12 part 3): which features compose, one declaration.

Three tables, all data:

- :data:`FEATURES`: every optional feature a configuration can switch on, how to see
  it on a :class:`~fedstrata.config.FedConfig`, the setting that turns it on, its
  docs page, an example (the overrides the pair matrix uses) and the features it
  needs (one of them) to take effect;
- :data:`DRIVERS`: what each driver (flat simulator, FedBuff, hierarchical simulator,
  deployment runtime) runs;
- :data:`REFUSALS`: the pairs of features that do not combine, each with its reason
  and whether that reason holds in principle or the combination is not built yet.

:func:`refusal` checks a configuration against them: :class:`FedConfig` calls it for
the simulator drivers, :func:`fedstrata.runtime.check_supported` for the runtime. A
combination that becomes supported is one deleted :data:`REFUSALS` entry (or one
feature added to a driver's set); ``docs/compatibility.md`` is generated from these
tables (:mod:`fedstrata.config.compat_table`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedstrata.config.compat_features import FEATURES
from fedstrata.config.compat_refusals import REFUSALS
from fedstrata.config.compat_types import NOT_BUILT as _NOT_BUILT
from fedstrata.config.compat_types import Driver, Feature, Refusal

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = [
    "DRIVERS",
    "FEATURES",
    "REFUSALS",
    "RUNTIME",
    "Driver",
    "Feature",
    "Refusal",
    "driver_for",
    "enabled_features",
    "feature",
    "refusal",
    "simulated_devices",
]


_ALL = frozenset(f.key for f in FEATURES)
_DRIVER_SELECTORS = frozenset({"hierarchy", "async"})

DRIVERS: tuple[Driver, ...] = (
    Driver(
        "flat", "flat synchronous simulator", None, _ALL - _DRIVER_SELECTORS,
        "docs/simulator.md",
    ),
    Driver(
        "async", "FedBuff simulator", "async",
        frozenset({
            "async", "sampling", "registry", "fedeval", "compression", "downlink", "robust",
            "custom_aggregator", "dropout",
        }),
        "docs/scheduling.md",
    ),
    Driver(
        "hierarchical", "hierarchical simulator", "hierarchy",
        frozenset({
            "hierarchy", "fedeval", "sampling", "deadline", "compression", "downlink",
            "privacy", "allocation", "oort", "overselect", "registry", "robust", "dropout",
            "secagg", "custom_aggregator", "checkpoint", "drop_stragglers",
        }),
        "docs/hierarchy.md",
    ),
)  # fmt: skip

RUNTIME = Driver(
    "runtime", "deployment runtime", None,
    frozenset({
        "sampling", "deadline", "compression", "downlink", "robust", "custom_aggregator",
        "allocation", "oort", "overselect", "registry", "async", "privacy", "secagg",
        "checkpoint", "hierarchy", "adaptive_clip", "dp_ftrl", "fedeval",
        "drop_stragglers",
    }),
    "docs/runtime.md",
)  # fmt: skip


def feature(key: str) -> Feature:
    """The feature named ``key``.

    Raises:
        KeyError: no feature has that key.
    """
    for f in FEATURES:
        if f.key == key:
            return f
    raise KeyError(key)


def enabled_features(config: FedConfig) -> tuple[Feature, ...]:
    """The features ``config`` switches on, in :data:`FEATURES` order."""
    return tuple(f for f in FEATURES if f.on(config))


def driver_for(config: FedConfig) -> Driver:
    """The simulator driver that runs ``config``: hierarchical, FedBuff, else flat."""
    on = {f.key for f in enabled_features(config)}
    for d in DRIVERS:
        if d.selected_by is not None and d.selected_by in on:
            return d
    return DRIVERS[0]


def _name(f: Feature) -> str:
    return f"{f.title} ({f.setting}, {f.docs})"


def refusal(config: FedConfig, driver: Driver | None = None) -> str | None:
    """Why ``config`` cannot run (None: it can), on ``driver`` (default: its simulator).

    The message names both features with their settings and docs pages, and the
    reason; see docs/compatibility.md for every pair.
    """
    on = enabled_features(config)
    keys = {f.key for f in on}
    for r in REFUSALS:
        if set(r.pair) <= keys and (r.when is None or r.when(config)):
            a, b = (feature(k) for k in r.pair)
            return f"{_name(a)} does not combine with {_name(b)}: {r.reason}"
    for f in on:
        if f.needs and not keys & set(f.needs):
            wanted = " or ".join(_name(feature(k)) for k in f.needs)
            return f"{_name(f)} takes effect only with {wanted}: set one"
    chosen = driver or driver_for(config)
    needed = {k for f in on for k in f.needs}  # name what was asked for before its needs
    for f in sorted(on, key=lambda f: f.key in needed):
        if f.key not in chosen.supports:
            return _unsupported(chosen, f)
    return simulated_devices(config) if chosen is RUNTIME else None


RUNTIME_LINK_SETTINGS = ("uplink_mbps", "downlink_mbps", "latency_ms")
"""``devices.*`` the runtime honours under ``scheduling`` (or FedBuff with a device
registry): a client's configured link figures in the device profile it reports (its
compute is measured)."""


def simulated_devices(config: FedConfig) -> str | None:
    """Why the runtime refuses ``config``'s ``devices.*`` settings (None: it does not).

    The ``devices`` section generates the simulator's device profiles; a deployment's
    devices are real and measure themselves (``fedstrata device bench``). Only the link
    figures are honoured, under ``scheduling``, as each client's configured uplink,
    downlink and latency; every other setting away from its default is refused.
    """
    d = config.devices
    defaults = type(d)()
    s = config.scheduling  # a client reports its profile: scheduling, FedBuff's registry
    reports = s.enabled or (s.async_.enabled and s.registry_url is not None)
    honoured = RUNTIME_LINK_SETTINGS if reports else ()
    changed = [
        f"devices.{name}"
        for name in type(d).model_fields
        if name not in honoured and name != "dropout_rate"
        and getattr(d, name) != getattr(defaults, name)
    ]  # fmt: skip
    if not changed:
        return None
    return (
        f"{', '.join(changed)} (docs/runtime.md) not supported by the {RUNTIME.title}: "
        "the devices section generates the simulator's device profiles, and a "
        "deployment's devices are real (each client measures itself, as fedstrata "
        "device bench does); only devices.uplink_mbps, downlink_mbps and latency_ms are "
        "used, under scheduling (or FedBuff with scheduling.registry_url), as the "
        "clients' configured link figures (leave the "
        "others at their defaults)"
    )


def _unsupported(driver: Driver, f: Feature) -> str:
    lacks = f.simulated if driver is RUNTIME and f.simulated else _NOT_BUILT
    why = (
        f"the {driver.title} ({driver.docs}) does not run {f.title}; {lacks} "
        f"(leave {f.setting} at its default)"
    )
    if driver.selected_by is None:
        return f"{_name(f)} is not supported by the {driver.title}: {why}"
    return f"{_name(feature(driver.selected_by))} does not combine with {_name(f)}: {why}"
