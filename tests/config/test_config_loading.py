from pathlib import Path

import pytest

from fedstrata.config import FedConfig, dump_config, list_presets, load_config, parse_override
from fedstrata.errors import ConfigError


def test_presets_load_and_default_is_quickstart():
    assert {"quickstart", "w1"} <= set(list_presets())
    for name in list_presets():
        assert isinstance(load_config(preset=name), FedConfig)
    assert load_config().name == "quickstart"


def test_file_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\nclient: {lr: 0.2}\nrounds: {rounds: 3}\n")
    cfg = load_config(path, overrides=["rounds.rounds=5", "server.optimizer=fedadam"])
    assert (cfg.name, cfg.client.lr, cfg.rounds.rounds, cfg.server.optimizer) == (
        "mine",
        0.2,
        5,
        "fedadam",
    )
    assert load_config(path, preset="w1").data.partition == "shards"


def test_round_trip_through_dump():
    cfg = load_config(preset="w1")
    assert FedConfig.model_validate(__import__("yaml").safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("client.lr=-1", "client.lr: Input should be greater than 0 (got -1)"),
        ("server.optimizer=sgdx", "server.optimizer: Value error, must be one of fedavg, fedavgm"),
        ("client.lrr=0.1", "client.lrr: Extra inputs are not permitted"),
        ("rounds.clients_per_round=500", "exceeds data.num_clients"),
        ("client.steps=3", "exactly one of client.epochs and client.steps"),
        ("data.name=npz", "data.path is required"),
    ],
)
def test_invalid_values_name_the_field(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert fragment in str(info.value)


def test_bad_sources():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available: "):
        load_config(preset="nope")
    with pytest.raises(ConfigError, match="must look like"):
        parse_override("justakey")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(__import__("pathlib").Path("/nonexistent.yaml"))


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(notmap)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["privacy.mechanism=central", "scheduling.selector=oort"], "Poisson sampling"),
        (["scheduling.allocation=true"], "takes effect only with round deadline"),
        (["scheduling.async.enabled=true", "privacy.mechanism=central"], "Poisson-subsampled"),
    ],
)
def test_combinations_that_would_break_a_guarantee_are_refused(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(overrides=overrides)


def test_bad_yaml_names_the_file_and_the_place(tmp_path):
    """Issue 11 defect 24: malformed YAML names its file, not ``"<unicode string>"``."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds:\n  rounds: [1, 2\nname: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert "<unicode string>" not in message
    assert message.startswith(f"config file {bad} is not valid YAML: line 3, column 5: ")
    assert "expected ',' or ']'" in message
    assert "(while parsing a flow sequence at line 2, column 11)" in message


def test_task_import_string_resolves_from_the_config_files_directory(tmp_path: Path) -> None:
    """Issue 14 part 1: ``task:`` is an import string; project_dir defaults to the file's dir."""
    path = tmp_path / "fed.yaml"
    path.write_text("task: my_project.task:CreditRisk\n")
    cfg = load_config(path)
    assert cfg.task == "my_project.task:CreditRisk"
    assert cfg.project_dir == tmp_path.resolve()
    assert load_config(overrides=["task=a.b:C"]).project_dir is None
    with pytest.raises(ConfigError, match="task"):
        load_config(overrides=["task=not an import string"])
