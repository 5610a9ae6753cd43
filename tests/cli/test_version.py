from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from retrodistill.cli.app import app


def test_version_prints_the_installed_version_and_exits() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"retrodistill {version('retrodistill')} (torch ")
