"""Issue 12 part 3: the pair matrix. Every pair of declared features either trains two
rounds with both features' evidence in the run's records, or is refused with a declared
reason; and each feature switched on alone changes what the run records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstrata.api import RunResult, run
from fedstrata.api.composition import EVIDENCE, TINY, run_features
from fedstrata.config import FedConfig, load_config
from fedstrata.config.compat import FEATURES, REFUSALS, Feature
from fedstrata.config.compat_table import feature_overrides, pairs
from fedstrata.errors import ConfigError

PAIRS = pairs()


def _declared(message: str) -> bool:
    """The message gives a reason from the declaration (a refusal, a driver, a need)."""
    reasons = [r.reason for r in REFUSALS]
    return any(r in message for r in reasons) or (
        "does not run" in message or "takes effect only with" in message
    )


@pytest.fixture(scope="module")
def all_off() -> tuple[FedConfig, RunResult]:
    config = load_config(overrides=list(TINY))
    return config, run(config)


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a.key}+{b.key}" for a, b in PAIRS])
def test_every_pair_trains_with_its_evidence_or_is_refused_with_a_reason(
    a: Feature, b: Feature, tmp_path: Path
) -> None:
    """Issue 12 part 3: no pair is accepted and silently ignored."""
    outcome = run_features((a, b), tmp_path)
    if outcome.refused is not None:
        assert _declared(outcome.refused), outcome.refused
        with pytest.raises(ConfigError) as err:  # the small run is refused the same way
            load_config(overrides=[*TINY, *feature_overrides((a, b), str(tmp_path))])
        assert outcome.refused in str(err.value)
        return
    assert outcome.missing == (), f"accepted but without evidence of {outcome.missing}"


def test_every_feature_declares_its_evidence() -> None:
    assert set(EVIDENCE) == {f.key for f in FEATURES}


@pytest.mark.parametrize("feature", FEATURES, ids=[f.key for f in FEATURES])
def test_each_feature_alone_changes_what_the_run_records(
    feature: Feature, all_off: tuple[FedConfig, RunResult], tmp_path: Path
) -> None:
    """Issue 12 part 3: the evidence appears with the feature and not without it."""
    outcome = run_features((feature,), tmp_path)
    assert outcome.refused is None
    assert outcome.missing == ()
    off_config, off = all_off
    evidence = EVIDENCE[feature.key]
    if evidence.control:  # recorded only in the model: the all-off run is the control
        on = run(load_config(overrides=[*TINY, *feature_overrides((feature,), str(tmp_path))]))
        assert not np.array_equal(on.simulation.params, off.simulation.params)
    else:
        assert not evidence.check(off_config, off), f"all-off run shows {evidence.what}"
