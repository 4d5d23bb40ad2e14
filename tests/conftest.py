"""Test-suite configuration shared by every package's tests."""

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the property tests derandomized (the same examples every run, so a red CI is
# reproducible); locally they explore new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def fresh_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test may import a user's project from ``tmp_path`` (``task:`` import
    strings, user strategies): restore sys.path and forget the project's modules
    afterwards, so the next project with the same module name is imported afresh
    (fedstrata refuses a second copy of a module name in one process)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        if str(tmp_path) in (getattr(module, "__file__", None) or ""):
            del sys.modules[name]


def _fixed_size_rdp_epsilon(
    sigmas: list[float], population: int, cohort: int, delta: float = 1e-5
) -> float:
    """ε of the recorded noise multipliers by dp-accounting directly: fixed-size cohorts
    of ``cohort`` out of ``population``, replace-one neighbours (σ / 2), RDP."""
    import dp_accounting as dpa
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE
    )
    for sigma in sigmas:
        event = dpa.SampledWithoutReplacementDpEvent(
            population, cohort, dpa.GaussianDpEvent(sigma / 2)
        )
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.fixture
def fixed_size_epsilon() -> Callable[..., float]:
    """The independent ε reference for fixed-size (secure-aggregation) cohorts."""
    return _fixed_size_rdp_epsilon
