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

The stage that runs it over each query's top-m candidates and writes a pair store is
:mod:`retrodistill.stages.score_pairwise` (``retrodistill score-pairwise``).

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrodistill.registry import Registry
from retrodistill.teachers.base import check_pairs, pair_progress
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher, _batches, _Tokens

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
