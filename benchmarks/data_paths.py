"""The column-wise data paths alone: import-scores, TeacherStore lookups, score-teacher with a constant teacher.

Library calls, not the CLI (``benchmarks/scale.py`` runs the commands end to end on a generated
collection): each measurement builds only what its path needs, so its wall time and peak RSS are
those of the path. Data is generated under ``--work`` (default ``/tmp/retrodistill-data-paths``):

=======  ===================================================================================================
import   a Hofstätter file of ``--lines`` lines (``pos neg qid pid+ pid-``; ~40 negatives per query, lines
         shuffled, pids below 8.8M) imported against a collection of 8.8M passage ids (empty texts, in memory)
         and its queries; targets at 40M lines: ≤ 600 s, ≤ 4 GB
lookup   ``TeacherStore.open`` + ``scores_for(candidates)`` on the store ``import`` wrote
score    ``score_pairs_to_store`` over ``--pairs`` candidate pairs (40 per query) of a generated 1M-passage
         MS MARCO ``collection.tsv`` (memory-mapped corpus cache) with a teacher that returns zeros;
         target ≥ 20,000 pairs/s, ≤ 4 GB. ``--kill-after S`` also kills a scoring process with SIGKILL
         after S seconds and checks that the re-run ends with the uninterrupted run's fingerprint
=======  ===================================================================================================

Run each in its own process, niced, one at a time::

    nice python benchmarks/data_paths.py import --lines 40M
    nice python benchmarks/data_paths.py lookup --lines 40M
    nice python benchmarks/data_paths.py score --pairs 1M --kill-after 6

Figures measured on this project's 2-core machine are in ``benchmarks/data_paths.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def count(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}
    return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(float(text))


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def load() -> str:
    return "load " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def hofstaetter_file(path: Path, lines: int, seed: int = 0) -> None:
    """Lines ``pos_score neg_score qid pid+ pid-``, shuffled; each query has one positive, ~40 lines."""
    import pyarrow as pa
    import pyarrow.csv as csv

    rng = np.random.default_rng(seed)
    queries = max(lines // 40, 1)
    qids = rng.choice(1_200_000, queries, replace=False)
    pos = rng.integers(0, 8_800_000, queries)
    q = rng.integers(0, queries, lines)
    neg = rng.integers(0, 8_800_000, lines)
    neg = np.where(neg == pos[q], (neg + 1) % 8_800_000, neg)
    table = pa.table(
        {
            "pos": np.round(rng.normal(8, 2, queries), 4)[q],
            "neg": np.round(rng.normal(0, 3, lines), 4),
            "q": qids[q].astype(str),
            "p": pos[q].astype(str),
            "n": neg.astype(str),
        }
    )
    options = csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with csv.CSVWriter(str(path), table.schema, write_options=options) as writer:
        for start in range(0, lines, 1_000_000):
            writer.write_table(table.slice(start, 1_000_000))
    np.save(f"{path}.qids.npy", qids)
    np.save(f"{path}.pos.npy", pos)


def id_collection(source: Path) -> Any:
    """8.8M passage ids with empty texts, and the file's queries with their positive as qrels."""
    import pyarrow as pa

    from retrodistill.data.collections import Collection
    from retrodistill.data.corpus import Corpus
    from retrodistill.data.corpus_convert import schema
    from retrodistill.data.id_index import IdIndex

    n = 8_800_000
    blank = pa.StringArray.from_buffers(n, pa.py_buffer(np.zeros(n + 1, np.int32).tobytes()), pa.py_buffer(b""))
    table = pa.Table.from_arrays([pa.array(np.arange(n).astype(str)), blank, blank], schema=schema())
    corpus = Corpus(table, IdIndex.build(table.column("_id")), empty_documents=n)
    qids, pos = np.load(f"{source}.qids.npy"), np.load(f"{source}.pos.npy")
    queries = {str(q): "query" for q in qids}
    qrels = {str(q): {str(p): 1} for q, p in zip(qids, pos, strict=True)}
    return Collection("synthetic", corpus, queries, qrels, "train", {"corpus": "sha256:c", "queries": "sha256:q"})


def run_import(args: argparse.Namespace) -> None:
    from retrodistill.stages.import_scores import import_scores

    source = args.work / f"hofstaetter-{args.lines}.tsv"
    if not source.is_file():
        hofstaetter_file(source, count(args.lines))
    collection = id_collection(source)
    out = args.work / f"import-{args.lines}"
    shutil.rmtree(out, ignore_errors=True)
    print(f"collection built; peak RSS so far {peak_gb():.2f} GB; {load()}", flush=True)
    start = time.perf_counter()
    result = import_scores(source, "hofstaetter-tsv", collection=collection, out=out / "store", model="synthetic")
    wall = time.perf_counter() - start
    r = result.report
    print(
        f"import-scores {r['records'] // 2:,} lines: {wall:.1f} s ({r['records'] / 2 / wall:,.0f} lines/s), "
        f"{r['pairs']:,} pairs, {r['duplicates']:,} duplicates, {r['conflicts']:,} conflicts; "
        f"peak RSS {peak_gb():.2f} GB; {load()}"
    )


def run_lookup(args: argparse.Namespace) -> None:
    from retrodistill.data.candidates import read_candidates
    from retrodistill.data.store import TeacherStore

    out = args.work / f"import-{args.lines}"
    start = time.perf_counter()
    store = TeacherStore.open(out / "store")
    opened = time.perf_counter() - start
    candidates = read_candidates(out / "store-candidates")
    start = time.perf_counter()
    scores = store.scores_for(candidates)
    wall = time.perf_counter() - start
    print(
        f"open {opened:.1f} s; scores_for {len(scores):,} candidate rows {wall:.1f} s "
        f"({int(np.isnan(scores).sum())} without a score); peak RSS {peak_gb():.2f} GB; {load()}"
    )


def collection_tsv(path: Path, passages: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(30_000)])
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, passages, 100_000):
            m = min(100_000, passages - start)
            lengths = rng.integers(30, 90, m)
            tokens = words[rng.zipf(1.3, lengths.sum()) % len(words)]
            texts = np.split(tokens, np.cumsum(lengths)[:-1])
            f.write("".join(f"{start + i}\t{' '.join(t)}\n" for i, t in enumerate(texts)))


def run_score(args: argparse.Namespace) -> None:
    """The scoring itself runs in a child process (``_score``), so a kill can land in it."""
    pairs = count(args.pairs)
    tsv = args.work / "collection-1M.tsv"
    if not tsv.is_file():
        collection_tsv(tsv, 1_000_000)
    child = [sys.executable, __file__, "_score", "--pairs", args.pairs, "--work", str(args.work)]
    whole = args.work / f"score-{pairs}-whole"
    shutil.rmtree(whole, ignore_errors=True)
    subprocess.run([*child, "--out", str(whole)], check=True)
    if args.kill_after:
        killed = args.work / f"score-{pairs}-killed"
        shutil.rmtree(killed, ignore_errors=True)
        env = {**os.environ, "DELAY": "0.4"}  # slower parts, so the kill lands mid-run
        process = subprocess.Popen([*child, "--out", str(killed)], env=env)
        time.sleep(args.kill_after)
        process.send_signal(signal.SIGKILL)
        process.wait()
        print(f"killed the scoring process with SIGKILL after {args.kill_after} s; running it again", flush=True)
        subprocess.run([*child, "--out", str(killed)], check=True)
        from retrodistill.data.store import TeacherStore

        a, b = TeacherStore.open(whole / "store"), TeacherStore.open(killed / "store")
        sessions = [s["parts_scored"] for s in b.manifest["sessions"]]
        verdict = "identical" if a.fingerprint == b.fingerprint else "DIFFERENT"
        print(f"resumed store: parts scored per session {sessions}; fingerprint {verdict} to the uninterrupted one")


def _score(args: argparse.Namespace) -> None:
    import pyarrow as pa

    from retrodistill.data.candidates import read_candidates, write_candidates
    from retrodistill.data.corpus import open_corpus
    from retrodistill.stages.score_teacher import score_pairs_to_store
    from retrodistill.teachers.base import Teacher

    class ZeroTeacher(Teacher):
        def score(self, queries: Any, docs: Any, show_progress: bool = False) -> np.ndarray:
            time.sleep(float(os.environ.get("DELAY", "0")))  # how fast, not which scores
            return np.zeros(len(queries), dtype=np.float32)

        def describe(self) -> dict[str, Any]:
            return {"name": "zeros", "model": "none", "device": "cpu"}

    pairs_n = count(args.pairs)
    corpus = open_corpus(args.work / "collection-1M.tsv", "msmarco", cache_dir=args.work / "corpus-cache")
    queries_n = pairs_n // 40
    queries = {str(q): f"query {q} about w{q % 300}" for q in range(queries_n)}
    cand_dir = args.work / f"candidates-{pairs_n}"
    if not (cand_dir / "manifest.json").is_file():
        rng = np.random.default_rng(1)
        q = np.repeat(np.arange(queries_n), 40)
        d = rng.integers(0, len(corpus), len(q))
        keys = q.astype(np.int64) * len(corpus) + d
        _, first = np.unique(keys, return_index=True)
        first.sort()
        table = pa.table(
            {
                "query_id": q[first].astype(str),
                "doc_id": d[first].astype(str),
                "label": np.zeros(len(first), np.int32),
                "rank": np.tile(np.arange(1, 41, dtype=np.int32), queries_n)[first],
                "retrieval_score": np.ones(len(first), np.float32),
            }
        )
        write_candidates(cand_dir, table, {"stage": "mine-negatives"})
    candidates = read_candidates(cand_dir)
    pairs = candidates.pair_table()
    before = peak_gb()
    start = time.perf_counter()
    store = score_pairs_to_store(
        ZeroTeacher(),
        pairs,
        queries,
        corpus,
        args.out / "store",
        part_size=50_000,
        inputs={"corpus": "c", "queries": "q", "candidates": candidates.fingerprint},
        config={},
        show_progress=False,
    )
    wall = time.perf_counter() - start
    print(
        f"score-teacher data path: {pairs.num_rows:,} pairs in {wall:.1f} s = {pairs.num_rows / wall:,.0f} pairs/s; "
        f"peak RSS {peak_gb():.2f} GB (before scoring {before:.2f}); complete={store.manifest['complete']}; {load()}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["import", "lookup", "score", "_score"])
    parser.add_argument("--lines", default="1M", help="Hofstätter file lines (import, lookup)")
    parser.add_argument("--pairs", default="1M", help="candidate pairs to score (score)")
    parser.add_argument("--kill-after", type=float, default=0.0, help="seconds before a SIGKILL (score)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrodistill-data-paths"))
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    {"import": run_import, "lookup": run_lookup, "score": run_score, "_score": _score}[args.what](args)


if __name__ == "__main__":
    main()
