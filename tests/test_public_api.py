"""The public API surface: every name in each package's __all__ exists."""

import importlib

import pytest

PACKAGES = [
    "fedstrata",
    "fedstrata.core",
    "fedstrata.pipeline",
    "fedstrata.aggregation",
    "fedstrata.algorithms",
    "fedstrata.coordinator",
    "fedstrata.config",
    "fedstrata.data",
    "fedstrata.sim",
    "fedstrata.monitoring",
    "fedstrata.torch_adapter",
    "fedstrata.builders",
    "fedstrata.strategy",
    "fedstrata.checkpoint",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} exports nothing"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    assert len(set(module.__all__)) == len(module.__all__)


def test_errors_form_one_tree():
    from fedstrata import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.FedstrataError)
