"""split-dev: a seeded dev split carved out of a training split, written as a dataset folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.config import DataConfig, SplitDevConfig
from retrodistill.data.collections import load_beir
from retrodistill.stages.split_dev import run

runner = CliRunner()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _config(toy_dir: Path, out: Path, **changes: object) -> SplitDevConfig:
    return SplitDevConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(out), **changes)  # type: ignore[arg-type]


def test_the_dev_split_and_the_rest_partition_the_training_judgments(toy_dir: Path, tmp_path: Path) -> None:
    out = run(_config(toy_dir, tmp_path / "dev-split", dev_queries=2))
    source = _lines(toy_dir / "qrels" / "train.tsv")
    train, dev = _lines(out / "qrels" / "train.tsv"), _lines(out / "qrels" / "dev.tsv")
    assert train[0] == dev[0] == source[0]  # the header, in both
    assert sorted(train[1:] + dev[1:]) == sorted(source[1:])  # every line once, unchanged
    manifest = json.loads((out / "manifest.json").read_text())
    dev_ids = manifest["dev_query_ids"]
    assert len(dev_ids) == 2 and {line.split("\t")[0] for line in dev[1:]} == set(dev_ids)
    assert not {line.split("\t")[0] for line in train[1:]} & set(dev_ids)
    assert manifest["counts"] == {"train_queries": 4, "dev_queries": 2, "train_judgments": 8, "dev_judgments": 4}
    # A dataset of its own: the corpus and queries are links to the source's, not copies.
    for name in ("corpus.jsonl", "queries.jsonl"):
        assert (out / name).is_symlink() and (out / name).resolve() == (toy_dir / name).resolve()
    held, rest = load_beir(out, "dev"), load_beir(out, "train")
    assert sorted(held.qrels) == sorted(dev_ids) and not set(rest.qrels) & set(dev_ids)
    assert held.fingerprints["corpus"] == load_beir(toy_dir, "train").fingerprints["corpus"]


def test_the_draw_follows_the_seed(toy_dir: Path, tmp_path: Path) -> None:
    def drawn(seed: int, name: str) -> list[str]:
        out = run(_config(toy_dir, tmp_path / name, dev_queries=3, seed=seed))
        return json.loads((out / "manifest.json").read_text())["dev_query_ids"]

    assert drawn(1, "a") == drawn(1, "b")
    assert any(drawn(seed, f"s{seed}") != drawn(1, "a") for seed in (2, 3, 4))


def test_a_dev_split_of_every_query_is_refused(toy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dev_queries 6 would leave no training query: train has 6 queries"):
        run(_config(toy_dir, tmp_path / "out", dev_queries=6))
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_the_command_writes_the_split_and_refuses_to_overwrite(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dev-split"
    args = ["split-dev", "--dataset", str(toy_dir), "--dev-queries", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dev 2 queries (4 judgments), train 4 queries (8 judgments)" in " ".join(result.output.split())
    before = (out / "qrels" / "dev.tsv").read_text()
    again = runner.invoke(app, [*args, "--seed", "7"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (out / "qrels" / "dev.tsv").read_text() == before
    missing = runner.invoke(
        app, ["split-dev", "--dataset", str(toy_dir), "--split", "dev", "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "has no dev split" in " ".join(missing.output.split())


def test_the_published_folder_has_the_mode_of_a_plain_mkdir(toy_dir: Path, tmp_path: Path) -> None:
    out = run(_config(toy_dir, tmp_path / "dev-split", dev_queries=2))
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode
