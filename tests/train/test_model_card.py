"""The student's README.md: a real sentence-transformers card written from what the run recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrodistill.config import DataConfig, StudentConfig, TrainConfig
from retrodistill.data.store import TeacherStore
from retrodistill.train.model_card import describe_loss, describe_teacher, model_card, write_model_card
from retrodistill.train.run import run


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    data = yaml.safe_load(card.split("---", 2)[1])
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def student(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(cross_store.path),
        out=str(tmp_path_factory.mktemp("card") / "student"),
        student=StudentConfig(model=str(tiny_st_dir), max_seq_length=64, similarity="cosine"),
        negatives=2,
        batch_size=4,
        max_steps=3,
        epochs=2,
        logging_steps=1,
        learning_rate=1e-3,
    )
    return run(config, show_progress=False)


def test_the_card_of_a_tiny_run_names_what_it_was_trained_with(student: Path, tiny_st_dir: Path) -> None:
    card = (student / "README.md").read_text(encoding="utf-8")
    manifest = json.loads((student / "manifest.json").read_text())
    front = front_matter(card)
    assert front["library_name"] == "sentence-transformers"
    assert front["pipeline_tag"] == "sentence-similarity"
    assert "margin-mse" in front["tags"]
    assert "base_model" not in front and "datasets" not in front  # a local student and a local toy set
    # The teacher the store was scored with, the loss and its parameters.
    assert manifest["teacher"]["model"] == str(tiny_st_dir)
    assert f"`{tiny_st_dir}` (bi-encoder)" in card
    assert '| Loss | `margin-mse` (teacher_normalization="none", student_normalization="none") |' in card
    # The steps and epochs actually run: 3 steps of 4 examples out of 2 epochs' worth.
    steps, epochs = manifest["counts"]["steps"], manifest["counts"]["epochs"]
    assert steps == 3 and 0 < epochs < 2
    assert f"| Steps | {steps} |" in card
    assert f"| Epochs | {epochs:g} of 2 planned (stopped at max_steps=3) |" in card
    assert f"| Training examples | {manifest['counts']['examples']:,} |" in card
    assert "| Batch size | 4 |" in card and "| Seed | 42 |" in card
    assert f"retrodistill {manifest['versions']['retrodistill']}" in card
    # Citations: sentence-transformers and the loss's paper.
    assert "reimers-2019-sentence-bert" in card and "hofstatter2020improving" in card
    assert f"SentenceTransformer({str(student)!r})" in card
    assert "This run did not evaluate the model" in card
    # Not the stock card.
    assert "Unnamed Dataset" not in card and "widget" not in card and "sentence_transformers_model_id" not in card
    assert len(card.encode("utf-8")) < 20_000
    assert not (student / "README.retrodistill.md").exists()


def test_the_folder_still_loads_with_sentence_transformers(student: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(student), device="cpu")
    assert model.encode(["cancer tumor"]).shape == (1, 32)


def test_epochs_run_counts_the_whole_unrolled_dataset(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path
) -> None:
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(cross_store.path),
        out=str(tmp_path / "student"),
        student=StudentConfig(model=str(tiny_st_dir), max_seq_length=32),
        negatives=1,
        batch_size=64,
        epochs=2,
    )
    out = run(config, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["epochs"] == 2
    card = (out / "README.md").read_text()
    assert "| Epochs | 2 |" in card


def _manifest(**changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "stage": "train-student",
        "config": {
            "data": {"dataset": "scifact", "split": "train"},
            "store": "runs/scores",
            "epochs": 1,
            "max_steps": -1,
            "negatives": 7,
            "batch_size": 16,
            "learning_rate": 2e-5,
            "warmup_ratio": 0.1,
            "seed": 42,
            "loss": {"name": "margin-mse", "params": {}},
        },
        "loss": {"name": "margin-mse", "teacher_normalization": "none", "student_normalization": "none"},
        "student": {"model": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2, "similarity": "cosine"},
        "teacher": {"name": "cross-encoder", "model": "cross-encoder/ms-marco-MiniLM-L6-v2"},
        "counts": {"examples": 800, "steps": 50, "epochs": 1.0, "training_stage": "queries"},
        "versions": {"retrodistill": "0.1.0"},
    }
    manifest.update(changes)
    return manifest


def test_hub_facts_go_into_the_front_matter_and_figures_into_a_table() -> None:
    evaluation = {"scifact": {"nDCG@10": 0.6512, "R@100": 0.9}}
    card = model_card(_manifest(), repo_id="me/scifact-student", evaluation=evaluation)
    front = front_matter(card)
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["datasets"] == ["BeIR/scifact"]
    assert "# me/scifact-student" in card and "SentenceTransformer('me/scifact-student')" in card
    assert "`cross-encoder/ms-marco-MiniLM-L6-v2` (cross-encoder)" in card
    assert "| Dataset | nDCG@10 | R@100 |" in card and "| scifact | 0.6512 | 0.9000 |" in card
    assert "first 2 layers" in card
    assert "Training data: " in card and "BEIR" in card.split("Training data: ")[1]


def test_the_base_models_license_is_copied_when_its_card_is_on_disk(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# base\n")
    card = model_card(_manifest(student={"model": str(base), "similarity": "dot"}), folder=str(tmp_path / "s"))
    front = front_matter(card)
    assert front["license"] == "apache-2.0" and "base_model" not in front
    assert "license" not in front_matter(model_card(_manifest(student={"model": str(tmp_path)})))


def test_ensembles_combined_losses_and_teacher_free_runs_are_described() -> None:
    ensemble = {
        "name": "ensemble",
        "normalization": "zscore",
        "members": [{"teacher": {"name": "cross-encoder", "model": "a/ce"}}, {"teacher": {"model": "b/bi"}}],
    }
    assert describe_teacher(ensemble) == "ensemble of `a/ce` (cross-encoder), `b/bi` (normalisation `zscore`)"
    assert describe_teacher({}) == "none (teacher-free loss)"
    combined = {
        "name": "combined",
        "terms": [
            {"name": "margin-mse", "weight": 1.0, "params": {"student_normalization": "none"}},
            {"name": "pairwise-kl", "weight": 0.5, "params": {"temperature": 2.0}},
        ],
    }
    assert describe_loss(combined) == (
        '`combined`: 1.0 × `margin-mse` (student_normalization="none") + 0.5 × `pairwise-kl` (temperature=2.0)'
    )


def test_write_model_card_rewrites_the_card_from_the_manifest(student: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(student, copy)
    write_model_card(copy, repo_id="me/tiny", evaluation={"toy": {"nDCG@10": 0.5}})
    card = (copy / "README.md").read_text()
    assert "SentenceTransformer('me/tiny')" in card and "| toy | 0.5000 |" in card
    assert "hofstatter2020improving" in card  # the citation rebuilt from the recorded loss config
