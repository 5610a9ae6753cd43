"""The evaluation datasets: where each comes from and the rules its scores follow.

Each entry of :data:`DATASETS` is a :class:`DatasetSpec`; :func:`load_entry` turns a name (or a
BEIR-layout folder) into a :class:`SuiteEntry`, the collections one row of a results table is
computed on, with the two per-dataset evaluation rules made explicit:

* ``ignore_identical_ids`` — drop a retrieved document whose id equals the query id before scoring.
  BEIR's ``EvaluateRetrieval.evaluate`` does this by default for every dataset
  (beir-cellar/beir, ``beir/retrieval/evaluation.py``) and Pyserini's BEIR runs pass ``--remove-query``.
  It changes scores only where queries are themselves corpus documents under the same id: ArguAna
  (each query argument is in the corpus) and Quora (each query question is in the corpus). MTEB sets
  ``ignore_identical_ids = True`` for exactly these two BEIR tasks (``ArguAna``, ``QuoraRetrieval``),
  and so does this registry; elsewhere it is False, because an equal id is a coincidence there
  (MS MARCO query and passage ids are separate number ranges; a passage that shares its number
  with a query is a legitimate result).
* ``rel_threshold`` — the least grade counted as relevant by binary measures (recall, MAP, MRR,
  P@k); nDCG always uses the graded judgments. 1 for BEIR (pytrec_eval's default, which BEIR uses).
  2 for TREC DL passage ranking: NIST judged passages 0 (not relevant), 1 (related), 2 (highly
  relevant), 3 (perfect), and "for Passage Ranking task runs (only), to compute evaluation measures
  that use binary relevance judgments using trec_eval, you either need to use trec_eval's -l option
  [trec_eval -l 2 qrelsfile runfile] or modify the qrels file to change all 1 judgments to 0"
  (https://trec.nist.gov/data/deep2019.html; the 2021 and 2022 pages repeat it). For 2020 the
  Anserini/Pyserini reproductions do the same (``trec_eval -c -l 2 -m recall.1000 dl20-passage``).
  BEIR's ``msmarco`` ``test`` split *is* TREC DL 2019 (43 queries; beir-cellar/beir#95), so it gets 2.

Names and where their data lives (``DATA_DIR`` as in :mod:`retrodistill.data.download`)::

    the 18 BEIR datasets + msmarco   DATA_DIR/NAME/            (BEIR zip; 4 not redistributable)
    cqadupstack                      DATA_DIR/cqadupstack/FORUM/, 12 forums; also "cqadupstack/FORUM"
    msmarco-dev-small                DATA_DIR/msmarco/, split dev (6,980 queries)
    trec-dl-2019, trec-dl-2020       corpus DATA_DIR/msmarco/; official qrels and topics in
                                     DATA_DIR/trec-dl/ or DATA_DIR/msmarco/[official/] (see load_trec_dl)

A group such as CQADupStack is one :class:`SuiteEntry` holding 12 collections; the evaluation suite
reports it as one row, the unweighted mean over forums (the BEIR convention).

Neighbours: :mod:`retrodistill.data.dataset_table` holds the table itself (:class:`DatasetSpec`,
:class:`RemoteFile`, the BEIR / TREC DL entries, :data:`KNOWN_CORPORA`), and
:mod:`retrodistill.data.dataset_rules` the rule checks (:func:`check_entry` with its identical-id and
graded-qrels warnings, :func:`check_rel_threshold`, :func:`describe_rules`). Their public names are
importable from here too.

Example::

    >>> entry = load_entry("scifact", data_dir="../shared/data/beir", download=False)  # doctest: +SKIP
    >>> entry.collections[0].describe(), entry.rel_threshold  # doctest: +SKIP
    ('scifact (test): 5,183 documents, 300 queries, 339 judgments', 1)
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retrodistill.artifacts import sha256_file
from retrodistill.data.collections import (
    Collection,
    Corpus,
    DataFormatError,
    load_beir,
    read_corpus,
    read_qrels,
    restrict_qrels,
)
from retrodistill.data.dataset_rules import (
    IDENTICAL_ID_SHARE,
    check_entry,
    check_rel_threshold,
    describe_rules,
    identical_id_share,
)
from retrodistill.data.dataset_table import (
    BEIR_CITATION,
    CQADUPSTACK_FORUMS,
    KNOWN_CORPORA,
    DatasetSpec,
    RemoteFile,
    build_datasets,
)
from retrodistill.data.download import (
    DatasetDownloadError,
    default_data_dir,
    download_file,
    load_dataset,
    resolve_dataset,
)
from retrodistill.data.records import iter_lines

logger = logging.getLogger(__name__)


class UnknownDatasetError(ValueError):
    """A name that is neither a registered dataset nor a folder; the message suggests close matches."""


@dataclass(frozen=True)
class SuiteEntry:
    """What one row of a results table is computed on, with its evaluation rules."""

    name: str  # row name in results tables
    collections: list[Collection]  # 1, or 12 for cqadupstack (each named e.g. "cqadupstack/android")
    ignore_identical_ids: bool
    rel_threshold: int
    split: str
    note: str = ""
    #: Whether the user chose the identical-id rule (no warning is given then).
    identical_ids_given: bool = False
    #: Lines for the user: how the entry was recognised, and what its rules are based on.
    info: tuple[str, ...] = ()
    #: Lines for the user that a figure may not mean what it seems to (see :func:`check_entry`).
    warnings: tuple[str, ...] = ()


#: Every registered dataset by name: the 18 BEIR datasets, msmarco, msmarco-dev-small and TREC DL.
DATASETS: dict[str, DatasetSpec] = build_datasets()


def spec_for(name: str) -> DatasetSpec:
    """The registered spec of ``name``; an unknown name raises :class:`UnknownDatasetError`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    known = [*DATASETS, *(f"cqadupstack/{forum}" for forum in CQADUPSTACK_FORUMS)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"{name!r} is neither a registered dataset nor a dataset folder; {hint}"
        f"registered: {', '.join(DATASETS)} (see `retrodistill datasets`)"
    )


def load_entry(
    name_or_path: str,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    rel_threshold: int | None = None,
    ignore_identical_ids: bool | None = None,
    download: bool = True,
) -> SuiteEntry:
    """Load a registered dataset, one CQADupStack forum, or a BEIR-layout folder as a suite entry.

    Args:
        name_or_path: a name in :data:`DATASETS`, ``cqadupstack/FORUM``, or a dataset folder. A folder
            is named after itself; it gets the rules of the registered dataset whose corpus it holds
            (recognised by :data:`KNOWN_CORPORA`), else none (ids kept, relevance ≥ 1).
        split: qrels split; defaults to the dataset's ``default_split`` (``test`` for a folder).
        data_dir: where named datasets live; defaults to ``$RETRODISTILL_DATA`` or ``./data``.
        rel_threshold: overrides the dataset's least relevant grade for binary measures.
        ignore_identical_ids: overrides the dataset's identical-id rule.
        download: fetch missing public data; when False, a missing dataset is an error.

    Returns:
        The entry, its ``info`` and ``warnings`` filled by :func:`check_entry`.

    Raises:
        UnknownDatasetError: not a name and not a folder (the message lists close matches).
        ValueError: ``split`` is not one of the dataset's splits, or ``rel_threshold`` is below 1.
        FileNotFoundError: data missing and ``download`` is False.
        DatasetDownloadError: a download failed, or the dataset is not redistributable and absent.
    """
    check_rel_threshold(rel_threshold)
    name = str(name_or_path)
    spec: DatasetSpec | None = None
    info: list[str] = []
    if name in DATASETS:
        spec = DATASETS[name]
        split = _check_split(spec, split)
        collections = _LOADERS[spec.kind](spec, split, data_dir, download)
        row = spec.name
    elif (group := name.partition("/"))[0] in DATASETS and group[2] in DATASETS[group[0]].members:
        spec = DATASETS[group[0]]
        split = _check_split(spec, split)
        collections = [load_dataset(name, split, data_dir, download=download)]
        row = name
    elif Path(name_or_path).is_dir():
        collection = load_beir(Path(name_or_path), split or "test")
        collections, row, split = [collection], collection.name, collection.split
        spec = recognise(collection)
        if spec is not None:
            info.append(
                f"{name}: recognised as the registered dataset {spec.name!r} by its corpus fingerprint "
                f"({collection.fingerprints['corpus'][:19]}…): its rules apply"
            )
    else:
        raise UnknownDatasetError(_unknown_message(name))
    own_threshold = 1 if spec is None else spec.threshold_for(split)
    entry = SuiteEntry(
        row,
        collections,
        (spec is not None and spec.ignore_identical_ids) if ignore_identical_ids is None else ignore_identical_ids,
        own_threshold if rel_threshold is None else rel_threshold,
        split,
        "" if spec is None else spec.note,
        identical_ids_given=ignore_identical_ids is not None,
    )
    registry = "default" if spec is None else f"{spec.name}'s rule"
    return check_entry(
        entry,
        ids_source="given" if ignore_identical_ids is not None else registry,
        threshold_source="given" if rel_threshold is not None else registry,
        info=info,
    )


def qrels_entry(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    rel_threshold: int | None = None,
    ignore_identical_ids: bool | None = None,
) -> SuiteEntry:
    """A qrels file alone (BEIR or TREC form) as a suite entry: run files can be scored on it, models cannot.

    Every judgment is kept (there is no corpus to find absent documents in); the entry is named
    ``name``, else after the file (``qrels.dl19-passage.txt`` → ``qrels.dl19-passage``).

    Raises:
        DataFormatError: the qrels do not parse (``FILE:LINE``).
    """
    check_rel_threshold(rel_threshold)
    path = Path(path)
    qrels = read_qrels(path)
    collection = Collection(
        name or path.stem,
        Corpus.from_dict({}),
        dict.fromkeys(qrels, ""),
        qrels,
        "test",
        {"qrels": sha256_file(path)},
    )
    entry = SuiteEntry(
        collection.name,
        [collection],
        bool(ignore_identical_ids),
        1 if rel_threshold is None else rel_threshold,
        "test",
        f"qrels {path}",
        identical_ids_given=ignore_identical_ids is not None,
    )
    return check_entry(
        entry,
        ids_source="default" if ignore_identical_ids is None else "given",
        threshold_source="default" if rel_threshold is None else "given",
    )


def recognise(collection: Collection) -> DatasetSpec | None:
    """The registered dataset whose corpus ``collection`` holds (by :data:`KNOWN_CORPORA`), if any."""
    name = KNOWN_CORPORA.get(collection.fingerprints.get("corpus", ""))
    return None if name is None else DATASETS[name]


def _check_split(spec: DatasetSpec, split: str | None) -> str:
    split = split or spec.default_split
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; its splits: {', '.join(spec.splits)}")
    return split


def _load_beir_spec(
    spec: DatasetSpec, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> list[Collection]:
    if spec.members:
        names = [f"{spec.folder}/{member}" for member in spec.members]
        return [load_dataset(name, split, data_dir, download=download) for name in names]
    collection = load_dataset(spec.folder, split, data_dir, download=download)
    collection.name = spec.name  # "msmarco-dev-small" reads the msmarco folder
    return [collection]


def _load_trec_dl_spec(
    spec: DatasetSpec, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> list[Collection]:
    return [load_trec_dl(spec.name, data_dir, download=download).collections[0]]


_LOADERS: dict[str, Callable[[DatasetSpec, str, str | os.PathLike[str] | None, bool], list[Collection]]] = {
    "beir": _load_beir_spec,
    "trec-dl": _load_trec_dl_spec,
}


def load_trec_dl(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    qrels: str | os.PathLike[str] | None = None,
    topics: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    rel_threshold: int | None = None,
    download: bool = True,
) -> SuiteEntry:
    """Load TREC DL passage (``trec-dl-2019`` / ``trec-dl-2020``) from local files, downloading what is missing.

    The corpus is the BEIR ``msmarco`` folder (``corpus`` or ``DATA_DIR/msmarco``). The qrels and
    topics are the official files, looked for in this order: the ``qrels`` / ``topics`` argument (a
    file, or a folder to search), then ``DATA_DIR/trec-dl/``, ``DATA_DIR/msmarco/`` and
    ``DATA_DIR/msmarco/official/``, under their official names (``2019qrels-pass.txt``,
    ``msmarco-test2019-queries.tsv.gz``) or Anserini's (``qrels.dl19-passage.txt``,
    ``topics.dl19-passage.txt``, ``topics.dl20.txt``). Missing files are downloaded into
    ``DATA_DIR/trec-dl/`` and checked against their md5.

    Only judged queries are kept; grades stay as NIST gave them (0-3, grade-0 judgments included).
    A local qrels file that differs from the official one is used, with a logged warning.

    Raises:
        FileNotFoundError: something is missing and ``download`` is False (the message lists what
            to put where).
        DatasetDownloadError: a download failed (the message lists what to put where).
    """
    check_rel_threshold(rel_threshold)
    spec = spec_for(name)
    if spec.kind != "trec-dl":
        raise ValueError(f"{name} is not a TREC DL dataset; use load_entry")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    by_role = {f.role: f for f in spec.downloads}
    corpus_path = _corpus_file(corpus, root)
    local = {role: _find_local(by_role[role], given, root) for role, given in (("qrels", qrels), ("topics", topics))}
    paths = {role: path for role, path in local.items() if path is not None}

    def missing() -> list[str]:
        return (["corpus"] if corpus_path is None else []) + [r for r in ("qrels", "topics") if r not in paths]

    if missing() and not download:
        raise FileNotFoundError(f"{spec.name}: missing {', '.join(missing())}. {_where_to_put(spec, missing(), root)}")
    try:
        if corpus_path is None:
            folder = resolve_dataset(spec.folder, root, download=True)
            if not (folder / "corpus.jsonl").is_file():  # a msmarco/ folder holding only the TREC files
                raise FileNotFoundError(
                    f"{folder / 'corpus.jsonl'}: no such file. {_where_to_put(spec, missing(), root)}"
                )
            corpus_path = folder / "corpus.jsonl"
        for role in ("qrels", "topics"):
            if role not in paths:
                remote = by_role[role]
                paths[role] = download_file(remote.url, root / "trec-dl" / remote.file, md5=remote.md5)
    except DatasetDownloadError as err:
        raise DatasetDownloadError(f"{err} {_where_to_put(spec, missing(), root)}") from None
    _warn_if_not_official(paths["qrels"], by_role["qrels"])
    collection = _trec_dl_collection(spec.name, corpus_path, paths["topics"], paths["qrels"])
    threshold = spec.rel_threshold if rel_threshold is None else rel_threshold
    return SuiteEntry(spec.name, [collection], spec.ignore_identical_ids, threshold, "test", spec.note)


def _corpus_file(corpus: str | os.PathLike[str] | None, root: Path) -> Path | None:
    if corpus is not None:
        given = Path(corpus)
        path = given / "corpus.jsonl" if given.is_dir() else given
        if not path.is_file():
            raise FileNotFoundError(f"{given}: expected the BEIR msmarco folder or its corpus.jsonl")
        return path
    path = root / "msmarco" / "corpus.jsonl"
    return path if path.is_file() else None


def _find_local(remote: RemoteFile, given: str | os.PathLike[str] | None, root: Path) -> Path | None:
    names = (remote.file, *remote.aliases)
    if given is not None:
        given = Path(given)
        if given.is_file():
            return given
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: no such file or folder (expected the {remote.role} file)")
        hit = next((given / n for n in names if (given / n).is_file()), None)
        if hit is None:
            raise FileNotFoundError(f"{given}: holds none of {', '.join(names)}")
        return hit
    folders = (root / "trec-dl", root / "msmarco", root / "msmarco" / "official")
    return next((f / n for f in folders for n in names if (f / n).is_file()), None)


def _where_to_put(spec: DatasetSpec, missing: list[str], root: Path) -> str:
    by_role = {f.role: f for f in spec.downloads}
    parts = []
    for role in missing:
        remote = by_role["archive" if role == "corpus" else role]
        if role == "corpus":
            parts.append(f"the BEIR msmarco folder ({remote.url}, unzipped) at {root / 'msmarco'}")
        else:
            also = f" (or {', '.join(remote.aliases)})" if remote.aliases else ""
            parts.append(f"{remote.file}{also} from {remote.url} in {root / 'trec-dl'} or {root / 'msmarco'}")
    return f"Put {'; '.join(parts)}. Or pass the files to load_trec_dl(qrels=..., topics=..., corpus=...)."


def _warn_if_not_official(path: Path, remote: RemoteFile) -> None:
    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if remote.md5 is not None and digest != remote.md5:
        logger.warning(
            "%s: md5 %s differs from the official %s (%s); scores may not compare with published ones",
            path,
            digest,
            remote.file,
            remote.md5,
        )


def _read_topics(path: Path) -> dict[str, str]:
    """Read ``qid <TAB> text`` lines (plain or ``.gz``), with ``FILE:LINE`` errors."""
    topics: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path):  # .gz too; a BOM dropped, a bad byte named
        qid, tab, text = line.partition("\t")
        qid = qid.strip()
        if not tab or not qid:
            raise DataFormatError(path, number, f"expected 'query-id<TAB>text', got {line[:80]!r}")
        if qid in topics:
            raise DataFormatError(path, number, f"duplicate query id {qid!r} (first on line {first_line[qid]})")
        topics[qid] = text.strip()
        first_line[qid] = number
    if not topics:
        raise DataFormatError(path, None, "empty file: no topics")
    return topics


def _trec_dl_collection(name: str, corpus_path: Path, topics_path: Path, qrels_path: Path) -> Collection:
    """Judged topics, the graded qrels (both views, see :mod:`retrodistill.data.collections`) and the corpus."""
    corpus = read_corpus(corpus_path)
    topics = _read_topics(topics_path)
    views = restrict_qrels(
        read_qrels(qrels_path),
        topics,
        lambda ids: (corpus.rows(ids, missing=-1) >= 0).tolist(),
        (qrels_path, topics_path, corpus_path),
    )
    fingerprints = {
        "corpus": corpus.fingerprint or sha256_file(corpus_path),  # kept by the corpus cache: no re-hash
        "queries": sha256_file(topics_path),
        "qrels/test": sha256_file(qrels_path),
    }
    return Collection(name, corpus, split="test", fingerprints=fingerprints, **views)


def registry_table() -> list[dict[str, str | int | bool]]:
    """One row per registered dataset, for the ``retrodistill datasets`` listing."""
    return [
        {
            "name": spec.name,
            "kind": spec.kind,
            "splits": ", ".join(spec.splits),
            "default_split": spec.default_split,
            "ignore_identical_ids": spec.ignore_identical_ids,
            "rel_threshold": spec.rel_threshold,
            "hosted": spec.hosted,
            "note": spec.note,
        }
        for spec in DATASETS.values()
    ]


__all__ = [
    "BEIR_CITATION",
    "CQADUPSTACK_FORUMS",
    "DATASETS",
    "IDENTICAL_ID_SHARE",
    "KNOWN_CORPORA",
    "DatasetSpec",
    "RemoteFile",
    "SuiteEntry",
    "UnknownDatasetError",
    "check_entry",
    "check_rel_threshold",
    "describe_rules",
    "identical_id_share",
    "load_entry",
    "load_trec_dl",
    "qrels_entry",
    "recognise",
    "registry_table",
    "spec_for",
]
