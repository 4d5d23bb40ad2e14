"""Issue 14 part 6: your own server strategy (optimizer and aggregator), by import
string in the config or as Python objects, checked against a direct computation."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedstrata.aggregation import TrimmedMean, WeightedMean
from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import AggregationError, ConfigError, TaskError
from fedstrata.runtime import deployment
from fedstrata.strategy import RuleAggregator, as_aggregator, as_server_optimizer

SMALL = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=3",
    "rounds.clients_per_round=4",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
]

STRATEGY_MODULE = textwrap.dedent(
    """
    import numpy as np

    CLIP = 0.01
    LOG = []  # (kind, inputs..., output) of every call, for the test


    class ServerNesterov:
        \"\"\"Nesterov server momentum: v = mu v + d; x = x + lr (d + mu v).\"\"\"

        def __init__(self, lr=1.0, mu=0.5):
            self.lr, self.mu = lr, mu

        def init(self, params):
            return np.zeros_like(params)

        def step(self, params, delta, velocity):
            v = self.mu * velocity + delta
            out = params + self.lr * (delta + self.mu * v)
            LOG.append(("step", params.copy(), delta.copy(), out.copy()))
            return out, v


    def clipped_mean(vectors, weights):
        \"\"\"Coordinate-wise clipped weighted mean.\"\"\"
        out = np.average(np.clip(vectors, -CLIP, CLIP), axis=0, weights=weights)
        LOG.append(("rule", vectors.copy(), weights.copy(), out.copy()))
        return out


    class NotAnOptimizer:
        pass


    class Exploding:
        def init(self, params):
            return None

        def step(self, params, delta, state):
            raise ZeroDivisionError("boom")


    def short_rule(vectors, weights):
        return vectors[0, :3]
    """
)


def _module(tmp_path: Path, name: str) -> Path:
    """``name``.py holding the strategies, in its own folder (a fresh module per test)."""
    (tmp_path / f"{name}.py").write_text(STRATEGY_MODULE)
    return tmp_path


def _check_against_direct_computation(log: list[tuple], final: np.ndarray, clip: float) -> None:
    """Each round: the delta is the clipped mean of that round's updates; the step is
    Nesterov's on it; the next round starts from the step's output; the run ends on it."""
    rules = [e for e in log if e[0] == "rule"]
    steps = [e for e in log if e[0] == "step"]
    assert len(rules) == len(steps) == 3
    for (_, vectors, weights, _), (_, _, delta, _) in zip(rules, steps, strict=True):
        expected = (np.clip(vectors, -clip, clip) * weights[:, None]).sum(0) / weights.sum()
        np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-9)
    assert max(np.abs(r[1]).max() for r in rules) > clip  # the clip bites
    assert max(np.abs(s[2]).max() for s in steps) <= clip
    velocity = np.zeros_like(final)
    x = steps[0][1]
    for _, params, delta, _ in steps:
        np.testing.assert_array_equal(params, x)  # the engine applied our output
        velocity = 0.5 * velocity + delta
        x = params + 1.0 * (delta + 0.5 * velocity)
    np.testing.assert_allclose(final, x, rtol=1e-6)


def test_config_import_strings_run_your_optimizer_and_aggregator(tmp_path):
    """Issue 14 part 6: ``server.optimizer`` / ``server.aggregator`` import strings."""
    project = _module(tmp_path, "strat_cfg")
    (project / "fed.yaml").write_text(
        "server: {optimizer: 'strat_cfg:ServerNesterov', aggregator: 'strat_cfg:clipped_mean'}\n"
    )
    result = run(load_config(project / "fed.yaml", overrides=SMALL))
    log = sys.modules["strat_cfg"].LOG
    _check_against_direct_computation(log, result.simulation.params, clip=0.01)


def test_python_objects_run_your_optimizer_and_aggregator(tmp_path):
    """Issue 14 part 6: the same strategies passed to ``run`` as objects."""
    _module(tmp_path, "strat_obj")
    sys.path.insert(0, str(tmp_path))
    try:
        import strat_obj  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    result = run(
        load_config(overrides=SMALL),
        server_optimizer=strat_obj.ServerNesterov(lr=1.0, mu=0.5),
        aggregator=strat_obj.clipped_mean,
    )
    _check_against_direct_computation(strat_obj.LOG, result.simulation.params, clip=0.01)


class HeavyBall:
    """FedAvgM written as a user's optimizer: must match the built-in ``fedavgm``."""

    def init(self, params):
        return np.zeros_like(params)

    def step(self, params, delta, velocity):
        v = (np.float32(0.9) * velocity + delta).astype(np.float32)
        return (params + np.float32(1.0) * v).astype(np.float32), v


def test_the_builtins_implement_the_same_protocol():
    """Issue 14 part 6: a user's FedAvgM equals ``fedavgm``; a built-in aggregator
    object equals its config name."""
    builtin = run(load_config(overrides=[*SMALL, "server.optimizer=fedavgm"]))
    mine = run(load_config(overrides=SMALL), server_optimizer=HeavyBall)
    np.testing.assert_allclose(mine.simulation.params, builtin.simulation.params, atol=1e-6)
    named = run(load_config(overrides=[*SMALL, "server.aggregator=trimmed_mean"]))
    passed = run(load_config(overrides=SMALL), aggregator=TrimmedMean(beta=0.1))
    np.testing.assert_array_equal(passed.simulation.params, named.simulation.params)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ("strat_err:NotAnOptimizer", "server optimizer strat_err.NotAnOptimizer needs methods"),
        ("strat_err:Exploding", "server optimizer strat_err.Exploding.step raised Zero"),
        ("no_such_module:Opt", "server.optimizer 'no_such_module:Opt': importing no_such"),
        ("strat_err:Missing", "module strat_err has no attribute 'Missing'"),
    ],
)
def test_bad_server_optimizers_name_the_culprit(tmp_path, optimizer, message):
    """Issue 14 part 6: bad user code gives one TaskError naming it."""
    _module(tmp_path, "strat_err")
    cfg = load_config(
        overrides=[*SMALL, f"server.optimizer={optimizer}", f"project_dir={tmp_path}"]
    )
    with pytest.raises(TaskError, match=message):
        run(cfg)


def test_a_rule_of_the_wrong_shape_names_the_rule(tmp_path):
    _module(tmp_path, "strat_shape")
    overrides = [*SMALL, "server.aggregator=strat_shape:short_rule", f"project_dir={tmp_path}"]
    with pytest.raises(
        TaskError, match=r"aggregation rule strat_shape.short_rule returned .* \(3,\)"
    ):
        run(load_config(overrides=overrides))


def test_a_malformed_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"server\.optimizer.*import string"):
        load_config(overrides=["server.optimizer=nesterov"])


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("secagg.enabled=true", "secagg"),
        ("privacy.mechanism=central", "privacy.mechanism=central"),
    ],
)
def test_your_aggregator_is_refused_where_it_cannot_run(override, reason):
    """Issue 14 part 6: a center-only rule cannot run under secure aggregation or
    under central DP (its sensitivity is unknown); on a tree it runs at the center
    (issue 12 part 4, tests/api/test_api_hierarchy.py)."""
    with pytest.raises(
        ConfigError, match=f"your aggregator .*_mean_rule cannot run with {reason}"
    ):
        # every client each round: the hierarchy does not sample (issue 12, compatibility)
        run(
            load_config(overrides=[*SMALL, "rounds.clients_per_round=null", override]),
            aggregator=_mean_rule,
        )


def _mean_rule(vectors, weights):
    return vectors.mean(0)


def test_a_config_import_string_aggregator_is_refused_with_secagg():
    with pytest.raises(
        ConfigError, match=r"secagg\.enabled.*server\.aggregator.*secure aggregation reveals only"
    ):
        load_config(overrides=["secagg.enabled=true", "server.aggregator=my.mod:rule"])


def test_a_rule_cannot_merge_at_a_runtime_tier(tmp_path):
    """Issue 14 part 6: the runtime refuses a non-mergeable aggregator below tiers."""
    _module(tmp_path, "strat_tier")
    cfg = load_config(
        overrides=[*SMALL, "server.aggregator=strat_tier:clipped_mean", f"project_dir={tmp_path}"]
    )
    with pytest.raises(ConfigError, match="cannot merge tiers"):
        deployment(cfg).center(participants=2)
    rule = RuleAggregator(lambda v, w: v[0])
    state = rule.init(2)
    with pytest.raises(AggregationError, match="not mergeable"):
        rule.merge(state, rule.init(2))


def test_protocol_adapters_accept_builtins_and_refuse_other_objects():
    assert isinstance(as_aggregator(WeightedMean()), WeightedMean)
    assert isinstance(as_aggregator(lambda v, w: v[0]), RuleAggregator)
    with pytest.raises(TaskError, match="neither an Aggregator"):
        as_aggregator(3)
    with pytest.raises(TaskError, match="needs methods init"):
        as_server_optimizer(object())
