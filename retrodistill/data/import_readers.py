"""Readers of published score files: each yields :class:`Records`, column batches of scored pairs.

:mod:`retrodistill.stages.import_scores` documents the formats and what the import decides; this module
only parses. ``hofstaetter-tsv`` (tens of millions of lines) is read by pyarrow's CSV reader in
blocks, gzipped or not; a block that fails to parse or check is handed to the line-by-line reader,
which raises the error naming FILE:LINE (or, when the lines are fine after all, reads on). The
JSON-lines and pickle formats are read record by record (their files are small) and batched.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from retrodistill.data.collections import Collection, DataFormatError
from retrodistill.registry import Registry

#: Records per batch from the line-by-line readers; bytes per block for pyarrow's CSV reader.
BATCH = 1 << 16
CSV_BLOCK = 16 << 20


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
class Records:
    """A batch of records in file order, column-wise.

    ``lines`` gives each record's 1-based line (-1: none); when it is ``None`` the records are
    ``per_row`` per data row of a text file, starting at data row ``first_row`` (0-based, empty
    lines not counted), and :func:`data_row_lines` finds their lines when a message needs them.
    """

    query_id: Any  # Arrow string array
    doc_id: Any  # Arrow string array
    score: np.ndarray  # float64
    positive: np.ndarray  # bool
    rank: np.ndarray | None = None  # int32, 0 = none stated
    lines: np.ndarray | None = None  # int64
    first_row: int = 0
    per_row: int = 1

    def __len__(self) -> int:
        return len(self.score)


@dataclass
class ReadContext:
    """What a reader may need besides the file: the collection (texts → ids) and permissions."""

    collection: Collection
    allow_pickle: bool = False
    labels: dict[str, str] = field(default_factory=dict)  # stand-in id → what to call it in messages
    ambiguous_texts: int = 0


Reader = Callable[[Path, ReadContext], Iterator[Records]]


@dataclass(frozen=True)
class ImportFormat:
    read: Reader
    names_positives: bool  # the format says which documents are positives


IMPORT_FORMATS: Registry[ImportFormat] = Registry("score-file format")


def batched(pairs: Iterable[ScoredPair], size: int = BATCH) -> Iterator[Records]:
    """Column batches of the records of a line-by-line reader."""
    import pyarrow as pa

    buffer: list[ScoredPair] = []

    def flush() -> Records:
        return Records(
            query_id=pa.array([p.query_id for p in buffer], pa.string()),
            doc_id=pa.array([p.doc_id for p in buffer], pa.string()),
            score=np.array([p.score for p in buffer], dtype=np.float64),
            positive=np.array([p.positive for p in buffer], dtype=bool),
            rank=np.array([p.rank or 0 for p in buffer], dtype=np.int32),
            lines=np.array([-1 if p.line is None else p.line for p in buffer], dtype=np.int64),
        )

    for pair in pairs:
        buffer.append(pair)
        if len(buffer) >= size:
            yield flush()
            buffer = []
    if buffer:
        yield flush()


def _open_text(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def data_row_lines(path: Path, rows: Iterable[int]) -> dict[int, int]:
    """The 1-based line of each 0-based data row (non-empty line, as pyarrow's CSV reader counts them)."""
    wanted = sorted(set(rows))
    found: dict[int, int] = {}
    if not wanted:
        return found
    row, target = -1, 0
    with _open_text(path) as f:
        for number, raw in enumerate(f, start=1):
            if raw in (b"\n", b"\r\n", b""):
                continue
            row += 1
            if row == wanted[target]:
                found[row] = number
                target += 1
                if target == len(wanted):
                    break
    return found


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of the non-blank lines of a text file, gzipped or not."""
    with _open_text(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, number, f"not UTF-8 text (byte {raw[err.start]:#04x})") from None
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


def _pairs_hofstaetter(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _read_margin(path: Path, context: ReadContext) -> Iterator[Records]:
    raise _margin_refusal(path)


def _pairs_st_mse(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _pairs_pickle(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _pairs_tevatron(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _pairs_colbert(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _pairs_flagembedding(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _pairs_trec_run(path: Path, context: ReadContext) -> Iterator[ScoredPair]:
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


def _rows(reader: Callable[[Path, ReadContext], Iterator[ScoredPair]]) -> Reader:
    """A line-by-line reader as a batch reader."""

    def read(path: Path, context: ReadContext) -> Iterator[Records]:
        return batched(reader(path, context))

    return read


_HOFSTAETTER_COLUMNS = ("pos_score", "neg_score", "qid", "pid+", "pid-")


def _read_hofstaetter(path: Path, context: ReadContext) -> Iterator[Records]:
    """``pos_score neg_score qid pid+ pid-`` lines, a block at a time through pyarrow's CSV reader.

    Each line gives two records, (qid, pid+, pos_score, positive) then (qid, pid-, neg_score). A
    block that fails (a malformed line, a non-finite score, an empty id) sends the reader to
    :func:`_pairs_hofstaetter`, which names the line; if it finds none (pyarrow is stricter about
    blank-looking lines), the rest of the file is read line by line.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv

    names = ["pos_score", "neg_score", "qid", "pid_pos", "pid_neg"]
    read_options = csv.ReadOptions(column_names=names, block_size=CSV_BLOCK, use_threads=True)
    parse_options = csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False)
    convert_options = csv.ConvertOptions(
        column_types={"pos_score": pa.float64(), "neg_score": pa.float64(), **dict.fromkeys(names[2:], pa.string())},
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    rows = 0
    try:
        reader = csv.open_csv(str(path), read_options, parse_options, convert_options)
        for batch in reader:
            n = batch.num_rows
            scores = [batch.column(i).to_numpy(zero_copy_only=False) for i in (0, 1)]
            ids = [pc.utf8_trim_whitespace(batch.column(i)) for i in (2, 3, 4)]
            if not all(np.isfinite(s).all() for s in scores) or any(
                pc.any(pc.equal(pc.utf8_length(i), 0)).as_py() for i in ids
            ):
                raise _BadBlock
            qid, pos, neg = ids
            yield Records(
                query_id=pa.concat_arrays([qid, qid]).take(_interleave(n)),
                doc_id=pa.concat_arrays([pos, neg]).take(_interleave(n)),
                score=np.column_stack(scores).reshape(-1),
                positive=np.tile(np.array([True, False]), n),
                first_row=rows,
                per_row=2,
            )
            rows += n
    except (pa.ArrowInvalid, _BadBlock, UnicodeDecodeError):
        # The line-by-line reader raises naming the first bad line; if every line is fine for it,
        # it reads on from the row pyarrow stopped at.
        yield from batched(_skip(_pairs_hofstaetter(path, context), 2 * rows))


class _BadBlock(Exception):
    """A parsed block holds a value the line-by-line reader would refuse."""


def _interleave(n: int) -> Any:
    """Indices ``0, n, 1, n+1, ...``: row i's two records side by side, in file order."""
    import pyarrow as pa

    return pa.array(np.column_stack([np.arange(n), np.arange(n, 2 * n)]).reshape(-1))


def _skip(pairs: Iterator[ScoredPair], count: int) -> Iterator[ScoredPair]:
    for index, pair in enumerate(pairs):
        if index >= count:
            yield pair


IMPORT_FORMATS.register("hofstaetter-tsv")(ImportFormat(_read_hofstaetter, names_positives=True))
IMPORT_FORMATS.register("st-mse")(ImportFormat(_rows(_pairs_st_mse), names_positives=False))
IMPORT_FORMATS.register("st-margin-mse")(ImportFormat(_read_margin, names_positives=True))
IMPORT_FORMATS.register("st-scores-pickle")(ImportFormat(_rows(_pairs_pickle), names_positives=False))
IMPORT_FORMATS.register("tevatron")(ImportFormat(_rows(_pairs_tevatron), names_positives=True))
IMPORT_FORMATS.register("colbert")(ImportFormat(_rows(_pairs_colbert), names_positives=True))
IMPORT_FORMATS.register("flagembedding")(ImportFormat(_rows(_pairs_flagembedding), names_positives=True))
IMPORT_FORMATS.register("trec-run")(ImportFormat(_rows(_pairs_trec_run), names_positives=False))
