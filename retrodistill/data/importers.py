"""Import teacher scores others published, instead of rescoring: score files → store + candidates.

:func:`import_scores` (the ``retrodistill import-scores`` command) reads one score file, checks every
id against a collection, and writes the two artifacts ``train-student`` needs: a teacher-score store
(:mod:`retrodistill.data.store`) and a candidates artifact (:mod:`retrodistill.data.candidates`) whose
fingerprint the store records, so ``train-student --store STORE`` finds and accepts both.

Formats (:data:`IMPORT_FORMATS`; text files may be gzipped, ``*.gz``), with the documents each
names as positives (the others get labels from qrels only):

* ``hofstaetter-tsv``: ``pos_score<TAB>neg_score<TAB>qid<TAB>pid+<TAB>pid-``, the teacher files of
  sebastian-hofstaetter/neural-ranking-kd (e.g. ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``).
  Positive: ``pid+``.
* ``st-mse``: rows ``query_id, passage_id, score`` in Parquet (the hub's ``*.parquet``) or JSONL: the
  ``bert-ensemble-mse`` subset of sentence-transformers/msmarco. Positives: none.
* ``st-scores-pickle``: ``scores[qid][pid] = score``, the (gzipped) pickle of sentence-transformers'
  msmarco-hard-negatives (``cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz``). Loading a pickle can
  run code, so it needs ``allow_pickle`` and is read with an unpickler that builds only dicts,
  numbers, strings and numpy scalars. Positives: none.
* ``tevatron``: ``{"query_id", "positive_passages": [{"docid", "score", ...}], "negative_passages": [...]}``
  per line; a passage without ``score`` is an error (the file has no teacher scores). Positives:
  ``positive_passages``.
* ``colbert``: ``[qid, [pid, score], [pid, score], ...]`` per line, ColBERT's n-way distillation
  examples. Positive: the first pid of each line (ColBERT trains with it as the target).
* ``flagembedding``: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}`` per line, with texts, not
  ids (mapped through the collection, below). Positives: ``pos``.
* ``trec-run``: ``qid Q0 docid rank score tag`` (e.g. a cross-encoder re-ranking run). Positives: none.
* ``st-margin-mse`` (``query_id, positive_id, negative_id, score`` with ``score`` a margin): refused.

Decisions (what they counted is in both manifests' ``import`` section):

* **Margins are refused** (``st-margin-mse``): a margin ``s(q, d+) - s(q, d-)`` fixes the scores only
  up to an unknown constant per query, so it is not a (query, document) score; storing it on one
  side of a triple would give a negative in several triples several scores. Import the absolute
  scores the margins were computed from (``st-mse`` or ``hofstaetter-tsv``).
* **Repeated pairs**: the same (query, document) with the same float32 score is merged; with another
  score it is a *conflict*: ``on_conflict="first"`` keeps the first and counts the conflicts (with
  examples naming both lines), ``"error"`` stops at the first one. A document that is a positive in
  one record and a negative in another for the same query is always an error.
* **Texts → ids** (``flagembedding``): a query text must equal (after stripping) the text of a query
  of the split; a passage text must equal a document's ``title text`` or its ``text``. A text shared
  by several documents maps to the smallest id (counted as ``ambiguous_texts``). Hashing texts into
  new ids was rejected: ``train-student`` needs the texts in a collection anyway.
* **Unknown ids** (not among the split's queries or the corpus) are an error naming the first line
  and a few ids, unless ``skip_unknown`` drops and counts them.
* **Labels**: the qrels grade where the qrels (``qrels`` file, else the collection's split) judge the
  pair, else 1 for a positive the format names, else 0. **Ranks** (``rank``): ``"file"`` = the run's
  rank column for ``trec-run`` and the order in which the file first lists a query's documents
  otherwise; ``"score"`` = by imported score, best first; ``"none"`` = 0 for all, which puts every
  negative inside ``train-student``'s ``negative_pool``. ``retrieval_score`` is NaN (no retriever).
* **Store manifest**: ``stage`` is ``"import-scores"`` (one of the store stages
  :meth:`TeacherStore.open` accepts); ``teacher`` is
  ``{"name": "imported", "format", "source", "source_sha256", "model"}``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from retrodistill.artifacts import publish_dir, sha256_file, write_manifest
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import Collection, DataFormatError, read_qrels
from retrodistill.data.store import TeacherStore, part_name, write_part
from retrodistill.registry import Registry
from retrodistill.teachers.scoring import pairs_fingerprint, rows_fingerprint

STAGE = "import-scores"
RANK_POLICIES = ("file", "score", "none")
CONFLICT_POLICIES = ("first", "error")
_EXAMPLES = 5  # conflicts and unknown ids quoted in messages and manifests


@dataclass(frozen=True)
class ScoredPair:
    """One (query, document, score) record read from a score file.

    ``line`` is the 1-based line (row for Parquet) it came from, ``None`` where the file has no
    lines (pickle); ``rank`` is a rank the file states (TREC runs), else ``None``.
    """

    query_id: str
    doc_id: str
    score: float
    positive: bool = False
    line: int | None = None
    rank: int | None = None


@dataclass
class ReadContext:
    """What a reader may need besides the file: the collection (texts → ids) and permissions."""

    collection: Collection
    allow_pickle: bool = False
    labels: dict[str, str] = field(default_factory=dict)  # stand-in id → what to call it in messages
    ambiguous_texts: int = 0


Reader = Callable[[Path, ReadContext], Iterator[ScoredPair]]


@dataclass(frozen=True)
class ImportFormat:
    read: Reader
    names_positives: bool  # the format says which documents are positives


IMPORT_FORMATS: Registry[ImportFormat] = Registry("score-file format")


@dataclass
class ImportResult:
    store: TeacherStore
    candidates: CandidateSet
    report: dict[str, Any]  # the manifests' "import" section


# ---------------------------------------------------------------- readers


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of the non-blank lines of a text file, gzipped or not."""
    opener: Callable[..., IO[str]] = gzip.open if path.name.endswith(".gz") else open  # type: ignore[assignment]
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    for number, line in _lines(path):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, number, f"malformed JSON ({err.msg} at column {err.colno})") from None


def _id(value: Any, path: Path, line: int | None, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataFormatError(path, line, f"{what} must be a non-empty string or an integer, got {value!r}")


def _score(value: Any, path: Path, line: int | None, what: str) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, np.floating, np.integer)):
            raise ValueError
        score = float(value)
    except ValueError:
        raise DataFormatError(path, line, f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise DataFormatError(path, line, f"{what} is {score}, not a finite number")
    return score


def _read_hofstaetter(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    for number, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 5:
            raise DataFormatError(
                path,
                number,
                f"expected 5 tab-separated columns (pos_score neg_score qid pid+ pid-), found {len(parts)}",
            )
        pos_score = _score(parts[0], path, number, "pos_score")
        neg_score = _score(parts[1], path, number, "neg_score")
        qid, pos, neg = (_id(p, path, number, name) for p, name in zip(parts[2:], ("qid", "pid+", "pid-"), strict=True))
        yield ScoredPair(qid, pos, pos_score, True, number)
        yield ScoredPair(qid, neg, neg_score, False, number)


def _margin_refusal(path: Path) -> ValueError:
    return ValueError(
        f"{path}: this is a margin file (score = teacher(q, pos) - teacher(q, neg)), not teacher scores. A "
        "teacher-score store holds one score per (query, document); margins fix those only up to an unknown "
        "constant per query, so they cannot be stored faithfully (putting the margin on the positive and 0 on "
        "the negative would give a negative that occurs in several triples several scores). Import the absolute "
        "scores the margins were computed from instead: the 'bert-ensemble-mse' subset of "
        "sentence-transformers/msmarco (--format st-mse) or Hofstätter's TSV (--format hofstaetter-tsv)."
    )


def _read_margin(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    raise _margin_refusal(path)


def _read_st_mse(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    """sentence-transformers' ``query_id, passage_id, score`` rows, from Parquet or JSONL."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        names = set(file.schema_arrow.names)
        if {"positive_id", "negative_id"} <= names:
            raise _margin_refusal(path)
        missing = {"query_id", "passage_id", "score"} - names
        if missing:
            raise DataFormatError(path, None, f"missing columns {sorted(missing)} (has {sorted(names)})")
        row = 0
        for batch in file.iter_batches(columns=["query_id", "passage_id", "score"]):
            columns = batch.to_pydict()
            for qid, pid, score in zip(columns["query_id"], columns["passage_id"], columns["score"], strict=True):
                row += 1
                yield ScoredPair(
                    _id(qid, path, row, "query_id"),
                    _id(pid, path, row, "passage_id"),
                    _score(score, path, row, "score"),
                    line=row,
                )
        return
    for number, obj in _json_lines(path):
        if not isinstance(obj, dict):
            raise DataFormatError(path, number, f"expected a JSON object, got {type(obj).__name__}")
        if "positive_id" in obj and "negative_id" in obj:
            raise _margin_refusal(path)
        for key in ("query_id", "passage_id", "score"):
            if key not in obj:
                raise DataFormatError(path, number, f"record has no {key!r}")
        yield ScoredPair(
            _id(obj["query_id"], path, number, "query_id"),
            _id(obj["passage_id"], path, number, "passage_id"),
            _score(obj["score"], path, number, "score"),
            line=number,
        )


class _ScoresUnpickler(pickle.Unpickler):
    """Builds only containers, numbers and strings (and numpy scalars): no global code can be reached."""

    _ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles spell the bytes of a numpy scalar
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a score pickle needs no code")


def _read_pickle(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    """``scores[qid][pid] -> score`` from sentence-transformers' msmarco-hard-negatives (``.pkl[.gz]``)."""
    if not context.allow_pickle:
        raise ValueError(
            f"{path} is a Python pickle, and loading a pickle can run arbitrary code. Pass --allow-pickle "
            "(allow_pickle=True) only for a file from a source you trust; it is then read with a restricted "
            "unpickler that builds nothing but dicts, numbers, strings and numpy scalars."
        )
    opener: Callable[..., IO[bytes]] = gzip.open if path.name.endswith(".gz") else open  # type: ignore[assignment]
    with opener(path, "rb") as f:
        try:
            data = _ScoresUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise DataFormatError(path, None, f"not a score pickle: {err}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, None, f"expected a dict qid -> {{pid: score}}, got {type(data).__name__}")
    for raw_qid, docs in data.items():
        qid = _id(raw_qid, path, None, "query id key")
        if not isinstance(docs, dict):
            raise DataFormatError(
                path, None, f"scores[{raw_qid!r}] must be a dict pid -> score, got {type(docs).__name__}"
            )
        for raw_pid, score in docs.items():
            pid = _id(raw_pid, path, None, f"a document key of scores[{raw_qid!r}]")
            yield ScoredPair(qid, pid, _score(score, path, None, f"scores[{raw_qid!r}][{raw_pid!r}]"))


def _read_tevatron(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    for number, obj in _json_lines(path):
        if not isinstance(obj, dict) or "query_id" not in obj:
            raise DataFormatError(path, number, "expected a JSON object with 'query_id'")
        qid = _id(obj["query_id"], path, number, "query_id")
        for key, positive in (("positive_passages", True), ("negative_passages", False)):
            passages = obj.get(key) or []
            if not isinstance(passages, list):
                raise DataFormatError(path, number, f"{key!r} must be a list")
            for passage in passages:
                if not isinstance(passage, dict) or "docid" not in passage:
                    raise DataFormatError(path, number, f"every entry of {key!r} needs a 'docid'")
                pid = _id(passage["docid"], path, number, "docid")
                if passage.get("score") is None:
                    raise DataFormatError(path, number, f"passage {pid!r} has no 'score': no teacher scores to import")
                yield ScoredPair(
                    qid, pid, _score(passage["score"], path, number, f"score of {pid!r}"), positive, number
                )


def _read_colbert(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    for number, obj in _json_lines(path):
        if not isinstance(obj, list) or len(obj) < 2:
            raise DataFormatError(path, number, "expected [qid, [pid, score], [pid, score], ...]")
        qid = _id(obj[0], path, number, "qid")
        for index, entry in enumerate(obj[1:]):
            if not isinstance(entry, list) or len(entry) != 2:
                raise DataFormatError(
                    path, number, f"entry {index + 1} is {entry!r}, not [pid, score] (a triples file has no scores)"
                )
            pid = _id(entry[0], path, number, "pid")
            yield ScoredPair(qid, pid, _score(entry[1], path, number, f"score of {pid!r}"), index == 0, number)


class _TextIds:
    """Exact text → id lookups over a collection (see the module docstring for the rules)."""

    def __init__(self, context: ReadContext) -> None:
        self.context = context
        collection = context.collection
        self.queries = self._index((text, qid) for qid, text in collection.queries.items())
        pairs = [(doc.joined(), d) for d, doc in collection.corpus.items()]
        self.docs = self._index(pairs)
        self.doc_texts = self._index((doc.text, d) for d, doc in collection.corpus.items())
        self.unmatched: dict[str, str] = {}

    @staticmethod
    def _index(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for text, key in items:
            index.setdefault(text.strip(), []).append(key)
        return index

    def lookup(self, text: str, *tables: dict[str, list[str]]) -> str:
        text = text.strip()
        for table in tables:
            ids = table.get(text)
            if ids:
                if len(ids) > 1:
                    self.context.ambiguous_texts += 1
                return min(ids)
        # A stand-in id no collection has; reported (or skipped) as unknown like any other id.
        if text not in self.unmatched:
            stand_in = f"<unmatched text {len(self.unmatched) + 1}>"
            self.unmatched[text] = stand_in
            self.context.labels[stand_in] = f"text {text[:60]!r}"
        return self.unmatched[text]


def _read_flagembedding(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    ids = _TextIds(context)
    for number, obj in _json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
            raise DataFormatError(path, number, "expected a JSON object with a string 'query'")
        qid = ids.lookup(obj["query"], ids.queries)
        for key, positive in (("pos", True), ("neg", False)):
            texts, scores = obj.get(key) or [], obj.get(f"{key}_scores")
            if scores is None:
                raise DataFormatError(path, number, f"no '{key}_scores': no teacher scores to import")
            if not isinstance(texts, list) or not isinstance(scores, list) or len(texts) != len(scores):
                raise DataFormatError(path, number, f"'{key}' and '{key}_scores' must be lists of the same length")
            for text, score in zip(texts, scores, strict=True):
                if not isinstance(text, str):
                    raise DataFormatError(path, number, f"'{key}' entries must be strings")
                doc_id = ids.lookup(text, ids.docs, ids.doc_texts)
                yield ScoredPair(qid, doc_id, _score(score, path, number, f"{key}_scores entry"), positive, number)


def _read_trec_run(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(path, number, f"expected 6 columns (qid Q0 docid rank score tag), found {len(parts)}")
        try:
            rank = int(parts[3])
        except ValueError:
            rank = 0
        if rank < 1:
            raise DataFormatError(path, number, f"rank {parts[3]!r} is not a positive integer")
        yield ScoredPair(parts[0], parts[2], _score(parts[4], path, number, "score"), False, number, rank)


IMPORT_FORMATS.register("hofstaetter-tsv")(ImportFormat(_read_hofstaetter, names_positives=True))
IMPORT_FORMATS.register("st-mse")(ImportFormat(_read_st_mse, names_positives=False))
IMPORT_FORMATS.register("st-margin-mse")(ImportFormat(_read_margin, names_positives=True))
IMPORT_FORMATS.register("st-scores-pickle")(ImportFormat(_read_pickle, names_positives=False))
IMPORT_FORMATS.register("tevatron")(ImportFormat(_read_tevatron, names_positives=True))
IMPORT_FORMATS.register("colbert")(ImportFormat(_read_colbert, names_positives=True))
IMPORT_FORMATS.register("flagembedding")(ImportFormat(_read_flagembedding, names_positives=True))
IMPORT_FORMATS.register("trec-run")(ImportFormat(_read_trec_run, names_positives=False))


# ---------------------------------------------------------------- merging, checks, labels


@dataclass
class _Entry:
    score: float  # rounded to float32, as the store keeps it
    positive: bool
    line: int | None
    rank: int | None


@dataclass
class _Merged:
    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)  # in order of first appearance
    order: dict[str, list[str]] = field(default_factory=dict)  # query → its documents in file order
    records: int = 0
    duplicates: int = 0
    conflicts: int = 0
    conflict_examples: list[str] = field(default_factory=list)


def _on_line(line: int | None) -> str:
    return f"on line {line}" if line is not None else "earlier in the file"


def _merge(pairs: Iterable[ScoredPair], path: Path, on_conflict: str) -> _Merged:
    """One entry per (query, document); repeated pairs are merged, conflicts counted or refused."""
    merged = _Merged()
    for pair in pairs:
        merged.records += 1
        key = (pair.query_id, pair.doc_id)
        score = float(np.float32(pair.score))
        prior = merged.entries.get(key)
        if prior is None:
            merged.entries[key] = _Entry(score, pair.positive, pair.line, pair.rank)
            merged.order.setdefault(pair.query_id, []).append(pair.doc_id)
            continue
        if prior.positive != pair.positive:
            roles = ("a positive", "a negative") if pair.positive else ("a negative", "a positive")
            raise DataFormatError(path, pair.line, f"{key} is {roles[0]} here but {roles[1]} {_on_line(prior.line)}")
        if prior.score == score:
            merged.duplicates += 1
            continue
        merged.conflicts += 1
        problem = f"{key} has score {score!r} here but {prior.score!r} {_on_line(prior.line)}"
        if on_conflict == "error":
            raise DataFormatError(path, pair.line, problem + "; --on-conflict first keeps the first score")
        if len(merged.conflict_examples) < _EXAMPLES:
            where = f"{path}:{pair.line}" if pair.line is not None else str(path)
            merged.conflict_examples.append(f"{where}: {problem}")
    return merged


def _drop_unknown(merged: _Merged, path: Path, context: ReadContext, skip_unknown: bool) -> dict[str, int]:
    """Refuse (or drop and count) pairs whose query is not in the split or document not in the corpus."""
    collection = context.collection
    queries: dict[str, int | None] = {}  # unknown id → first line naming it
    docs: dict[str, int | None] = {}
    bad: list[tuple[str, str]] = []
    for (qid, doc_id), entry in merged.entries.items():
        if qid not in collection.queries:
            queries.setdefault(qid, entry.line)
        if doc_id not in collection.corpus:
            docs.setdefault(doc_id, entry.line)
        if qid not in collection.queries or doc_id not in collection.corpus:
            bad.append((qid, doc_id))
    if bad and not skip_unknown:

        def named(ids: dict[str, int | None]) -> str:
            return ", ".join(
                f"{context.labels.get(i, repr(i))} ({_on_line(line)})" for i, line in list(ids.items())[:_EXAMPLES]
            )

        problems = []
        if queries:
            problems.append(
                f"{len(queries):,} query ids are not among the {len(collection.queries):,} queries of split "
                f"{collection.split!r} of {collection.name} (e.g. {named(queries)})"
            )
        if docs:
            problems.append(f"{len(docs):,} document ids are not in its corpus (e.g. {named(docs)})")
        raise DataFormatError(
            path,
            merged.entries[bad[0]].line,
            f"{len(bad):,} pairs name unknown ids: "
            + "; ".join(problems)
            + ". Was the file made for this dataset and split? --skip-unknown drops such pairs.",
        )
    for qid, doc_id in bad:
        del merged.entries[qid, doc_id]
    if bad:
        for qid in {q for q, _ in bad}:
            kept = [d for d in merged.order[qid] if (qid, d) in merged.entries]
            if kept:
                merged.order[qid] = kept
            else:
                del merged.order[qid]
    return {"pairs": len(bad), "query_ids": len(queries), "doc_ids": len(docs)}


def _candidate_rows(
    merged: _Merged, qrels: dict[str, dict[str, int]], names_positives: bool, rank: str
) -> tuple[list[Candidate], int]:
    """The candidates (labels and ranks as the module docstring says) and how many labels qrels changed."""
    rows: list[Candidate] = []
    changed = 0
    for qid, docs in merged.order.items():
        judged = qrels.get(qid, {})
        if rank == "score":
            by_score = sorted(docs, key=lambda d: (-merged.entries[qid, d].score, d))
            ranks = {d: position for position, d in enumerate(by_score, start=1)}
        elif rank == "file":
            ranks = {d: merged.entries[qid, d].rank or position for position, d in enumerate(docs, start=1)}
        else:
            ranks = dict.fromkeys(docs, 0)
        for doc_id in docs:
            positive = merged.entries[qid, doc_id].positive
            if names_positives and doc_id in judged and (judged[doc_id] > 0) != positive:
                changed += 1
            rows.append(Candidate(qid, doc_id, judged.get(doc_id, int(positive)), ranks[doc_id], math.nan))
    return rows, changed


# ---------------------------------------------------------------- the stage


def import_scores(
    source: str | os.PathLike[str],
    format: str,
    *,
    collection: Collection,
    out: str | os.PathLike[str],
    candidates_out: str | os.PathLike[str] | None = None,
    model: str = "unknown",
    qrels: str | os.PathLike[str] | None = None,
    rank: str = "file",
    on_conflict: str = "first",
    skip_unknown: bool = False,
    allow_pickle: bool = False,
    part_size: int = 50_000,
    overwrite: bool = False,
) -> ImportResult:
    """Import the score file ``source`` (in ``format``) as a teacher-score store and its candidates.

    Args:
        source: the score file.
        format: a name in :data:`IMPORT_FORMATS` (see the module docstring).
        collection: the collection split the scores belong to; every id is checked against it.
        out: the store directory to write.
        candidates_out: the candidates directory to write (default: ``OUT-candidates`` beside ``out``).
        model: what produced the scores (e.g. ``"bert-ensemble"``), recorded as ``teacher.model``.
        qrels: a qrels file for the labels (default: the collection's qrels of its split).
        rank: candidate ranks: ``"file"``, ``"score"`` or ``"none"``.
        on_conflict: a pair given two scores: ``"first"`` keeps the first, ``"error"`` raises.
        skip_unknown: drop pairs with ids the collection lacks instead of raising.
        allow_pickle: permit ``st-scores-pickle`` (read with a restricted unpickler).
        part_size: pairs per store part.
        overwrite: replace ``out`` / ``candidates_out`` if they exist.

    Raises:
        DataFormatError: a malformed record, a conflict under ``on_conflict="error"``, unknown ids.
        ValueError: bad arguments, existing outputs, a margin file, a pickle without ``allow_pickle``.
    """
    start = time.perf_counter()
    path = Path(source)
    importer = IMPORT_FORMATS.get(format)
    if rank not in RANK_POLICIES:
        raise ValueError(f"rank must be one of {', '.join(RANK_POLICIES)}, got {rank!r}")
    if on_conflict not in CONFLICT_POLICIES:
        raise ValueError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    store_dir = Path(out)
    cand_dir = (
        Path(candidates_out) if candidates_out is not None else store_dir.with_name(f"{store_dir.name}-candidates")
    )
    _check_outputs(path, store_dir, cand_dir, overwrite)

    context = ReadContext(collection, allow_pickle=allow_pickle)
    merged = _merge(importer.read(path, context), path, on_conflict)
    if not merged.entries:
        raise DataFormatError(path, None, "empty file: no scores")
    skipped = _drop_unknown(merged, path, context, skip_unknown)
    if not merged.entries:
        raise ValueError(
            f"{path}: every pair names an id unknown to {collection.name} ({collection.split}); nothing to import"
        )
    judged = read_qrels(qrels) if qrels is not None else collection.qrels
    rows, changed = _candidate_rows(merged, judged, importer.names_positives, rank)
    positive_queries = {c.query_id for c in rows if c.label > 0}
    report: dict[str, Any] = {
        "records": merged.records,
        "pairs": len(merged.entries),
        "duplicates": merged.duplicates,
        "conflicts": merged.conflicts,
        "conflict_examples": merged.conflict_examples,
        "on_conflict": on_conflict,
        "skipped_unknown": skipped,
        "ambiguous_texts": context.ambiguous_texts,
        "labels": f"qrels file {qrels}" if qrels is not None else f"qrels/{collection.split} of {collection.name}",
        "labels_changed_by_qrels": changed,
        "queries_without_positive": len(merged.order) - len(positive_queries),
        "rank": rank,
    }
    teacher = {
        "name": "imported",
        "format": format,
        "source": str(path),
        "source_sha256": sha256_file(path),
        "model": model,
    }
    config = {
        "source": str(path),
        "format": format,
        "dataset": collection.name,
        "split": collection.split,
        "candidates": str(cand_dir),  # where train-student finds the candidates when not given them
        "model": model,
        "qrels": None if qrels is None else str(qrels),
        "rank": rank,
        "on_conflict": on_conflict,
        "skip_unknown": skip_unknown,
        "part_size": part_size,
    }
    cand_inputs = dict(collection.fingerprints)
    if qrels is not None:
        cand_inputs["qrels_file"] = sha256_file(qrels)

    staging = [_staging_dir(cand_dir), _staging_dir(store_dir)]
    try:
        cand_manifest = write_candidates(
            staging[0],
            rows,
            {
                "stage": STAGE,
                "config": config,
                "dataset": collection.name,
                "split": collection.split,
                "teacher": teacher,
                "inputs": cand_inputs,
                "import": report,
            },
        )
        inputs = {
            "corpus": collection.fingerprints["corpus"],
            "queries": collection.fingerprints["queries"],
            "candidates": cand_manifest["fingerprint"],
        }
        _write_store(staging[1], merged, part_size, teacher, inputs, config, report, start)
        publish_dir(staging[0], cand_dir)
        publish_dir(staging[1], store_dir)
    finally:
        for directory in staging:
            shutil.rmtree(directory, ignore_errors=True)
    return ImportResult(TeacherStore.open(store_dir), read_candidates(cand_dir), report)


def _write_store(
    directory: Path,
    merged: _Merged,
    part_size: int,
    teacher: dict[str, Any],
    inputs: dict[str, str],
    config: dict[str, Any],
    report: dict[str, Any],
    start: float,
) -> None:
    """Write the parts and the manifest of a complete store, as ``score_pairs_to_store`` would."""
    pairs = sorted(merged.entries)
    num_parts = math.ceil(len(pairs) / part_size)
    parts = {}
    for index in range(num_parts):
        chunk = pairs[index * part_size : (index + 1) * part_size]
        parts[part_name(index)] = write_part(directory, index, chunk, [merged.entries[p].score for p in chunk])
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": teacher,
        "inputs": inputs,
        "part_size": part_size,
        "num_parts": num_parts,
        "num_pairs": len(pairs),
        "pairs_fingerprint": pairs_fingerprint(pairs),
        "parts": parts,
        "complete": True,
        "counts": {
            "pairs": len(pairs),
            "queries": len({q for q, _ in pairs}),
            "documents": len({d for _, d in pairs}),
            "parts": num_parts,
        },
        "import": report,
    }
    # The fingerprint of the rows as written (float32), computed the way the scoring loop does.
    table = TeacherStore(directory, manifest).table()
    manifest["fingerprint"] = rows_fingerprint(
        table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), table.column("score").to_pylist()
    )
    manifest["wall_time_s"] = round(time.perf_counter() - start, 3)
    write_manifest(directory, manifest)


def _check_outputs(source: Path, store_dir: Path, cand_dir: Path, overwrite: bool) -> None:
    a, b = store_dir.resolve(), cand_dir.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ValueError(f"the store ({store_dir}) and the candidates ({cand_dir}) need two separate directories")
    for target in (store_dir, cand_dir):
        if target.exists() and not overwrite:
            raise ValueError(f"{target} already exists; choose another output or pass --overwrite to replace it")
        if target.resolve() in source.resolve().parents:
            raise ValueError(f"{source} lies inside the output {target}, which the import would replace")


def _staging_dir(target: Path) -> Path:
    """A fresh folder beside ``target`` (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
