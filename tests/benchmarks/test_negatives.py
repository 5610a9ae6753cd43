"""The negatives benchmark: every arm trains the same student with the same budget; only negatives differ."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from retrodistill.quickstart import QuickstartConfig

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_negatives", Path(__file__).resolve().parents[2] / "benchmarks" / "negatives.py"
)
assert _SPEC is not None and _SPEC.loader is not None
negatives = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(negatives)


def test_arms_differ_only_in_their_negatives(tmp_path: Path) -> None:
    quickstart = QuickstartConfig()
    dataset = tmp_path / "dev-split"
    configs = {
        arm: negatives.train_config(arm, tmp_path, tmp_path / "inputs" / arm, dataset, quickstart)
        for arm in ("bm25", "dense", "dense-denoised")
    }
    keys = ("student", "loss", "negatives", "negative_pool", "epochs", "batch_size", "learning_rate", "seed")
    first = configs["bm25"]
    for arm, config in configs.items():
        assert config.candidates == str(tmp_path / "inputs" / arm / "candidates")
        assert config.store == str(tmp_path / "inputs" / arm / "teacher-scores")
        assert config.data.dataset == str(dataset) and config.data.split == "train"
        for key in keys:
            assert getattr(config, key) == getattr(first, key), (arm, key)
    assert first.negative_pool == negatives.POOL and first.learning_rate == quickstart.learning_rate


def test_table_reports_each_arm_against_bm25() -> None:
    def row(arm: str, test: float, removed: dict[str, int]) -> dict:
        metrics = {"nDCG@10": test, "R@100": 0.9}
        return {
            "arm": arm,
            "dev": metrics,
            "test": metrics,
            "positive_share": 0.05,
            "pool_negatives": 1000,
            "removed": removed,
            "steps": 90,
            "train_s": 100.0,
        }

    text = negatives.table([row("bm25", 0.5, {}), row("dense-denoised", 0.55, {"teacher_margin": 12})])
    lines = text.splitlines()
    assert "| bm25 | 0.5000 | 0.5000 | – |" in lines[2]
    assert "+0.0500" in lines[3] and "1,000 (12)" in lines[3]
