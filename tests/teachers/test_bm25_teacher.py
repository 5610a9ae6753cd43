"""The BM25 teacher gives each candidate the score mine-negatives retrieved it with, via score-teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrodistill.config import DataConfig, MineConfig, ScoreTeacherConfig, TeacherConfig
from retrodistill.data.collections import load_beir
from retrodistill.stages import mine_negatives, score_teacher
from retrodistill.teachers import TEACHERS


def test_scores_equal_the_retrieval_scores_of_mined_candidates(toy_dir: Path, tmp_path: Path) -> None:
    mine = MineConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(tmp_path / "cand"), k=10)
    candidates = mine_negatives.run(mine, show_progress=False)
    config = ScoreTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        candidates=str(candidates.path),
        teacher=TeacherConfig("bm25", {"corpus": str(toy_dir)}),
        out=str(tmp_path / "bm25-scores"),
        part_size=7,  # several parts: the statistics are the corpus's, whatever the part
    )
    store = score_teacher.run(config, show_progress=False)
    assert store.manifest["teacher"]["name"] == "bm25"
    scores = store.scores()
    retrieved = [(c.query_id, c.doc_id, c.retrieval_score) for c in candidates.rows if c.rank > 0]
    assert len(retrieved) > 20
    for qid, did, expected in retrieved:
        assert scores[(qid, did)] == pytest.approx(expected, rel=1e-6)
    # Judged documents BM25 did not retrieve still get a score (0 when no query word occurs).
    unretrieved = [(c.query_id, c.doc_id) for c in candidates.rows if c.rank == 0]
    assert all(np.isfinite(scores[pair]) and scores[pair] >= 0 for pair in unretrieved)


def test_scores_follow_term_overlap_and_ignore_unknown_words(toy_dir: Path) -> None:
    teacher = TEACHERS.build("bm25", {"corpus": str(toy_dir)})
    collection = load_beir(toy_dir, "train")
    doc = collection.doc_text(sorted(collection.corpus)[0])
    word = max(doc.lower().split(), key=len).strip(".,;:")
    scores = teacher.score([word, "zzqxv unknownword", word], [doc, doc, "nothing shared here"])
    assert scores[0] > 0
    assert scores[1] == 0 and scores[2] == 0
    assert teacher.describe()["revision"] == collection.fingerprints["corpus"]
