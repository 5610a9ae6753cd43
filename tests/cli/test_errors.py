from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.cli.app import app
from retrodistill.cli.common import user_errors
from retrodistill.data.collections import DataFormatError
from retrodistill.data.download import DatasetDownloadError


@pytest.mark.parametrize(
    "error",
    [
        DataFormatError("corpus.jsonl", 3, "malformed JSON"),
        DatasetDownloadError("could not download x.zip"),
        ArtifactMismatchError("store was not made from collection"),
        FileNotFoundError("/nowhere: no such file"),
    ],
)
def test_expected_failures_exit_2_with_one_line(error: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_info, user_errors():
        raise error
    assert exit_info.value.exit_code == 2
    assert str(error) in capsys.readouterr().err


def test_missing_dataset_folder_is_named() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--dataset", "/no/such/dataset", "--model", "m"])
    assert result.exit_code == 2
    assert "/no/such/dataset" in result.output
