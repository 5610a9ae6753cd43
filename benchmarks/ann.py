"""ANN indexes against exact search: recall@100, queries/s and index size, on real and synthetic embeddings.

Target (issue 14): on the 1M-vector synthetic set, HNSW and IVF-PQ each reach recall@100 ≥ 0.99 of
exact search at ≥ 5× its queries/s (some search setting of each; exact = ``faiss-flat-ip``).

Sets of (documents, queries), all-MiniLM-L6-v2 vectors (unit length, d = 384):

==================  ====================================================================================
``scifact``         SciFact's 5,183 documents, from the corpus-embedding cache (encoded into it when
                    missing, not in ``--quick``), and its 1,109 queries (``--quick``: the 300 test ones)
``msmarco-sample``  the 5,000 MS MARCO passages of ``../shared/data/msmarco/dl19-sample`` and the 6,980
                    dev-small queries (``official/topics.msmarco-passage.dev-subset.txt``)
``synthetic-N``     ``N`` documents (``--synthetic``, default 1,000,000) drawn from a Gaussian mixture
                    fitted to the real sets' document vectors, and ``--synthetic-queries`` (1,000)
                    queries from one fitted to their query vectors, each drawn vector normalised
==================  ====================================================================================

The mixtures: ``--mixture diag:K`` or ``full:K`` fits K components by EM (sklearn ``GaussianMixture``,
``reg_covar`` 1e-4); ``kde:H`` is a kernel density estimate, one Gaussian per real vector with covariance
H² × the vectors' covariance. ``auto`` (the default) fits each of diag 16, 64, 256, full 1, 2, 4, 8, 16,
32 and kde 0.3 … 1.0 (``ann_vectors.MIXTURES``) to a seeded 80% of the vectors and takes the one under which
the other 20% are likeliest (mean log-likelihood), for documents and queries separately; the choice and
every candidate's figure go to ``OUT/mixture-{documents,queries}.json`` and ``results.md``. A diagonal
mixture keeps each component's per-dimension spread but not how dimensions vary together; the first
full run used ``diag:64`` and drew its queries from the document mixture, the second ``kde:0.6``, chosen
while sklearn's ``KernelDensity`` overrated it by ~190 nats per vector (see ``ann.md``).

A held-out likelihood judges a mixture at the density of the real vectors; the 1M set draws ~100 times
that. The scale check (``ann_vectors.scale_check``, in ``results.md``) tests the extrapolation where real
vectors can answer: the chosen document mixture (and any of ``--scale-check``) is fitted to a fifth of
the real documents and draws as many as there are; drawn and real documents are compared by intrinsic
dimension and by one HNSW graph's recall@100 for the same 1,000 real queries.

Indexes (``faiss-factory``; ``nlist`` = the power of two nearest ``4·√N``, halved until ``N ≥ 39·nlist``):

==============  =================================  ===================================================
IVF-Flat        ``IVF{nlist},Flat``                nprobe 1, 2, 4 … (see below)
IVF-PQ          ``IVF{nlist},PQ{d/4}x8,RFlat``     nprobe as IVF-Flat, for each k_factor 8, 16, 32: the
                                                   PQ codes (one byte per 4 dimensions) pick
                                                   ``k_factor·100`` candidates, re-ranked exactly
IVF-PQ 4-bit    ``IVF{nlist},PQ{d/2}x4fs,RFlat``   as IVF-PQ, with codes of the same size (4 bits per 2
fast-scan                                          dimensions) scanned by FAISS' SIMD fast-scan kernels
HNSW            ``HNSW32,Flat``                    efSearch 64, 128 … 2048 (efConstruction: FAISS' 40)
HNSW            ``HNSW32,Flat``                    the same graph built with efConstruction 200 (hnswlib's
efConstruction                                     default): slower to build, fewer missed neighbours
200
HNSW M64        ``HNSW64,Flat``                    64 neighbours per node, efConstruction 200
efConstruction
200
OPQ+IVF-PQ      ``OPQ{d/8},IVF{nlist},PQ{d/8}``    nprobe as IVF-Flat; only in ``--quick`` or with
                                                   ``--opq`` (no refinement: PQ codes alone)
==============  =================================  ===================================================

IVF-PQ's refinement keeps the raw vectors beside the codes (FAISS' ``IndexRefineFlat``): codes alone do
not reach recall 0.99 (IVF-PQ96 without it levelled off at 0.87 on SciFact, 0.67 on 20k synthetic
vectors), so its index is IVF-Flat's size plus the codes, not 16× smaller; the codes only make the
scan of the visited lists cheaper. OPQ is left out of the full run: its rotation trains for long on
the ``64·nlist`` = 262,144 vectors of the 1M set (13 s for 1,200 vectors on one core, growing with the
sample), it is no target, and PQ codes without a refinement miss recall 0.99 anyway.

Each run of settings (nprobe, or efSearch, rising) stops at recall ≥ 0.999, when recall stops rising
(+0.001 or less), or at recall ≥ 0.99 slower than exact search (the next settings are slower still).

Each index is trained on ``min(N, 64·nlist)`` vectors (seed 0); PQ codes are 8-bit. For every setting: recall@100 = the
mean over queries of |top-100 ∩ exact top-100| / 100; queries/s = the number of queries over the
median of 3 timed searches of them all (``k`` = 100, after one warm-up search), exact search timed
the same way in the same process; index bytes = the size of the saved ``index.faiss``; build
seconds = training and adding. Per set and index, the headline is the setting with recall@100 ≥ 0.99
and the greatest speed-up over exact search. Exact search's row also holds the mean top-1 and top-100
inner products and the documents' local intrinsic dimension (``ann_vectors.intrinsic_dimension``). Each row
also records the process' peak resident memory so far (``getrusage``) and the 1-minute load average
(``os.getloadavg``); the CPU model, cores and FAISS threads head ``results.md``.

Writes ``OUT/results.json`` (after every row) and ``OUT/results.md``. A run resumes: rows already in
``results.json`` are not measured again, an index whose rows are all there is not built, the
query and exact-search results of a set are kept in ``OUT/`` (``.npy``), and exact search is timed
again: each row records the exact queries/s of the process that measured it, and divides by that.

Run from the repository root (every index on the 1M set: about 40 min on 2 AMD EPYC cores at load ≈ 2 with
the second run's generator, longer on harder draws; results in ``ann.md``)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/ann.py
    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/ann.py --sets synthetic --indexes "HNSW efConstruction 200"
    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/ann.py --quick   # cached real sets + 20k synthetic

``--quick`` checks the harness, not the figure (11 min on 2 Intel Xeon cores with both real sets cached,
peak RSS 1.2 GB): SciFact (300 test queries) and the MS MARCO sample only where their embeddings are
cached, 20,000 synthetic vectors and 500 queries (``auto`` among diag 16, full 4 and kde 0.6; the scale
check of the chosen one), indexes trained on 2,000 vectors (OPQ on 1,000: its rotation's training is
slow), one FAISS thread, and its own ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ann_vectors beside this file, however it is run
from ann_report import (  # noqa: E402
    RECALL_TARGET,
    TARGET_SIZE,
    K,
    describe,
    machine,
    markdown,
)
from ann_vectors import (  # noqa: E402
    MIXTURES,
    QUICK_MIXTURES,
    Mixture,
    fit_mixture,
    intrinsic_dimension,
    parse_mixture,
    recall_at,
    scale_check,
    select_mixture,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", REPO.parent / "shared"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: IVF-PQ's refinement: the PQ stage hands k_factor·100 candidates to exact re-ranking.
K_FACTORS = (8, 16, 32)
EF_SEARCH = (64, 128, 256, 512, 1024, 2048)
#: HNSW's graph built with hnswlib's default candidate list besides FAISS' (40).
EF_CONSTRUCTION = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a check of the harness in minutes (see above)")
    parser.add_argument("--synthetic", type=int, default=None, help="synthetic documents (default 1,000,000)")
    parser.add_argument("--synthetic-queries", type=int, default=None, help="synthetic queries (default 1,000)")
    parser.add_argument(
        "--mixture",
        default="auto",
        help="the synthetic sets' Gaussian mixture: diag:K, full:K, kde:H, or auto (the held-out choice, see above)",
    )
    parser.add_argument("--sets", default="scifact,msmarco-sample,synthetic", help="comma-separated")
    parser.add_argument(
        "--indexes",
        default="",
        help="comma-separated index labels to measure (default: all; e.g. 'IVF-PQ 4-bit fast-scan,HNSW')",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per setting (the median counts)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OpenMP threads for FAISS (default: FAISS' own, every core; --quick: 1)",
    )
    parser.add_argument(
        "--opq", action="store_true", help="also OPQ+IVF-PQ outside --quick (its rotation trains for long at 1M)"
    )
    parser.add_argument(
        "--scale-check",
        default="",
        help="comma-separated mixtures to check besides the documents' own (see ann_vectors.scale_check)",
    )
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default runs/benchmarks/ann[-quick]")
    args = parser.parse_args(argv)
    args.synthetic = args.synthetic or (20_000 if args.quick else TARGET_SIZE)
    args.synthetic_queries = args.synthetic_queries or (500 if args.quick else 1_000)
    chosen_indexes(TARGET_SIZE, 384, args)  # an unknown index name fails here, before any encoding
    args.scale_check = [spec.strip() for spec in args.scale_check.split(",") if spec.strip()]
    if args.mixture != "auto":
        parse_mixture(args.mixture)  # a bad spec fails here, before any encoding
    for spec in args.scale_check:
        parse_mixture(spec, "--scale-check")
    args.out = args.out or REPO / "runs" / "benchmarks" / ("ann-quick" if args.quick else "ann")
    # On shared cores, training's many short parallel loops spin for the busy cores: 10x slower than one thread.
    args.threads = args.threads or (1 if args.quick else None)
    return args


# --- the indexes ---------------------------------------------------------------------------------


def nlist_for(n: int) -> int:
    """The power of two nearest ``4·√n``, halved until FAISS' k-means has 39 vectors per list.

    Example:
        >>> nlist_for(1_000_000), nlist_for(5183), nlist_for(20_000)
        (4096, 128, 512)
    """
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return nlist


Setting = dict[str, int]


@dataclass(frozen=True)
class IndexSpec:
    """One index of the benchmark: a label, its factory string and the search settings to sweep.

    ``chains``: runs of search settings, each in rising cost, measured in order until recall reaches
    0.999 or stops rising; then the next run starts (e.g. one run of ``nprobe`` per ``k_factor``).
    """

    label: str
    factory: str
    chains: tuple[tuple[Setting, ...], ...]
    train_size: int
    build: Setting = field(default_factory=dict)  # build parameters besides the string (efConstruction)


def index_specs(n: int, dim: int, quick: bool, opq: bool = False) -> list[IndexSpec]:
    """The indexes for ``n`` vectors of dimension ``dim`` (see the module docstring).

    OPQ+IVF-PQ only in ``--quick`` or with ``opq``: its rotation trains for long on ``64·nlist`` vectors.
    """
    nlist = nlist_for(n)
    probes = [2**i for i in range(int(math.log2(nlist)) + 1)]
    train = min(n, 2_000 if quick else 64 * nlist)
    opq_train = min(train, 1_000) if quick else train  # OPQ's rotation trains for minutes on 10^4 vectors
    specs = [
        IndexSpec("IVF-Flat", f"IVF{nlist},Flat", (tuple({"nprobe": p} for p in probes),), train),
        IndexSpec(
            "IVF-PQ",
            f"IVF{nlist},PQ{dim // 4}x8,RFlat",
            tuple(tuple({"nprobe": p, "k_factor": f} for p in probes) for f in K_FACTORS),
            train,
        ),
        IndexSpec(
            "IVF-PQ 4-bit fast-scan",
            f"IVF{nlist},PQ{dim // 2}x4fs,RFlat",
            tuple(tuple({"nprobe": p, "k_factor": f} for p in probes) for f in K_FACTORS),
            train,
        ),
        IndexSpec("HNSW", "HNSW32,Flat", (tuple({"efSearch": e} for e in EF_SEARCH),), train),
        *(
            IndexSpec(
                f"HNSW{' M64' if m == 64 else ''} efConstruction {EF_CONSTRUCTION}",
                f"HNSW{m},Flat",
                (tuple({"efSearch": e} for e in EF_SEARCH),),
                train,
                {"efConstruction": EF_CONSTRUCTION},
            )
            for m in (32, 64)
        ),
    ]
    if quick or opq:
        probe_chain = (tuple({"nprobe": p} for p in probes),)
        specs.append(IndexSpec("OPQ+IVF-PQ", f"OPQ{dim // 8},IVF{nlist},PQ{dim // 8}", probe_chain, opq_train))
    return specs


def timed_search(index: Any, queries: np.ndarray, repeats: int) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Median seconds of ``repeats`` searches of every query (after one warm-up), and the results."""
    result = index.search(queries, K)  # warm-up: thread pools, first-touch pages
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = index.search(queries, K)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def saved_bytes(index: Any) -> int:
    """The size of the index as :meth:`FaissFactory.save` writes it."""
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
        index.save(Path(tmp) / "index")
        return int(json.loads((Path(tmp) / "index" / "manifest.json").read_text())["bytes"])


def chosen_indexes(n: int, dim: int, args: argparse.Namespace) -> list[IndexSpec]:
    """:func:`index_specs`, only those ``--indexes`` names (all when it names none); an unknown name is an error."""
    specs = index_specs(n, dim, args.quick, args.opq)
    wanted = [label.strip() for label in args.indexes.split(",") if label.strip()]
    unknown = [label for label in wanted if label not in {spec.label for spec in specs}]
    if unknown:
        known = ", ".join(spec.label for spec in specs)
        raise SystemExit(f"--indexes: unknown {', '.join(map(repr, unknown))}; choose among {known}")
    return [spec for spec in specs if not wanted or spec.label in wanted]


# --- the data ------------------------------------------------------------------------------------


def chosen_mixture(x: np.ndarray, role: str, args: argparse.Namespace) -> tuple[Mixture, dict[str, Any]]:
    """The mixture for ``role`` (``documents`` or ``queries``): ``--mixture`` itself, or under ``auto`` the
    held-out choice among :data:`MIXTURES`, kept in ``OUT/mixture-ROLE.json`` so that a resumed run refits only it."""
    from retrodistill.artifacts import write_json_atomic

    facts: dict[str, Any] = {"fitted_on": len(x)}
    spec = args.mixture
    if spec == "auto":
        stored = args.out / f"mixture-{role}.json"
        if stored.is_file():
            facts.update(json.loads(stored.read_text(encoding="utf-8")))
        else:
            candidates = QUICK_MIXTURES if args.quick else MIXTURES
            best, scores = select_mixture(x, candidates, args.seed)
            facts.update({"chosen": best, "held_out_loglik": {s: round(v, 1) for s, v in scores.items()}})
            write_json_atomic(stored, facts)
        spec = facts["chosen"]
    else:
        facts["chosen"] = spec
    return fit_mixture(x, spec, args.seed), facts


@dataclass
class Dataset:
    name: str
    docs: np.ndarray
    queries: np.ndarray
    source: str
    facts: dict[str, Any] = field(default_factory=dict)


def read_topics(path: Path) -> list[str]:
    """Query texts of a TREC topics TSV (``qid<TAB>text``)."""
    return [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]


class RealSets:
    """Real document and query vectors of all-MiniLM-L6-v2, through the corpus-embedding cache; the model loads once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._model: Any = None

    def model(self) -> Any:
        if self._model is None:
            from retrodistill.evaluate.retrieval import load_model

            self._model = load_model(self.args.model, device="cpu")
        return self._model

    def load(self, name: str) -> Dataset | None:
        """The set ``name``, or ``None`` (with a line saying why) when ``--quick`` would have to encode documents."""
        from retrodistill.data.collections import load_beir
        from retrodistill.data.embeddings import default_embedding_dir
        from retrodistill.data.encoding import encode_texts, iter_corpus_embeddings
        from retrodistill.evaluate.retrieval import open_embedding_cache
        from retrodistill.evaluate.runs import model_identity

        if name == "scifact":
            collection = load_beir(SHARED / "data" / "beir" / "scifact", "test")
            texts = list(collection.queries.values()) if self.args.quick else self._all_scifact_queries()
        else:
            collection = load_beir(SHARED / "data" / "msmarco" / "dl19-sample", "test")
            texts = read_topics(SHARED / "data" / "msmarco" / "official" / "topics.msmarco-passage.dev-subset.txt")
        model = self.model()
        cache = open_embedding_cache(model, collection, default_embedding_dir(), model_identity(self.args.model))
        if cache is None:
            raise RuntimeError(f"{collection.name}: no corpus fingerprint, so no embedding cache")
        if self.args.quick and not cache.is_complete():
            print(f"{name}: embeddings not cached at {cache.path}; --quick encodes no corpus, skipped", flush=True)
            return None
        docs = np.concatenate(list(iter_corpus_embeddings(model, collection.corpus, cache, batch_size=64)))
        stored = self.args.out / f"queries-{name}-{len(texts)}.npy"
        if stored.is_file():
            queries = np.load(stored)
        else:
            queries = encode_texts(model, texts, "query", 64).astype(np.float32)
            np.save(stored, queries)
        return Dataset(name, docs.astype(np.float32), queries, f"{self.args.model} on {collection.name}")

    @staticmethod
    def _all_scifact_queries() -> list[str]:
        """Every query of SciFact's queries.jsonl, not only the test split's."""
        path = SHARED / "data" / "beir" / "scifact" / "queries.jsonl"
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def synthetic_set(real: list[Dataset], args: argparse.Namespace) -> Dataset | None:
    """Documents drawn from a mixture fitted to the real documents, queries from one fitted to the real queries."""
    if not real:
        print("synthetic: no real embeddings to fit a mixture to; skipped", flush=True)
        return None
    started = time.perf_counter()
    doc_mixture, doc_facts = chosen_mixture(np.concatenate([d.docs for d in real]), "documents", args)
    query_mixture, query_facts = chosen_mixture(np.concatenate([d.queries for d in real]), "queries", args)
    fitted = time.perf_counter() - started
    facts = {
        "fitted_on": f"the vectors of {', '.join(d.name for d in real)}",
        "document_mixture": doc_facts,
        "query_mixture": query_facts,
        "fit_seconds": round(fitted, 1),
        "scale_check": scale_checks(real, [doc_facts["chosen"], *args.scale_check], args),
    }
    docs = doc_mixture.sample(args.synthetic, args.seed)
    queries = query_mixture.sample(args.synthetic_queries, args.seed + 1)
    return Dataset(f"synthetic-{args.synthetic}", docs, queries, "Gaussian mixtures", facts)


def scale_checks(real: list[Dataset], specs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """:func:`ann_vectors.scale_check` of each mixture in ``specs`` on the real sets' vectors, kept in
    ``OUT/scale-check.json`` so that a resumed run does not redo them."""
    from retrodistill.artifacts import write_json_atomic

    stored = args.out / "scale-check.json"
    done: dict[str, Any] = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else {}
    docs = np.concatenate([d.docs for d in real])
    queries = np.concatenate([d.queries for d in real])
    same_sets = {"draws": len(docs), "queries": len(queries)}

    def current(check: dict[str, Any]) -> bool:  # checked on these real sets, not on others in the same OUT
        return {key: check.get(key) for key in same_sets} == same_sets

    real_side = next((check["real"] for check in done.values() if current(check)), None)
    for spec in dict.fromkeys(specs):
        if not current(done.get(spec, {})):
            print(f"  scale check of {spec}: fitted to a fifth of the real documents, drawn as many", flush=True)
            done[spec] = scale_check(docs, queries, spec, args.seed, real=real_side)
            real_side = done[spec]["real"]
            write_json_atomic(stored, done)
    return [done[spec] for spec in dict.fromkeys(specs)]


# --- the harness ---------------------------------------------------------------------------------


class Results:
    """``OUT/results.json``: rows by key, written after every row; rows already there are reused."""

    def __init__(self, out: Path) -> None:
        self.path = out / "results.json"
        self.data: dict[str, Any] = {"rows": {}, "sets": {}}
        if self.path.is_file():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))

    def row(self, key: str) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self.data["rows"].get(key)
        return row

    def amend(self, key: str, **facts: Any) -> None:
        """Add ``facts`` to the row ``key``, keeping when, at what load and memory it was measured."""
        from retrodistill.artifacts import write_json_atomic

        self.data["rows"][key].update(facts)
        write_json_atomic(self.path, self.data)

    def put(self, key: str, row: dict[str, Any]) -> None:
        from retrodistill.artifacts import write_json_atomic

        self.data["rows"][key] = {
            **row,
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load": os.getloadavg()[0],
            "peak_rss": peak_rss(),
        }
        write_json_atomic(self.path, self.data)


def peak_rss() -> int:
    """The peak resident memory of this process so far, in bytes (``getrusage``; Linux counts KiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib if sys.platform == "darwin" else kib * 1024)  # macOS counts bytes


def exact_search(data: Dataset, results: Results, args: argparse.Namespace) -> tuple[np.ndarray, float]:
    """The exact top-100 ids of every query (kept in OUT) and exact search's queries/s, timed in this process
    (a resumed run times it again, so that every row's speed-up compares timings of one process); the
    exact row when missing."""
    from retrodistill.index.faiss_factory import FaissFactory
    from retrodistill.index.faiss_flat import FaissFlatIP

    stored = args.out / f"exact-{data.name}-{len(data.queries)}.npy"
    key = f"{data.name}|exact"
    flat = FaissFlatIP(use_gpu=False)
    started = time.perf_counter()
    flat.add(data.docs)
    build = time.perf_counter() - started
    seconds, (scores, ids) = timed_search(flat, data.queries, args.repeats)
    row = results.row(key)
    if stored.is_file() and row is not None:
        if "lid" not in row:  # a row measured before the estimate was part of the benchmark; its timing stays
            results.amend(key, lid=intrinsic_dimension(flat, data.docs, args.seed))
        return np.load(stored), len(data.queries) / seconds
    saved = FaissFactory("Flat", use_gpu=False)  # the same vectors, saved: what exact search stores
    saved.add(data.docs)
    results.put(
        key,
        {
            "set": data.name,
            "index": "exact",
            "factory": "faiss-flat-ip",
            "setting": None,
            "recall": 1.0,
            "seconds": seconds,
            "qps": len(data.queries) / seconds,
            "bytes": saved_bytes(saved),
            "build_seconds": build,
            # how far the 100th neighbour is from the first: near-ties make every index search longer
            "top1_ip": float(scores[:, 0].mean()),
            "top100_ip": float(scores[:, K - 1].mean()),
            "lid": intrinsic_dimension(flat, data.docs, args.seed),
        },
    )
    np.save(stored, ids)
    return ids, len(data.queries) / seconds


def sweep(
    spec: IndexSpec, data: Dataset, exact_ids: np.ndarray, exact_qps: float, results: Results, args: argparse.Namespace
) -> None:
    """Measure ``spec`` at each setting of each chain until recall reaches 0.999 or stops rising, or once it
    is ≥ 0.99 at fewer queries/s than exact search (``exact_qps``): the chain's headline is then measured, and
    each next setting costs more. Build only if needed."""
    from retrodistill.index.faiss_factory import FaissFactory

    index: FaissFactory | None = None
    build = size = 0.0
    for chain in spec.chains:
        previous = -1.0
        for setting in chain:
            built = f"|{describe(spec.build)}" if spec.build else ""
            key = f"{data.name}|{spec.label}|{spec.factory}{built}|train={spec.train_size}|{describe(setting)}"
            row = results.row(key)
            if row is None:
                if index is None:
                    print(f"  {spec.label}: building {spec.factory} on {len(data.docs):,} vectors", flush=True)
                    index = FaissFactory(
                        spec.factory, use_gpu=False, train_size=spec.train_size, seed=args.seed, **spec.build
                    )
                    started = time.perf_counter()
                    index.add(data.docs)
                    index.search(data.queries[:1], 1)  # trains and adds now, so that build time is build time
                    build = time.perf_counter() - started
                    size = saved_bytes(index)
                index.set_search_params(**setting)
                seconds, (_, ids) = timed_search(index, data.queries, args.repeats)
                row = {
                    "set": data.name,
                    "index": spec.label,
                    "factory": spec.factory,
                    "setting": describe(setting),
                    "recall": recall_at(ids, exact_ids),
                    "seconds": seconds,
                    "qps": len(data.queries) / seconds,
                    "bytes": size,
                    "build_seconds": build,
                    "exact_qps": exact_qps,  # this process' timing of exact search
                }
                results.put(key, row)
            print(f"  {spec.label} {row['setting']}: recall@{K} {row['recall']:.4f}, {row['qps']:,.0f} q/s", flush=True)
            reached = row["recall"] >= RECALL_TARGET and row["qps"] < exact_qps
            if row["recall"] >= 0.999 or row["recall"] <= previous + 0.001 or reached:
                break
            previous = row["recall"]


def datasets(args: argparse.Namespace) -> Iterator[Dataset]:
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {"scifact", "msmarco-sample", "synthetic"})
    if unknown:
        raise SystemExit(f"unknown set(s) {', '.join(unknown)}: choose among scifact, msmarco-sample, synthetic")
    reals = RealSets(args)
    loaded = []
    # MS MARCO needs encoding unless cached, which --quick never does.
    for name in ("scifact", "msmarco-sample"):
        if name in wanted or "synthetic" in wanted:
            data = reals.load(name)
            if data is not None:
                loaded.append(data)
                if name in wanted:
                    yield data
    if "synthetic" in wanted:
        data = synthetic_set(loaded, args)
        if data is not None:
            yield data


def main(argv: list[str] | None = None, report: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read when FAISS' library loads, which is later
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out)
    results.data["machine"] = machine()
    results.data["command"] = " ".join(["python benchmarks/ann.py", *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()
    for data in datasets(args):
        results.data["sets"][data.name] = {
            "documents": f"{len(data.docs):,}",
            "queries": f"{len(data.queries):,}",
            "dim": int(data.docs.shape[1]),
            "source": data.source,
            **data.facts,
        }
        report(f"{data.name}: {len(data.docs):,} documents, {len(data.queries):,} queries")
        exact_ids, exact_qps = exact_search(data, results, args)
        report(f"  exact: {exact_qps:,.0f} q/s")
        for spec in chosen_indexes(len(data.docs), int(data.docs.shape[1]), args):
            sweep(spec, data, exact_ids, exact_qps, results, args)
    from retrodistill.artifacts import write_json_atomic, write_text_atomic

    write_json_atomic(results.path, results.data)
    text = markdown(results.data, args.quick, args.repeats)
    write_text_atomic(args.out / "results.md", text)
    report(text)
    report(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
