"""Training-time sampling: negative-sampling strategies and TAS-balanced batches, all seeded."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.config import TrainConfig, load_config
from retrodistill.data.candidates import Candidate, CandidateSet
from retrodistill.data.collections import load_beir
from retrodistill.index.kmeans import kmeans
from retrodistill.train import sampling
from retrodistill.train.examples import build_examples, corpus_rows
from retrodistill.train.run import run
from retrodistill.train.sampling import (
    NEGATIVE_SAMPLING,
    check_sampling,
    draw_margin_balanced,
    duplicate_keys,
    tas_batches,
    tas_cluster_count,
    tas_sampler_class,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RANKED = 20  # ranked negatives per query in the fixture; the rest of the corpus is unranked (rank 0)


@pytest.fixture(scope="module")
def collection(toy_dir: Path) -> Any:
    return load_beir(toy_dir, "train")


@pytest.fixture(scope="module")
def shuffled(collection: Any) -> CandidateSet:
    """Every train query with its positives, RANKED ranked negatives and unranked ones, in shuffled row order.

    Rows are not in rank order (as triples files and merged sources are not), so a strategy that wants
    the best-ranked must sort; the rank of a negative is its ``r<rank>`` position in ``rank_of``.
    """
    rng = random.Random(3)
    rows = []
    for qid in sorted(collection.queries):
        judged = collection.qrels.get(qid, {})
        others = [d for d in sorted(collection.corpus) if judged.get(d, 0) <= 0]
        rng.shuffle(others)
        group = [Candidate(qid, d, g, 0, 0.0) for d, g in judged.items() if g > 0]
        group += [Candidate(qid, d, 0, i + 1 if i < RANKED else 0, 0.0) for i, d in enumerate(others)]
        rng.shuffle(group)
        rows += group
    return CandidateSet("shuffled", rows, {"fingerprint": "shuffled"})


def _rank_of(candidates: CandidateSet) -> dict[tuple[str, str], int]:
    return {(c.query_id, c.doc_id): c.rank for c in candidates.rows}


def _draw(collection: Any, candidates: CandidateSet, **settings: Any) -> Any:
    defaults = {"negatives": 4, "negative_pool": 30, "epochs": 2, "seed": 0}
    return build_examples(collection, candidates, None, **(defaults | settings))


def _negatives(examples: Any) -> list[tuple[str, list[str]]]:
    return [(q, docs[1:]) for q, docs in zip(examples.example_query_ids(), examples.example_doc_ids(), strict=True)]


# --- negative sampling -------------------------------------------------------------------------


def test_random_is_the_earlier_draw(collection: Any, shuffled: CandidateSet) -> None:
    """``random`` (and the default) is ``rng.sample(pool, N)`` over the pool in candidates order, as before."""
    rng = random.Random(5)
    expected = []
    for _ in range(3):
        for qid, group in sorted(shuffled.by_query().items()):
            pool = [c.doc_id for c in group if c.label <= 0 and c.rank <= 12]
            for c in group:
                if c.label > 0:
                    expected.append((qid, rng.sample(pool, 4)))
    settings = {"negative_pool": 12, "epochs": 3, "seed": 5}
    assert _negatives(_draw(collection, shuffled, **settings)) == expected
    assert _negatives(_draw(collection, shuffled, negative_sampling="random", **settings)) == expected


def test_top_takes_the_best_ranked_and_the_unranked_last(collection: Any, shuffled: CandidateSet) -> None:
    rank = _rank_of(shuffled)
    for qid, negatives in _negatives(_draw(collection, shuffled, negative_sampling="top")):
        assert [rank[qid, d] for d in negatives] == [1, 2, 3, 4]
    # A pool of two ranked negatives (negative_pool=2) and the unranked: those come after, in row order.
    unranked = {q: [c.doc_id for c in g if c.rank == 0 and c.label <= 0] for q, g in shuffled.by_query().items()}
    for qid, negatives in _negatives(_draw(collection, shuffled, negative_sampling="top", negative_pool=2)):
        assert [rank[qid, d] for d in negatives[:2]] == [1, 2]
        assert negatives[2:] == unranked[qid][:2]


def test_log_random_prefers_the_top_ranks_without_repeats() -> None:
    draw = NEGATIVE_SAMPLING["log_random"].draw
    pool = list(range(1, RANKED + 1))  # pool rows named by their rank
    rng = random.Random(0)
    draws = [draw(pool, 3, rng) for _ in range(4000)]
    assert all(len(set(d)) == 3 for d in draws)
    weights = [1 / math.log2(r + 1) for r in pool]
    # The first draw is rank r with probability w(r) / sum(w): rank 1 with 1 / sum(w) (uniform: 1/20).
    first_is_best = sum(d[0] == 1 for d in draws) / len(draws)
    assert first_is_best == pytest.approx(weights[0] / sum(weights), abs=0.025)
    # The top quarter of the pool gets 25% of a uniform draw's negatives; this draw gives it ~40%.
    top_share = sum(r <= 5 for d in draws for r in d) / (3 * len(draws))
    assert top_share > 0.33


def test_log_random_examples_are_distinct_and_seeded(collection: Any, shuffled: CandidateSet) -> None:
    rank = _rank_of(shuffled)
    first = _draw(collection, shuffled, negative_sampling="log_random", epochs=20)
    assert all(len(set(n)) == 4 for _, n in _negatives(first))
    ranks = [rank[q, d] or RANKED + 1 for q, n in _negatives(first) for d in n]
    assert np.mean(ranks) < 0.8 * np.mean(range(1, RANKED + 10))  # well below a uniform draw's mean rank
    again = _draw(collection, shuffled, negative_sampling="log_random", epochs=20)
    assert np.array_equal(first.candidate_rows, again.candidate_rows)
    other = _draw(collection, shuffled, negative_sampling="log_random", epochs=20, seed=1)
    assert not np.array_equal(first.candidate_rows, other.candidate_rows)


def test_top_and_random_has_a_top_half_and_a_random_half(collection: Any, shuffled: CandidateSet) -> None:
    rank = _rank_of(shuffled)
    seen_random: set[str] = set()
    for qid, negatives in _negatives(_draw(collection, shuffled, negative_sampling="top_and_random", epochs=5)):
        assert [rank[qid, d] for d in negatives[:2]] == [1, 2]
        assert all(rank[qid, d] not in (1, 2) for d in negatives[2:])
        assert len(set(negatives)) == 4
        seen_random.update(negatives[2:])
    assert len(seen_random) > 10  # the second half varies over epochs and queries


@pytest.mark.parametrize("name", sorted(NEGATIVE_SAMPLING))
def test_every_strategy_is_determined_by_the_seed(collection: Any, shuffled: CandidateSet, name: str) -> None:
    a = _draw(collection, shuffled, negative_sampling=name, seed=7)
    b = _draw(collection, shuffled, negative_sampling=name, seed=7)
    assert np.array_equal(a.candidate_rows, b.candidate_rows)


def test_unknown_names_are_refused_in_one_line(collection: Any, shuffled: CandidateSet, base: TrainConfig) -> None:
    with pytest.raises(ValueError, match=r"^negative_sampling: unknown strategy 'hard'; allowed: random, top, lo"):
        _draw(collection, shuffled, negative_sampling="hard")
    bad = [
        ({"negative_sampling": "hard"}, "allowed: random, top, log_random, top_and_random"),
        ({"batch_sampling": "tas"}, "allowed: random, tas-balanced"),
        ({"batch_sampling": "tas-balanced", "tas_clusters": 0}, "tas_clusters must be"),
        ({"batch_sampling": "tas-balanced", "tas_margin_bins": 0}, "tas_margin_bins must be"),
        ({"batch_sampling": "tas-balanced", "negative_sampling": "top"}, "does not combine"),
        ({"batch_sampling": "tas-balanced", "stage": "corpus"}, "needs stage: queries"),
    ]
    for change, message in bad:
        config = dataclasses.replace(base, **change)
        with pytest.raises(ValueError, match=message) as error:
            check_sampling(config)
        assert "\n" not in str(error.value)
    # Refused before anything loads or trains: no output, no staging folder.
    with pytest.raises(ValueError, match="negative_sampling"):
        run(dataclasses.replace(base, negative_sampling="hard"), show_progress=False)
    assert not Path(base.out).exists()
    assert list(Path(base.out).parent.iterdir()) == []


# --- TAS-balanced: margins ---------------------------------------------------------------------


def test_margin_balanced_draws_spread_over_bins_of_a_skewed_pool() -> None:
    # 90 negatives with margins near 0, 10 spread up to 10: a uniform draw takes ~90% from the first bin.
    margins = np.concatenate([np.linspace(0.0, 0.5, 90), np.linspace(1.0, 10.0, 10)])
    pool = list(range(100))
    rng = random.Random(0)
    bins = Counter()
    for _ in range(2000):
        drawn = draw_margin_balanced(pool, margins, 5, 10, rng)
        assert len(set(drawn)) == 5
        bins.update(min(int(margins[i] / 1.0), 9) for i in drawn)  # equal-width bins of [0, 10]
    assert len(bins) == 10
    assert bins[0] / sum(bins.values()) < 0.3


def _unranked_share(examples: Any, rank: dict[tuple[str, str], int]) -> float:
    return float(np.mean([rank[q, d] == 0 for q, negatives in _negatives(examples) for d in negatives]))


def test_margin_balanced_examples_use_the_teacher_scores(collection: Any, shuffled: CandidateSet) -> None:
    # Skewed teacher margins: 20 ranked negatives just below the positive, ~8 unranked far below. Of
    # 5 equal-width margin bins only the first and the last hold negatives, so about half the draws
    # take an unranked one (a uniform draw: ~8 in 28).
    rank = _rank_of(shuffled)
    scores = {
        (c.query_id, c.doc_id): 0.0 if c.label > 0 else -1000.0 if c.rank == 0 else -float(c.rank)
        for c in shuffled.rows
    }
    settings = {"negatives": 3, "negative_pool": 30, "epochs": 4, "seed": 0}
    balanced = build_examples(collection, shuffled, scores, margin_bins=5, **settings)
    uniform = build_examples(collection, shuffled, scores, **settings)
    assert all(len(set(docs)) == 4 for docs in balanced.example_doc_ids())
    assert _unranked_share(balanced, rank) > _unranked_share(uniform, rank) + 0.1
    assert _unranked_share(balanced, rank) == pytest.approx(0.5, abs=0.1)
    # A positive the teacher has not scored has no margins: an error naming it.
    unscored = next(pair for pair, score in scores.items() if score == 0.0)
    del scores[unscored]
    with pytest.raises(ValueError, match="itself unscored"):
        build_examples(collection, shuffled, scores, margin_bins=5, **settings)


# --- TAS-balanced: batches ---------------------------------------------------------------------


def test_tas_batches_come_from_one_cluster_and_cover_every_example_once() -> None:
    clusters = np.repeat([3, 0, 2, 1], [8, 12, 16, 4])  # every cluster a multiple of the batch
    batches = tas_batches(clusters, 4, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(clusters)))
    assert len(batches) == len(clusters) // 4
    assert all(len({clusters[i] for i in b}) == 1 for b in batches)
    assert tas_batches(clusters, 4, seed=0) == batches
    assert tas_batches(clusters, 4, seed=1) != batches


def test_tas_batches_keep_the_number_of_steps() -> None:
    clusters = np.repeat([0, 1, 2], [7, 10, 13])  # 30 examples; remainders 3, 2, 1
    batches = tas_batches(clusters, 4, seed=0)
    assert len(batches) == math.ceil(30 / 4) and len(batches[-1]) == 30 % 4
    assert sorted(i for b in batches for i in b) == list(range(30))
    whole_cluster = sum(len({clusters[i] for i in b}) == 1 for b in batches[:-1])
    assert whole_cluster >= 7 // 4 + 10 // 4 + 13 // 4
    dropped = tas_batches(clusters, 4, seed=0, drop_last=True)
    assert len(dropped) == 30 // 4 and all(len(b) == 4 for b in dropped)
    assert len({i for b in dropped for i in b}) == 28


def test_tas_batches_repeat_no_text_for_in_batch_losses() -> None:
    clusters = np.repeat([0, 1], [12, 12])
    # Examples 2k and 2k + 1 share a query (two positives); i and i + 10 of a cluster share a document.
    i = np.arange(24)
    keys = np.stack([-1 - i // 2, i % 12 % 10 + 100 * (i // 12)], axis=1)
    batches = tas_batches(clusters, 3, seed=0, keys=keys)
    assert sorted(i for b in batches for i in b) == list(range(24))
    assert len(batches) == 24 // 3
    for b in batches:
        flat = keys[b].ravel().tolist()
        assert len(flat) == len(set(flat))


def test_duplicate_keys_name_each_rows_query_and_documents(collection: Any, shuffled: CandidateSet) -> None:
    examples = _draw(collection, shuffled)
    keys = duplicate_keys(examples.dataset(collection))
    assert np.array_equal(keys[:, 0], -1 - examples.query_rows)
    docs = corpus_rows(collection, examples.doc_column.take(examples.candidate_rows.ravel()))
    assert np.array_equal(keys[:, 1:], docs.reshape(examples.candidate_rows.shape))


def test_the_sampler_deals_whole_cluster_batches_to_ranks() -> None:
    sampler_class = tas_sampler_class()
    clusters = np.repeat([0, 1, 2], [8, 8, 9])
    sampler = sampler_class(list(range(25)), 2, True, seed=3, clusters=clusters, world_size=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (25 // 4) * 2
    for first, second in zip(batches[::2], batches[1::2], strict=True):  # one global batch, two ranks
        assert len(first) == len(second) == 2
        assert len({clusters[i] for i in first + second}) == 1
    assert list(sampler) == batches  # a resumed run rebuilds the same order
    sampler.set_epoch(1)
    assert list(sampler) != batches
    single = sampler_class(list(range(25)), 4, False, seed=3, clusters=clusters)
    assert len(list(single)) == len(single) == math.ceil(25 / 4)
    with pytest.raises(ValueError, match="cluster labels"):
        sampler_class(list(range(5)), 2, False, clusters=clusters)


def test_kmeans_finds_separated_topics_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4] * 10
    vectors = np.concatenate([c + rng.standard_normal((30, 8)).astype(np.float32) for c in centres])
    labels = kmeans(vectors, 4, seed=0)
    for topic in range(4):
        assert len(set(labels[topic * 30 : (topic + 1) * 30].tolist())) == 1
    assert len(set(labels.tolist())) == 4
    assert np.array_equal(kmeans(vectors, 4, seed=0), labels)


def test_cluster_count_leaves_a_few_batches_per_cluster() -> None:
    assert tas_cluster_count(2000, 500_000, 32) == 2000
    assert tas_cluster_count(2000, 809, 16) == 809 // (4 * 16)
    assert tas_cluster_count(2000, 10, 16) == 1


def test_the_example_config_loads_and_passes_the_checks() -> None:
    config = load_config(TrainConfig, CONFIGS / "tas_balanced.yaml")
    assert (config.batch_sampling, config.tas_margin_bins) == ("tas-balanced", 10)
    check_sampling(config)


# --- TAS-balanced: a real run ------------------------------------------------------------------


def _manifest(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "manifest.json").read_text()))


def test_tas_balanced_training_records_itself(base: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "TAS_BATCHES_PER_CLUSTER", 1)  # clusters of about one batch of queries
    passes = []
    original = sampling.tas_batches
    monkeypatch.setattr(sampling, "tas_batches", lambda *a, **k: passes.append(original(*a, **k)) or passes[-1])
    config = dataclasses.replace(base, batch_sampling="tas-balanced", tas_margin_bins=3, max_steps=-1, batch_size=2)
    out = run(config, show_progress=False)
    record = _manifest(out)
    assert record["config"]["batch_sampling"] == "tas-balanced"
    assert record["sampling"]["batch_sampling"] == "tas-balanced"
    queries = sum(any(g > 0 for g in docs.values()) for docs in load_beir(config.data.dataset, "train").qrels.values())
    assert record["sampling"]["tas"]["clusters"] == queries // config.batch_size > 1
    assert record["sampling"]["tas"]["margin_balanced"] is True
    assert record["counts"]["margin_balanced"] is True
    examples = record["counts"]["examples"]
    assert record["counts"]["steps"] == math.ceil(examples / config.batch_size)  # as many steps as shuffled
    assert passes and sorted(i for b in passes[0] for i in b) == list(range(examples))


def test_tas_balanced_in_batch_loss_reads_the_store_for_margins(base: TrainConfig) -> None:
    config = dataclasses.replace(
        base, batch_sampling="tas-balanced", loss=dataclasses.replace(base.loss, name="infonce")
    )
    record = _manifest(run(config, show_progress=False))
    assert record["sampling"]["tas"]["margin_balanced"] is True
    assert "teacher_scores" in record["inputs"]  # the negatives depend on the store


@pytest.mark.slow
def test_tas_balanced_under_torchrun_matches_one_process(
    toy_dir: Path, tiny_st_dir: Path, base: TrainConfig, tmp_path: Path
) -> None:
    """Two processes with batches of 2 take the one-process run's steps with batches of 4 (rank 0's clusters)."""

    def train(processes: int) -> dict[str, Any]:
        out = tmp_path / f"student-{processes}"
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command = ["-m", "retrodistill", "train-student", "--store", str(base.store), "--student", str(tiny_st_dir)]
        command += ["--dataset", str(toy_dir), "--negatives", "2", "--batch-size", str(4 // processes)]
        command += ["--out", str(out), "--set", "batch_sampling=tas-balanced", "--set", "tas_margin_bins=3"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, *(launch if processes > 1 else []), *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return _manifest(out)

    one, two = train(1), train(2)
    assert two["sampling"]["tas"] == one["sampling"]["tas"]
    assert two["counts"]["steps"] == one["counts"]["steps"] == one["counts"]["examples"] // 4
