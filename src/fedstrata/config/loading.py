"""Load configs from YAML, presets and ``key=value`` overrides, with clear errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedstrata.config.models import FedConfig
from fedstrata.errors import ConfigError

__all__ = ["dump_config", "list_presets", "load_config", "parse_override"]


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("fedstrata.config") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _preset_tree(name: str) -> dict[str, Any]:
    if name not in list_presets():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    text = (resources.files("fedstrata.config") / "presets" / f"{name}.yaml").read_text()
    return _as_tree(yaml.safe_load(text), f"preset {name}")


def _as_tree(data: object, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        return _as_tree(yaml.safe_load(text), str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found and where (1-based line and column), without its stream name."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)
    where = "" if exc.problem_mark is None else f"{_at(exc.problem_mark)}: "
    text = f"{where}{exc.problem or 'parse error'}"
    if exc.context:
        since = "" if exc.context_mark is None else f" at {_at(exc.context_mark)}"
        text += f" ({exc.context}{since})"
    return text


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"client.lr=0.1"`` into ``(["client", "lr"], 0.1)`` (value parsed as YAML).

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(tree: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    return _merge(tree, nested)


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {field}: {err['msg']}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


def _names_user_code(tree: dict[str, Any]) -> bool:
    """Whether the tree names a task or a server strategy of the user's own."""
    server = tree.get("server")
    own = [server.get(k) for k in ("optimizer", "aggregator")] if isinstance(server, dict) else []
    return tree.get("task") is not None or any(isinstance(v, str) and ":" in v for v in own)


def load_config(
    path: Path | None = None, preset: str | None = None, overrides: Sequence[str] = ()
) -> FedConfig:
    """Build a :class:`FedConfig` from a preset, then a YAML file, then overrides.

    Later sources win. Without a file or preset, the ``quickstart`` preset is used.
    A ``task`` (or a ``server.optimizer`` / ``server.aggregator`` import string)
    named in a file is imported from the file's directory unless ``project_dir``
    says otherwise.

    Raises:
        ConfigError: unreadable file, unknown preset, bad override, or a value that
            fails validation (the message names each field and the rule).
    """
    tree: dict[str, Any] = {}
    if preset is not None or path is None:
        tree = _preset_tree(preset or "quickstart")
    if path is not None:
        tree = _merge(tree, _read_yaml(path))
        if _names_user_code(tree) and tree.get("project_dir") is None:
            tree["project_dir"] = str(Path(path).resolve().parent)  # like flwr run
    for text in overrides:
        keys, value = parse_override(text)
        tree = _apply_override(tree, keys, value)
    try:
        return FedConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def dump_config(config: FedConfig) -> str:
    """The resolved config as YAML (what the run store records)."""
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
