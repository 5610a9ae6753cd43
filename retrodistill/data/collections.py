"""Collections: a corpus, queries and graded relevance judgments (qrels).

The BEIR folder layout is canonical::

    DATASET/
      corpus.jsonl        {"_id": str, "title": str, "text": str, ...}   one document per line
      queries.jsonl       {"_id": str, "text": str, ...}                 one query per line
      qrels/{split}.tsv   query-id <TAB> corpus-id <TAB> score           graded, optional header line

Adapters read MS MARCO files: ``collection.tsv`` (``pid <TAB> text``), ``queries.*.tsv``
(``qid <TAB> text``) and TREC qrels (``qid 0 docid rel``, whitespace-separated).

Invariants checked on load, each violation reported as ``FILE:LINE: problem``
(:class:`DataFormatError`): every line parses; every record has a non-empty string ``_id``;
ids are unique within a file; a file holds at least one record; relevance grades are integers.
Judgments that point at an unknown query or document are kept out of ``qrels`` and counted in
``Collection.unknown_judgments`` (BEIR's own ArguAna has 5 such), so callers can report them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from retrodistill.artifacts import sha256_file

Qrels = dict[str, dict[str, int]]


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    def joined(self) -> str:
        """Title and text as one passage, the way BEIR and MTEB feed them to an encoder."""
        return f"{self.title} {self.text}".strip()


@dataclass
class Collection:
    """A corpus, the queries of one split and their qrels.

    ``queries`` holds only the queries judged in ``split`` (as BEIR's loader does);
    ``fingerprints`` identify the files the collection was read from.
    """

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels
    split: str
    fingerprints: dict[str, str] = field(default_factory=dict)
    unknown_judgments: dict[str, int] = field(default_factory=lambda: {"queries": 0, "documents": 0})

    def doc_text(self, doc_id: str) -> str:
        return self.corpus[doc_id].joined()

    def describe(self) -> str:
        judged = sum(len(d) for d in self.qrels.values())
        text = (
            f"{self.name} ({self.split}): {len(self.corpus):,} documents, {len(self.queries):,} queries, "
            f"{judged:,} judgments"
        )
        empty_docs = sum(1 for doc in self.corpus.values() if not doc.joined())
        empty_queries = sum(1 for text in self.queries.values() if not text.strip())
        if empty_docs or empty_queries:
            # Kept (BEIR corpora have some), but an encoder sees an empty string: worth knowing.
            text += f"; {empty_docs:,} empty documents, {empty_queries:,} empty queries"
        unknown_q, unknown_d = self.unknown_judgments["queries"], self.unknown_judgments["documents"]
        if unknown_q or unknown_d:
            text += (
                f"; {unknown_q + unknown_d:,} judgments skipped "
                f"({unknown_q} with unknown query ids, {unknown_d} with unknown document ids)"
            )
        return text


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for non-blank lines, stripped of the line ending (CRLF too)."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Read a BEIR JSONL file into ``{_id: {field: value}}`` with line-precise errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for number, line in _iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, number, f"malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, number, f"expected a JSON object, got {type(obj).__name__}")
        if "_id" not in obj:
            raise DataFormatError(path, number, "record has no '_id'")
        doc_id = obj["_id"]
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise DataFormatError(path, number, f"'_id' must be a non-empty string, got {obj['_id']!r}")
        if doc_id in records:
            raise DataFormatError(path, number, f"duplicate _id {doc_id!r} (first seen on line {first_line[doc_id]})")
        values = {}
        for name in fields:
            value = obj.get(name, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise DataFormatError(path, number, f"{name!r} must be a string, got {type(value).__name__}")
            values[name] = value
        records[doc_id] = values
        first_line[doc_id] = number
    if not records:
        raise DataFormatError(path, None, "empty file: no records")
    return records


def read_corpus(path: str | os.PathLike[str]) -> dict[str, Document]:
    rows = _read_jsonl(Path(path), ("title", "text"))
    return {doc_id: Document(r["title"], r["text"]) for doc_id, r in rows.items()}


def read_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    rows = _read_jsonl(Path(path), ("text",))
    return {qid: r["text"] for qid, r in rows.items()}


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read qrels in BEIR TSV (``qid docid grade``, optional header) or TREC (``qid 0 docid grade``) form.

    The form is decided per line by its number of whitespace-separated columns (3 or 4). A header is
    recognised on the first line only, by a non-integer grade. A pair judged twice is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    qrels: Qrels = {}
    seen_line: dict[tuple[str, str], int] = {}
    for index, (number, line) in enumerate(_iter_lines(path)):
        parts = line.split()
        if len(parts) == 3:
            qid, doc_id, grade_text = parts
        elif len(parts) == 4:
            qid, _iteration, doc_id, grade_text = parts
        else:
            raise DataFormatError(path, number, f"expected 3 (BEIR) or 4 (TREC) columns, found {len(parts)}: {line!r}")
        try:
            grade = int(grade_text)
        except ValueError:
            try:
                as_float = float(grade_text)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                grade = int(as_float)
            elif index == 0:
                continue  # header line such as "query-id corpus-id score"
            else:
                problem = f"relevance grade {grade_text!r} is not an integer"
                raise DataFormatError(path, number, problem) from None
        if (qid, doc_id) in seen_line:
            raise DataFormatError(
                path, number, f"({qid}, {doc_id}) judged twice (first on line {seen_line[qid, doc_id]})"
            )
        seen_line[qid, doc_id] = number
        qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise DataFormatError(path, None, "empty file: no judgments")
    return qrels


def _restrict(
    qrels: Qrels, queries: dict[str, str], corpus: dict[str, Document]
) -> tuple[Qrels, dict[str, str], dict[str, int]]:
    """Keep judgments whose query and document exist; count the others."""
    unknown = {"queries": 0, "documents": 0}
    kept: Qrels = {}
    for qid, docs in qrels.items():
        if qid not in queries:
            unknown["queries"] += len(docs)
            continue
        for doc_id, grade in docs.items():
            if doc_id not in corpus:
                unknown["documents"] += 1
                continue
            kept.setdefault(qid, {})[doc_id] = grade
    split_queries = {qid: queries[qid] for qid in kept}
    return kept, split_queries, unknown


def load_beir(path: str | os.PathLike[str], split: str = "test", name: str | None = None) -> Collection:
    """Load a BEIR-layout dataset folder; ``queries`` is restricted to those judged in ``split``."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise FileNotFoundError(
            f"{qrels_path}: no qrels for split {split!r}; available splits: {', '.join(available) or 'none'}"
        )
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    corpus = read_corpus(corpus_path)
    queries = read_queries(queries_path)
    qrels, split_queries, unknown = _restrict(read_qrels(qrels_path), queries, corpus)
    fingerprints = {
        "corpus": sha256_file(corpus_path),
        "queries": sha256_file(queries_path),
        f"qrels/{split}": sha256_file(qrels_path),
    }
    return Collection(name or root.name, corpus, split_queries, qrels, split, fingerprints, unknown)


def _read_tsv_texts(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in _iter_lines(path):
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip():
            raise DataFormatError(path, number, "expected 'id<TAB>text'")
        key = parts[0].strip()
        if key in texts:
            problem = f"duplicate id {key!r} (first seen on line {first_line[key]})"
            raise DataFormatError(path, number, problem)
        texts[key] = "\t".join(parts[1:]).strip()
        first_line[key] = number
    if not texts:
        raise DataFormatError(path, None, "empty file: no records")
    return texts


def load_msmarco(
    collection_tsv: str | os.PathLike[str],
    queries_tsv: str | os.PathLike[str],
    qrels_path: str | os.PathLike[str],
    *,
    name: str = "msmarco",
    split: str = "dev",
) -> Collection:
    """Load MS MARCO TSVs (``collection.tsv``, ``queries.*.tsv``) with TREC or TSV qrels."""
    collection_tsv, queries_tsv, qrels_path = Path(collection_tsv), Path(queries_tsv), Path(qrels_path)
    corpus = {pid: Document("", text) for pid, text in _read_tsv_texts(collection_tsv).items()}
    queries = _read_tsv_texts(queries_tsv)
    qrels, split_queries, unknown = _restrict(read_qrels(qrels_path), queries, corpus)
    fingerprints = {
        "corpus": sha256_file(collection_tsv),
        "queries": sha256_file(queries_tsv),
        f"qrels/{split}": sha256_file(qrels_path),
    }
    return Collection(name, corpus, split_queries, qrels, split, fingerprints, unknown)
