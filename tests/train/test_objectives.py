"""``train-student`` with every objective: one short run each on the toy collection and the tiny student."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.config import DataConfig, TeacherEmbeddingsConfig, TrainConfig, load_config
from retrodistill.data.candidates import CandidateSet
from retrodistill.data.collections import load_beir
from retrodistill.data.pair_store import PairStore, ranking_by_scores, select_comparisons
from retrodistill.data.store import TeacherStore
from retrodistill.losses import LOSSES
from retrodistill.losses.pairwise_kl import PairwiseKL
from retrodistill.stages.score_pairwise import score_comparisons_to_store
from retrodistill.teachers.pairwise import PairwiseTeacher
from retrodistill.train.examples import precompute_teacher_embeddings
from retrodistill.train.run import run
from retrodistill.train.st_loss import StudentDistillationLoss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class SeededEncoder:
    """A test double for a dense teacher: a fixed random vector per text."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(self.dim) for t in texts])

    def encode_query(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self._encode(texts)

    def encode_document(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self._encode(texts)


def manifest(out: str | Path) -> dict[str, Any]:
    return dict(json.loads((Path(out) / "manifest.json").read_text()))


def with_loss(config: TrainConfig, name: str, **params: Any) -> TrainConfig:
    return dataclasses.replace(config, loss=dataclasses.replace(config.loss, name=name, params=params))


def test_combined_logs_every_weighted_term(base: TrainConfig) -> None:
    terms = [{"name": "margin-mse", "weight": 1.0}, {"name": "infonce", "weight": 0.1, "params": {"scale": 20}}]
    out = run(with_loss(base, "combined", terms=terms), show_progress=False)
    steps = [entry for entry in json.loads((out / "train_log.json").read_text()) if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:
        # The trainer logs each term (rounded to 4 decimals) beside their sum.
        assert entry["loss"] == pytest.approx(entry["loss_margin-mse"] + entry["loss_infonce"], abs=1e-3)
        assert entry["loss_infonce"] > 0
    recorded = manifest(out)["loss"]
    assert recorded["name"] == "combined"
    assert [t["params"] for t in recorded["terms"]] == [
        {"teacher_normalization": "none", "student_normalization": "none"},
        {"scale": 20, "teacher_normalization": "none", "student_normalization": "none"},
    ]


def test_in_batch_kl_trains_on_a_store_with_every_in_batch_pair(base: TrainConfig) -> None:
    out = run(with_loss(base, "in-batch-kl", temperature_teacher=2.0), show_progress=False)
    record = manifest(out)
    assert record["counts"]["steps"] == 2
    assert record["counts"]["teacher_pairs"] > record["counts"]["examples"] * 3  # cross pairs, not only own ones
    assert record["inputs"]["teacher_scores"] == TeacherStore.open(base.store or "").fingerprint


def test_in_batch_kl_refuses_a_store_without_the_cross_pairs(
    base: TrainConfig, toy_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    from retrodistill.config import MineConfig, ScoreTeacherConfig, TeacherConfig
    from retrodistill.stages import mine_negatives
    from retrodistill.stages.score_teacher import run as score

    data = DataConfig(dataset=str(toy_dir), split="train")
    candidates = mine_negatives.run(MineConfig(data=data, out=str(tmp_path / "candidates"), k=5), show_progress=False)
    params = {"model": str(tiny_st_dir), "device": "cpu", "linear_backend": "torch"}
    store = score(
        ScoreTeacherConfig(
            data=data,
            candidates=str(candidates.path),
            teacher=TeacherConfig("bi-encoder", params),
            out=str(tmp_path / "scores"),
        ),
        show_progress=False,
    )
    config = dataclasses.replace(with_loss(base, "in-batch-kl"), store=str(store.path))
    with pytest.raises(ValueError, match="has none for .* pairs of this batch.*score-teacher"):
        run(config, show_progress=False)
    assert not Path(config.out).exists()


@pytest.mark.parametrize("name", ["infonce", "self-distill"])
def test_teacher_free_losses_need_only_candidates(base: TrainConfig, cross_candidates: CandidateSet, name: str) -> None:
    config = dataclasses.replace(with_loss(base, name), store=None, candidates=str(cross_candidates.path))
    record = manifest(run(config, show_progress=False))
    assert record["counts"]["steps"] == 2
    assert "teacher_scores" not in record["inputs"] and record["teacher"] == {}
    assert record["inputs"]["candidates"] == cross_candidates.fingerprint


def test_teacher_free_without_candidates_and_teacher_losses_without_store_are_refused(base: TrainConfig) -> None:
    with pytest.raises(ValueError, match="set candidates"):
        run(dataclasses.replace(with_loss(base, "infonce"), store=None), show_progress=False)
    with pytest.raises(ValueError, match="needs the teacher's scores: set store"):
        run(dataclasses.replace(base, store=None), show_progress=False)


def test_embedding_distillation_computes_the_teacher_store(
    base: TrainConfig, tiny_st_dir: Path, tmp_path: Path
) -> None:
    embeddings = TeacherEmbeddingsConfig(path=str(tmp_path / "teacher-embeddings"), model=str(tiny_st_dir))
    config = dataclasses.replace(with_loss(base, "embedding", projection="linear"), teacher_embeddings=embeddings)
    out = run(config, show_progress=False)
    store = manifest(embeddings.path or "")
    assert store["stage"] == "embed-teacher" and store["dim"] == 32
    assert store["teacher"]["model"] == str(tiny_st_dir)
    record = manifest(out)
    assert record["inputs"]["teacher_embeddings"] == store["fingerprint"]
    assert record["teacher"]["embeddings"]["model"] == str(tiny_st_dir)
    assert record["loss"] == {
        "name": "embedding",
        "distance": "mse",
        "projection": "linear",
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert (out / "teacher_projection.safetensors").is_file()


def test_an_existing_teacher_embedding_store_is_reused_and_checked(
    base: TrainConfig, toy_dir: Path, cross_candidates: CandidateSet, tmp_path: Path
) -> None:
    collection = load_beir(toy_dir, "train")
    path = tmp_path / "precomputed"
    precompute_teacher_embeddings(
        path,
        SeededEncoder(dim=32),
        dict(collection.queries),
        {d: collection.doc_text(d) for d in collection.corpus},
        teacher={"name": "seeded", "model": "seeded-vectors"},
        inputs={"corpus": collection.fingerprints["corpus"], "queries": collection.fingerprints["queries"]},
    )
    written = (path / "documents.npy").stat().st_mtime_ns
    config = dataclasses.replace(
        with_loss(base, "embedding"), teacher_embeddings=TeacherEmbeddingsConfig(path=str(path))
    )
    assert manifest(run(config, show_progress=False))["counts"]["steps"] == 2
    assert (path / "documents.npy").stat().st_mtime_ns == written  # reused, not recomputed

    other_model = TeacherEmbeddingsConfig(path=str(path), model="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ArtifactMismatchError, match="holds embeddings of 'seeded-vectors'"):
        run(dataclasses.replace(config, teacher_embeddings=other_model), show_progress=False, overwrite=True)
    with pytest.raises(ValueError, match="teacher_embeddings.path"):
        run(with_loss(base, "embedding"), show_progress=False, overwrite=True)
    with pytest.raises(ValueError, match="teacher_embeddings.model is not set"):
        missing = TeacherEmbeddingsConfig(path=str(tmp_path / "nothing-here"))
        run(dataclasses.replace(config, teacher_embeddings=missing), show_progress=False, overwrite=True)


def test_corpus_stage_distils_embeddings_over_documents_alone(
    base: TrainConfig, tiny_st_dir: Path, tmp_path: Path
) -> None:
    embeddings = TeacherEmbeddingsConfig(path=str(tmp_path / "corpus-embeddings"), model=str(tiny_st_dir))
    config = dataclasses.replace(
        with_loss(base, "embedding", distance="cosine"),
        stage="corpus",
        store=None,
        corpus_documents=10,
        teacher_embeddings=embeddings,
    )
    record = manifest(run(config, show_progress=False))
    assert record["counts"]["documents"] == 10 and record["counts"]["training_stage"] == "corpus"
    assert record["counts"]["steps"] == 2
    assert manifest(embeddings.path or "")["counts"] == {"queries": 0, "documents": 10}
    with pytest.raises(ValueError, match="documents alone.*margin-mse"):
        run(dataclasses.replace(config, loss=base.loss), show_progress=False, overwrite=True)
    with pytest.raises(ValueError, match="stage must be one of"):
        run(dataclasses.replace(config, stage="documents"), show_progress=False, overwrite=True)


@pytest.mark.parametrize(
    ("file", "loss"),
    [
        ("infonce_margin_mse.yaml", "combined"),
        ("self_improve_ensemble.yaml", "combined"),
        ("embedding_mse.yaml", "embedding"),
        ("self_distill.yaml", "self-distill"),
        ("combined.yaml", "combined"),
        ("pairwise_kl.yaml", "combined"),
    ],
)
def test_example_configs_load_and_build_their_loss(file: str, loss: str) -> None:
    config = load_config(TrainConfig, CONFIGS / file)
    assert config.loss.name == loss
    LOSSES.build(config.loss.name, config.loss.params)


class TextPairwiseTeacher(PairwiseTeacher):
    """A test double for a pairwise reranker: P(first > second) a fixed function of the two texts."""

    batch_size = 64

    def score(
        self, queries: Sequence[str], docs_i: Sequence[str], docs_j: Sequence[str], show_progress: bool = False
    ) -> np.ndarray:
        triples = zip(queries, docs_i, docs_j, strict=True)
        return np.array([np.random.default_rng(sum(map(ord, q + i + j))).uniform() for q, i, j in triples], np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "text-double", "model": "seeded", "device": "cpu", "batch_size": self.batch_size}


def write_pair_store(out: Path, store: TeacherStore, collection_dir: Path, **inputs: str) -> PairStore:
    """Pairs among every toy train query's documents ranked by ``store``, in the ``ranked`` order only.

    Every pair of the top 30 (the whole toy corpus) is compared, so every training row has scored
    pairs; ``ranked`` leaves the other order of each pair NaN.
    """
    collection = load_beir(collection_dir, "train")
    comparisons = select_comparisons(ranking_by_scores(store.scores()), m=30)
    return score_comparisons_to_store(
        TextPairwiseTeacher(),
        comparisons,
        collection.queries,
        {d: collection.doc_text(d) for d in collection.corpus},
        out,
        orders="ranked",
        part_size=5000,
        inputs={**{k: store.inputs[k] for k in ("corpus", "queries", "candidates")}, **inputs},
        selection={"m": 30, "ranked_by": "teacher-scores", "max_rank_gap": None},
        config={},
        show_progress=False,
    )


@pytest.fixture(scope="module")
def pair_store(cross_store: TeacherStore, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PairStore:
    return write_pair_store(tmp_path_factory.mktemp("pairs") / "pairs", cross_store, toy_dir)


PAIRDISTILL_TERMS = [
    {"name": "margin-mse", "weight": 1.0},
    {"name": "pairwise-kl", "weight": 0.5, "params": {"temperature_student": 0.05}},
]


@pytest.mark.parametrize("combined", [False, True], ids=["pairwise-kl", "margin-mse+pairwise-kl"])
def test_pairwise_kl_trains_on_the_pair_store_matrices(
    base: TrainConfig, pair_store: PairStore, monkeypatch: pytest.MonkeyPatch, combined: bool
) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []  # (id labels, teacher matrices) per call of the loss
    tables = []
    forward, call = StudentDistillationLoss.forward, PairwiseKL.__call__

    def spy_forward(self: StudentDistillationLoss, features: Any, labels: Any) -> Any:
        tables.append(self.teacher)
        seen.append((labels.cpu().numpy(), np.empty(0)))
        return forward(self, features, labels)

    def spy_call(self: PairwiseKL, student: Any, teacher: Any) -> Any:
        seen[-1] = (seen[-1][0], teacher.detach().cpu().numpy())
        return call(self, student, teacher)

    monkeypatch.setattr(StudentDistillationLoss, "forward", spy_forward)
    monkeypatch.setattr(PairwiseKL, "__call__", spy_call)
    config = dataclasses.replace(base, pair_store=str(pair_store.path))
    config = with_loss(config, "combined", terms=PAIRDISTILL_TERMS) if combined else with_loss(config, "pairwise-kl")
    out = run(config, show_progress=False)

    assert len(seen) == 2  # max_steps
    reopened = PairStore.open(pair_store.path)
    for (labels, teacher), table in zip(seen, tables, strict=True):
        assert labels.shape == (4, 2 + 2)  # query row, then 1 + negatives document rows
        query_ids = [table.query_ids[int(q)] for q in labels[:, 0]]
        doc_ids = [[table.doc_ids[int(d)] for d in row] for row in labels[:, 1:]]
        expected = reopened.matrices(query_ids, doc_ids)
        np.testing.assert_array_equal(teacher, expected)  # NaN where unscored, in the same cells
        off_diagonal = ~np.eye(teacher.shape[1], dtype=bool)
        # ``ranked``: one order of each pair scored, the other NaN
        assert np.isnan(teacher[:, off_diagonal]).any() and np.isfinite(teacher[:, off_diagonal]).any()

    recorded = manifest(out)
    assert recorded["inputs"]["pair_store"] == pair_store.fingerprint
    assert recorded["teacher"]["pairwise"]["name"] == "text-double"
    assert recorded["counts"]["pairwise_rows"] == recorded["counts"]["examples"]
    steps = [entry for entry in json.loads((out / "train_log.json").read_text()) if "loss" in entry]
    assert len(steps) == 2
    if combined:
        assert "teacher_scores" in recorded["inputs"]
        for entry in steps:
            assert entry["loss"] == pytest.approx(entry["loss_margin-mse"] + entry["loss_pairwise-kl"], abs=1e-3)
            assert entry["loss_pairwise-kl"] > 0


def test_pairwise_kl_without_pair_store_is_refused(base: TrainConfig) -> None:
    with pytest.raises(ValueError, match="score-pairwise.*pair_store"):
        run(with_loss(base, "combined", terms=PAIRDISTILL_TERMS), show_progress=False)


def test_pairwise_kl_refuses_a_pair_store_of_other_candidates(
    base: TrainConfig, cross_store: TeacherStore, toy_dir: Path, tmp_path: Path
) -> None:
    other = write_pair_store(tmp_path / "pairs", cross_store, toy_dir, candidates="sha256:other")
    config = with_loss(dataclasses.replace(base, pair_store=str(other.path)), "pairwise-kl")
    with pytest.raises(ArtifactMismatchError, match="candidates: artifact has sha256:other"):
        run(config, show_progress=False)
    assert not Path(base.out).exists()


def test_loader_workers_train_the_same_student(base: TrainConfig, tmp_path: Path) -> None:
    """Texts looked up and tokenised in worker processes (the corpus pickles as its cache folder)."""
    from safetensors.numpy import load_file

    def weights(out: str) -> dict[str, np.ndarray]:
        (file,) = Path(out).rglob("model.safetensors")
        return load_file(file)

    main = run(dataclasses.replace(base, out=str(tmp_path / "main")), show_progress=False)
    workers = run(
        dataclasses.replace(base, out=str(tmp_path / "workers"), dataloader_num_workers=2), show_progress=False
    )
    a, b = weights(str(main)), weights(str(workers))
    initial = weights(base.student.model)
    assert any(not np.array_equal(a[name], initial[name]) for name in a)  # it trained: equality means something
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)
