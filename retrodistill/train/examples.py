"""Training examples for distillation: a query, 1 + N documents and the teacher's 1 + N scores.

For every judged positive of a query and every epoch, N negatives are drawn (without replacement,
seeded) from the query's negatives ranked within ``negative_pool`` (or unranked: judged non-relevant
documents and triples-file negatives); column 0 is the
positive. Drawing afresh each epoch shows the student more of the teacher's judgments.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from retrodistill.data.candidates import CandidateSet
from retrodistill.data.collections import Collection


@dataclass
class Examples:
    query: list[str] = field(default_factory=list)
    docs: list[list[str]] = field(default_factory=list)  # (n_examples, 1 + N)
    scores: list[list[float]] = field(default_factory=list)  # (n_examples, 1 + N)
    skipped_queries: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.query)

    def to_columns(self) -> dict[str, list[object]]:
        """Columns for a ``datasets.Dataset``: ``query``, ``doc_0`` … ``doc_N``, ``label``."""
        columns: dict[str, list[object]] = {"query": list(self.query)}
        width = len(self.docs[0]) if self.docs else 0
        for j in range(width):
            columns[f"doc_{j}"] = [row[j] for row in self.docs]
        columns["label"] = [list(row) for row in self.scores]
        return columns


def build_examples(
    collection: Collection,
    candidates: CandidateSet,
    teacher_scores: Mapping[tuple[str, str], float],
    *,
    negatives: int,
    negative_pool: int,
    epochs: int,
    seed: int,
) -> Examples:
    if negatives < 1:
        raise ValueError(f"negatives must be at least 1, got {negatives}")
    rng = random.Random(seed)
    out = Examples()
    skipped: dict[str, int] = {}
    grouped = candidates.by_query()
    for epoch in range(epochs):
        for qid in sorted(grouped):
            if qid not in collection.queries:
                if epoch == 0:
                    skipped["not in this split"] = skipped.get("not in this split", 0) + 1
                continue
            rows = grouped[qid]
            positives = [c.doc_id for c in rows if c.label > 0]
            # rank 0: a judged non-relevant or triples-file negative, which no miner ranked
            pool = [c.doc_id for c in rows if c.label <= 0 and c.rank <= negative_pool]
            if not positives:
                if epoch == 0:
                    skipped["no positive"] = skipped.get("no positive", 0) + 1
                continue
            if len(pool) < negatives:
                if epoch == 0:
                    skipped[f"fewer than {negatives} negatives"] = (
                        skipped.get(f"fewer than {negatives} negatives", 0) + 1
                    )
                continue
            for pos in positives:
                docs = [pos, *rng.sample(pool, negatives)]
                missing = [d for d in docs if (qid, d) not in teacher_scores]
                if missing:
                    raise ValueError(
                        f"the teacher-score store has no score for query {qid!r} and document(s) "
                        f"{', '.join(missing[:5])}: it was not scored from these candidates"
                    )
                out.query.append(collection.queries[qid])
                out.docs.append([collection.doc_text(d) for d in docs])
                out.scores.append([float(teacher_scores[qid, d]) for d in docs])
    out.skipped_queries = skipped
    return out
