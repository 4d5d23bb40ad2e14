"""Generate the configuration reference (``docs/configuration.md``) from the models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedstrata.config.models import FedConfig

__all__ = ["config_reference"]


def _type_name(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "").replace("pathlib.", "")
    return text.replace("<class '", "").replace("'>", "")


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, tuple) and value and all(isinstance(v, BaseModel) for v in value):
        names = ", ".join(str(getattr(v, "name", type(v).__name__)) for v in value)
        return f"{len(value)} entries: {names}"
    return "`null`" if value is None else f"`{value}`"


def _section(name: str, model: type[BaseModel]) -> list[str]:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    head = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines, nested = [f"## `{name}`", "", doc, "", *head], []
    for field_name, info in model.model_fields.items():
        key = info.alias or field_name
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            nested += _section(f"{name}.{key}", sub)
            continue
        desc = (info.description or "").replace("|", "\\|")
        type_name = _type_name(info).replace("|", "\\|")
        lines.append(f"| `{name}.{key}` | {type_name} | {_default(info)} | {desc} |")
    return [*lines, "", *nested]


def config_reference() -> str:
    """Markdown describing every configuration key, its type and default."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `fedstrata.config.models` by `fedstrata config-reference`; do not "
        "edit by hand. Top-level keys: `name` (run name), `seed` (root seed of every "
        "random draw), `task` (your own task as an import string, "
        "`my_project.task:CreditRisk`; see docs/tasks.md) and `project_dir` (where the "
        "task's module, and those of `server.optimizer` / `server.aggregator` import "
        "strings, are imported from; default: the config file's directory).",
        "",
    ]
    for key, info in FedConfig.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += _section(key, annotation)
    return "\n".join(lines)
