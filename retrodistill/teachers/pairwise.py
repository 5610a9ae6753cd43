"""Pairwise teacher (PairDistill): a cross-encoder over ``(q, d_i, d_j)`` gives ``p_ij = P(d_i ≻ d_j | q)``.

The teacher (:class:`PairwiseCrossEncoderTeacher`) is a Hugging Face sequence-classification model
that reads the query and two documents in one input, duoBERT-style::

    [CLS] q [SEP] d_i [SEP] d_j [SEP]          (RoBERTa-like tokenizers: <s> q </s></s> d_i </s></s> d_j </s>)
    type   0 ...0  1 ...  1  2 ...  2          token types: (0, 1, 2) when the model has 3 types, else (0, 1, 1)

built from the tokenizer's own pair template (its prefix, separator and suffix). Truncation: the query
to ``query_max_tokens`` (62, duoBERT's), then the two documents share the rest longest-first (equal
halves when both are long), so swapping ``d_i`` and ``d_j`` swaps their tokens and nothing else. With
``max_length=512`` and long texts that is duoBERT's 62/223/223 split.

Its output is a probability, not a raw score: ``sigmoid(logit[0])`` for a one-logit model,
``softmax(logits)[1]`` for a two-logit one (class 1 = "d_i is the more relevant").

The stage (:func:`run`, ``retrodistill score-pairwise``) ranks each query's candidates by a pointwise
teacher-score store (or by mining rank), takes the comparisons among the top-m
(:func:`~retrodistill.data.pair_store.select_comparisons`) and writes a pair store
(:mod:`retrodistill.data.pair_store`) in resumable parts, as ``score-teacher`` does.

What this implements of PairDistill (Huang and Chen, EMNLP 2024; code MiuLab/PairDistill):

- Same: pairs among the top of the pointwise reranker's ranking; ``p_ij`` the pairwise reranker's
  probability that the first document is more relevant; the released code's optional restriction to
  pairs a few ranks apart (``max_rank_gap``; it pairs each document with the next 5 of the top 100).
- Different: the released code runs duoT5 (seq2seq; ``Query: q Document0: d_i Document1: d_j
  Relevant:``, ``P = softmax([logit "true", logit "false"])[0]``), which is not an
  ``AutoModelForSequenceClassification``; here any such checkpoint (safetensors, no remote code by
  default) in the duoBERT input layout is the teacher. It scores one order per pair (the higher-ranked
  document first) and samples 100 of the windowed pairs at random; here every pair of the top-m is
  kept (deterministic, resumable) and both orders are scored and averaged by default,
  ``p_ij = (P(i≻j) + 1 − P(j≻i)) / 2`` (``orders: symmetrised``), against position bias;
  ``orders: ranked`` is the released code's single order, ``orders: both`` keeps both raw.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import (
    MANIFEST,
    ArtifactMismatchError,
    check_inputs,
    now_iso,
    read_manifest,
    write_manifest,
)
from retrodistill.config import DataConfig, to_dict
from retrodistill.data.pair_store import (
    STAGE,
    Comparison,
    PairStore,
    check_orders,
    comparison_rows,
    comparisons_fingerprint,
    pair_rows_fingerprint,
    ranking_by_candidates,
    ranking_by_scores,
    select_comparisons,
    write_pair_part,
)
from retrodistill.data.store import part_name
from retrodistill.registry import Registry
from retrodistill.teachers.base import RUNTIME_FIELDS, check_pairs, pair_progress
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher, _batches, _Tokens
from retrodistill.teachers.scoring import _check_texts, _DocTexts, _part_is_complete

logger = logging.getLogger(__name__)

PAIRWISE_TEACHERS: Registry[type[PairwiseTeacher]] = Registry("pairwise teacher")


class PairwiseTeacher(abc.ABC):
    """A scorer of ``(query, doc_i, doc_j)`` triples: the probability that ``doc_i`` is more relevant."""

    @abc.abstractmethod
    def score(
        self, queries: Sequence[str], docs_i: Sequence[str], docs_j: Sequence[str], show_progress: bool = False
    ) -> np.ndarray:
        """float32 ``(len(queries),)``: ``P(docs_i[k] ≻ docs_j[k] | queries[k])`` in [0, 1], in input order."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identify the probabilities (written into the pair store's manifest, compared on resume)."""


def symmetrise(p_ij: np.ndarray, p_ji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove position bias: ``p = (P(i≻j) + 1 − P(j≻i)) / 2`` and its complement, as float32.

    Args:
        p_ij: ``P(i ≻ j)`` with ``d_i`` first in the input, shape ``(P,)``.
        p_ji: ``P(j ≻ i)`` with ``d_j`` first, same shape.

    Returns:
        ``(sym_ij, sym_ji)`` float32 with ``sym_ij + sym_ji == 1`` exactly: the larger of the two is
        rounded to float32 and the other is ``1 -`` it, which float32 represents exactly (Sterbenz).

    Example:
        >>> symmetrise(np.array([1.0]), np.array([0.5]))  # (1 + 1 - 0.5) / 2 = 0.75
        (array([0.75], dtype=float32), array([0.25], dtype=float32))
    """
    p = (np.asarray(p_ij, dtype=np.float64) + 1.0 - np.asarray(p_ji, dtype=np.float64)) / 2.0
    big = np.maximum(p, 1.0 - p).astype(np.float32)
    small = np.float32(1.0) - big
    upper = p >= 0.5
    return np.where(upper, big, small), np.where(upper, small, big)


@PAIRWISE_TEACHERS.register("pairwise-cross-encoder")
class PairwiseCrossEncoderTeacher(PairwiseTeacher):
    """``P(d_i ≻ d_j | q)`` from a sequence-classification model over the duoBERT input (module docstring).

    Loading, dtype, device, batching and the oneDNN path are :class:`CrossEncoderTeacher`'s (safetensors
    only; remote code only with ``trust_remote_code``); its arguments mean the same here.

    Args:
        model: Hugging Face Hub id or local directory of a 1- or 2-logit classification model.
        max_length: maximum tokens of a triple, special tokens included (capped at the model's positions).
        query_max_tokens: the query's share (duoBERT: 62); unused query tokens go to the documents.
        token_types: token type of the (query, d_i, d_j) segments; ``None``: ``(0, 1, 2)`` when the model
            has at least 3 token types, else ``(0, 1, 1)``. Ignored for tokenizers without token types.
        batch_size, dtype, device, trust_remote_code, max_tokens_per_batch, revision, linear_backend:
            as for :class:`CrossEncoderTeacher`.
    """

    def __init__(
        self,
        model: str,
        max_length: int = 512,
        query_max_tokens: int = 62,
        token_types: list[int] | None = None,
        batch_size: int = 32,
        dtype: str = "fp32",
        device: str | None = None,
        trust_remote_code: bool = False,
        max_tokens_per_batch: int | None = None,
        revision: str | None = None,
        linear_backend: str = "auto",
    ) -> None:
        # score_logit=0 is valid for any head; the pairwise head is checked below with its own message.
        self.encoder = CrossEncoderTeacher(
            model,
            max_length=max_length,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            max_tokens_per_batch=max_tokens_per_batch,
            score_logit=0,
            revision=revision,
            linear_backend=linear_backend,
        )
        self.num_labels = self.encoder.num_labels
        if self.num_labels not in (1, 2):
            raise ValueError(
                f"{model} has {self.num_labels} output logits; a pairwise teacher needs 1 (sigmoid) or 2 "
                "(softmax, class 1 = first document more relevant)"
            )
        if query_max_tokens < 1:
            raise ValueError(f"query_max_tokens must be positive, got {query_max_tokens}")
        self.query_max_tokens = query_max_tokens
        self.template = _Template.probe(self.encoder.tokenizer)
        self.max_length = self.encoder.max_length
        if self.max_length < self.template.special_tokens + 3:
            raise ValueError(
                f"max_length {self.max_length} leaves no room for a query and two documents "
                f"({self.template.special_tokens} special tokens)"
            )
        self.uses_token_types = "token_type_ids" in self.encoder.tokenizer.model_input_names
        type_count = int(getattr(self.encoder.model.config, "type_vocab_size", 0) or 0)
        if token_types is None:
            token_types = [0, 1, 2] if type_count >= 3 else [0, 1, 1]
        if len(token_types) != 3 or (self.uses_token_types and not all(0 <= t < type_count for t in token_types)):
            raise ValueError(
                f"token_types must be 3 types below the model's type_vocab_size ({type_count}), got {token_types}"
            )
        self.token_types = [int(t) for t in token_types]

    def describe(self) -> dict[str, Any]:
        info = self.encoder.describe()
        info.pop("score")
        t = self.template
        prefix, middle, suffix = (self._token_names(ids) for ids in (t.prefix, t.middle, t.suffix))
        layout = " ".join([*prefix, "q", *middle, "d_i", *middle, "d_j", *suffix])
        info.update(
            {
                "name": "pairwise-cross-encoder",
                "probability": "sigmoid(logit[0])" if self.num_labels == 1 else "softmax(logits)[1]",
                "input": layout,
                "token_types": self.token_types if self.uses_token_types else None,
                "query_max_tokens": self.query_max_tokens,
                "truncation": "query to query_max_tokens, then documents longest-first",
            }
        )
        return info

    def _token_names(self, ids: np.ndarray) -> list[str]:
        names = self.encoder.tokenizer.convert_ids_to_tokens(ids.tolist())
        return [names] if isinstance(names, str) else list(names)

    def features(self, query: str, doc_i: str, doc_j: str) -> dict[str, list[int]]:
        """The model input of one triple (``input_ids`` and, where used, ``token_type_ids``), unpadded."""
        tokens = self._tokenize([query], [doc_i], [doc_j])
        end = int(tokens.offsets[1])
        return {name: flat[:end].tolist() for name, flat in tokens.fields.items()}

    def score(
        self, queries: Sequence[str], docs_i: Sequence[str], docs_j: Sequence[str], show_progress: bool = False
    ) -> np.ndarray:
        import torch

        check_pairs(queries, docs_i)
        check_pairs(queries, docs_j)
        unique: dict[tuple[str, str, str], int] = {}
        inverse = np.fromiter(
            (unique.setdefault(t, len(unique)) for t in zip(queries, docs_i, docs_j, strict=True)),
            np.int64,
            count=len(queries),
        )
        if not unique:
            return np.zeros(0, dtype=np.float32)
        triples = list(unique)
        tokens = self._tokenize([q for q, _, _ in triples], [a for _, a, _ in triples], [b for _, _, b in triples])
        probs = np.empty(len(triples), dtype=np.float32)
        encoder, tokenizer = self.encoder, self.encoder.tokenizer
        # encoder.logits runs the encoder in the teacher's dtype and the head in fp32, so
        # probabilities are not rounded to bf16's 8 bits.
        with pair_progress(len(triples), "pairwise", show_progress) as advance:
            for rows in _batches(tokens.lengths, encoder.batch_size, encoder.max_tokens_per_batch):
                inputs = tokens.batch(rows, tokenizer.pad_token_id, tokenizer.padding_side)
                logits = encoder.logits(inputs)
                if self.num_labels == 1:
                    p = torch.sigmoid(logits[:, 0])
                else:
                    p = torch.softmax(logits, dim=-1)[:, 1]
                probs[rows] = p.cpu().numpy()
                advance(len(rows))
        return probs[inverse]

    def _tokenize(self, queries: list[str], docs_i: list[str], docs_j: list[str]) -> _Tokens:
        """Assemble the triples' inputs from each distinct text tokenized once (documents recur across pairs)."""
        query_index, query_ids = self._encode(queries)
        doc_index, doc_ids = self._encode(docs_i + docs_j)
        n = len(queries)
        a, b = doc_index[:n], doc_index[n:]
        t = self.template
        budget = self.max_length - t.special_tokens
        len_q = np.minimum(np.array([len(x) for x in query_ids])[query_index], min(self.query_max_tokens, budget - 2))
        doc_lengths = np.array([len(x) for x in doc_ids])
        len_a, len_b = _share(doc_lengths[a], doc_lengths[b], budget - len_q)
        pieces: list[np.ndarray] = []
        for k in range(n):
            pieces += [
                t.prefix,
                query_ids[query_index[k]][: len_q[k]],
                t.middle,
                doc_ids[a[k]][: len_a[k]],
                t.middle,
                doc_ids[b[k]][: len_b[k]],
                t.suffix,
            ]
        lengths = t.special_tokens + len_q + len_a + len_b
        fields = {"input_ids": np.concatenate(pieces).astype(np.int32)}
        if self.uses_token_types:
            # Each separator belongs to the segment it closes: [CLS] q [SEP] → query, d_i [SEP] → d_i, ...
            segments = np.stack(
                [len(t.prefix) + len_q + len(t.middle), len_a + len(t.middle), len_b + len(t.suffix)], axis=1
            )
            types = np.tile(np.array(self.token_types, dtype=np.int32), n)
            fields["token_type_ids"] = np.repeat(types, segments.ravel())
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return _Tokens(fields, offsets)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Token ids of each distinct text without special tokens; returns (text → distinct index, ids)."""
        distinct: dict[str, int] = {}
        index = np.fromiter((distinct.setdefault(s, len(distinct)) for s in texts), np.int64, count=len(texts))
        ids: list[np.ndarray] = []
        names = list(distinct)
        for start in range(0, len(names), 4096):
            encoded = self.encoder.tokenizer(
                names[start : start + 4096],
                add_special_tokens=False,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            ids.extend(np.asarray(seq, dtype=np.int32) for seq in encoded["input_ids"])
        return index, ids


def _share(len_a: np.ndarray, len_b: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest-first truncation of two documents into ``room`` tokens, symmetric in the two."""
    half = room // 2
    fits = len_a + len_b <= room
    new_a = np.where(fits | (len_a <= half), len_a, np.where(len_b <= half, room - len_b, half))
    new_b = np.where(fits | (len_b <= half), len_b, np.where(len_a <= half, room - len_a, half))
    return new_a, new_b


@dataclass(frozen=True)
class _Template:
    """The tokenizer's special tokens around a pair: ``prefix A middle B suffix``."""

    prefix: np.ndarray
    middle: np.ndarray
    suffix: np.ndarray

    @property
    def special_tokens(self) -> int:
        """Special tokens of a triple: ``prefix q middle d_i middle d_j suffix``."""
        return len(self.prefix) + 2 * len(self.middle) + len(self.suffix)

    @classmethod
    def probe(cls, tokenizer: Any) -> _Template:
        """Read the template off an encoded pair: the tokens that belong to neither sequence."""
        encoded = tokenizer("a", "b", add_special_tokens=True)
        try:
            sequence = encoded.sequence_ids(0)
        except (ValueError, AttributeError) as err:
            raise ValueError(
                f"{tokenizer.name_or_path}: a pairwise teacher needs a fast (Rust) tokenizer to find its pair template"
            ) from err
        ids = np.asarray(encoded["input_ids"], dtype=np.int32)
        first = [i for i, s in enumerate(sequence) if s == 0]
        second = [i for i, s in enumerate(sequence) if s == 1]
        return cls(ids[: first[0]], ids[first[-1] + 1 : second[0]], ids[second[-1] + 1 :])


@dataclass
class PairwiseTeacherConfig:
    name: str = "pairwise-cross-encoder"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScorePairwiseConfig:
    """``retrodistill score-pairwise``: the top-m comparisons of each query → a pair store."""

    data: DataConfig = field(default_factory=DataConfig)
    candidates: str | None = field(default=None, metadata={"help": "candidates artifact (ranked by mining rank)"})
    teacher_scores: str | None = field(
        default=None, metadata={"help": "teacher-score store: rank each query's candidates by its scores"}
    )
    teacher: PairwiseTeacherConfig = field(default_factory=PairwiseTeacherConfig)
    m: int = field(default=10, metadata={"help": "compare the top-m documents of each query"})
    max_rank_gap: int | None = field(default=None, metadata={"help": "only pairs at most this many ranks apart"})
    orders: str = field(default="symmetrised", metadata={"help": "symmetrised, both or ranked"})
    out: str = "runs/pair-scores"
    part_size: int = field(default=20_000, metadata={"help": "comparisons per part file (the unit of resumption)"})


def score_comparisons_to_store(
    teacher: PairwiseTeacher,
    comparisons: list[Comparison],
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    out_dir: str | os.PathLike[str],
    *,
    orders: str,
    part_size: int,
    inputs: dict[str, str],
    selection: dict[str, Any],
    config: dict[str, Any],
    show_progress: bool = True,
    stop_after_parts: int | None = None,
) -> PairStore:
    """Score ``comparisons`` into the pair store ``out_dir``, resuming it if it exists.

    Args:
        teacher: the pairwise scorer.
        comparisons: ``(query_id, doc_a, doc_b)``, ``doc_a`` ranked higher, from ``select_comparisons``.
        query_text: query id → text.
        doc_text: document id → text.
        out_dir: store directory (created if missing; resumed if it holds a manifest).
        orders: ``symmetrised``, ``both`` or ``ranked`` (see :mod:`retrodistill.data.pair_store`).
        part_size: comparisons per part file.
        inputs: fingerprints of what the comparisons and texts came from.
        selection: how the comparisons were chosen (``m``, ``ranked_by``, ``max_rank_gap``), recorded.
        config: the resolved stage config, recorded in the manifest.
        show_progress: show the teacher's progress bar.
        stop_after_parts: stop after scoring this many parts in this call (to test resumption).

    Raises:
        ValueError: no or repeated comparisons, an unknown text, a bad ``part_size`` or ``orders``.
        ArtifactMismatchError: ``out_dir`` holds a store made with another teacher, inputs, selection or parts.
    """
    check_orders(orders)
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not comparisons:
        raise ValueError("no comparisons to score (does any query have two candidates?)")
    if len({(q, *sorted((a, b))) for q, a, b in comparisons}) != len(comparisons):
        raise ValueError("comparisons must be distinct: each unordered pair of a query once")
    _check_texts([(q, d) for q, a, b in comparisons for d in (a, b)], query_text, doc_text)
    out = Path(out_dir)
    description = teacher.describe()
    num_parts = math.ceil(len(comparisons) / part_size)
    symmetrisation = "p_ij = (P(i>j) + 1 - P(j>i)) / 2; p_ji = 1 - p_ij" if orders == "symmetrised" else "none"
    fresh: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": description,
        "inputs": dict(inputs),
        **selection,
        "orders": orders,
        "symmetrisation": symmetrisation,
        "part_size": part_size,
        "num_parts": num_parts,
        "num_comparisons": len(comparisons),
        "num_rows": len(comparison_rows(comparisons, orders)),
        "comparisons_fingerprint": comparisons_fingerprint(comparisons),
    }
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_resumable(manifest, fresh, out)
        if manifest.get("complete") and all(_part_is_complete(out, i, manifest) for i in range(num_parts)):
            return PairStore.open(out)
        manifest["complete"] = False
        manifest.pop("fingerprint", None)
    else:
        manifest = {**fresh, "created": now_iso(), "parts": {}, "complete": False, "sessions": []}
    manifest["counts"] = {
        "comparisons": len(comparisons),
        "rows": fresh["num_rows"],
        "queries": len({q for q, _, _ in comparisons}),
        "parts": num_parts,
    }
    session: dict[str, Any] = {"started": now_iso(), "device": description.get("device"), "parts_scored": 0}
    manifest["sessions"].append(session)
    earlier = float(manifest.get("wall_time_s", 0.0))
    started = time.perf_counter()

    def save() -> None:
        session["wall_time_s"] = round(time.perf_counter() - started, 3)
        manifest["wall_time_s"] = round(earlier + session["wall_time_s"], 3)
        write_manifest(out, manifest)

    out.mkdir(parents=True, exist_ok=True)
    save()
    for index in range(num_parts):
        if _part_is_complete(out, index, manifest):
            continue
        if stop_after_parts is not None and session["parts_scored"] >= stop_after_parts:
            return PairStore(out, manifest)
        manifest["parts"].pop(part_name(index), None)
        chunk = comparisons[index * part_size : (index + 1) * part_size]
        t0 = time.perf_counter()
        probs = _score_chunk(teacher, chunk, orders, query_text, doc_text, show_progress)
        manifest["parts"][part_name(index)] = write_pair_part(out, index, comparison_rows(chunk, orders), probs)
        session["parts_scored"] += 1
        save()
        rate = len(probs) / max(time.perf_counter() - t0, 1e-9)
        logger.info("%s: part %d/%d scored (%d rows, %.1f rows/s)", out, index + 1, num_parts, len(probs), rate)
    store = PairStore(out, manifest)
    table = store.table()
    manifest["fingerprint"] = pair_rows_fingerprint(*(table.column(c).to_pylist() for c in table.column_names))
    manifest["complete"] = True
    save()
    return PairStore.open(out)


def _score_chunk(
    teacher: PairwiseTeacher,
    chunk: list[Comparison],
    orders: str,
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    show_progress: bool,
) -> np.ndarray:
    """Probabilities of the rows ``comparison_rows(chunk, orders)``, in that order."""
    queries = [query_text[q] for q, _, _ in chunk]
    first = [doc_text[a] for _, a, _ in chunk]
    second = [doc_text[b] for _, _, b in chunk]
    if orders == "ranked":
        probs = np.asarray(teacher.score(queries, first, second, show_progress=show_progress), dtype=np.float32)
        _check_probabilities(probs, len(chunk))
        return probs
    # One call for both orders, so the two inputs of a pair share length-sorted batches.
    both = np.asarray(
        teacher.score(queries + queries, first + second, second + first, show_progress=show_progress),
        dtype=np.float32,
    )
    _check_probabilities(both, 2 * len(chunk))
    p_ab, p_ba = both[: len(chunk)], both[len(chunk) :]
    if orders == "symmetrised":
        p_ab, p_ba = symmetrise(p_ab, p_ba)
    return np.stack([p_ab, p_ba], axis=1).ravel()  # rows (a, b), (b, a) per comparison


def _check_probabilities(probs: np.ndarray, expected: int) -> None:
    if probs.shape != (expected,):
        raise ValueError(f"pairwise teacher returned shape {probs.shape} for {expected} triples")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("pairwise teacher returned values outside [0, 1] (or NaN); expected probabilities")


def _check_resumable(manifest: Mapping[str, Any], fresh: Mapping[str, Any], out: Path) -> None:
    """Raise :class:`ArtifactMismatchError` naming every difference that forbids resuming ``out``."""
    if manifest.get("stage") != STAGE:
        raise ArtifactMismatchError(f"{out} holds a {manifest.get('stage')!r} artifact, not a pairwise store")
    differences = []
    for section in ("teacher", "inputs"):
        old, new = manifest.get(section, {}), fresh[section]
        for key in sorted((set(old) | set(new)) - (RUNTIME_FIELDS if section == "teacher" else set())):
            if old.get(key) != new.get(key):
                differences.append(f"{section}.{key}: store has {old.get(key)!r}, given {new.get(key)!r}")
    for key in sorted(set(fresh) - {"teacher", "inputs", "config"}):
        if manifest.get(key) != fresh[key]:
            differences.append(f"{key}: store has {manifest.get(key)!r}, given {fresh[key]!r}")
    if differences:
        raise ArtifactMismatchError(
            f"{out} is a pairwise store made differently, so it cannot be resumed:\n  "
            + "\n  ".join(differences)
            + "\nChoose a new --out to score afresh (or delete the directory)."
        )


def run(
    config: ScorePairwiseConfig, *, show_progress: bool = True, teacher: PairwiseTeacher | None = None
) -> PairStore:
    """The ``score-pairwise`` stage: the top-m comparisons of each query of a collection → a pair store.

    Recipe: load the collection; read the teacher-score store and/or the candidates, checking that they
    were made from this collection (and the store from these candidates); rank each query's documents
    by teacher score (else by mining rank); select the comparisons; score them in resumable parts.
    """
    from retrodistill.data.candidates import read_candidates
    from retrodistill.data.download import load_dataset
    from retrodistill.data.store import TeacherStore

    check_orders(config.orders)
    if config.teacher_scores is None and config.candidates is None:
        raise ValueError("score-pairwise needs a ranking: set `teacher_scores` (a teacher-score store) or `candidates`")
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    given = f"collection {config.data.dataset} ({config.data.split})"
    inputs = {"corpus": collection.fingerprints["corpus"], "queries": collection.fingerprints["queries"]}
    if config.candidates is not None:
        candidates = read_candidates(config.candidates)
        check_inputs(
            candidates.manifest.get("inputs", {}),
            collection.fingerprints,
            artifact=f"candidates {config.candidates}",
            given=given,
        )
        inputs["candidates"] = candidates.fingerprint
        ranking, ranked_by = ranking_by_candidates(candidates.rows), "candidates-rank"
    if config.teacher_scores is not None:
        store = TeacherStore.open(config.teacher_scores)
        artifact = f"teacher-score store {config.teacher_scores}"
        check_inputs(store.inputs, collection.fingerprints, artifact=artifact, given=given)
        if "candidates" in inputs:
            check_inputs(
                store.inputs,
                {"candidates": inputs["candidates"]},
                artifact=artifact,
                given=f"candidates {config.candidates}",
            )
        inputs["candidates"] = store.inputs.get("candidates", "unknown")
        inputs["teacher_scores"] = store.fingerprint
        ranking, ranked_by = ranking_by_scores(store.scores()), "teacher-scores"
    comparisons = select_comparisons(ranking, config.m, config.max_rank_gap)
    if teacher is None:
        teacher = PAIRWISE_TEACHERS.build(config.teacher.name, config.teacher.params)
    return score_comparisons_to_store(
        teacher,
        comparisons,
        collection.queries,
        _DocTexts(collection.corpus),
        config.out,
        orders=config.orders,
        part_size=config.part_size,
        inputs=inputs,
        selection={"m": config.m, "ranked_by": ranked_by, "max_rank_gap": config.max_rank_gap},
        config=to_dict(config),
        show_progress=show_progress,
    )
