"""``fedstrata --version`` (issue 11 defect 22)."""

from importlib.metadata import version

from typer.testing import CliRunner

import fedstrata
from fedstrata.cli import app


def test_version_prints_the_package_version():
    """Issue 11 defect 22: there was no ``fedstrata --version``."""
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"fedstrata {fedstrata.__version__}"
    assert fedstrata.__version__ == version("fedstrata")
