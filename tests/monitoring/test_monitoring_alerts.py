"""Alert rules: validation, the streak laws (hypothesis), the run store, the rules file."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedstrata.errors import ConfigError
from fedstrata.monitoring import RunStore
from fedstrata.monitoring.alerts import (
    DEFAULT_RULES,
    Alert,
    AlertEvaluator,
    AlertRule,
    evaluate,
    prometheus_rules_yaml,
)

Row = Mapping[str, float | None]
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}

values = st.one_of(st.none(), st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 2)))
series = st.lists(values, max_size=40)


def _rows(vals: Sequence[float | None], key: str = "sync_share") -> list[Row]:
    return [{key: v} for v in vals]


def _rule(op: str = ">", threshold: float = 0.5, for_rounds: int = 1) -> AlertRule:
    return AlertRule(name="R", metric="sync_share", op=op, threshold=threshold,  # type: ignore[arg-type]
                     for_rounds=for_rounds)  # fmt: skip


def _reference(vals: Sequence[float | None], op: str, threshold: float, k: int) -> list[int]:
    """Rounds at which a streak of ``k`` measured rows holding the condition completes,
    once per maximal run (the law, written independently of the evaluator)."""
    measured = [(i, v) for i, v in enumerate(vals) if v is not None]
    fired, streak = [], 0
    for i, v in measured:
        streak = streak + 1 if _OPS[op](v, threshold) else 0
        if streak == k:
            fired.append(i)
    return fired


@settings(max_examples=150, deadline=None)
@given(series, st.sampled_from(sorted(_OPS)), st.sampled_from([-0.5, 0.0, 0.5]), st.integers(1, 5))
def test_comparison_fires_once_per_streak_of_for_rounds(
    vals: list[float | None], op: str, threshold: float, k: int
) -> None:
    alerts = evaluate([_rule(op, threshold, k)], _rows(vals))
    assert [a.round for a in alerts] == _reference(vals, op, threshold, k)
    for a in alerts:
        assert a.value == vals[a.round]
        assert a.rule == "R"


@settings(max_examples=100, deadline=None)
@given(series, st.sampled_from(sorted(_OPS)), st.integers(1, 5))
def test_more_for_rounds_never_fires_more(vals: list[float | None], op: str, k: int) -> None:
    fewer = evaluate([_rule(op, 0.0, k + 1)], _rows(vals))
    more = evaluate([_rule(op, 0.0, k)], _rows(vals))
    assert len(fewer) <= len(more)


@settings(max_examples=100, deadline=None)
@given(series, st.sampled_from([("<", ">"), ("<=", ">="), (">", "<"), (">=", "<=")]))
def test_an_op_is_its_mirror_on_negated_values(
    vals: list[float | None], ops: tuple[str, str]
) -> None:
    negated = [None if v is None else -v for v in vals]
    a = evaluate([_rule(ops[0], 0.5, 2)], _rows(vals))
    b = evaluate([_rule(ops[1], -0.5, 2)], _rows(negated))
    assert [x.round for x in a] == [x.round for x in b]


@settings(max_examples=100, deadline=None)
@given(series, st.integers(0, 40))
def test_online_evaluation_equals_batch_on_every_prefix(
    vals: list[float | None], cut: int
) -> None:
    rules = [_rule(">", 0.0, 2), _rule("falling", 0.0, 2).model_copy(update={"name": "F"})]
    online = AlertEvaluator(rules)
    pushed = [a for row in _rows(vals[:cut]) for a in online.push(row)]
    assert pushed == evaluate(rules, _rows(vals[:cut]))
    assert pushed == [a for a in evaluate(rules, _rows(vals)) if a.round < cut]


@settings(max_examples=100, deadline=None)
@given(series, st.integers(1, 4))
def test_falling_counts_consecutive_drops_between_measured_values(
    vals: list[float | None], k: int
) -> None:
    rule = AlertRule(name="F", metric="accuracy", op="falling", for_rounds=k)
    alerts = evaluate([rule], _rows(vals, "accuracy"))
    measured = [(i, v) for i, v in enumerate(vals) if v is not None]
    expected, streak = [], 0
    for (_, prev), (i, v) in itertools.pairwise(measured):
        streak = streak + 1 if v < prev else 0
        if streak == k:
            expected.append(i)
    assert [a.round for a in alerts] == expected


def test_falling_needs_a_drop_larger_than_the_threshold() -> None:
    rule = AlertRule(name="F", metric="accuracy", op="falling", threshold=0.05)
    rows = _rows([0.9, 0.87, 0.80, 0.79], "accuracy")
    assert [a.round for a in evaluate([rule], rows)] == [2]


def test_row_round_key_names_the_round_and_nan_is_skipped() -> None:
    rows = [{"round": 7, "sync_share": 0.9}, {"round": 8, "sync_share": float("nan")},
            {"round": 9, "sync_share": 0.95}]  # fmt: skip
    (alert,) = evaluate([_rule(">", 0.7, 2)], rows)
    assert alert.round == 9
    assert alert.value == 0.95
    assert "sync_share above 0.7 for 2 rounds" in alert.message


def test_firing_lists_rules_whose_condition_still_holds() -> None:
    ev = AlertEvaluator([_rule(">", 0.5, 1)])
    ev.push({"sync_share": 0.9})
    assert ev.firing() == ["R"]
    ev.push({"sync_share": 0.1})
    assert ev.firing() == []


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"metric": "nope"}, "not a federation metric"),
        ({"name": "has space"}, "name"),
        ({"for_rounds": 0}, "for_rounds"),
        ({"op": "=="}, "op"),
        ({"op": "falling", "threshold": -1.0}, "must be >= 0"),
        ({"threshold": float("inf")}, "threshold"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_name_the_field(fields: dict[str, object], needle: str) -> None:
    base: dict[str, object] = {"name": "R", "metric": "sync_share", "op": ">", "threshold": 0.5}
    with pytest.raises(ValidationError, match=needle):
        AlertRule(**{**base, **fields})


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeated: \\['R'\\]"):
        evaluate([_rule(), _rule()], [])


def test_default_rules_cover_the_issue() -> None:
    by_metric = {r.metric: r for r in DEFAULT_RULES}
    assert (by_metric["sync_share"].op, by_metric["sync_share"].threshold) == (">", 0.7)
    assert (by_metric["device_utilization"].op, by_metric["device_utilization"].threshold) == (
        "<", 0.6)  # fmt: skip
    assert by_metric["completion_rate"].threshold == 0.95
    assert by_metric["privacy_plan_ratio"].op == ">"
    assert by_metric["accuracy"].op == "falling"
    assert by_metric["accuracy"].for_rounds > 1


def test_rules_yaml_translates_each_rule() -> None:
    rules = [*DEFAULT_RULES, AlertRule(name="Up", metric="loss", op="rising", threshold=0.1)]
    doc = yaml.safe_load(prometheus_rules_yaml(rules, round_interval_s=30))
    entries = {e["alert"]: e for e in doc["groups"][0]["rules"]}
    assert entries["SyncShareHigh"]["expr"] == "fedstrata_sync_share > 0.7"
    assert entries["SyncShareHigh"]["for"] == "60s"  # (3 - 1) rounds of 30 s
    assert "for" not in entries["PrivacyAheadOfPlan"]
    assert entries["PrivacyAheadOfPlan"]["labels"] == {"severity": "critical"}
    assert entries["AccuracyFalling"]["expr"] == (
        "fedstrata_accuracy < (fedstrata_accuracy offset 30s)")  # fmt: skip
    assert entries["Up"]["expr"] == "fedstrata_loss > (fedstrata_loss offset 30s) + 0.1"
    with pytest.raises(ConfigError, match="round_interval_s"):
        prometheus_rules_yaml(rules, round_interval_s=0)


def test_run_store_keeps_alerts_in_order(tmp_path: Path) -> None:
    fired = [Alert("A", 2, 0.8, "warning", "a"), Alert("B", 3, 0.1, "critical", "b")]
    with RunStore.create(tmp_path / "run") as store:
        for alert in fired:
            store.emit(alert)
        assert store.alerts() == fired
    with RunStore.open(tmp_path / "run") as reader:
        assert reader.alerts() == fired
