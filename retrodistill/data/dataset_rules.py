"""The two per-dataset evaluation rules checked and described: identical ids and the relevance threshold.

Split out of :mod:`retrodistill.data.registry` (whose docstring explains both rules, and which still
exports every name here). :func:`check_entry` fills a :class:`~retrodistill.data.registry.SuiteEntry`'s
``info`` (the rules and where they come from) and ``warnings`` (a rule left to its default that the
data put in question: queries that are corpus documents, graded qrels); :func:`check_rel_threshold`
refuses a threshold below 1; :func:`describe_rules` states both rules of a table's entries in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from retrodistill.data.collections import Collection

if TYPE_CHECKING:  # registry imports this module: SuiteEntry is needed for annotations only
    from retrodistill.data.registry import SuiteEntry

#: The share of judged query ids that are also corpus ids above which the identical-id rule is in question.
IDENTICAL_ID_SHARE = 0.5


def identical_id_share(collection: Collection) -> tuple[int, int]:
    """``(judged queries whose id is a corpus id, judged queries)`` of the evaluation view."""
    queries = list(collection.for_evaluation().queries)
    shared = int((collection.corpus.rows(queries, missing=-1) >= 0).sum()) if queries else 0
    return shared, len(queries)


def check_entry(
    entry: SuiteEntry, *, ids_source: str = "default", threshold_source: str = "default", info: Sequence[str] = ()
) -> SuiteEntry:
    """``entry`` with its ``info`` (the rules and where they come from) and ``warnings`` filled in.

    Warned about: an identical-id rule left to its default (keep) on a collection where at least
    :data:`IDENTICAL_ID_SHARE` of the judged query ids are corpus ids (each such query would
    retrieve itself, as in ArguAna and Quora); grades above 1 scored by binary measures at a
    threshold nobody chose.

    Args:
        ids_source, threshold_source: where each rule comes from: ``"given"`` (by the user), a
            registered dataset's rule, or ``"default"`` (nobody chose it: the checks apply).
        info: lines to put before the one that states the rules.
    """
    warnings: list[str] = []
    for collection in entry.collections:
        if ids_source == "default" and not entry.ignore_identical_ids and len(collection.corpus):
            shared, total = identical_id_share(collection)
            if total and shared / total >= IDENTICAL_ID_SHARE:
                warnings.append(
                    f"{collection.name}: {shared:,} of {total:,} judged queries ({shared / total:.0%}) have the id "
                    "of a corpus document; where they are the same text (as in ArguAna and Quora) each retrieves "
                    "itself at rank 1 and every figure falls. Pass --ignore-identical-ids to drop such hits "
                    "(BEIR's rule), or --keep-identical-ids to keep them and silence this warning"
                )
        if threshold_source == "default":
            top = max((g for docs in collection.for_evaluation().qrels.values() for g in docs.values()), default=0)
            if top >= 2:
                warnings.append(
                    f"{collection.name}: graded qrels (grades up to {top}), but binary measures (R, RR, P, AP) "
                    f"count every grade ≥ {entry.rel_threshold} as relevant; pass --rel-threshold 2 for TREC DL's "
                    f"convention, or --rel-threshold {entry.rel_threshold} to keep it and silence this warning"
                )
    ids = "dropped" if entry.ignore_identical_ids else "kept"
    rules = (
        f"{entry.name}: identical query/document ids {ids} ({ids_source}); relevance ≥ {entry.rel_threshold} "
        f"for binary measures ({threshold_source})"
    )
    return replace(entry, info=(*entry.info, *info, rules), warnings=(*entry.warnings, *warnings))


def check_rel_threshold(rel_threshold: int | None) -> None:
    """Refuse a least relevant grade below 1 (None means the dataset's own).

    Grade 0 means "judged not relevant" in BEIR and TREC qrels alike, so a threshold of 0 or less
    would count those documents as hits and inflate every binary measure.
    """
    if rel_threshold is not None and rel_threshold < 1:
        raise ValueError(
            f"--rel-threshold {rel_threshold}: must be at least 1; grade 0 means judged not relevant, "
            "so a lower threshold would count non-relevant documents as relevant"
        )


def describe_rules(entries: Sequence[SuiteEntry]) -> str:
    """One line stating both rules for every entry, for a table header.

    E.g. ``"identical query/doc ids dropped: arguana; kept: scifact, trec-dl-2019; binary measures
    count grades ≥ 1: arguana, scifact; ≥ 2: trec-dl-2019"``.
    """
    dropped = [e.name for e in entries if e.ignore_identical_ids]
    kept = [e.name for e in entries if not e.ignore_identical_ids]
    ids = [f"dropped: {', '.join(dropped)}"] if dropped else []
    ids += [f"kept: {', '.join(kept)}"] if kept else []
    thresholds = [
        f"≥ {t}: {', '.join(e.name for e in entries if e.rel_threshold == t)}"
        for t in sorted({e.rel_threshold for e in entries})
    ]
    if not entries:
        return ""
    return f"identical query/doc ids {'; '.join(ids)}; binary measures count grades {'; '.join(thresholds)}"


__all__ = [
    "IDENTICAL_ID_SHARE",
    "check_entry",
    "check_rel_threshold",
    "describe_rules",
    "identical_id_share",
]
