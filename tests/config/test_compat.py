"""Issue 12 part 3: one declaration of feature support, one check, a generated table."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.config import load_config
from fedstrata.config.compat import DRIVERS, FEATURES, REFUSALS, RUNTIME, feature, refusal
from fedstrata.config.compat_table import (
    PAIR_BASE,
    compatibility_table,
    feature_overrides,
    pair_refusal,
    pairs,
)
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported

DOCS = Path(__file__).parents[2] / "docs" / "compatibility.md"
HIERARCHY = feature_overrides((feature("hierarchy"),))
ASYNC = feature_overrides((feature("async"),))


def test_the_compatibility_table_is_current() -> None:
    """Issue 12 part 3: the docs' table is what the declaration generates."""
    assert DOCS.read_text() == compatibility_table() + "\n", (
        "docs/compatibility.md is stale: run `fedstrata compatibility > docs/compatibility.md`"
    )


def test_the_cli_prints_the_table() -> None:
    from typer.testing import CliRunner

    from fedstrata.cli import app

    result = CliRunner().invoke(app, ["compatibility"])
    assert result.exit_code == 0
    assert result.output == compatibility_table() + "\n"


@pytest.mark.parametrize("f", FEATURES, ids=[f.key for f in FEATURES])
def test_each_feature_is_off_at_the_base_and_on_with_its_example(f) -> None:
    base = load_config(overrides=list(PAIR_BASE))
    assert not f.on(base)
    assert f.on(load_config(overrides=[*PAIR_BASE, *feature_overrides((f,))]))
    assert (Path(__file__).parents[2] / f.docs).is_file()


def test_declared_keys_exist() -> None:
    keys = {f.key for f in FEATURES}
    for r in REFUSALS:
        assert set(r.pair) <= keys
    for d in (*DRIVERS, RUNTIME):
        assert d.supports <= keys
    assert len(keys) == len(FEATURES)


@pytest.mark.parametrize("r", REFUSALS, ids=["+".join(r.pair) for r in REFUSALS])
def test_a_refused_pair_names_both_settings_the_docs_and_the_reason(r) -> None:
    a, b = feature(r.pair[0]), feature(r.pair[1])
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[*PAIR_BASE, *feature_overrides((a, b)), *r.example])
    message = str(err.value)
    for part in (a.setting, b.setting, a.docs, b.docs, r.reason):
        assert part in message


@pytest.mark.parametrize(
    "overrides",
    [
        [*HIERARCHY, "downlink.preset=int8"],
        [*HIERARCHY, "rounds.clients_per_round=4"],
        [*HIERARCHY, "rounds.deadline_s=5"],
        [*ASYNC, "server.aggregator=median"],
        [*ASYNC, "downlink.preset=int8"],
        ["secagg.enabled=true", "scheduling.allocation=true", "rounds.deadline_s=5"],
    ],
    ids=["tree+downlink", "tree+sampling", "tree+deadline", "async+median", "async+downlink",
         "secagg+allocation"],
)  # fmt: skip
def test_combinations_ignored_before_are_honoured_now(overrides) -> None:
    """Issue 12: the issue's list of settings that were accepted and silently ignored
    now load (tests/test_composition.py checks each leaves its evidence in the run)."""
    assert refusal(load_config(overrides=[*PAIR_BASE, *overrides])) is None


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduling.overselect=0.2"],
    ],
    ids=["overselect-alone"],
)  # fmt: skip
def test_combinations_accepted_and_ignored_before_are_refused(overrides) -> None:
    """Issue 12: settings that were accepted and silently ignored and are not built."""
    with pytest.raises(ConfigError, match=r"not built yet|takes effect only with"):
        load_config(overrides=[*PAIR_BASE, *overrides])


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        (["devices.dropout_rate=0.2"], "devices.dropout_rate"),
    ],
)
def test_the_runtime_refuses_what_it_does_not_run(overrides, setting) -> None:
    """Issue 12 part 3: the runtime read only three sections and ignored the rest."""
    with pytest.raises(ConfigError, match="not supported by the deployment runtime") as err:
        check_supported(load_config(overrides=[*PAIR_BASE, *overrides]))
    assert setting in str(err.value)


def test_the_runtime_runs_an_explicit_tree_and_refuses_a_planned_one() -> None:
    """Issue 13 part 5: a deployment's tree is its processes: topology.edges runs (as
    the simulator's tree), topology.mode=auto is refused with the reason."""
    with pytest.raises(ConfigError, match=r"topology\.mode=auto plans the tree"):
        check_supported(load_config(overrides=[*PAIR_BASE, *HIERARCHY]))
    n = load_config(overrides=PAIR_BASE).data.num_clients
    edges = {"e0": list(range(n // 2)), "e1": list(range(n // 2, n))}
    tree = ["topology.mode=explicit", f"topology.edges={edges}", "topology.kappa_edge=2"]
    check_supported(load_config(overrides=[*PAIR_BASE, *tree]))


def test_the_runtime_runs_dp_secure_aggregation_and_the_plateau_switch() -> None:
    """Issue 13: DP and secure aggregation run over gRPC; so does the plateau switch,
    fed the center's evaluation loss (tests/runtime/test_runtime_dp_methods.py)."""
    check_supported(load_config(overrides=[*PAIR_BASE, "privacy.mechanism=central"]))
    check_supported(load_config(overrides=[*PAIR_BASE, "secagg.enabled=true"]))
    plateau = ["privacy.mechanism=central", "privacy.switch_on_plateau=true"]
    check_supported(load_config(overrides=[*PAIR_BASE, *plateau]))


def test_the_runtime_runs_its_declared_features() -> None:
    """Each pair of declared features that the simulator combines, the runtime runs
    too (issue 13: DP, secure aggregation, downlink, scheduling and FedBuff joined the
    set); FedBuff with its own companions as well."""
    on = [f for f in FEATURES if f.key in RUNTIME.supports]
    ran = 0
    for a, b in itertools.combinations(on, 2):
        try:
            config = load_config(overrides=[*PAIR_BASE, *feature_overrides((a, b))])
        except ConfigError:
            continue  # refused by the simulator as well (docs/compatibility.md)
        assert refusal(config, RUNTIME) is None, (a.key, b.key)
        ran += 1
    assert ran >= len(on)
    buffered = [f for f in FEATURES if f.key in {"async", "compression", "sampling", "robust"}]
    config = load_config(overrides=[*PAIR_BASE, *feature_overrides(buffered)])
    assert refusal(config, RUNTIME) is None


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(pairs()))
def test_a_pair_is_refused_whichever_order_it_is_switched_on(pair) -> None:
    """The verdict of a pair depends on the pair, not on the order of its overrides."""
    a, b = pair
    first, second = pair_refusal(a, b), pair_refusal(b, a)
    assert (first is None) == (second is None)


@pytest.mark.parametrize("r", REFUSALS, ids=["+".join(r.pair) for r in REFUSALS])
def test_a_reason_says_whether_it_holds_in_principle(r) -> None:
    """A refusal that is only not built yet says so; one that holds in principle does not."""
    assert ("not built yet" in r.reason) == (not r.in_principle)


@pytest.mark.parametrize(
    "setting",
    ["topology.partial_compression.preset=int8", "topology.kappa_edge=2",
     "topology.kappa_region=3", "topology.edge_failure_rate=0.1"],
)  # fmt: skip
def test_tier_settings_on_a_flat_topology_are_refused(setting) -> None:
    """Issue 12: a tree's settings on a flat federation were accepted and ignored."""
    name = setting.split("=")[0].removesuffix(".preset")
    with pytest.raises(ConfigError, match=f"{name} applies to the tiers of a tree"):
        load_config(overrides=[*PAIR_BASE, setting])
    assert refusal(load_config(overrides=[*PAIR_BASE, *HIERARCHY, setting])) is None or (
        "kappa" in setting  # a tree refuses some periods with other features, not alone
    )


def test_the_runtime_says_why_a_simulated_setting_has_no_deployment_meaning() -> None:
    """``devices.dropout_rate`` models real dropouts; the runtime refuses it as such, not
    as a feature it has yet to build."""
    with pytest.raises(ConfigError, match="drop out for real") as err:
        check_supported(load_config(overrides=[*PAIR_BASE, "devices.dropout_rate=0.1"]))
    assert "not built yet" not in str(err.value)
