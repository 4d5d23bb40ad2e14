"""Calling the user's own code: import strings, names for messages, guarded calls.

One mechanism serves every place a configuration names user code by import string
(``task: my_project.task:CreditRisk``, ``server.optimizer: my_project.strategy:Nesterov``):
like ``flwr run``, the module is imported with the project directory first on
``sys.path``. Python holds one module per name in a process, so a module of the same
name already imported from elsewhere while the project has its own is refused rather
than silently reused. Errors in user code become a :class:`~fedstrata.errors.TaskError`
naming the user's function.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fedstrata.errors import ConfigError, TaskError

__all__ = ["call_user", "describe", "import_object"]


def describe(obj: object) -> str:
    """``module.qualname`` of a user function, method, class or instance, for messages."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def call_user(fn: Callable[..., Any], role: str, *args: object) -> Any:
    """Call a user function; any exception becomes a TaskError naming it and ``role``."""
    try:
        return fn(*args)
    except TaskError:
        raise
    except Exception as exc:
        raise TaskError(f"{role} {describe(fn)} raised {type(exc).__name__}: {exc}") from exc


def import_object(spec: str, project_dir: Path | None, what: str) -> object:
    """The attribute ``module:attribute`` names, imported from ``project_dir`` first.

    Args:
        spec: the import string.
        project_dir: put first on ``sys.path`` (default: the current directory).
        what: the setting it comes from, for messages (``"task"``, ``"server.optimizer"``).

    Raises:
        ConfigError: ``spec`` is not ``module:attribute``.
        TaskError: the module does not import (its error is quoted), another module of
            that name is already imported while the project has its own, or the
            attribute is missing.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ConfigError(f"{what} must look like 'package.module:attribute', got {spec!r}")
    root = (project_dir or Path.cwd()).resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = _import(module_name, f"{what} {spec!r}")
    _check_origin(module, root, f"{what} {spec!r}")
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskError(
            f"{what} {spec!r}: module {module_name} has no attribute {attr!r}"
        ) from None


def _import(module_name: str, who: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise TaskError(
                f"{who}: importing {module_name} failed: no module named {exc.name!r} "
                "(searched the project directory and sys.path)"
            ) from exc
        raise TaskError(f"{who}: importing {module_name} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing
        raise TaskError(
            f"{who}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _check_origin(module: ModuleType, root: Path, who: str) -> None:
    """Refuse a module imported earlier from elsewhere when the project has its own.

    Raises:
        TaskError: the project directory holds the module but another copy is loaded.
    """
    parts = module.__name__.split(".")
    mine = [root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")]
    theirs = getattr(module, "__file__", None)
    if theirs is None or not any(p.is_file() for p in mine):
        return
    if Path(theirs).resolve() not in {p.resolve() for p in mine}:
        raise TaskError(
            f"{who}: module {module.__name__} is already imported from {theirs}, "
            f"not from the project directory {root}; a process holds one module per name "
            "(rename the project's package, or run it in a new process)"
        )
