"""Issue 14 part 8: optional components name the extra that installs them.

Each test makes one package unimportable (``sys.modules[name] = None``) and checks the
error or the degraded behaviour at every place fedstrata imports it.
"""

from __future__ import annotations

import logging
import sys

import pytest

from fedstrata.data import load_digits_split
from fedstrata.errors import ConfigError, FedstrataError, MissingDependencyError
from fedstrata.scheduling import Registry, migrate
from fedstrata.sim import ClientJob, InProcessExecutor, ray_executor
from fedstrata.sim.ray_executor import open_ray_executor

PG_URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def block(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_dependency_error_is_a_config_and_an_import_error():
    exc = MissingDependencyError("psycopg", "fedstrata[postgres]", "the registry")
    assert isinstance(exc, ConfigError)
    assert isinstance(exc, FedstrataError)
    assert isinstance(exc, ImportError)
    assert (exc.name, exc.install) == ("psycopg", "fedstrata[postgres]")
    assert str(exc) == (
        "the registry needs the package 'psycopg', which is not installed: "
        "pip install 'fedstrata[postgres]'"
    )


@pytest.mark.parametrize("opener", [Registry.open, migrate])
def test_postgres_registry_without_psycopg_names_the_postgres_extra(monkeypatch, opener):
    block(monkeypatch, "psycopg")
    with pytest.raises(MissingDependencyError, match=r"pip install 'fedstrata\[postgres\]'"):
        opener(PG_URL)


def test_sqlite_registry_needs_no_extra(monkeypatch, tmp_path):
    block(monkeypatch, "psycopg")
    with Registry.open(tmp_path / "devices.db") as registry:
        assert registry.dialect == "sqlite"


def test_ray_backend_without_ray_names_the_extra_and_falls_back(monkeypatch, caplog):
    block(monkeypatch, "ray")
    with pytest.raises(MissingDependencyError, match=r"pip install 'fedstrata\[ray\]'"):
        ray_executor._import_ray()
    assert not ray_executor.ray_available()
    job = ClientJob(trainer_factory=object, data=None, root_seed=0)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="fedstrata.sim.ray_executor")
    ex = open_ray_executor(job, 4, fallback_workers=0)
    assert isinstance(ex, InProcessExecutor)
    ex.close()
    assert "Ray backend unavailable" in caplog.text
    assert "pip install 'fedstrata[ray]'" in caplog.text


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    block(monkeypatch, "sklearn.datasets", "sklearn.model_selection")
    with pytest.raises(MissingDependencyError, match="pip install 'scikit-learn'"):
        load_digits_split()
