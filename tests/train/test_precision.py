"""Mixed-precision training: bf16 autocast learns as fp32 does; the precision settings are checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from retrodistill.config import TrainConfig
from retrodistill.train import run as train
from retrodistill.train.precision import precision_arguments

STEPS = 24


def _losses(config: TrainConfig, out: Path, *, bf16: bool, fp16: bool = False) -> list[float]:
    config = dataclasses.replace(config, out=str(out), max_steps=STEPS, bf16=bf16, fp16=fp16)
    student = train.run(config, show_progress=False)
    history = json.loads((student / "train_log.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _check_learns_as_fp32(fp32: list[float], mixed: list[float]) -> None:
    assert len(fp32) == len(mixed) == STEPS
    # Autocast really ran: the half-precision losses are not the fp32 ones.
    assert fp32 != mixed
    start = _mean(fp32[:6])
    for losses in (fp32, mixed):
        assert _mean(losses[-8:]) < 0.5 * start, losses
    # The per-batch losses are noisy: over the last 8 steps the two runs are at the same loss, to a
    # quarter of where they started (a run whose forward pass kept stale weights stays far above).
    assert abs(_mean(mixed[-8:]) - _mean(fp32[-8:])) < 0.25 * start


def test_bf16_autocast_training_falls_as_fp32_does(base: TrainConfig, tmp_path: Path) -> None:
    base = dataclasses.replace(base, learning_rate=2e-3, batch_size=4)
    fp32 = _losses(base, tmp_path / "fp32", bf16=False)
    bf16 = _losses(base, tmp_path / "bf16", bf16=True)
    _check_learns_as_fp32(fp32, bf16)


@pytest.mark.gpu
def test_bf16_and_fp16_training_on_cuda_fall_as_fp32_does(base: TrainConfig, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    base = dataclasses.replace(base, learning_rate=2e-3, batch_size=4)
    fp32 = _losses(base, tmp_path / "fp32", bf16=False)
    _check_learns_as_fp32(fp32, _losses(base, tmp_path / "bf16", bf16=True))
    _check_learns_as_fp32(fp32, _losses(base, tmp_path / "fp16", bf16=False, fp16=True))


def test_precision_arguments() -> None:
    assert precision_arguments(bf16=True, fp16=False, cuda=False) == {"bf16": True, "fp16": False, "use_cpu": True}
    assert precision_arguments(bf16=True, fp16=False, cuda=True) == {"bf16": True, "fp16": False}
    assert precision_arguments(bf16=False, fp16=True, cuda=True) == {"bf16": False, "fp16": True}
    assert precision_arguments(bf16=False, fp16=False, cuda=False) == {"bf16": False, "fp16": False}
    with pytest.raises(ValueError, match="exclusive"):
        precision_arguments(bf16=True, fp16=True, cuda=True)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        precision_arguments(bf16=False, fp16=True, cuda=False)


def test_fp16_without_cuda_is_refused_before_training(base: TrainConfig, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = dataclasses.replace(base, out=str(tmp_path / "student"), fp16=True)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        train.run(config, show_progress=False)
    assert not (tmp_path / "student").exists()
