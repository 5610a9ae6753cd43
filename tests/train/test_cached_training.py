"""train-student with a cached (GradCache) in-batch loss: the cached path really runs, and is recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from retrodistill.config import TrainConfig
from retrodistill.data.candidates import CandidateSet
from retrodistill.train import st_loss
from retrodistill.train.run import run


def test_infonce_cached_trains_through_the_cached_embedding(
    base: TrainConfig, cross_candidates: CandidateSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = st_loss.cached_embed_columns

    def counting(model: Any, features: Any, mini_batch_size: int) -> Any:
        calls.append(mini_batch_size)
        return real(model, features, mini_batch_size)

    monkeypatch.setattr(st_loss, "cached_embed_columns", counting)
    config = dataclasses.replace(base, store=None, candidates=str(cross_candidates.path))
    config = dataclasses.replace(
        config, loss=dataclasses.replace(config.loss, name="infonce", params={"cached": True, "mini_batch_size": 2})
    )
    out = run(config, show_progress=False)
    assert calls and set(calls) == {2}  # every step embedded through the cache, 2 rows at a time
    record = json.loads((Path(out) / "manifest.json").read_text())
    assert record["counts"]["steps"] == 2
    assert record["loss"]["cached"] is True and record["loss"]["mini_batch_size"] == 2
