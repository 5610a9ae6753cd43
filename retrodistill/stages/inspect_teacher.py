"""Inspect a teacher-score store: score distributions, quality on qrels, label noise, agreement.

The members of a plain store are the store itself; those of an ensemble store
(:mod:`retrodistill.stages.ensemble`) are the member stores its manifest names, then the
ensemble. Every member is looked at on the inspected store's pairs. With qrels, a candidate is a
*positive* when its grade is ≥ ``rel_threshold``; every other candidate (unjudged, or judged
below the threshold) is a *negative*. The numbers, per member:

- ``stats``: count, mean, std (ddof 0), min, percentiles 1/5/25/50/75/95/99, max of the scores,
  and a histogram (``score_hist.png``: all candidates, and positives when qrels are given).
- ``ndcg``: ``nDCG@k`` (graded gains, :func:`~retrodistill.evaluate.metrics.compute_metrics`) of
  the member's ranking of each query's candidates against the qrels restricted to those
  candidates, over the queries with at least one positive candidate.
- ``label_noise``: over the queries with at least one positive and one negative candidate,
  ``inverted_fraction = Σ_q inv_q / Σ_q P_q·N_q``, where ``inv_q`` counts the (positive, negative)
  pairs whose negative scores *strictly* higher (a tie is not an inversion); also its mean over
  queries; and ``top1_not_relevant``, the fraction of queries with a positive candidate whose
  top-scored candidate (ties broken as trec_eval: by document id, descending) is a negative.
- ``agreement`` (between members): the mean over queries of Kendall's τ-b (as
  :func:`scipy.stats.kendalltau` defines it; :func:`kendall_tau_matrix`) between two members'
  scores of the query's candidates, over the queries with ≥ 2 candidates where neither member
  gives every candidate the same score (``queries`` counts them); ``agreement.png`` draws it.

``nDCG`` and τ are computed on at most ``max_queries`` queries (a seeded sample, recorded);
everything else uses every pair, vectorised (the rows of a query are contiguous in a store).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.artifacts import atomic_path, write_json_atomic
from retrodistill.data.store import TeacherStore
from retrodistill.stages.ensemble import is_ensemble, open_members, read_columns
from retrodistill.stages.ensemble_calibration import Judgments, QueryGroups, grades_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
REPORT_FILE = "inspect.json"
HIST_FILE = "score_hist.png"
AGREEMENT_FILE = "agreement.png"
DPI = 110
DIRECT_TAU_MAX = 256


@dataclass
class Member:
    """One scorer being inspected: its label, store, and scores on the inspected store's pairs."""

    label: str
    store: TeacherStore
    scores: np.ndarray  # (n_rows,) float64, row-aligned with the inspected store


def inspect_store(
    store: str | os.PathLike[str] | TeacherStore,
    judgments: Judgments | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    rel_threshold: int = 1,
    k: int = 10,
    max_queries: int | None = 10_000,
    seed: int = 0,
    bins: int = 50,
) -> dict[str, Any]:
    """Inspect ``store`` (module docstring) and return the report; write files when ``out`` is given.

    Args:
        store: a complete teacher-score store (plain or ensemble).
        judgments: qrels to judge the members against (nDCG, label noise); ``None``: skip those.
        out: folder for ``inspect.json``, ``score_hist.png`` and (two or more members) ``agreement.png``.
        rel_threshold: minimum grade of a positive.
        k: the nDCG cutoff.
        max_queries: the most queries the nDCG and τ loops visit (seeded sample); ``None``: all.
        seed: the sample's seed.
        bins: histogram bins.

    Returns:
        The report, as written to ``inspect.json`` (plus ``files``: the paths written).
    """
    opened = store if isinstance(store, TeacherStore) else TeacherStore.open(store)
    ids = read_columns(opened, ["query_id", "doc_id"])
    members = _members(opened, ids)
    groups = QueryGroups.from_query_ids(ids.column("query_id"))
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {
        "store": str(opened.path),
        "fingerprint": opened.fingerprint,
        "ensemble": is_ensemble(opened.manifest),
        "qrels": None if judgments is None else judgments.describe(),
        "rel_threshold": rel_threshold,
        "counts": {"pairs": len(ids), "queries": len(groups)},
        "members": [],
    }
    positive: np.ndarray | None = None
    grades = judged = None
    if judgments is not None:
        grades, judged = grades_of(ids.column("query_id"), ids.column("doc_id"), judgments.qrels)
        positive = grades >= rel_threshold
        n_pos = groups.sum(positive.astype(np.int64))
        report["counts"]["queries_with_positive"] = int((n_pos > 0).sum())
        report["counts"]["judged_pairs"] = int(judged.sum())
    ndcg_sample = None
    if positive is not None:
        evaluated = np.flatnonzero(groups.sum(positive.astype(np.int64)) > 0)
        ndcg_sample = _sample(evaluated, max_queries, rng)
    for member in members:
        entry: dict[str, Any] = {
            "label": member.label,
            "path": str(member.store.path),
            "teacher": _teacher_summary(member.store.manifest),
            "stats": score_stats(member.scores),
            "histogram": _histogram(member.scores, bins),
            "ndcg": None,
            "label_noise": None,
        }
        if positive is not None and grades is not None and judged is not None and ndcg_sample is not None:
            entry["ndcg"] = _ndcg(ids, member.scores, groups, grades, judged, ndcg_sample, k)
            entry["label_noise"] = label_noise(member.scores, groups, positive)
        report["members"].append(entry)
    report["agreement"] = _agreement(members, groups, _sample(np.arange(len(groups)), max_queries, rng))
    if out is not None:
        report["files"] = write_report(report, members, positive, out)
    return report


def _members(store: TeacherStore, ids: Any) -> list[Member]:
    """The store's members (ensemble: each member store, then the ensemble), aligned to ``ids``."""
    stores = [*open_members(store), store] if is_ensemble(store.manifest) else [store]
    labels = [*(s.path.name for s in stores[:-1]), "ensemble"] if len(stores) > 1 else [store.path.name]
    labels = [f"{label} ({i})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
    members = []
    for label, member in zip(labels, stores, strict=True):
        table = read_columns(member, ["query_id", "doc_id", "score"])
        if not table.select(["query_id", "doc_id"]).equals(ids):
            table = _restrict(table, ids, member, store)
        members.append(Member(label, member, table.column("score").to_numpy().astype(np.float64)))
    return members


def _restrict(table: Any, ids: Any, member: TeacherStore, store: TeacherStore) -> Any:
    """``table``'s rows on the pairs of ``ids`` (both sorted), or an error if some are missing."""
    import pyarrow.compute as pc

    keys = pc.binary_join_element_wise(table.column("query_id"), table.column("doc_id"), "\t")
    wanted = pc.binary_join_element_wise(ids.column("query_id"), ids.column("doc_id"), "\t")
    kept = table.filter(pc.is_in(keys, value_set=wanted))
    if not kept.select(["query_id", "doc_id"]).equals(ids):
        raise ValueError(f"member store {member.path} lacks some of the pairs of {store.path}")
    return kept


def _teacher_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    teacher = manifest.get("teacher", {})
    if is_ensemble(manifest):
        return {
            "name": teacher["name"],
            "normalization": teacher.get("normalization"),
            "weights": teacher.get("weights"),
            "temperatures": (teacher.get("calibration") or {}).get("temperatures"),
        }
    return {"name": teacher.get("name"), "model": teacher.get("model")}


def _sample(candidates: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``limit`` of ``candidates`` (seeded, in ascending order); all when ``limit`` is None."""
    if limit is None or len(candidates) <= limit:
        return candidates
    return np.sort(rng.choice(candidates, size=limit, replace=False))


# --- the numbers -------------------------------------------------------------------------------


def score_stats(scores: np.ndarray) -> dict[str, float]:
    """Count, mean, std (ddof 0), min, percentiles :data:`PERCENTILES` and max of ``scores``."""
    if len(scores) == 0:
        return {"count": 0}
    values = np.percentile(scores, PERCENTILES)
    return {
        "count": len(scores),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)},
        "max": float(scores.max()),
    }


def _histogram(scores: np.ndarray, bins: int) -> dict[str, list[float]]:
    counts, edges = np.histogram(scores, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def label_noise(scores: np.ndarray, groups: QueryGroups, positive: np.ndarray) -> dict[str, Any]:
    """Inverted (positive, negative) pairs and wrong top-1 candidates (module docstring).

    Args:
        scores: ``(n_rows,)`` scores; the rows of a query contiguous and sorted by document id.
        groups: the query of each row.
        positive: ``(n_rows,)`` bool, true for positives.
    """
    positive = np.asarray(positive, dtype=bool)
    negative = ~positive
    n_pos = groups.sum(positive.astype(np.int64))
    n_neg = groups.sizes - n_pos
    # Within a query: ascending score, a negative before a positive it ties with, so the negatives
    # counted up to a positive (inclusive) are those that do not outscore it.
    order = np.lexsort((positive, scores, groups.index))
    cum_neg = np.cumsum(negative[order])
    before = cum_neg[groups.starts] - negative[order][groups.starts]
    not_above = cum_neg - before[groups.index[order]]
    is_pos = positive[order]
    inverted_rows = (n_neg[groups.index[order]] - not_above)[is_pos]
    inverted = np.bincount(groups.index[order][is_pos], weights=inverted_rows, minlength=len(groups))
    both = (n_pos > 0) & (n_neg > 0)
    pairs = (n_pos * n_neg)[both]
    # Top candidate: highest score, ties to the highest document id (the last row of the tie).
    at_max = scores == groups.max(scores)[groups.index]
    top = groups.max(np.where(at_max, np.arange(len(scores)), -1))
    with_pos = n_pos > 0
    total_pairs = int(pairs.sum())
    return {
        "queries": int(both.sum()),
        "pairs": total_pairs,
        "inverted": int(inverted[both].sum()),
        "inverted_fraction": float(inverted[both].sum() / total_pairs) if total_pairs else None,
        "inverted_fraction_query_mean": float((inverted[both] / pairs).mean()) if total_pairs else None,
        "top1_queries": int(with_pos.sum()),
        "top1_not_relevant": float((~positive[top][with_pos]).mean()) if with_pos.any() else None,
    }


def _ndcg(
    ids: Any,
    scores: np.ndarray,
    groups: QueryGroups,
    grades: np.ndarray,
    judged: np.ndarray,
    sample: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """nDCG@k of ranking each sampled query's candidates, against qrels restricted to the candidates."""
    from retrodistill.evaluate.metrics import compute_metrics

    measure = f"nDCG@{k}"
    if not len(sample):
        return {"measure": measure, "value": None, "queries": 0}
    chosen = np.zeros(len(groups), dtype=bool)
    chosen[sample] = True
    rows = np.flatnonzero(chosen[groups.index])
    query_ids = ids.column("query_id").take(rows).to_pylist()
    doc_ids = ids.column("doc_id").take(rows).to_pylist()
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q, d, s, grade, is_judged in zip(
        query_ids, doc_ids, scores[rows].tolist(), grades[rows].tolist(), judged[rows].tolist(), strict=True
    ):
        run.setdefault(q, {})[d] = s
        if is_judged:
            qrels.setdefault(q, {})[d] = grade
    result = compute_metrics(qrels, run, [measure])
    return {"measure": measure, "value": result.aggregate[measure], "queries": len(qrels)}


def _agreement(members: Sequence[Member], groups: QueryGroups, sample: np.ndarray) -> dict[str, Any]:
    """Mean per-query Kendall τ-b between every two members, over the sampled queries."""
    n = len(members)
    totals, used = np.zeros((n, n)), np.zeros((n, n), dtype=np.int64)
    sample = sample[groups.sizes[sample] >= 2]
    for g in sample:
        lo, hi = int(groups.starts[g]), int(groups.starts[g] + groups.sizes[g])
        tau = kendall_tau_matrix([m.scores[lo:hi] for m in members])
        finite = ~np.isnan(tau)
        totals[finite] += tau[finite]
        used += finite
    mean = np.where(used > 0, totals / np.maximum(used, 1), np.nan)
    return {
        "labels": [m.label for m in members],
        "kendall_tau": [[None if math.isnan(v) else float(v) for v in row] for row in mean],
        "queries": used.tolist(),
        "sampled_queries": len(sample),
    }


def kendall_tau_matrix(rankings: Sequence[np.ndarray]) -> np.ndarray:
    """Kendall's τ-b between every two of ``rankings`` (scores of the same ``n`` items), as a matrix.

    ``τ_b = (n_c − n_d) / sqrt((n_0 − t_x)(n_0 − t_y))`` with ``n_0 = n(n − 1)/2`` and ``t_x``, ``t_y``
    the pairs tied in each ranking: :func:`scipy.stats.kendalltau`'s default, NaN when a ranking
    is constant. ``scipy`` costs about a millisecond per call in argument handling, so up to
    :data:`DIRECT_TAU_MAX` items ``n_c − n_d = Σ_{i<j} sign(x_i − x_j)·sign(y_i − y_j)`` is summed
    from sign matrices built once per ranking; longer lists go to scipy's O(n log n) algorithm.
    """
    k, n = len(rankings), len(rankings[0])
    constant = [bool(np.all(x == x[0])) if n else True for x in rankings]
    tau = np.diag([math.nan if c else 1.0 for c in constant])  # off-diagonal entries set below
    if n > DIRECT_TAU_MAX:
        from scipy.stats import kendalltau

        for i in range(k):
            for j in range(i + 1, k):
                tau[i, j] = tau[j, i] = float(kendalltau(rankings[i], rankings[j]).statistic)
        return tau
    signs = [np.sign(x[:, None] - x[None, :]).astype(np.int8) for x in rankings]  # (n, n) each
    untied = [np.count_nonzero(s) / 2 for s in signs]  # pairs each ranking does not tie
    for i in range(k):
        for j in range(i + 1, k):
            concordance = np.einsum("ab,ab->", signs[i], signs[j], dtype=np.int64) / 2  # n_c − n_d
            denominator = untied[i] * untied[j]
            tau[i, j] = tau[j, i] = concordance / math.sqrt(denominator) if denominator > 0 else math.nan
    return tau


# --- output ------------------------------------------------------------------------------------


def write_report(
    report: dict[str, Any], members: Sequence[Member], positive: np.ndarray | None, out: str | os.PathLike[str]
) -> list[str]:
    """Write ``inspect.json``, ``score_hist.png`` and (two or more members) ``agreement.png``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / HIST_FILE]
    _save(hist_figure(members, positive), folder / HIST_FILE)
    if len(members) > 1:
        _save(agreement_figure(report["agreement"]), folder / AGREEMENT_FILE)
        files.append(folder / AGREEMENT_FILE)
    files.append(folder / REPORT_FILE)
    names = [str(f) for f in files]
    write_json_atomic(folder / REPORT_FILE, {**report, "files": names})
    return names


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    """A figure on the Agg canvas in matplotlib's default style (no pyplot, no global state)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def hist_figure(members: Sequence[Member], positive: np.ndarray | None) -> Figure:
    """One histogram per member (own x axis: teachers' scales differ); positives overlaid if known."""
    ncols = min(len(members), 3)
    nrows = math.ceil(len(members) / ncols)
    with _figure(4.2 * ncols, 3.2 * nrows) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, member in zip(axes, members, strict=False):
            scores = member.scores
            edges = np.histogram_bin_edges(scores, bins=50)
            ax.hist(scores, bins=edges, density=True, color="#9e9e9e", label=f"all candidates ({len(scores):,})")
            if positive is not None and positive.any():
                ax.hist(
                    scores[positive],
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=1.8,
                    color="#1565c0",
                    label=f"judged positives ({int(positive.sum()):,})",
                )
            ax.set_title(member.label, fontsize=10)
            ax.set_xlabel("score")
            ax.set_ylabel("density")
            ax.legend(fontsize=8, loc="best")
        for ax in axes[len(members) :]:
            ax.set_visible(False)
        fig.suptitle("Teacher score distributions")
    return fig


def agreement_figure(agreement: dict[str, Any]) -> Figure:
    """The members' mean per-query Kendall τ as an annotated matrix in [−1, 1]."""
    labels = agreement["labels"]
    matrix = np.array([[math.nan if v is None else v for v in row] for row in agreement["kendall_tau"]])
    size = 1.6 + 1.1 * len(labels)
    with _figure(size + 1.2, size) as fig:
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                value = matrix[i, j]
                text = "n/a" if math.isnan(value) else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="white" if abs(value) > 0.6 else "black")
        fig.colorbar(image, ax=ax, label="mean per-query Kendall τ")
        ax.set_title(f"Agreement over {agreement['sampled_queries']:,} queries", fontsize=10)
    return fig


def summary_tables(report: dict[str, Any]) -> list[Any]:
    """The report as rich tables: one row per member, then the agreement matrix."""
    from rich.table import Table

    def fmt(value: Any, spec: str = ".4g") -> str:
        return "—" if value is None else format(value, spec)

    table = Table(title=f"teacher scores: {report['store']}", title_justify="left")
    for column in ("member", "pairs", "mean", "std", "min", "p50", "max"):
        table.add_column(column, justify="left" if column == "member" else "right")
    measure = next((m["ndcg"]["measure"] for m in report["members"] if m["ndcg"]), "nDCG")
    for column in (measure, "inverted pairs", "top-1 not relevant"):
        table.add_column(column, justify="right")
    for member in report["members"]:
        stats, noise, ndcg = member["stats"], member["label_noise"] or {}, member["ndcg"] or {}
        table.add_row(
            member["label"],
            f"{stats['count']:,}",
            *(fmt(stats.get(key)) for key in ("mean", "std", "min", "p50", "max")),
            fmt(ndcg.get("value"), ".4f"),
            fmt(noise.get("inverted_fraction"), ".2%"),
            fmt(noise.get("top1_not_relevant"), ".2%"),
        )
    tables = [table]
    agreement = report["agreement"]
    if len(agreement["labels"]) > 1:
        matrix = Table(
            title=f"mean per-query Kendall τ ({agreement['sampled_queries']:,} queries)", title_justify="left"
        )
        matrix.add_column("")
        for label in agreement["labels"]:
            matrix.add_column(label, justify="right")
        for label, row in zip(agreement["labels"], agreement["kendall_tau"], strict=True):
            matrix.add_row(label, *(fmt(v, ".3f") for v in row))
        tables.append(matrix)
    return tables
