"""Pseudo-queries for the ``corpus`` stage: random word spans of the documents, and their titles.

A student distilled on documents alone learns where the teacher puts documents, never where it puts
queries, which are shorter and read differently. Training queries teach that side but are few;
pseudo-queries make more from the corpus itself, as Contriever makes training queries without
labels by *random cropping*: a random contiguous span of a document's words stands in for a query
(Izacard et al., 2022). Contriever draws a span's length as a share of the document; here it is
drawn in words, uniform in ``[min_words, max_words]`` and capped at the document's length, so a
crop is as long as a query whatever the document's length. Its start is uniform among the
positions where it fits.

Each document gives ``per_document`` crops per epoch, drawn afresh every epoch (epochs differ, as
the ``queries`` stage draws fresh negatives each epoch), and with ``titles`` its non-empty title,
once per epoch. Crops come from the document's body (``Document.text``), split on whitespace and
joined with single spaces. The draw is seeded: epoch ``e`` uses its own ``random.Random``, seeded
with the run's seed and ``e``, so a seed gives the same texts and epoch ``e``'s crops do not
depend on how many epochs the run has.

The teacher embeds pseudo-queries as queries (``encode_query``, the store's ``queries`` side): the
student learns to place them where the teacher places queries. Their ids are content-addressed,
``"pseudo:" + sha1(text)[:16]``, so identical texts share one id and embedding, and a
teacher-embedding store computed for other crops (another seed, other settings, another corpus)
lacks this run's ids and is refused, never silently reused.

Reference:
    Izacard et al., *Unsupervised Dense Information Retrieval with Contrastive Learning*, TMLR 2022.
    https://arxiv.org/abs/2112.09118
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from retrodistill.config import PseudoQueriesConfig
from retrodistill.data.collections import Collection

PREFIX = "pseudo:"


@dataclass(frozen=True)
class PseudoQueries:
    """The pseudo-queries of a run: ``texts`` (id -> text, every epoch's) and each epoch's ids.

    ``epochs[e]`` lists epoch ``e``'s pseudo-queries in draw order, document by document: its crops,
    then its title. A text drawn twice is listed twice (trained on twice), under one id.
    """

    texts: dict[str, str]
    epochs: list[list[str]]


def pseudo_query_id(text: str) -> str:
    """The content-addressed id of a pseudo-query: ``"pseudo:"`` and the first 16 hex digits of its SHA-1."""
    return PREFIX + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def is_pseudo_query_id(query_id: str) -> bool:
    return query_id.startswith(PREFIX)


def check_settings(settings: PseudoQueriesConfig) -> None:
    """Refuse settings that crop nothing sensible, each with a one-line ``ValueError``."""
    for key in ("per_document", "min_words", "max_words"):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"pseudo_queries.{key} must be a whole number of at least 1, got {value!r}")
    if settings.min_words > settings.max_words:
        raise ValueError(
            f"pseudo_queries.min_words ({settings.min_words}) must not exceed "
            f"pseudo_queries.max_words ({settings.max_words})"
        )


def crop(words: Sequence[str], settings: PseudoQueriesConfig, rng: random.Random) -> str:
    """A random contiguous span of ``words``: length uniform in ``[min_words, max_words]``, at most ``len(words)``."""
    length = min(rng.randint(settings.min_words, settings.max_words), len(words))
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start : start + length])


def pseudo_queries(
    collection: Collection, doc_ids: Sequence[str], settings: PseudoQueriesConfig, seed: int, epochs: int
) -> PseudoQueries:
    """The pseudo-queries of ``doc_ids`` for ``epochs`` epochs (module docstring), drawn with ``seed``.

    Args:
        collection: Where the documents are read from.
        doc_ids: The documents to crop, in the order they are drawn from.
        settings: Crops per document, their length in words, and whether titles are added.
        seed: The run's seed.
        epochs: How many epochs to draw (fresh crops each).

    Raises:
        ValueError: Settings :func:`check_settings` refuses, or ``epochs`` below 1.
    """
    check_settings(settings)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    # One generator per epoch, so epoch e's crops are the same in a run of any length.
    rngs = [random.Random(f"pseudo-queries {seed} {epoch}") for epoch in range(epochs)]
    texts: dict[str, str] = {}
    per_epoch: list[list[str]] = [[] for _ in range(epochs)]
    for doc_id in doc_ids:  # each document read once, at any corpus size
        document = collection.corpus[doc_id]
        words = document.text.split()
        title = " ".join(document.title.split()) if settings.titles else ""
        for rng, drawn in zip(rngs, per_epoch, strict=True):
            chosen = [crop(words, settings, rng) for _ in range(settings.per_document)] if words else []
            for text in [*chosen, title] if title else chosen:
                query_id = pseudo_query_id(text)
                texts.setdefault(query_id, text)
                drawn.append(query_id)
    return PseudoQueries(texts, per_epoch)
