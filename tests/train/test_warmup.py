"""``warmup_ratio`` reaches the trainer as a ratio of the steps, never as a step count."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from retrodistill.config import DataConfig, StudentConfig, TrainConfig
from retrodistill.train.run import run, warmup_arguments


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.99])
def test_the_trainer_warms_up_over_that_share_of_the_steps(ratio: float) -> None:
    from sentence_transformers import SentenceTransformerTrainingArguments

    args = SentenceTransformerTrainingArguments(output_dir="unused", report_to="none", **warmup_arguments(ratio))
    for total in (7, 200, 1000):
        assert args.get_warmup_steps(total) == math.ceil(total * ratio)


@pytest.mark.parametrize("ratio", [1, 1.0, 5.0, 100, -0.1, float("nan"), True])
def test_a_ratio_outside_zero_one_is_refused_naming_the_key(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"warmup_ratio must be a fraction of the training steps in \[0, 1\)"):
        warmup_arguments(ratio)


def test_a_run_with_a_step_count_for_warmup_ratio_stops_before_training(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(tmp_path / "no-store-needed"),
        out=str(tmp_path / "student"),
        student=StudentConfig(model=str(tiny_st_dir)),
        warmup_ratio=50,
    )
    with pytest.raises(ValueError, match="warmup_ratio .* got 50"):
        run(config, show_progress=False)
    assert not (tmp_path / "student").exists()
    with pytest.raises(ValueError, match="warmup_ratio"):
        run(dataclasses.replace(config, warmup_ratio=1.0), show_progress=False)
