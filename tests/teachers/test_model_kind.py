"""A model of the wrong kind is refused before it gives a number (a random head, silent mean pooling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.teachers.bi_encoder import BiEncoderTeacher
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher
from retrodistill.teachers.model_kind import model_kind


def test_kinds_are_read_from_the_files(tiny_st_dir: Path, tiny_cross_encoder_dir: Path, tiny_bert_dir: Path) -> None:
    assert model_kind(str(tiny_st_dir)) == "bi-encoder"
    assert model_kind(str(tiny_cross_encoder_dir)) == "cross-encoder"
    assert model_kind(str(tiny_bert_dir)) == "encoder"
    assert model_kind("/no/such/model") == "unknown"


def test_a_bi_encoder_is_not_a_cross_encoder_teacher(tiny_st_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"is a sentence-transformers bi-encoder .*--teacher bi-encoder"):
        CrossEncoderTeacher(str(tiny_st_dir), device="cpu")


def test_a_bare_encoder_would_get_a_random_head(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="no sequence-classification head.*allow_new_head"):
        CrossEncoderTeacher(str(tiny_bert_dir), device="cpu")
    # Asked for explicitly (speed benchmarks), the untrained head is built.
    teacher = CrossEncoderTeacher(str(tiny_bert_dir), device="cpu", allow_new_head=True)
    assert np.isfinite(teacher.score(["cancer"], ["tumor growth"])).all()


def test_a_cross_encoder_is_not_a_bi_encoder_teacher(tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"is a cross-encoder .*--teacher cross-encoder"):
        BiEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu")


def test_the_commands_refuse_the_wrong_kind_in_one_line(
    tiny_st_dir: Path, tiny_cross_encoder_dir: Path, toy_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--rerank", str(tiny_st_dir),
         "--out", str(tmp_path / "ev")],
    )
    assert result.exit_code == 2, result.output
    assert "is a sentence-transformers bi-encoder" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app,
        ["evaluate", "--dataset", str(toy_dir), "--model", str(tiny_cross_encoder_dir), "--out", str(tmp_path / "e")],
    )
    assert result.exit_code == 2, result.output
    assert "is a cross-encoder" in result.output and "Traceback" not in result.output


@pytest.fixture()
def bin_only_model(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    """The tiny BERT with pickled weights only (pytorch_model.bin), as old checkpoints ship."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_bert_dir, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


def test_pickled_weights_are_refused_with_how_to_convert(bin_only_model: Path, toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.evaluate.retrieval import load_model
    from retrodistill.students.bi_encoder import BiEncoderStudent

    for load in (lambda: BiEncoderStudent(str(bin_only_model)).build(), lambda: load_model(str(bin_only_model))):
        with pytest.raises(OSError, match=r"no safetensors weights\. retrodistill loads only safetensors .*save_pr"):
            load()
    with pytest.raises(OSError, match="no safetensors weights"):
        CrossEncoderTeacher(str(bin_only_model), device="cpu", allow_new_head=True)
    result = CliRunner().invoke(
        app, ["evaluate", "--dataset", str(toy_dir), "--model", str(bin_only_model), "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 2 and "no safetensors weights" in result.output and "Traceback" not in result.output


def test_an_unknown_hub_id_offline_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrodistill.evaluate.retrieval import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"^no-such-org/no-such-model: not a model folder, and not in the Hugging Face"):
        load_model("no-such-org/no-such-model")
