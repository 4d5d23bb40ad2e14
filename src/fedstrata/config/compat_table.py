"""The compatibility table (``docs/compatibility.md``), generated from the declaration.

Issue 12 part 3. Every pair of :data:`~fedstrata.config.compat.FEATURES` is switched
on (each by its ``example`` overrides) on the same small configuration and checked by
the same code that validates a configuration, so the table says what the check does.
``fedstrata compatibility`` prints it; a test fails when the docs copy is stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from fedstrata.config.compat import DRIVERS, FEATURES, REFUSALS, RUNTIME, Feature
from fedstrata.config.loading import load_config
from fedstrata.errors import ConfigError

__all__ = ["PAIR_BASE", "compatibility_table", "feature_overrides", "pair_refusal", "pairs"]

PAIR_BASE: tuple[str, ...] = (
    "rounds.clients_per_round=null",
    "rounds.deadline_s=null",
    "evaluation.every=0",
)
"""Overrides of the quickstart preset that switch every feature off."""


def pairs() -> list[tuple[Feature, Feature]]:
    """Every pair of features that can be on together, in declaration order.

    Two features set by one key (``robust`` and ``custom_aggregator``: two values of
    ``server.aggregator``) exclude each other and are no pair.
    """
    return [(a, b) for a, b in combinations(FEATURES, 2) if a.setting != b.setting]


def feature_overrides(features: Sequence[Feature], tmp: str = "devices") -> list[str]:
    """The overrides that switch ``features`` on (``{tmp}`` names a scratch folder)."""
    return [o.replace("{tmp}", tmp) for f in features for o in f.example]


def pair_refusal(a: Feature, b: Feature) -> str | None:
    """The check's message for ``a`` and ``b`` switched on together (None: accepted)."""
    try:
        load_config(overrides=[*PAIR_BASE, *feature_overrides((a, b))])
    except ConfigError as exc:
        return str(exc).split("Value error, ", 1)[-1]
    return None


def _reason(message: str) -> str:
    return message.split(": ", 1)[-1]


def _matrix(notes: list[str]) -> list[str]:
    keys = [f.key for f in FEATURES]
    index = {(a.key, b.key): pair_refusal(a, b) for a, b in pairs()}
    lines = ["| | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in keys:
        cells = []
        for col in keys:
            why = index.get((row, col), index.get((col, row), "-"))
            if row == col or why == "-":
                cells.append("")
            elif why is None:
                cells.append("✓")
            else:
                text = _reason(str(why))
                if text not in notes:
                    notes.append(text)
                cells.append(f"✗[^{notes.index(text) + 1}]")
        lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    return lines


def _features() -> list[str]:
    lines = [
        "| feature | what | setting | docs | takes effect only with |",
        "|---|---|---|---|---|",
    ]
    for f in FEATURES:
        needs = " or ".join(f"`{k}`" for k in f.needs)
        lines.append(f"| `{f.key}` | {f.title} | `{f.setting}` | {f.docs} | {needs} |")
    return lines


def _drivers() -> list[str]:
    keys = [f.key for f in FEATURES]
    drivers = [*DRIVERS, RUNTIME]
    lines = ["| driver | " + " | ".join(f"`{k}`" for k in keys) + " |"]
    lines.append("|---" * (len(keys) + 1) + "|")
    for d in drivers:
        marks = ["✓" if k in d.supports else "✗" for k in keys]
        lines.append(f"| {d.title} | " + " | ".join(marks) + " |")
    return lines


def _refusals() -> list[str]:
    lines = ["| features | when | reason | holds |", "|---|---|---|---|"]
    for r in REFUSALS:
        holds = "in principle" if r.in_principle else "not built yet"
        when = r.condition or "both on"
        lines.append(f"| `{r.pair[0]}` + `{r.pair[1]}` | {when} | {r.reason} | {holds} |")
    return lines


def compatibility_table() -> str:
    """Markdown: the features, what each driver runs, and every pair's verdict."""
    notes: list[str] = []
    matrix = _matrix(notes)
    return "\n".join(
        [
            "# Compatibility",
            "",
            "Generated from `fedstrata.config.compat` by `fedstrata compatibility`; do not "
            "edit by hand. A configuration that combines features refused here fails to "
            "load with the reason; everything else runs, and the pair-matrix test "
            "(`tests/test_composition.py`) trains every accepted pair and checks that each "
            "feature leaves its evidence in the run's records.",
            "",
            "## Features",
            "",
            *_features(),
            "",
            "## Drivers",
            "",
            "The simulator picks its driver from the configuration: a `topology` other "
            "than flat runs the hierarchical simulator, `scheduling.async` the FedBuff "
            "simulator, anything else the flat one. `fedstrata serve center` runs the "
            "deployment runtime (docs/runtime.md), which also refuses the simulator's "
            "generated `devices.*` settings, except `devices.uplink_mbps`, "
            "`downlink_mbps` and `latency_ms` under `scheduling` or FedBuff with "
            "`scheduling.registry_url` (the link figures a "
            "client reports with its measured device profile). The runtime checkpoints "
            "as center nodes with standbys (`failover.enabled`, "
            "docs/resilience-failover.md): `checkpoint` without them is refused there; "
            "`failover.enabled` is refused by the simulators. The runtime's one ✗, "
            "`dropout` (`devices.dropout_rate`), is the simulator's model of clients "
            "that drop out: a deployment's clients drop out for real (kill one; "
            "docs/runtime.md). Of a `topology` section it refuses `mode: auto` (a tree "
            "planned from the latency matrix of simulated sites; a deployment's tree is "
            "its aggregator processes: write it as `topology.edges` or "
            "`topology.regions`) and `edge_failure_rate` (simulated edge failures).",
            "",
            *_drivers(),
            "",
            "## Refused combinations",
            "",
            *_refusals(),
            "",
            "## Pairs (simulator)",
            "",
            "✓: trains; ✗: refused with the footnoted reason.",
            "",
            *matrix,
            "",
            *(f"[^{i}]: {text}" for i, text in enumerate(notes, 1)),
        ]
    )
