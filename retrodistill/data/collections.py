"""Collections: a corpus, queries and graded relevance judgments (qrels).

The BEIR folder layout is canonical::

    DATASET/
      corpus.jsonl        {"_id": str, "title": str, "text": str, ...}   one document per line
      queries.jsonl       {"_id": str, "text": str, ...}                 one query per line
      qrels/{split}.tsv   query-id <TAB> corpus-id <TAB> score           graded, optional header line

Adapters read MS MARCO files: ``collection.tsv`` (``pid <TAB> text``), ``queries.*.tsv``
(``qid <TAB> text``) and TREC qrels (``qid 0 docid rel``, whitespace-separated).

Invariants checked on load, each violation reported as ``FILE:LINE: problem``
(:class:`DataFormatError`): every file is UTF-8 (a leading byte-order mark is dropped); every line
parses; every record has a non-empty string ``_id``; ids are unique within a file; a file holds at
least one record; relevance grades are integers; a qrels file keeps one form (BEIR or TREC) on
every line. Qrels of which no judgment names both a known query and a known document (another
dataset's, most likely) are an error.

Judgments to documents absent from the corpus (BEIR's own ArguAna has 5 such) are two things at
once, so a :class:`Collection` holds two views of its qrels:

- for **evaluation** (:meth:`Collection.for_evaluation`) they are kept, and so is a query whose
  every judgment names an absent document: such a judgment cannot be retrieved, but it counts in
  the ideal ranking of nDCG and in the denominator of recall, exactly as BEIR, Pyserini's 2CR and
  trec_eval count it when given the full qrels;
- for **training** (``qrels`` and ``queries``) they are left out, so a positive or a negative is
  always a document that exists.

Both are counted in ``Collection.unknown_judgments`` and a few of their ids kept in
``Collection.unknown_ids``, so callers can report them. Judgments that name an unknown query are
left out of both views: a query without text cannot be retrieved for.

The corpus is a :class:`~retrodistill.data.corpus.Corpus`: converted once into a memory-mapped Arrow
cache (:mod:`retrodistill.data.corpus`) and read on demand, so an 8.8M-passage corpus loads in
seconds the second time. Queries and qrels are small enough to stay Python dicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrodistill.artifacts import sha256_file
from retrodistill.data.corpus import Corpus, open_corpus
from retrodistill.data.records import (
    DataFormatError,
    Document,
    duplicate_problem,
    iter_lines,
    parse_json_record,
    parse_tsv_record,
)

__all__ = [
    "Collection",
    "Corpus",
    "DataFormatError",
    "Document",
    "Qrels",
    "load_beir",
    "load_msmarco",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "restrict_qrels",
]

Qrels = dict[str, dict[str, int]]


@dataclass
class Collection:
    """A corpus, the queries of one split and their qrels.

    ``queries`` holds only the queries judged in ``split`` (as BEIR's loader does);
    ``fingerprints`` identify the files the collection was read from. ``corpus`` may be given as a
    plain ``{doc_id: Document}`` dict; it is then held as an in-memory :class:`Corpus`.

    ``qrels`` and ``queries`` are the training view: judgments to documents of the corpus, and the
    queries that have one. ``judgments`` and ``judged_queries`` are the evaluation view: every
    judgment of a known query, to an absent document too, and every query judged (``None``: the
    same as the training view). :meth:`for_evaluation` gives the collection with that view.
    """

    name: str
    corpus: Corpus
    queries: dict[str, str]
    qrels: Qrels
    split: str
    fingerprints: dict[str, str] = field(default_factory=dict)
    unknown_judgments: dict[str, int] = field(default_factory=lambda: {"queries": 0, "documents": 0})
    judgments: Qrels | None = None
    judged_queries: dict[str, str] | None = None
    unknown_ids: dict[str, list[str]] = field(default_factory=lambda: {"queries": [], "documents": []})

    def __post_init__(self) -> None:
        if not isinstance(self.corpus, Corpus):
            self.corpus = Corpus.from_dict(self.corpus)
        if self.judgments is None:
            self.judgments = self.qrels
        if self.judged_queries is None:
            self.judged_queries = self.queries

    def for_evaluation(self) -> Collection:
        """This collection with the evaluation view as ``qrels`` and ``queries`` (see the class docstring).

        Retrieving for its ``queries`` and scoring against its ``qrels`` keeps every judged query in
        the average, as trec_eval does: a query judged only on absent documents scores 0.
        """
        judgments = self.qrels if self.judgments is None else self.judgments
        judged_queries = self.queries if self.judged_queries is None else self.judged_queries
        if judgments is self.qrels and judged_queries is self.queries:
            return self
        return replace(self, qrels=judgments, queries=judged_queries)

    def doc_text(self, doc_id: str) -> str:
        return self.corpus[doc_id].joined()

    def describe(self) -> str:
        """One line: counts of the evaluation view, empty texts, and the judgments it could not place."""
        evaluated = self.for_evaluation()
        judged = sum(len(d) for d in evaluated.qrels.values())
        if not len(self.corpus):  # qrels alone, to score run files against
            return f"{self.name}: qrels only, {len(evaluated.queries):,} queries, {judged:,} judgments"
        text = (
            f"{self.name} ({self.split}): {len(self.corpus):,} documents, {len(evaluated.queries):,} queries, "
            f"{judged:,} judgments"
        )
        empty_docs = self.corpus.empty_documents  # counted once, when the corpus was converted
        empty_queries = sum(1 for text in evaluated.queries.values() if not text.strip())
        if empty_docs or empty_queries:
            # Kept (BEIR corpora have some), but an encoder sees an empty string: worth knowing.
            text += f"; {empty_docs:,} empty documents, {empty_queries:,} empty queries"
        unknown_q, unknown_d = self.unknown_judgments["queries"], self.unknown_judgments["documents"]
        if unknown_q:
            text += (
                f"; {unknown_q:,} judgment{'s' if unknown_q != 1 else ''} skipped: unknown query ids "
                f"({_examples(self.unknown_ids['queries'])})"
            )
        if unknown_d:
            text += (
                f"; {unknown_d:,} judgment{'s' if unknown_d != 1 else ''} to documents absent from the corpus "
                f"({_examples(self.unknown_ids['documents'])}): evaluation keeps them (they cannot be retrieved "
                "but count as relevant), training leaves them out"
            )
            only = len(evaluated.queries) - len(self.queries)
            if only:
                text += f"; {only:,} quer{'ies' if only != 1 else 'y'} judged only on such documents (scoring 0)"
        return text


#: How many unknown ids a collection keeps to name in its description.
_EXAMPLES = 5


def _examples(ids: list[str]) -> str:
    return "ids such as " + ", ".join(repr(i) for i in ids[:_EXAMPLES])


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Read a BEIR JSONL file into ``{_id: {field: value}}`` with line-precise errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path):
        record_id, values = parse_json_record(path, number, line, fields)
        if record_id in records:
            raise DataFormatError(path, number, duplicate_problem("_id", record_id, first_line[record_id]))
        records[record_id] = values
        first_line[record_id] = number
    if not records:
        raise DataFormatError(path, None, "empty file: no records")
    return records


def read_corpus(path: str | os.PathLike[str]) -> Corpus:
    """The BEIR ``corpus.jsonl`` at ``path``, through the Arrow cache (converted on first use)."""
    return open_corpus(path, "beir")


def read_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    rows = _read_jsonl(Path(path), ("text",))
    return {qid: r["text"] for qid, r in rows.items()}


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read qrels in BEIR TSV (``qid docid grade``, optional header) or TREC (``qid 0 docid grade``) form.

    The form is decided once per file, by its first data line: 4 columns whose second is ``0`` or
    ``Q0`` (TREC's iteration column) make a TREC file, 3 columns a BEIR one; every later line must
    have the same form. So ``q1 d1 1 extra`` is refused rather than read as TREC with doc id ``1``.
    Only the first line may be a header, and only if its grade column is a word (``score``,
    ``relevance``): a first line with another non-integer grade is an error, not a dropped header.
    A pair judged twice is an error.

    Raises:
        DataFormatError: naming the file and line of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    qrels: Qrels = {}
    seen_line: dict[tuple[str, str], int] = {}
    form: tuple[int, int] | None = None  # (columns, first line in that form)
    for index, (number, line) in enumerate(iter_lines(path)):
        parts = line.split()
        if index == 0 and len(parts) in (3, 4) and _is_header(parts):
            continue
        if len(parts) not in (3, 4):
            raise DataFormatError(path, number, f"expected 3 (BEIR) or 4 (TREC) columns, found {len(parts)}: {line!r}")
        if form is not None and len(parts) != form[0]:
            kind = {3: "BEIR", 4: "TREC"}[form[0]]
            raise DataFormatError(
                path, number, f"{len(parts)} columns in {kind} qrels of {form[0]} (as on line {form[1]}): {line!r}"
            )
        if len(parts) == 4 and parts[1] not in _TREC_ITERATIONS:
            raise DataFormatError(
                path,
                number,
                f"4 columns, but the second is {parts[1]!r}, not the 0 or Q0 of TREC qrels (qid 0 docid grade); "
                f"BEIR qrels have 3 (query-id corpus-id score): {line!r}",
            )
        if form is None:
            form = (len(parts), number)
        if len(parts) == 3:
            qid, doc_id, grade_text = parts
        else:
            qid, _iteration, doc_id, grade_text = parts
        grade = _grade(grade_text)
        if grade is None:
            raise DataFormatError(path, number, f"relevance grade {grade_text!r} is not an integer")
        if (qid, doc_id) in seen_line:
            raise DataFormatError(
                path, number, f"({qid}, {doc_id}) judged twice (first on line {seen_line[qid, doc_id]})"
            )
        seen_line[qid, doc_id] = number
        qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise DataFormatError(path, None, "empty file: no judgments")
    return qrels


#: What TREC qrels hold in their second ("iteration") column.
_TREC_ITERATIONS = frozenset({"0", "Q0"})


def _grade(text: str) -> int | None:
    """An integer grade (``2`` or ``2.0``), or None when ``text`` is not one."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        as_float = float(text)
    except ValueError:
        return None
    return int(as_float) if as_float.is_integer() else None


def _is_header(parts: list[str]) -> bool:
    """Whether a first line is a header: its grade is a word such as ``score`` and no column is a number.

    ``query-id corpus-id score`` is a header; ``q1 d1 1.5`` (a grade that is a number) and
    ``q1 d1 1 extra`` (a number among the columns) are data, and are reported as such.
    """
    grade = parts[-1]
    return (
        grade.isascii()
        and grade.replace("-", "").replace("_", "").isalpha()
        and not any(_is_number(part) for part in parts)  # "nan" and "inf" are words that parse
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def restrict_qrels(
    qrels: Qrels,
    queries: Mapping[str, str],
    has_documents: Callable[[list[str]], Sequence[bool]],
    paths: tuple[Path, Path, Path],
) -> dict[str, Any]:
    """Split qrels into the training and the evaluation views (see the module docstring); count the rest.

    Args:
        qrels: as read from the qrels file.
        queries: every query of the queries file.
        has_documents: document ids → whether each is in the corpus (one vectorised lookup).
        paths: the qrels, queries and corpus files, named when no judgment is left.

    Returns:
        The keyword arguments of :class:`Collection` that hold the views: ``qrels`` and ``queries``
        (training), ``judgments`` and ``judged_queries`` (evaluation), ``unknown_judgments`` and
        ``unknown_ids``.

    Raises:
        DataFormatError: no judgment names both a known query and a known document (the qrels of
            another dataset, most likely), which would leave nothing to evaluate or train on.
    """
    unknown = {"queries": 0, "documents": 0}
    unknown_ids: dict[str, list[str]] = {"queries": [], "documents": []}
    judged = {qid: docs for qid, docs in qrels.items() if qid in queries}
    for qid, docs in qrels.items():
        if qid not in judged:
            unknown["queries"] += len(docs)
            if len(unknown_ids["queries"]) < _EXAMPLES:
                unknown_ids["queries"].append(qid)
    known = iter(has_documents([d for docs in judged.values() for d in docs]))
    kept: Qrels = {}
    for qid, docs in judged.items():
        for doc_id, grade in docs.items():
            if not next(known):
                unknown["documents"] += 1
                if len(unknown_ids["documents"]) < _EXAMPLES and doc_id not in unknown_ids["documents"]:
                    unknown_ids["documents"].append(doc_id)
                continue
            kept.setdefault(qid, {})[doc_id] = grade
    if not kept:
        qrels_path, queries_path, corpus_path = paths
        total = unknown["queries"] + unknown["documents"]
        counted = f"{total:,} judgment{'' if total == 1 else 's'}"
        if not judged:
            example = next(iter(qrels))
            problem = f"no judged query is in {queries_path} ({counted}; query ids such as {example!r})"
        else:
            example = next(iter(next(iter(judged.values()))))
            problem = (
                f"no document judged for a known query is in {corpus_path} ({counted}; "
                f"document ids such as {example!r})"
            )
        raise DataFormatError(qrels_path, None, f"{problem}: are these the qrels of this dataset?")
    return {
        "qrels": kept,
        "queries": {qid: queries[qid] for qid in kept},
        "judgments": judged,
        "judged_queries": {qid: queries[qid] for qid in judged},
        "unknown_judgments": unknown,
        "unknown_ids": unknown_ids,
    }


def _restrict(
    qrels: Qrels, queries: Mapping[str, str], corpus: Corpus, paths: tuple[Path, Path, Path]
) -> dict[str, Any]:
    """:func:`restrict_qrels` against a corpus."""
    return restrict_qrels(qrels, queries, lambda ids: (corpus.rows(ids, missing=-1) >= 0).tolist(), paths)


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
    views = _restrict(read_qrels(qrels_path), queries, corpus, (qrels_path, queries_path, corpus_path))
    fingerprints = {
        "corpus": corpus.fingerprint or sha256_file(corpus_path),  # the cache keeps the source's hash
        "queries": sha256_file(queries_path),
        f"qrels/{split}": sha256_file(qrels_path),
    }
    return Collection(name or root.name, corpus, split=split, fingerprints=fingerprints, **views)


def _read_tsv_texts(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path):
        key, text = parse_tsv_record(path, number, line)
        if key in texts:
            raise DataFormatError(path, number, duplicate_problem("id", key, first_line[key]))
        texts[key] = text
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
    corpus = open_corpus(collection_tsv, "msmarco")
    queries = _read_tsv_texts(queries_tsv)
    views = _restrict(read_qrels(qrels_path), queries, corpus, (qrels_path, queries_tsv, collection_tsv))
    fingerprints = {
        "corpus": corpus.fingerprint or sha256_file(collection_tsv),
        "queries": sha256_file(queries_tsv),
        f"qrels/{split}": sha256_file(qrels_path),
    }
    return Collection(name, corpus, split=split, fingerprints=fingerprints, **views)
