"""Retrieval metrics through ir-measures, with trec_eval's semantics throughout.

Measures are written as ir-measures strings: ``nDCG@10``, ``RR@10``, ``R@100``, ``AP``,
``P(rel=2)@5`` …  With graded qrels ``rel(d)`` and a ranking ``d_1, d_2, …``:

- ``nDCG@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{i≤k} rel(d_i) / log2(i + 1)`` (graded gains, as
  trec_eval's ``ndcg_cut``; IDCG sorts the judged grades).
- ``RR@k = 1 / i`` for the first ``i ≤ k`` with ``rel(d_i) ≥ t``, else 0.
- ``R@k = |{i ≤ k : rel(d_i) ≥ t}| / |{d : rel(d) ≥ t}|``.

``t`` is ``rel_threshold`` (1 by default) and applies to every binary measure (those that take
ir-measures' ``rel`` parameter) unless the string sets ``rel`` itself.

Decisions this module makes, each matching trec_eval:

- **Ranking order.** A run is ranked by score, descending; ties are broken by document id,
  descending (string comparison), whatever order the run lists them in.
- **Cutoffs.** Every measure is computed by pytrec_eval where it can be. pytrec_eval's
  ``recip_rank`` has no cutoff, and ir-measures 0.4.3 sends ``RR@k`` to its MS MARCO provider,
  which breaks ties in another order. So a cutoff that pytrec_eval lacks is applied here: the
  measure is computed without its cutoff on the run truncated to its top ``k`` in trec_eval order.
  (A measure pytrec_eval cannot compute at all goes to ir-measures' other providers, on the run
  truncated the same way when it has a cutoff.)
- **Averaging.** The aggregate is the mean over every query in ``qrels``; a judged query with no
  retrieved documents scores 0 (trec_eval ``-c``). Queries in the run but not in qrels are ignored.
  BEIR and MTEB average over the judged queries pytrec_eval returns, i.e. those also in the run;
  as :func:`~retrodistill.evaluate.retrieval.encode_and_search` answers every query, both agree.
  A judged query whose grades are all below the threshold counts, scoring 0 (as in BEIR).

Example:
    >>> qrels = {"q1": {"d1": 1}}
    >>> run = {"q1": {"d0": 0.9, "d1": 0.5}}
    >>> compute_metrics(qrels, run, ["RR@10", "R@100"]).aggregate
    {'RR@10': 0.5, 'R@100': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Run = dict[str, dict[str, float]]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "R@1000")


@dataclass(frozen=True)
class MetricResult:
    """Scores of one run.

    Attributes:
        aggregate: measure name → mean over the judged queries.
        per_query: query id → measure name → value, for every judged query.
        measures: the measure names, in the order asked for (the keys of ``aggregate``).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    measures: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"aggregate": self.aggregate, "per_query": self.per_query}


def parse_measures(measures: Iterable[Any], rel_threshold: int = 1) -> dict[str, Any]:
    """Parse measure strings into ir-measures objects, keyed by the name the caller used.

    Args:
        measures: strings such as ``"nDCG@10"``, or ir-measures ``Measure`` objects.
        rel_threshold: the minimum grade counted as relevant by binary measures that do not set
            ``rel`` themselves.

    Raises:
        ValueError: a string is not a measure ir-measures knows, or a name is given twice.
    """
    import ir_measures

    parsed: dict[str, Any] = {}
    for spec in measures:
        if isinstance(spec, str):
            try:
                measure = ir_measures.parse_measure(spec)
            except (NameError, ValueError, SyntaxError) as err:
                raise ValueError(
                    f"cannot parse measure {spec!r} ({err}); write measures the ir-measures way, "
                    "e.g. nDCG@10, RR@10, R@100, AP, P(rel=2)@5"
                ) from None
            name = spec
        else:
            measure, name = spec, str(spec)
        if name in parsed:
            raise ValueError(f"measure {name!r} is given twice")
        if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=rel_threshold)
        parsed[name] = measure
    if not parsed:
        raise ValueError("no measures given")
    return parsed


def split_measures(text: str) -> list[str]:
    """Split a comma-separated list of measures at its top-level commas only.

    A comma inside parentheses belongs to a measure's parameters and does not split.

    Example:
        >>> split_measures("nDCG@10, P(rel=2,judged_only=True)@10,R@100")
        ['nDCG@10', 'P(rel=2,judged_only=True)@10', 'R@100']

    Raises:
        ValueError: the parentheses do not balance.
    """
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"measures {text!r}: a ')' closes no '('")
        current.append(char)
    if depth:
        raise ValueError(f"measures {text!r}: a '(' is not closed")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs ranked as trec_eval ranks them: score desc, then doc id desc."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """Each query's top ``k`` documents in trec_eval order (see :func:`trec_order`)."""
    return {qid: dict(trec_order(docs)[:k]) for qid, docs in run.items()}


def _without_cutoff(measure: Any) -> Any:
    params = {key: value for key, value in measure.params.items() if key != "cutoff"}
    return type(measure)(**params)


def _plan(measure: Any) -> tuple[Any, int | None]:
    """What to ask pytrec_eval for, and the cutoff to apply to the run first (``None``: none)."""
    import ir_measures

    provider = ir_measures.pytrec_eval
    if provider.supports(measure):
        return measure, None
    cutoff = measure.params.get("cutoff")
    if cutoff is None:
        return measure, None
    uncut = _without_cutoff(measure)
    if provider.supports(uncut):
        return uncut, int(cutoff)
    # Another provider computes it; truncating first still fixes which documents are in the top k.
    return measure, int(cutoff)


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[Any] = DEFAULT_MEASURES,
    *,
    rel_threshold: int = 1,
) -> MetricResult:
    """Score ``run`` against ``qrels``.

    Args:
        qrels: query id → document id → integer grade.
        run: query id → document id → score (higher is better; the order of the mapping is ignored).
        measures: ir-measures strings (``"nDCG@10"``) or ``Measure`` objects.
        rel_threshold: minimum grade counted as relevant by binary measures (``RR``, ``R``, ``P``, …).

    Returns:
        A :class:`MetricResult` whose keys are the measure strings as given.

    Raises:
        ValueError: a measure cannot be parsed, or ``qrels`` is empty.
    """
    import ir_measures

    parsed = parse_measures(measures, rel_threshold)
    if not qrels:
        raise ValueError("qrels are empty: there is nothing to evaluate against")
    qrels_dict = {str(qid): {str(d): int(g) for d, g in docs.items()} for qid, docs in qrels.items()}
    run_dict = {str(qid): {str(d): float(s) for d, s in docs.items()} for qid, docs in run.items()}

    # Group the measures by the run they are computed on (the full run or a top-k truncation).
    groups: dict[int | None, dict[Any, list[str]]] = {}
    for name, measure in parsed.items():
        evaluated, cutoff = _plan(measure)
        groups.setdefault(cutoff, {}).setdefault(evaluated, []).append(name)

    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(parsed, 0.0) for qid in qrels_dict}
    for cutoff, by_measure in groups.items():
        this_run = run_dict if cutoff is None else truncate_run(run_dict, cutoff)
        supported = [m for m in by_measure if ir_measures.pytrec_eval.supports(m)]
        others = [m for m in by_measure if m not in supported]
        metrics = list(ir_measures.pytrec_eval.iter_calc(supported, qrels_dict, this_run)) if supported else []
        if others:
            metrics += list(ir_measures.iter_calc(others, qrels_dict, this_run))
        for metric in metrics:
            if metric.query_id not in per_query:
                continue
            for name in by_measure[metric.measure]:
                per_query[metric.query_id][name] = float(metric.value)

    aggregate = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in parsed}
    return MetricResult(aggregate, per_query, tuple(parsed))
