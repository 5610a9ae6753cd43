"""Configuration: one dataclass per stage, strict YAML loading and ``--set a.b=v`` overrides.

A YAML file mirrors the dataclass it is loaded into; an unknown key is an error that names its
path and file, so a typo never silently falls back to a default::

    cfg = load_config(TrainConfig, "configs/margin_mse.yaml", ["loss.params.scale=2", "epochs=3"])
    to_dict(cfg)  # the resolved config, written into every manifest
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    """Where a collection comes from."""

    dataset: str = field(default="scifact", metadata={"help": "BEIR name or path to a BEIR-layout folder"})
    data_dir: str | None = field(
        default=None, metadata={"help": "folder of datasets (default: $RETRODISTILL_DATA or ./data)"}
    )
    split: str = field(default="train", metadata={"help": "qrels split to read"})


@dataclass
class SplitDevConfig:
    """``retrodistill split-dev``: a seeded dev split carved out of a training split (:mod:`.stages.split_dev`)."""

    data: DataConfig = field(default_factory=DataConfig)
    dev_queries: int = field(default=100, metadata={"help": "judged queries drawn into the dev split"})
    seed: int = 42
    out: str = "runs/dev-split"


@dataclass
class MineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/candidates"
    k: int = field(default=100, metadata={"help": "documents retrieved per query"})
    k1: float = field(default=0.9, metadata={"help": "BM25 k1 (Pyserini's BEIR setting)"})
    b: float = field(default=0.4, metadata={"help": "BM25 b (Pyserini's BEIR setting)"})
    ties: str = field(
        default="bm25s",
        metadata={
            "help": "order of documents with equal BM25 scores: bm25s (bm25s' own order; the candidates of "
            "earlier versions) or row (corpus order; ~10x faster per query on MS MARCO-sized corpora)"
        },
    )
    batch_size: int = field(default=256, metadata={"help": "texts per forward pass of a dense retriever"})
    retrievers: list[str] = field(
        default_factory=lambda: ["bm25s"],
        metadata={
            "help": "candidate sources, merged: bm25s, pyserini-bm25, run:FILE (a TREC run) or a dense model "
            "(hub id or folder) searching its cached corpus embeddings; the source column records which found each"
        },
    )
    index: IndexConfig = field(
        default_factory=lambda: IndexConfig(), metadata={"help": "the dense retrievers' index (as evaluate's)"}
    )
    index_dir: str | None = field(
        default=None, metadata={"help": "a saved faiss-factory index to reuse (or to save), as evaluate --index-dir"}
    )
    embeddings: str | None = field(
        default=None, metadata={"help": "corpus-embedding cache folder (default: $RETRODISTILL_CACHE/embeddings)"}
    )
    device: str | None = field(default=None, metadata={"help": "device of a dense retriever (default: auto)"})
    from_candidates: str | None = field(
        default=None,
        metadata={"help": "filter this candidates artifact instead of retrieving (the rules below, no new search)"},
    )
    teacher_scores: str | None = field(
        default=None, metadata={"help": "teacher-score store of from_candidates, for the teacher_* rules"}
    )
    rank_min: int = field(default=1, metadata={"help": "negatives ranked above this by their source are dropped"})
    rank_max: int | None = field(default=None, metadata={"help": "negatives ranked below this are dropped (null: k)"})
    absolute_margin: float | None = field(
        default=None, metadata={"help": "drop negatives scoring above the query's positive minus this (source scale)"}
    )
    relative_margin: float | None = field(
        default=None,
        metadata={"help": "drop negatives scoring above (1 - this) x the positive's score (0.05: NV-Retriever)"},
    )
    teacher_max_score: float | None = field(
        default=None, metadata={"help": "drop negatives the teacher scores above this (needs teacher_scores)"}
    )
    teacher_margin: float | None = field(
        default=None,
        metadata={"help": "drop negatives the teacher scores above its positive's score minus this (teacher_scores)"},
    )


@dataclass
class TeacherConfig:
    name: str = "cross-encoder"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreTeacherConfig:
    data: DataConfig = field(default_factory=DataConfig)
    candidates: str | None = field(default="runs/candidates", metadata={"help": "candidates artifact"})
    triples: str | None = field(default=None, metadata={"help": "MS MARCO id triples TSV instead of candidates"})
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    out: str = "runs/teacher-scores"
    part_size: int = field(default=50_000, metadata={"help": "pairs per part file (the unit of resumption)"})


@dataclass
class StudentConfig:
    model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "hub id or path of the student"}
    )
    layers: int | None = field(
        default=None, metadata={"help": "keep only the first k transformer layers (DistilBERT recipe)"}
    )
    max_seq_length: int | None = 256
    similarity: str = field(default="cosine", metadata={"help": "student score: dot or cosine"})
    scale: float = field(default=1.0, metadata={"help": "student scores are scale * similarity"})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "let the student model run its own Python code (never by default)"}
    )


@dataclass
class LossConfig:
    """A registered loss and its parameters (``retrodistill plugins`` lists them).

    ``combined`` takes ``params: {terms: [{name, weight, params, label}, ...]}``, a weighted sum of
    other losses, each logged as ``loss_<label>`` in ``train_log.json``.
    """

    name: str = field(default="margin-mse", metadata={"help": "registered loss name, e.g. margin-mse, combined"})
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherEmbeddingsConfig:
    """The dense teacher's stored embeddings, for embedding-level distillation (loss ``embedding``).

    ``path`` is a teacher-embedding store (``retrodistill embed-teacher`` writes one, see
    :mod:`retrodistill.stages.embed_teacher`); when it holds none yet, ``model`` (a sentence-transformers
    bi-encoder) computes one there first, with the same stage function.
    """

    path: str | None = field(default=None, metadata={"help": "teacher-embedding store directory"})
    model: str | None = field(
        default=None, metadata={"help": "bi-encoder teacher that computes the store when it is missing"}
    )
    similarity: str = field(
        default="cosine", metadata={"help": "the teacher's similarity: cosine stores L2-normalised vectors"}
    )
    batch_size: int = 64
    max_length: int | None = None


@dataclass
class EmbedTeacherConfig:
    """``retrodistill embed-teacher``: a bi-encoder teacher's vectors (see :mod:`retrodistill.stages.embed_teacher`)."""

    data: DataConfig = field(default_factory=DataConfig)
    candidates: str | None = field(
        default=None,
        metadata={"help": "candidates artifact: embed its queries and their pool documents (default: whole corpus)"},
    )
    negative_pool: int = field(default=30, metadata={"help": "with candidates: negatives of rank <= this"})
    model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "bi-encoder teacher (hub id or path)"}
    )
    similarity: str = field(default="cosine", metadata={"help": "cosine stores L2-normalised vectors"})
    batch_size: int = 64
    max_length: int | None = None
    out: str = "runs/teacher-embeddings"
    embedding_cache_dir: str | None = field(
        default=None, metadata={"help": "corpus-embedding cache shared with evaluate ($RETRODISTILL_CACHE/embeddings)"}
    )
    embedding_dtype: str = "float32"


@dataclass
class PseudoQueriesConfig:
    """The ``corpus`` stage's pseudo-queries: random word spans of its documents (:mod:`.train.pseudo_queries`)."""

    per_document: int = field(default=1, metadata={"help": "random crops per document, drawn afresh each epoch"})
    min_words: int = field(default=4, metadata={"help": "shortest crop, in words"})
    max_words: int = field(default=16, metadata={"help": "longest crop, in words (capped at the document's length)"})
    titles: bool = field(default=True, metadata={"help": "a document's non-empty title is one more pseudo-query"})


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    store: str | None = field(
        default="runs/teacher-scores",
        metadata={"help": "teacher-score store (null for teacher-free losses, which then need candidates)"},
    )
    stage: str = field(
        default="queries",
        metadata={
            "help": "queries: (query, 1+N documents) examples; corpus: the corpus's documents alone "
            "(embedding distillation over the unlabeled corpus)"
        },
    )
    corpus_documents: int | None = field(
        default=None, metadata={"help": "corpus stage: train on this many documents, drawn with the seed"}
    )
    corpus_texts: list[str] = field(
        default_factory=lambda: ["documents"],
        metadata={
            "help": "corpus stage: the texts distilled, any of documents, queries (the split's training "
            "queries), pseudo-queries (random crops and titles of the drawn documents)"
        },
    )
    pseudo_queries: PseudoQueriesConfig = field(
        default_factory=PseudoQueriesConfig, metadata={"help": "corpus stage: how pseudo-queries are cropped"}
    )
    teacher_embeddings: TeacherEmbeddingsConfig = field(default_factory=TeacherEmbeddingsConfig)
    candidates: str | None = field(
        default=None, metadata={"help": "candidates artifact (default: the one the store was scored from)"}
    )
    pair_store: str | None = field(
        default=None,
        metadata={"help": "score-pairwise store, read when the loss needs pairwise probabilities (pairwise-kl)"},
    )
    out: str = "runs/student"
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    negatives: int = field(default=7, metadata={"help": "negatives per training example (N of 1+N)"})
    negative_pool: int = field(default=30, metadata={"help": "sample negatives from a query's top-k candidates"})
    epochs: int = field(default=1, metadata={"help": "passes over the positives, fresh negatives each pass"})
    negative_sampling: str = field(
        default="random",
        metadata={
            "help": "how the N negatives are drawn from the pool: random (uniform), top (the N best-ranked), "
            "log_random (weight 1/log2(rank+1)), top_and_random (N//2 best-ranked, the rest uniform); "
            "unranked pool rows count as the last ranks (retrodistill/train/sampling.py)"
        },
    )
    batch_sampling: str = field(
        default="random",
        metadata={
            "help": "random (the trainer shuffles) or tas-balanced (Hofstaetter et al. 2021): each batch from one "
            "k-means cluster of the training queries, negatives balanced over bins of the teacher's margin"
        },
    )
    tas_clusters: int = field(
        default=2000,
        metadata={
            "help": "tas-balanced: k-means clusters of the training queries (on the initial student's embeddings), "
            "at most queries / (4 x batch_size x processes)"
        },
    )
    tas_margin_bins: int = field(
        default=10,
        metadata={"help": "tas-balanced: equal-width bins of the teacher's margin (positive - negative score)"},
    )
    train_max_seq_length: int | None = field(
        default=None,
        metadata={"help": "truncate texts to this many tokens while training; the saved student keeps its own"},
    )
    max_steps: int = -1
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 autocast (CPU or GPU); fp32 master weights, scores and loss in fp32"},
    )
    fp16: bool = field(default=False, metadata={"help": "fp16 autocast with a loss scaler (CUDA only)"})
    logging_steps: int = 10
    report_to: list[str] = field(
        default_factory=list,
        metadata={
            "help": "also log every loss term and eval figure to: tensorboard (.OUT.training/logs, then OUT/logs), "
            "wandb (run named after OUT); []: train_log.json only"
        },
    )
    dataloader_num_workers: int = field(
        default=0,
        metadata={"help": "processes that look up texts and tokenise batches while the model trains (0: the main one)"},
    )
    save_steps: int | None = field(
        default=None,
        metadata={
            "help": "save a checkpoint every this many steps (and at the end) in the staging folder beside out, "
            "so a re-run of the same command resumes from it; null: no checkpoints"
        },
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "keep only the newest this many complete checkpoints (null: all)"}
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate the student every this many steps (null: never); figures go to the log"},
    )
    eval_holdout: int = field(
        default=0,
        metadata={
            "help": "hold this many training queries out of training (drawn with the seed) as a dev split; "
            "with a teacher store they also give the teacher-student Kendall tau / Spearman diagnostic"
        },
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "BEIR name or folder to evaluate on (null: the held-out training queries)"}
    )
    eval_split: str = field(default="dev", metadata={"help": "split of eval_dataset"})
    eval_queries: int | None = field(
        default=200, metadata={"help": "evaluate at most this many queries, drawn with the seed (null: all)"}
    )
    eval_corpus: str = field(
        default="candidates",
        metadata={
            "help": "candidates: rank each query's candidates (cheap on large corpora); full: search the whole corpus"
        },
    )
    eval_candidates: str | None = field(
        default=None, metadata={"help": "candidates artifact of eval_dataset's split, for eval_corpus: candidates"}
    )
    eval_measures: list[str] = field(
        default_factory=lambda: ["nDCG@10", "RR@10"], metadata={"help": "ir-measures strings to log"}
    )
    load_best_model_at_end: bool = field(
        default=False,
        metadata={
            "help": "publish the checkpoint best on metric_for_best_model (needs save_steps, a multiple of eval_steps)"
        },
    )
    metric_for_best_model: str = field(
        default="nDCG@10", metadata={"help": "an eval_measures entry, kendall_tau or spearman"}
    )
    stages: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "a multi-stage recipe: each entry a stage's name and the keys it changes, each stage "
            "starting from the previous one's student (retrodistill/train/multistage.py); []: one stage"
        },
    )


@dataclass
class IndexConfig:
    """The dense index that evaluation searches: a registered backend and its parameters.

    ``faiss-flat-ip`` (exact inner product, the default) or ``faiss-factory`` with a FAISS factory
    string and its search parameters, e.g. ``params: {factory: "HNSW32,Flat", efSearch: 128}``
    (:mod:`retrodistill.index.faiss_factory`); ``retrodistill plugins`` lists every parameter.
    """

    name: str = field(default="faiss-flat-ip", metadata={"help": "registered index backend"})
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    """``retrodistill evaluate``: models × datasets → one table (see :mod:`retrodistill.evaluate.suite`).

    ``model`` is the default single model; ``models`` (when non-empty) replaces it, and with ``runs``
    and no ``models`` only the runs are scored. ``split`` and
    ``rel_threshold`` left ``None`` take each dataset's registry default (test / 1; 2 for TREC DL).
    """

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    models: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # TREC run files, [NAME=]FILE, scored as they are
    qrels: str | None = None  # [NAME=]FILE: score runs against these judgments alone (no dataset)
    beir: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    ignore_identical_ids: bool | None = None  # None: each dataset's registered rule, else keep
    data_dir: str | None = None
    split: str | None = None
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10", "R@100", "R@1000"])
    rel_threshold: int | None = None
    k: int = 1000
    batch_size: int = 64
    out: str = "runs/eval"
    baseline: str | None = None
    rerank: str | None = None
    rerank_depth: int = 100
    cache_dir: str | None = None
    use_cache: bool = True
    embedding_cache_dir: str | None = None
    embedding_dtype: str = "float32"
    index: IndexConfig = field(default_factory=IndexConfig)
    index_dir: str | None = None  # a saved faiss-factory index: reused when it matches, else built there
    alpha: float = 0.05
    permutations: int = 10000
    seed: int = 0


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: may not be null")
    tp = inner
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 2e-4 (no dot) as a string; it is plainly meant as a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type[C], data: Mapping[str, Any], where: str) -> C:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where and not where.endswith(":") else where
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where and not where.endswith(":") else f"{where}{name}"
        kwargs[name] = _coerce(value, hints[name], path)
    return cls(**kwargs)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=value``; the value is read as YAML (``3`` → int, ``[a, b]`` → list, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. loss.name=listwise-kl")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return key, value


def flatten_options(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"split": "dev"}}`` → ``{"data.split": "dev"}``, dropping ``None`` (an option not given).

    A ``params`` mapping stays one value: plug-in parameters are not config fields.
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "params":
            flat.update(flatten_options(value, f"{path}."))
        elif value is not None:
            flat[path] = value
    return flat


def load_config(
    cls: type[C],
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from defaults < ``base`` < the YAML file < command-line ``options`` < ``--set`` overrides.

    ``options`` are typed values the command line already parsed (nested like the config; ``None``
    means not given): they are merged as values, never as ``--set`` strings, and an error in one says
    it came from the command line.
    """
    data: dict[str, Any] = {}
    if base:
        for key, value in base.items():
            _merge(data, key, value)
    where = ""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such config file")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{file}{line}: invalid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level")
        for key, value in loaded.items():
            _merge(data, key, value)
        where = f"{file}: "
    given = flatten_options(options or {})
    for key, value in given.items():
        _set_path(data, key, value)
    set_keys = set()
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value)
        set_keys.add(key)
    try:
        return _build(cls, data, "")
    except ConfigError as err:
        failing = str(err).split(":", 1)[0].split("[", 1)[0]
        if failing in set_keys:
            raise ConfigError(f"--set {err}") from None
        if failing in given:
            raise ConfigError(f"command-line option for {err}") from None
        raise ConfigError(f"{where}{err}") from None


def _merge(data: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Mapping) and isinstance(data.get(key), dict) and key not in ("params",):
        for k, v in value.items():
            _merge(data[key], k, v)
    else:
        data[key] = dict(value) if isinstance(value, Mapping) else value
