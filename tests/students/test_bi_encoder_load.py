"""Loading the student: a failure names the model and the cause; the one fallback says what it built."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from retrodistill.students.bi_encoder import BiEncoderStudent


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "student"
    shutil.copytree(source, target)
    return target


def _weights(folder: Path) -> Path:
    return next(folder.rglob("model.safetensors"))


def test_corrupt_weights_are_a_one_line_error_naming_the_model(tiny_st_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_st_dir, tmp_path)
    _weights(folder).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError) as info:
        BiEncoderStudent(str(folder), device="cpu").build()
    message = str(info.value)
    assert message.startswith(f"cannot load the student model {str(folder)!r}: ")
    assert "\n" not in message


def test_weights_of_another_shape_are_refused_not_replaced(tiny_st_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_st_dir, tmp_path)
    config_path = next(p for p in folder.rglob("config.json") if "sentence" not in p.name)
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = config["intermediate_size"] * 2  # the stored weights no longer fit
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"cannot load the student model .*student'") as info:
        BiEncoderStudent(str(folder), device="cpu").build()
    assert "\n" not in str(info.value)


def test_a_cross_encoder_is_refused_as_a_student(tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"is a cross-encoder .*drop that head"):
        BiEncoderStudent(str(tiny_cross_encoder_dir), device="cpu").build()


def test_the_plain_encoder_fallback_logs_what_it_built(tiny_bert_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="retrodistill.students.bi_encoder"):
        model = BiEncoderStudent(str(tiny_bert_dir), device="cpu").build()
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"]
    built = [r.getMessage() for r in caplog.records if r.name == "retrodistill.students.bi_encoder"]
    assert len(built) == 1
    assert str(tiny_bert_dir) in built[0] and "Transformer -> Pooling" in built[0] and "mean pooling" in built[0]


def test_a_sentence_transformers_student_builds_without_a_fallback_message(
    tiny_st_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="retrodistill.students.bi_encoder"):
        BiEncoderStudent(str(tiny_st_dir), device="cpu").build()
    assert not [r for r in caplog.records if r.name == "retrodistill.students.bi_encoder"]
