"""open_store by URL, CheckpointConfig, and checkpointer_from_config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fedstrata.checkpoint import (
    DISK_DIR,
    FileStore,
    MemoryStore,
    checkpointer_from_config,
    open_store,
)
from fedstrata.checkpoint._radosgw import RadosGateway
from fedstrata.config import CheckpointConfig, FedConfig, dump_config
from fedstrata.errors import CheckpointError, ConfigError


def test_open_store_by_url(tmp_path: Path) -> None:
    memory = open_store("memory://ring", keep=2)
    assert isinstance(memory, MemoryStore)
    assert (memory.tier, memory.keep) == ("memory", 2)
    for url in (str(tmp_path / "a"), f"file://{tmp_path / 'b'}"):
        disk = open_store(url)
        assert isinstance(disk, FileStore)
        assert (disk.tier, disk.keep) == ("disk", 3)
    remote = open_store("s3://bucket/prefix", storage_options={"endpoint_url": "http://x:1"})
    assert isinstance(remote, FileStore)
    assert (remote.tier, remote.url) == ("object", "s3://bucket/prefix")


def test_memory_urls_do_not_share_state() -> None:
    first, second = open_store("memory://same"), open_store("memory://same")
    first.save(1, b"x")
    assert second.list() == []


@pytest.mark.parametrize("keep", [0, -2, 2.5, True])
def test_keep_must_be_a_positive_int(keep: object) -> None:
    with pytest.raises(ConfigError, match="keep"):
        open_store("memory://x", keep=keep)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["", "   ", "s3://"])
def test_bad_urls_raise_checkpoint_error(url: str) -> None:
    with pytest.raises(CheckpointError):
        open_store(url)


def test_default_config_has_memory_and_disk_tiers(tmp_path: Path) -> None:
    assert not FedConfig().checkpoint.enabled  # off unless asked for (resume/docs)
    cfg = FedConfig().checkpoint.model_copy(update={"enabled": True})
    assert (cfg.memory_every, cfg.disk_every, cfg.object_every) == (1, 10, 100)
    assert (cfg.memory_keep, cfg.disk_keep, cfg.object_keep) == (3, 3, 3)
    with checkpointer_from_config(cfg, tmp_path) as checkpointer:
        assert [(t.store.tier, t.every_rounds) for t in checkpointer.tiers] == [
            ("memory", 1),
            ("disk", 10),
        ]
        checkpointer.snapshot(10, b"ten")
    assert (tmp_path / DISK_DIR / "round-000000000010.ckpt").is_file()


def test_config_turns_tiers_off_and_the_object_tier_on(tmp_path: Path) -> None:
    cfg = CheckpointConfig(
        enabled=True, memory_every=0, disk_every=5, object_url=str(tmp_path / "shared")
    )
    with checkpointer_from_config(cfg, tmp_path / "run") as checkpointer:
        assert [(t.store.tier, t.every_rounds) for t in checkpointer.tiers] == [
            ("disk", 5),
            ("object", 100),
        ]
        checkpointer.snapshot(100, b"hundred")
    assert open_store(str(tmp_path / "shared")).load(100) == b"hundred"
    with checkpointer_from_config(CheckpointConfig(enabled=False), tmp_path) as off:
        assert off.tiers == ()


def test_object_secret_is_masked_in_dumps_and_refused_when_masked() -> None:
    cfg = FedConfig.model_validate(
        {"checkpoint": {"object_url": "s3://b/p", "object_key": "K", "object_secret": "S3CR3T"}}
    )
    assert cfg.checkpoint.storage_options() == {"key": "K", "secret": "S3CR3T"}
    dumped = dump_config(cfg)
    assert "S3CR3T" not in dumped
    assert "S3CR3T" not in repr(cfg)
    with pytest.raises(ValidationError, match="masked placeholder"):
        FedConfig.model_validate(yaml.safe_load(dumped))


@pytest.mark.parametrize(
    "bad", [{"memory_every": -1}, {"disk_keep": 0}, {"object_url": ""}, {"memroy_every": 1}]
)
def test_bad_checkpoint_settings_name_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        CheckpointConfig.model_validate(bad)


def test_s3_tier_on_radosgw_from_config_keeps_secrets_out_of_logs(
    rados_gateway: RadosGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = rados_gateway
    cfg = CheckpointConfig(
        enabled=True,
        memory_every=0,
        disk_every=0,
        object_every=1,
        object_url=gw.url("from-config"),
        object_endpoint_url=gw.endpoint_url,
        object_key=gw.key,
        object_secret=gw.secret,  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.DEBUG), checkpointer_from_config(cfg, tmp_path) as ckpt:
        ckpt.snapshot(3, b"three")
        ckpt.flush()
        found = ckpt.latest()
        store = ckpt.tiers[0].store
    assert found is not None
    assert (found[0].tier, found[1]) == ("object", b"three")
    assert gw.secret not in caplog.text
    assert gw.secret not in repr(store)
    wrong = open_store(
        gw.url("denied"), storage_options={**gw.storage_options(), "secret": "WRONG-SECRET"}
    )
    with pytest.raises(CheckpointError) as denied:
        wrong.save(1, b"x")
    assert "WRONG-SECRET" not in str(denied.value)
    assert gw.secret not in str(denied.value)


def test_an_unwritable_disk_location_raises_checkpoint_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = open_store(str(blocker / "ckpt"))
    with pytest.raises(CheckpointError, match="a-file"):
        store.save(1, b"x")
    assert blocker.read_text() == "not a directory"
