"""Issue 14 part 8: the built wheel installs into a clean venv and its entry point works.

Offline and without touching the network: the wheel is built from a copy of the sources
(``pip wheel --no-deps --no-build-isolation --no-index``), installed with ``--no-deps
--no-index`` into a fresh venv without system site-packages, and the venv reaches the
dependencies through a ``.pth`` line naming this interpreter's site-packages (a plain
path: that directory's own ``.pth`` files, such as an editable fedstrata, are not run).
A second ``.pth`` makes the optional extras (matplotlib, Ray, psycopg) unimportable, so
the default federation runs as it would after a plain ``pip install fedstrata``.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

import fedstrata

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("matplotlib", "ray", "psycopg")
BLOCKER = f"""
import importlib.abc, sys

class _NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NoExtras())
"""
TINY_RUN = [
    "rounds.rounds=1",
    "data.num_clients=6",
    "rounds.clients_per_round=3",
    "sim.workers=0",
    "output.progress=false",
]


def _sh(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    argv = [str(a) for a in args]
    proc = subprocess.run(
        argv, check=False, capture_output=True, text=True, env=env, cwd=cwd, timeout=240
    )
    assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    sources = tmp / "sources"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", sources / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, sources / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _sh(*pip, "--no-index", "-q", "-w", tmp / "dist", sources)
    (built,) = (tmp / "dist").glob("fedstrata-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    _sh(*pip, "--no-deps", "--no-index", wheel)
    site = Path(_sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    site = Path(str(site).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_fedstrata_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    (site / "_fedstrata_no_extras.py").write_text(BLOCKER)
    (site / "aa_fedstrata_no_extras.pth").write_text("import _fedstrata_no_extras\n")
    return root


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "fedstrata/py.typed",
        "fedstrata/config/presets/quickstart.yaml",
        "fedstrata/config/presets/w1.yaml",
        "fedstrata/monitoring/prometheus_rules.yml",
        "fedstrata/runtime/proto/fedstrata.proto",
        "fedstrata/scheduling/migrations/env.py",
        "fedstrata/scheduling/migrations/script.py.mako",
        "fedstrata/monitoring/dashboard/static/index.html",
        "fedstrata/monitoring/dashboard/static/dashboard.js",
        "fedstrata/monitoring/dashboard/static/uPlot.iife.min.js",
        "fedstrata/monitoring/dashboard/static/uPlot-LICENSE.txt",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert any(n.startswith("fedstrata/scheduling/migrations/versions/") for n in names)


def test_wheel_declares_ranges_and_optional_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    assert "torch>=2.3" in base
    assert not [r for r in base if "==" in r], f"exact pins in the base install: {base}"
    for package in ("psycopg", "matplotlib", "ray"):
        assert not [r for r in base if r.startswith(package)], f"{package} is not optional"
    assert {"postgres", "ray", "plot", "all", "dev"} <= set(meta.get_all("Provides-Extra") or [])


def test_installed_entry_point_prints_the_version(venv: Path) -> None:
    env = _clean_env()
    out = _sh(venv / "bin" / "fedstrata", "--version", env=env)
    assert out.strip() == f"fedstrata {fedstrata.__version__}"
    code = "import fedstrata; print(fedstrata.__file__)"
    where = _sh(venv / "bin" / "python", "-c", code, env=env)
    assert Path(where.strip()).is_relative_to(venv), "fedstrata was not imported from the wheel"


def test_default_federation_runs_without_the_extras(venv: Path, tmp_path: Path) -> None:
    env = _clean_env()
    probe = "import importlib.util as u; print([u.find_spec(m) for m in ('ray',)])"
    with pytest.raises(AssertionError, match="No module named 'ray'"):
        _sh(venv / "bin" / "python", "-c", probe, env=env)
    sets = [a for s in TINY_RUN for a in ("--set", s)]
    _sh(venv / "bin" / "fedstrata", "run", "--quiet", *sets, env=env, cwd=tmp_path)
    (run_dir,) = tmp_path.glob("runs/*")
    report, deadline = run_dir / "report.html", time.monotonic() + 120
    while not report.exists():  # fedstrata run writes it in a process of its own
        assert time.monotonic() < deadline, (run_dir / "report.log").read_text()
        time.sleep(0.1)
    text = report.read_text()
    assert "pip install &#x27;fedstrata[plot]&#x27;" in text
    assert "<svg" not in text
