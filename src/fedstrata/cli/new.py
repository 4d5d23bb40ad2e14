"""``fedstrata new NAME --template tabular|image|text``: a runnable project (Issue 14 part 4).

The templates are package data (``fedstrata/templates/<template>/``): every file is
copied with ``{{name}}`` and ``{{package}}`` filled in and a ``.tmpl`` suffix dropped;
the folder ``package/`` becomes the project's Python package. The project's
``prepare_data.py`` (NumPy only) then writes its tiny dataset, so ``fedstrata run``
inside the new folder trains at once, with no download and no further set-up.

``fedstrata run`` with no config file reads ``fedstrata.yaml`` from the current
directory, and ``fedstrata run DIR`` reads ``DIR/fedstrata.yaml``
(:func:`project_config`).
"""

from __future__ import annotations

import keyword
import re
import runpy
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import typer

from fedstrata.cli.app import _fail, app, console
from fedstrata.errors import ConfigError

__all__ = ["PROJECT_CONFIG", "Template", "create_project", "project_config"]

PROJECT_CONFIG = "fedstrata.yaml"
_SUFFIX = ".tmpl"
_PACKAGE_DIR = "package"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class Template(StrEnum):
    """The project templates: a tabular classifier, an image CNN, a text classifier."""

    tabular = "tabular"
    image = "image"
    text = "text"


def package_name(name: str) -> str:
    """The Python package of project ``name`` (``credit-risk`` -> ``credit_risk``).

    Raises:
        ConfigError: ``name`` is not letters, digits, ``-`` and ``_`` starting with a
            letter, or its package name is a Python keyword.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"project name {name!r} must start with a letter and hold only letters, "
            "digits, '-' and '_'"
        )
    package = name.replace("-", "_").lower()
    if keyword.iskeyword(package):
        raise ConfigError(f"project name {name!r} is a Python keyword; choose another")
    return package


def _copy_tree(source: Traversable, target: Path, fill: dict[str, str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.name == "__pycache__":
            continue
        name = fill["package"] if item.name == _PACKAGE_DIR else item.name.removesuffix(_SUFFIX)
        if item.is_dir():
            _copy_tree(item, target / name, fill)
            continue
        text = item.read_text(encoding="utf-8")
        for key, value in fill.items():
            text = text.replace("{{" + key + "}}", value)
        (target / name).write_text(text, encoding="utf-8")


def create_project(target: Path, template: Template = Template.tabular) -> Path:
    """Write project ``target.name`` from ``template`` into ``target`` and generate its data.

    Returns:
        The project's config file (``target/fedstrata.yaml``).

    Raises:
        ConfigError: ``target`` exists and is not an empty directory, or its name is
            not a valid project name.
    """
    package = package_name(target.name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} already exists and is not empty; choose a new name or remove it"
        )
    source = resources.files("fedstrata") / "templates" / template.value
    _copy_tree(source, target, {"name": target.name, "package": package})
    runpy.run_path(str(target / "prepare_data.py"), run_name="__main__")
    return target / PROJECT_CONFIG


def project_config(config: Path | None, preset: str | None) -> Path | None:
    """The config file ``fedstrata run`` reads: ``DIR/fedstrata.yaml`` for a directory,
    ``./fedstrata.yaml`` when neither a file nor a preset is given and it exists."""
    if config is not None:
        return config / PROJECT_CONFIG if config.is_dir() else config
    local = Path(PROJECT_CONFIG)
    return local if preset is None and local.is_file() else None


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="the project's name and folder")],
    template: Annotated[
        Template, typer.Option("--template", "-t", help="what the project trains")
    ] = Template.tabular,
) -> None:
    """Create a runnable project: a task module, a config, a README and a tiny dataset."""
    try:
        config = create_project(Path(name), template)
    except ConfigError as exc:
        raise _fail(exc) from None
    console.print(f"[bold]created[/] {config.parent}/ ({template.value} template)")
    typer.echo(f"cd {config.parent} && fedstrata run")
