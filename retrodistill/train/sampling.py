"""Training-time sampling: which negatives an example gets, and which examples share a batch.

**Negative sampling** (``negative_sampling``) picks the ``N`` negatives of an example from its
query's pool (the negatives ranked within ``negative_pool``, then the unranked ones: judged
non-relevant and triples-file negatives, rank 0, which count as the pool's last ranks, in candidates
order). Every draw uses the one seeded ``random.Random`` of
:func:`~retrodistill.train.examples.build_examples`, so a seed gives the same examples.

============== ===================================================================================
name           the N negatives
============== ===================================================================================
random         uniform without replacement: ``rng.sample(pool, N)`` over the pool in candidates
               order (the default; the draw every earlier version made, bit for bit)
top            the N best-ranked: no randomness, the same negatives every epoch
log_random     without replacement, the negative at pool rank r (1 = best) weighted
               ``w(r) = 1 / log2(r + 1)`` (the DCG discount: 1, 0.63, 0.5, …; proportional to
               Lightning IR's ``1 / log(1 + r)``), as successive draws among those left
top_and_random the ``N // 2`` best-ranked, then ``N - N // 2`` uniform from the rest of the pool
               (Lightning IR's split; ``N = 1`` is one random negative)
============== ===================================================================================

**TAS-balanced batches** (``batch_sampling: tas-balanced``; Hofstätter et al. 2021, "Efficiently
Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling", SIGIR):

* *topic aware*: the training queries are clustered by k-means (FAISS, seeded:
  :func:`~retrodistill.index.kmeans.kmeans`) on the
  initial student's query embeddings (L2-normalised), computed once before training; each batch is
  drawn from one cluster (:func:`tas_batches`). The clusters are
  ``min(tas_clusters, queries // (4 * global batch))`` (:func:`tas_cluster_count`): on average a cluster
  holds at least 4 batches, so most batches are whole.
* *balanced*: each example's negatives are drawn over ``tas_margin_bins`` equal-width bins of the
  teacher's margin (positive score − negative score) between that example's smallest and largest
  margin: a bin uniformly among those with negatives left, then a negative uniformly within it
  (:func:`draw_margin_balanced`); negatives the teacher has not scored are never drawn. This replaces
  ``negative_sampling``, which must stay ``random``. Without a teacher-score store there is no margin:
  the batches stay topic aware and the negatives are drawn uniformly, with a logged note.

Every example is trained exactly once per pass and the pass has as many batches as the trainer's
shuffled one: a cluster's examples are cut into whole batches, and the clusters' remainders (fewer
than a batch each) are batched together in cluster order, so those few batches span two or three
neighbouring clusters. With an in-batch loss no text repeats within a batch (as sentence-transformers'
``NO_DUPLICATES``). Under ``torchrun`` each global batch (``batch_size`` × processes) comes from one
cluster and each rank trains a whole slice of it; every rank uses rank 0's clusters. The order depends
only on the seed and the clusters, so a resumed run skips the batches already trained and continues
the same sequence.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from retrodistill.config import TrainConfig
    from retrodistill.data.collections import Collection
    from retrodistill.train.examples import Examples

logger = logging.getLogger(__name__)

BATCH_SAMPLING = ("random", "tas-balanced")
#: On average a cluster holds at least this many (global) batches of queries.
TAS_BATCHES_PER_CLUSTER = 4


@dataclass(frozen=True)
class NegativeSampler:
    """One ``negative_sampling`` strategy: ``draw(pool, n, rng)`` returns ``n`` distinct pool rows.

    ``ranked``: the pool is passed best-ranked first (else in candidates order).
    """

    draw: Callable[[Sequence[int], int, random.Random], list[int]]
    ranked: bool


def _random(pool: Sequence[int], n: int, rng: random.Random) -> list[int]:
    return rng.sample(pool, n)  # type: ignore[arg-type]


def _top(pool: Sequence[int], n: int, rng: random.Random) -> list[int]:
    return list(pool[:n])


def _log_random(pool: Sequence[int], n: int, rng: random.Random) -> list[int]:
    # Efraimidis-Spirakis: key u^(1/w) with u uniform, the n largest keys, is a draw without
    # replacement with probabilities proportional to w among those left. In logs: log(u) / w, and
    # 1 / w(r) = log2(r + 1). 1 - random() lies in (0, 1], so the log is finite.
    keys = [math.log(1.0 - rng.random()) * math.log2(r + 2) for r in range(len(pool))]
    return [pool[i] for i in heapq.nlargest(n, range(len(pool)), key=keys.__getitem__)]


def _top_and_random(pool: Sequence[int], n: int, rng: random.Random) -> list[int]:
    top = n // 2
    return [*pool[:top], *rng.sample(pool[top:], n - top)]  # type: ignore[arg-type]


NEGATIVE_SAMPLING: dict[str, NegativeSampler] = {
    "random": NegativeSampler(_random, ranked=False),
    "top": NegativeSampler(_top, ranked=True),
    "log_random": NegativeSampler(_log_random, ranked=True),
    "top_and_random": NegativeSampler(_top_and_random, ranked=True),
}


def negative_sampler(name: str) -> NegativeSampler:
    """The strategy called ``name``; a one-line ``ValueError`` listing the allowed ones otherwise."""
    if name not in NEGATIVE_SAMPLING:
        raise ValueError(f"negative_sampling: unknown strategy {name!r}; allowed: {', '.join(NEGATIVE_SAMPLING)}")
    return NEGATIVE_SAMPLING[name]


def ranked_order(ranks: np.ndarray) -> np.ndarray:
    """Positions of a pool's rows best-ranked first: rank 1, 2, …, then the unranked (rank 0) in their order."""
    ranks = np.asarray(ranks, dtype=np.int64)  # an int32 column would wrap the unranked's key
    keys = np.where(ranks > 0, ranks, np.iinfo(np.int64).max)
    return np.argsort(keys, kind="stable")


def draw_margin_balanced(pool: Sequence[int], margins: np.ndarray, n: int, bins: int, rng: random.Random) -> list[int]:
    """``n`` distinct rows of ``pool``, balanced over ``bins`` equal-width bins of their ``margins``.

    Args:
        pool: candidate rows, ``len(pool) >= n``.
        margins: ``(len(pool),)`` finite teacher margins (positive's score − each negative's).
        bins: the range ``[min, max]`` of ``margins`` is cut into this many equal-width bins (the
            last one closed); all margins equal: one bin.

    Each negative: a bin uniformly among those with rows left, then a row uniformly within it.
    """
    lo, hi = float(margins.min()), float(margins.max())
    if hi > lo:
        index = np.minimum(((margins - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1).tolist()
    else:
        index = [0] * len(pool)
    members: list[list[int]] = [[] for _ in range(bins)]
    for row, b in zip(pool, index, strict=True):
        members[b].append(row)
    filled = [group for group in members if group]
    drawn = []
    for _ in range(n):
        b = rng.randrange(len(filled))
        group = filled[b]
        drawn.append(group.pop(rng.randrange(len(group))))
        if not group:
            filled.pop(b)
    return drawn


def check_sampling(config: TrainConfig) -> None:
    """Refuse unknown or contradictory sampling settings (one-line ``ValueError``), before anything loads."""
    negative_sampler(config.negative_sampling)
    if config.batch_sampling not in BATCH_SAMPLING:
        raise ValueError(
            f"batch_sampling: unknown strategy {config.batch_sampling!r}; allowed: {', '.join(BATCH_SAMPLING)}"
        )
    for key in ("tas_clusters", "tas_margin_bins"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a whole number of at least 1, got {value!r}")
    if config.batch_sampling == "tas-balanced":
        if config.stage != "queries":
            raise ValueError("batch_sampling tas-balanced clusters training queries: it needs stage: queries")
        if config.negative_sampling != "random":
            raise ValueError(
                f"negative_sampling {config.negative_sampling!r} does not combine with batch_sampling tas-balanced, "
                "which draws the negatives itself (balanced over teacher-margin bins): set negative_sampling: random"
            )


def tas_cluster_count(requested: int, queries: int, global_batch: int) -> int:
    """``min(requested, queries // (4 * global_batch))``, at least 1: clusters a few batches large."""
    return max(1, min(requested, queries // (TAS_BATCHES_PER_CLUSTER * global_batch)))


def _pack(indices: list[int], size: int, keys: np.ndarray | None) -> tuple[list[list[int]], list[int]]:
    """Whole batches of ``size`` taken in order from ``indices``, and what is left (in order).

    With ``keys`` (``(n, m)`` integers per example), a batch never holds two examples sharing a key:
    an example that would is deferred to a later batch, as sentence-transformers' ``NO_DUPLICATES``.
    """
    if keys is None:
        whole = len(indices) // size * size
        return [indices[i : i + size] for i in range(0, whole, size)], indices[whole:]
    batches: list[list[int]] = []
    remaining = indices
    while len(remaining) >= size:
        batch: list[int] = []
        seen: set[int] = set()
        deferred: list[int] = []
        for position, index in enumerate(remaining):
            if len(batch) == size:
                deferred.extend(remaining[position:])
                break
            row = keys[index].tolist()
            if seen.isdisjoint(row):
                batch.append(index)
                seen.update(row)
            else:
                deferred.append(index)
        if len(batch) < size:  # no duplicate-free batch left among these
            break
        batches.append(batch)
        remaining = deferred
    return batches, remaining


def _clashes(keys: np.ndarray, members: list[int], index: int) -> bool:
    """Whether example ``index`` shares a key with one of ``members``."""
    own = set(keys[index].tolist())
    return any(not own.isdisjoint(keys[m].tolist()) for m in members)


def _repair(batch: list[int], done: list[list[int]], keys: np.ndarray) -> bool:
    """Swap each example of ``batch`` that repeats a key with one of ``done`` (latest batch first) that fits.

    Both batches end free of repeats; ``False`` when some example found no partner. Only the last,
    left-over examples of a pass need this, so the search is short.
    """
    for p in range(len(batch)):
        others = batch[:p] + batch[p + 1 :]
        if not _clashes(keys, others, batch[p]):
            continue
        for earlier in reversed(done):
            j = next(
                (
                    j
                    for j, x in enumerate(earlier)
                    if not _clashes(keys, earlier[:j] + earlier[j + 1 :], batch[p]) and not _clashes(keys, others, x)
                ),
                None,
            )
            if j is not None:
                earlier[j], batch[p] = batch[p], earlier[j]
                break
        else:
            return False
    return True


def tas_batches(
    clusters: np.ndarray, size: int, seed: int, *, keys: np.ndarray | None = None, drop_last: bool = False
) -> list[list[int]]:
    """One pass over every example, in batches of ``size`` drawn from one cluster each where possible.

    Each cluster's examples (shuffled) are cut into whole batches; the remainders of all clusters,
    taken cluster after cluster, make the last few whole batches, and what is left then is the one
    short batch (dropped with ``drop_last``). So there are ``ceil(n / size)`` batches (``n // size``
    with ``drop_last``), as in a shuffled pass. Whole batches come in a seeded random order, the
    short one last.

    With ``keys`` no batch repeats a key: an example that would is deferred to a later batch, and the
    few left at the end that cannot make a batch without a repeat are swapped with examples of the
    last-made batches (mixed-cluster ones first); should that fail, the batch keeps its repeat (logged).

    Args:
        clusters: ``(n,)`` the cluster of each example.
        size: examples per batch (the global batch under ``torchrun``).
        seed: the pass's seed (the trainer's seed plus its epoch).
        keys: ``(n, m)`` integers naming each example's texts, for in-batch losses; ``None``: no check.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clusters))
    shuffled = np.asarray(clusters)[order]
    grouped = order[np.argsort(shuffled, kind="stable")]  # by cluster, shuffled within
    ids, starts = np.unique(np.sort(shuffled), return_index=True)
    bounds = np.append(starts, len(grouped))
    whole: list[list[int]] = []
    rest: list[int] = []
    for c in rng.permutation(len(ids)).tolist():
        batches, left = _pack(grouped[bounds[c] : bounds[c + 1]].tolist(), size, keys)
        whole += batches
        rest += left
    batches, left = _pack(rest, size, keys)
    whole += batches
    chunks = [left[i : i + size] for i in range(0, len(left), size)]  # with keys, more than one short batch
    short = chunks.pop() if chunks and len(chunks[-1]) < size else []
    repeats = 0
    for chunk in [*chunks, *([short] if short and not drop_last else [])]:
        if keys is not None and not _repair(chunk, whole, keys):
            repeats += 1
        if chunk is not short:
            whole.append(chunk)
    if repeats:
        logger.warning("tas-balanced: %d batch(es) repeat a text: too few distinct texts left to avoid it", repeats)
    whole = [whole[i] for i in rng.permutation(len(whole)).tolist()]
    if short and not drop_last:
        whole.append(short)
    return whole


def duplicate_keys(dataset: Any) -> np.ndarray:
    """``(n, 2 + N)`` integers naming each row's texts: ``-1 - query_row`` and the documents' corpus rows."""
    table = dataset.data  # the stored integer rows, not the text transform's output
    queries = np.asarray(table.column("query_row").to_numpy(), dtype=np.int64)
    docs = table.column("doc_rows").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.concatenate([-1 - queries[:, None], np.asarray(docs, dtype=np.int64).reshape(len(queries), -1)], axis=1)


@functools.cache
def tas_sampler_class() -> type:
    """:class:`TasBatchSampler`, built on first use (sentence-transformers imports torch)."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class TasBatchSampler(DefaultBatchSampler):  # type: ignore[misc]
        """The trainer's batch sampler for ``tas-balanced``: :func:`tas_batches` of each pass.

        Pass it as ``functools.partial(TasBatchSampler, clusters=…, keys=…, world_size=W)``; the other
        arguments are the trainer's. Global batches of ``batch_size * world_size`` come from one cluster
        and are yielded as ``world_size`` consecutive slices of ``batch_size``, which the trainer deals
        to the ranks in turn (as :class:`retrodistill.train.distributed.RankSlices`).
        """

        def __init__(
            self,
            dataset: Any,
            batch_size: int,
            drop_last: bool,
            valid_label_columns: list[str] | None = None,
            generator: Any = None,
            seed: int = 0,
            *,
            clusters: np.ndarray,
            keys: np.ndarray | None = None,
            world_size: int = 1,
        ) -> None:
            super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
            if len(clusters) != len(dataset):
                raise ValueError(f"tas-balanced: {len(clusters)} cluster labels for a dataset of {len(dataset)} rows")
            self.clusters = np.asarray(clusters)
            self.keys = keys
            self.world_size = world_size

        def __iter__(self) -> Any:
            size = self.batch_size * self.world_size
            for batch in tas_batches(
                self.clusters, size, self.seed + self.epoch, keys=self.keys, drop_last=self.drop_last
            ):
                for start in range(0, len(batch), self.batch_size):
                    yield batch[start : start + self.batch_size]

        def __len__(self) -> int:
            size = self.batch_size * self.world_size
            n = len(self.clusters)
            whole, short = divmod(n, size)
            slices = whole * self.world_size
            if short and not self.drop_last:
                slices += -(-short // self.batch_size)
            return slices

    return TasBatchSampler


def _rank_zero(labels: np.ndarray) -> np.ndarray:
    """Rank 0's ``labels`` on every rank of a launched run; unchanged in a single process.

    The process group exists once the trainer's arguments are built.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return labels
    holder: list[Any] = [labels if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return np.asarray(holder[0])


def tas_batch_sampler(
    model: Any,
    collection: Collection,
    examples: Examples,
    dataset: Any,
    config: TrainConfig,
    *,
    world_size: int,
    in_batch: bool,
) -> tuple[Any, dict[str, Any]]:
    """The trainer's ``batch_sampler`` for ``tas-balanced``, and what the manifest records of it.

    Encodes the training queries with ``model`` (the student before training) and clusters them;
    called after the trainer's arguments are built, so that every rank can take rank 0's clusters.
    """
    import torch

    from retrodistill.data.encoding import encode_texts

    texts = [collection.queries[q] for q in examples.query_ids]
    global_batch = config.batch_size * world_size
    k = tas_cluster_count(config.tas_clusters, len(texts), global_batch)
    # Encoding draws no randomness, but the trainer's RNG stream must not depend on it.
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        vectors = encode_texts(model, texts, "query", batch_size=max(config.batch_size, 64))
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    from retrodistill.index.kmeans import kmeans

    labels = _rank_zero(kmeans(vectors, k, config.seed))
    sampler = functools.partial(
        tas_sampler_class(),
        clusters=labels[examples.query_rows],
        keys=duplicate_keys(dataset) if in_batch else None,
        world_size=world_size,
    )
    sizes = np.bincount(labels, minlength=k)
    record = {
        "clusters": int(k),
        "clusters_requested": config.tas_clusters,
        "cluster_source": "the initial student's query embeddings (L2-normalised), k-means",
        "queries_per_cluster": {"min": int(sizes.min()), "max": int(sizes.max())},
        "margin_bins": config.tas_margin_bins,
    }
    return sampler, record
