"""Every YAML and shell example in README.md, docs/*.md and examples/*/README.md works
(issue 11 defect 22; the examples since issue 14 part 5).

* A ```` ```yaml ```` block is a configuration: the config loader reads and validates it.
  A block marked ``<!-- docs-test: alternatives -->`` on the line before its fence holds
  one configuration per line; ``<!-- docs-test: not-config -->`` is YAML that is not a
  configuration. The set of marked blocks is kept small.
* A line of a ```` ```bash ```` (``sh``, ``shell``, ``console``) block that runs
  ``fedstrata`` or ``.venv/bin/fedstrata`` is parsed by the real command line (the
  command exists, its options and values parse); its ``--preset`` and ``--set``
  overrides are validated by the config loader; the cheap commands (``--version``,
  ``presets``, ``show-config``, ``config-reference``, ``plan``) are run.
* An unlabelled block may not hide a configuration or a ``fedstrata`` command, and an
  inline ```` `fedstrata COMMAND …` ```` names a command that exists.
* Links and relative paths stay inside the repository; ``docs/privacy.md`` names exactly
  the privacy mechanisms a configuration can select.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
import yaml
from typer.core import TyperGroup
from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.config import FedConfig, PrivacyConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").glob("*/README.md")),  # issue 14 part 5
]
SHELL = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*([\w-]+)\s*-->")
MARKERS = {"alternatives", "not-config"}
MAX_MARKED = 4
CHEAP = {"--version", "presets", "show-config", "config-reference", "plan"}
PROGRAMS = {"fedstrata", ".venv/bin/fedstrata"}
ELLIPSIS = {"…", "..."}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            mark = MARKER.search(lines[i - 1]) if i else None
            body = "\n".join(lines[i + 1 : end])
            out.append(Block(path, i + 1, lines[i][3:].strip(), body, mark and mark.group(1)))
            i = end
        i += 1
    return out


BLOCKS = [b for path in DOCS for b in _blocks(path)]
YAML_BLOCKS = [b for b in BLOCKS if b.lang in {"yaml", "yml"} and b.marker != "not-config"]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]


def _commands(block: Block) -> list[list[str]]:
    """The ``fedstrata`` invocations of a shell block, as argument lists."""
    joined = block.text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
        if words and words[0] in PROGRAMS:
            out.append(words[1:])
    return out


COMMANDS = [(b.where, args) for b in SHELL_BLOCKS for args in _commands(b)]
IDS = [f"{w} {' '.join(a[:2])}" for w, a in COMMANDS]


def test_the_docs_have_examples_and_few_marked_blocks():
    """Issue 11 defect 22: the examples are found; few blocks are exempted by markers."""
    assert len(YAML_BLOCKS) >= 3
    assert len(COMMANDS) >= 10
    marked = [(b.where, b.marker) for b in BLOCKS if b.marker is not None]
    assert len(marked) <= MAX_MARKED, marked
    assert {m for _, m in marked} <= MARKERS, marked


def _configs(block: Block) -> list[str]:
    if block.marker == "alternatives":
        return [line for line in block.text.splitlines() if line and not line.startswith("#")]
    return [block.text]


class _UniqueKeys(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}")
        return super().construct_mapping(node, deep=deep)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.where)
def test_yaml_examples_are_valid_configs(block, tmp_path):
    """Issue 11 defect 22: ``compression: topk1_int8_ef`` in the docs was refused."""
    for i, text in enumerate(_configs(block)):
        yaml.load(text, Loader=_UniqueKeys)  # one example, not several keys in one
        path = tmp_path / f"example{i}.yaml"
        path.write_text(text + "\n")
        assert isinstance(load_config(path), FedConfig), block.where


def _resolve(args: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (sub)command ``args`` name, its own arguments, and the command path."""
    cmd: Any = typer.main.get_command(app)
    rest, names = list(args), []
    while isinstance(cmd, TyperGroup) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(typer.Context(cmd), rest[0])
        assert sub is not None, f"no command {' '.join([*names, rest[0]])!r}"
        names.append(rest.pop(0))
        cmd = sub
    return cmd, rest, names


def _fill_placeholders(cmd: Any, args: list[str]) -> list[str]:
    """``--token …`` gets a value; a trailing ``…`` (more options) is dropped."""
    takes_value = {
        opt
        for p in cmd.params
        if p.param_type_name == "option" and not p.is_flag and not p.count
        for opt in p.opts
    }
    out: list[str] = []
    for word in args:
        if word in ELLIPSIS:
            if out and out[-1] in takes_value:
                out.append("PLACEHOLDER")
            continue
        out.append(word)
    return out


def _parse(cmd: Any, names: list[str], args: list[str]) -> int:
    """Parse ``args`` as ``cmd`` would (no invocation); 0, or an eager option's exit code.

    Raises:
        UsageError: an unknown option or command, a missing or malformed value.
    """
    try:
        with cmd.make_context(" ".join(["fedstrata", *names]), args):
            return 0
    except typer.Exit as done:  # an eager option: --version
        return int(done.exit_code)


def _options(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=IDS)
def test_shell_examples_parse(where, args):
    """Issue 11 defect 22: every ``fedstrata`` line of the docs parses; its overrides load."""
    cmd, rest, names = _resolve(args)
    rest = _fill_placeholders(cmd, rest)
    assert _parse(cmd, names, list(rest)) == 0, where  # click consumes the list
    sets = _options(rest, "--set")
    if sets or "--preset" in rest:
        presets = _options(rest, "--preset")
        load_config(preset=presets[-1] if presets else None, overrides=sets)


CHEAP_COMMANDS = [(w, a) for w, a in COMMANDS if a and a[0] in CHEAP]


@pytest.mark.parametrize(
    ("where", "args"), CHEAP_COMMANDS, ids=[f"{w} {' '.join(a[:2])}" for w, a in CHEAP_COMMANDS]
)
def test_cheap_shell_examples_run(where, args):
    """Issue 11 defect 22: the cheap commands of the docs run (``--version`` did not)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{where}: fedstrata {' '.join(args)}\n{result.output}"
    assert result.output.strip(), where


def test_the_cheap_commands_have_examples():
    """Issue 11 defect 22: the docs show ``--version``, ``show-config`` and ``plan``."""
    assert {a[0] for _, a in CHEAP_COMMANDS} >= {"--version", "show-config", "plan"}


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if not b.lang], ids=lambda b: b.where
)  # fmt: skip
def test_unlabelled_blocks_hide_no_config_or_command(block):
    """Issue 11 defect 22: no example escapes the checks by lacking a language tag."""
    assert not any(
        line.strip().removeprefix("$ ").split(" ")[0] in PROGRAMS
        for line in block.text.splitlines()
    ), f"{block.where}: label the shell block (```bash)"
    try:
        tree = yaml.safe_load(block.text)
    except yaml.YAMLError:
        return
    sections = set(FedConfig.model_fields) - {"name", "seed"}
    hidden = (
        isinstance(tree, dict)
        and bool(set(map(str, tree)) & sections)
        and all(isinstance(v, dict) for k, v in tree.items() if k in sections)
        and set(map(str, tree)) <= sections | {"name", "seed"}
    )
    assert not hidden, f"{block.where}: label the configuration block (```yaml)"


INLINE = re.compile(r"`(?:\.venv/bin/)?fedstrata ((?:[a-z][\w-]*)(?: [a-z][\w-]*)?)")


def test_inline_commands_exist():
    """Issue 11 defect 22: inline ``fedstrata COMMAND`` mentions name real commands."""
    named = {m.group(1) for path in DOCS for m in INLINE.finditer(path.read_text())}
    assert named
    for words in sorted(named):
        cmd: Any = typer.main.get_command(app)
        for word in words.split(" "):
            if not isinstance(cmd, TyperGroup):
                break
            sub = cmd.get_command(typer.Context(cmd), word)
            assert sub is not None, f"docs name `fedstrata {words}`, which is no command"
            cmd = sub


LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
RELATIVE = re.compile(r"`(\.\./[^`\s]+)`")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(path):
    """Issue 11 defect 22: the README linked to a file outside the repository."""
    text = path.read_text()
    targets = [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]
    for target in [*targets, *RELATIVE.findall(text)]:
        resolved = (path.parent / target).resolve()
        assert ROOT in resolved.parents, f"{path.name} points outside the repository: {target}"
        assert resolved.exists(), f"{path.name} links to a missing file: {target}"


def test_privacy_doc_names_the_selectable_mechanisms():
    """Issue 11 defect 22: docs/privacy.md described DP modes the config cannot select."""
    text = (ROOT / "docs" / "privacy.md").read_text()
    found = re.search(r"`privacy\.mechanism: ([a-z |]+)`", text)
    assert found, "docs/privacy.md must say which privacy.mechanism values exist"
    documented = {m.strip() for m in found.group(1).split("|")}
    assert documented == set(get_args(PrivacyConfig.model_fields["mechanism"].annotation))
