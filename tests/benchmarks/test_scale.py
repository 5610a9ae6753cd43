"""The scale benchmark's data generator and harness, at a tiny size (no model is built or run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale  # noqa: E402
from scale_data import (  # noqa: E402
    DEV_QID_OFFSET,
    PASSAGE_WORDS_VENTILES,
    TRAIN_QID_OFFSET,
    DataSpec,
    Generator,
    human,
    parse_count,
    passage_lengths,
    vocabulary,
)

from retrodistill.data.collections import load_beir, read_qrels  # noqa: E402

SPEC = DataSpec(passages=3000, queries=200, pairs=5000, dev_queries=20, score_pairs=700, vocab=20_000)


def test_counts_parse_and_print() -> None:
    assert parse_count("8.8M") == 8_800_000 and parse_count("100k") == 100_000 and parse_count("40_000") == 40_000
    assert human(8_800_000) == "8.8M" and human(100_000) == "100k" and human(454_560) == "454560"


def test_vocabulary_is_distinct_and_passage_lengths_follow_the_real_ventiles() -> None:
    words = vocabulary(50_000)
    assert len(words) == len(set(words)) == 50_000 and words[0] == "the"
    lengths = passage_lengths(np.random.default_rng(0), 200_000)
    assert abs(np.median(lengths) - PASSAGE_WORDS_VENTILES[10]) <= 1
    assert lengths.min() >= PASSAGE_WORDS_VENTILES[0] and lengths.max() <= PASSAGE_WORDS_VENTILES[-1]


def test_generator_writes_a_consistent_dataset_and_resumes(tmp_path: Path) -> None:
    paths = Generator(SPEC, tmp_path, log=lambda _: None, chunk=700).generate(models=False)
    train = load_beir(paths["dataset"], "train")
    assert len(train.corpus) == SPEC.passages and len(train.queries) == SPEC.queries
    dev = load_beir(paths["dataset"], "dev")
    assert len(dev.queries) == SPEC.dev_queries and min(int(q) for q in dev.queries) == DEV_QID_OFFSET
    assert train.unknown_judgments == {"queries": 0, "documents": 0}
    assert (paths["corpus"].read_text().count("\n"), paths["collection"].read_text().count("\n")) == (3000, 3000)
    assert paths["collection"].read_text().splitlines()[5] == f"5\t{train.corpus['5'].text}"
    lines = [line.split("\t") for line in paths["pairs"].read_text().splitlines()]
    assert len(lines) == SPEC.pairs and all(len(line) == 5 for line in lines)
    qrels = read_qrels(paths["train_qrels"])
    for score_pos, score_neg, qid, pos, neg in lines[::97]:
        float(score_pos), float(score_neg)
        assert int(qid) >= TRAIN_QID_OFFSET and pos in qrels[qid] and neg != pos and neg in train.corpus
    assert [int(line[2]) for line in lines] == sorted(int(line[2]) for line in lines)  # grouped by query
    triples = paths["triples"].read_text().splitlines()
    assert len(triples) == SPEC.score_pairs and triples[0] == "\t".join(lines[0][2:])

    before = {p: p.read_bytes() for p in paths.values() if p.is_file()}
    paths["queries"].unlink()
    messages: list[str] = []
    Generator(SPEC, tmp_path, log=messages.append, chunk=700).generate(models=False)
    assert sum("skipped" in m for m in messages) == 4  # only the queries were written again
    assert {p: p.read_bytes() for p in before} == before  # same seed, same bytes


def test_harness_measures_a_command_and_records_failures(tmp_path: Path) -> None:
    code, wall, rss = scale.measure([sys.executable, "-c", "b = bytearray(300 << 20)"], {}, tmp_path / "a.log", 60)
    assert code == 0 and wall > 0 and 0.25 < rss < 2
    code, _, _ = scale.measure([sys.executable, "-c", "import time; time.sleep(30)"], {}, tmp_path / "b.log", 1)
    assert code is None  # killed at the timeout
    code, _, _ = scale.measure([sys.executable, "-c", "raise SystemExit(3)"], {}, tmp_path / "c.log", 60)
    assert code == 3


def test_report_merges_sizes(tmp_path: Path) -> None:
    report = tmp_path / "scale.md"
    small = scale.Result("import", "1k", 1000, 10, 100, "cmd", ok=True, status="OK", wall_s=1.0, peak_rss_gb=0.1)
    big = scale.Result("import", "2k", 2000, 10, 100, "cmd", status="FAIL: exit 1", tail="Traceback: boom")
    scale.write_report(report, [small], None, SPEC)
    scale.write_report(report, [big], None, SPEC)
    data = json.loads(report.with_suffix(".json").read_text())
    assert [r["size"] for r in data["results"]] == ["1k", "2k"]
    text = report.read_text()
    assert "| import | 1k |" in text and "FAIL: exit 1" in text and "Traceback: boom" in text


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(SystemExit):
        scale.parse_args(["--stages", "load,fly"])


def test_mine_rate_is_read_from_its_log() -> None:
    log = (
        "BM25 index: tokenised 50,000 documents (chunk 1)\n"
        "BM25 index: 100,000 documents, 80,123 terms in 12.5 s\n"
        "BM25 retrieval: 1,000 of 2,000 queries in 2.0 s\n"
        "BM25 retrieval: 2,000 of 2,000 queries in 4.0 s\n"
    )
    text = scale.rate_text("mine", "", 20.0, SPEC, log)
    assert text == "index 12.5 s (80,123 terms); 2,000 queries in 4.0 s (500.0/s)"


def test_score_rate_counts_the_pairs_written() -> None:
    log = "wrote /tmp/x/score: 1,012,460 scored\npairs\n"  # rich wraps lines anywhere
    assert scale.rate_text("score", "", 10.0, SPEC, log) == "1,012,460 pairs, 101,246 pairs/s (whole command)"
    assert scale.rate_text("score", "", 10.0, SPEC, "Traceback") == ""
