"""``build_report``: one evaluation folder -> one self-contained HTML page and its PNG figures.

Reads ``RESULTS_DIR/results.json`` (the contract written by ``retrodistill evaluate``), the
per-query ``metrics.json`` files it names, ``RESULTS_DIR/manifest.json`` when present, and any
training logs given. Writes into ``OUT`` (default ``RESULTS_DIR/report``), each file atomically::

    report.html                                         the page; figures embedded as base64 PNG
                                                        data URIs, inline CSS, no script, no URL
    <family>_per_dataset.png                            the chosen measure per dataset and model,
                                                        plus the mean (ndcg_per_dataset.png for nDCG@10)
    per_query_<model>_vs_<baseline>__<dataset>.png      model - baseline per query, per non-baseline
                                                        model and dataset (only with a baseline)
    training_curves.png                                 loss, its terms and the evaluation figures against
                                                        step (only with training logs)

Each PNG has an SVG and a PDF of the same figure beside it (same stem), for papers and slides, and
``results.tex`` holds the table as booktabs LaTeX (:mod:`retrodistill.evaluate.latex`).

File names use the slugs of the model labels and dataset names
(:func:`retrodistill.evaluate.output_names.slug`, as the evaluation's folders): readable, plus a
short hash of the exact name, so two names never write the same figure. Every text put in the
page is escaped with :func:`html.escape`. Numbers in the table have 4 decimals,
like ``results.md``. This module gathers the data and draws the figures; the HTML itself is
:mod:`retrodistill.report.page`'s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from retrodistill.artifacts import MANIFEST, atomic_path, read_manifest, write_text_atomic
from retrodistill.evaluate.latex import results_latex
from retrodistill.evaluate.output_names import slug
from retrodistill.report import plots
from retrodistill.report.page import ReportFigure, render_html, result_value
from retrodistill.report.train_logs import TRAIN_LOG, read_train_log

RESULTS = "results.json"
REPORT = "report.html"


def load_results(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``results_dir/results.json``; errors name the file (and line for bad JSON).

    Checks the keys the report needs: ``measures`` (list), ``models``, ``datasets`` and ``results``
    (objects); ``per_query`` (object) and ``significance`` (list) default to empty.
    """
    path = Path(results_dir) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; give the --out folder of `retrodistill evaluate`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    required = (("measures", list), ("models", dict), ("datasets", dict), ("results", dict))
    optional = (("per_query", dict), ("significance", list))
    for key, kind in required + optional:
        if key not in data and (key, kind) in optional:
            data[key] = kind()
        if not isinstance(data.get(key), kind):
            what = "a list" if kind is list else "an object"
            raise ValueError(f"{path}: '{key}' must be {what}, got {type(data.get(key)).__name__}")
    return data


def build_report(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    baseline: str | None = None,
    train_logs: Iterable[str | os.PathLike[str]] = (),
    measure: str = "nDCG@10",
) -> Path:
    """Write the report of an evaluation folder and return the path of ``report.html``.

    Args:
        results_dir: the ``--out`` folder of ``retrodistill evaluate`` (holds ``results.json``).
        out_dir: where the page and PNGs go; default ``results_dir/report``.
        baseline: the model label to compare against; default the ``baseline`` of results.json.
            Without one, the per-query comparisons are skipped (the page says so).
        train_logs: training logs to plot: a ``train_log.json`` (the trainer's log history), a student
            folder (its ``train_log.json``) or a TensorBoard folder (:mod:`retrodistill.report.train_logs`).
        measure: the measure of the figures; the table always shows every measure.

    Raises:
        FileNotFoundError: results.json, a per-query file it names or a training log is missing.
        ValueError: one of them is malformed, or ``baseline`` / ``measure`` is not in results.json.
    """
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    results = load_results(results_dir)
    where = results_dir / RESULTS
    if measure not in results["measures"]:
        raise ValueError(f"{where}: no measure {measure!r}; it has {', '.join(map(str, results['measures']))}")
    baseline = baseline if baseline is not None else results.get("baseline")
    if baseline is not None and baseline not in results["models"]:
        raise ValueError(f"unknown baseline {baseline!r}: {where} has models {', '.join(map(repr, results['models']))}")
    log_paths = [Path(p) for p in train_logs]
    logs = [(_log_label(p, log_paths), read_train_log(p)) for p in log_paths]
    manifest = read_manifest(results_dir) if (results_dir / MANIFEST).is_file() else None

    figures = [_per_dataset_figure(results, measure)]
    notes: list[str] = []
    if baseline is None:
        notes.append(
            "No baseline: results.json has none and none was given (--baseline), "
            "so the per-query comparisons are skipped."
        )
    else:
        figures += _per_query_figures(results_dir, results, baseline, measure, notes)
    if logs:
        names = ", ".join(label for label, _ in logs)
        figures.append(
            ReportFigure(
                "training_curves.png",
                "Training curves",
                f"Logged losses (and each loss term) against step, beside any evaluation figures: {names}.",
                plots.training_curves(logs),
            )
        )
    for figure in figures:
        for name, data in figure.files().items():
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(data)
    # The LaTeX table too, so an evaluation folder from before results.tex existed gets one.
    write_text_atomic(out / "results.tex", results_latex(results))
    page = out / REPORT
    write_text_atomic(page, render_html(results_dir, results, manifest, baseline, measure, figures, notes))
    return page


def _log_label(path: Path, all_paths: Sequence[Path]) -> str:
    """The run's folder for ``RUN/train_log.json`` and ``RUN/logs``, else its name; the path if ambiguous."""

    def label(p: Path) -> str:
        if p.name in (TRAIN_LOG, "logs") and p.parent.name:
            return p.parent.name
        return p.name if p.is_dir() else p.stem

    same = [p for p in all_paths if label(p) == label(path)]
    return label(path) if len(same) == 1 else str(path)


def _family_name(text: str) -> str:
    """A measure family as a file name (``ndcg`` for ``nDCG@10``): a fixed, readable word."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", text.replace("/", "__")) or "_"


def _groups(results: Mapping[str, Any]) -> list[str]:
    datasets = list(results["datasets"])
    return datasets + ["mean"] if len(datasets) > 1 else datasets


def _per_dataset_figure(results: Mapping[str, Any], measure: str) -> ReportFigure:
    groups = _groups(results)
    models = list(results["models"])
    values = {m: {g: result_value(results, m, g, measure) for g in groups} for m in models}
    png = plots.measure_per_dataset(values, groups, measure, plots.model_colors(models))
    family = _family_name(measure.split("@")[0].lower())
    caption = f"{measure} of each model on each dataset" + (
        " and the unweighted mean over datasets." if "mean" in groups else "."
    )
    return ReportFigure(f"{family}_per_dataset.png", f"{measure} per dataset", caption, png)


def _per_query_scores(
    results_dir: Path, results: Mapping[str, Any], model: str, dataset: str, measure: str
) -> dict[str, float] | None:
    """``{qid: value}`` from the metrics file results.json names, or ``None`` when it names none."""
    relative = (results["per_query"].get(model) or {}).get(dataset)
    if relative is None:
        return None
    path = results_dir / str(relative)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: per-query metrics of {model} on {dataset}, named in {results_dir / RESULTS}, not found"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    per_query = data.get("per_query") if isinstance(data, dict) else None
    if not isinstance(per_query, dict):
        raise ValueError(f"{path}: expected an object with a 'per_query' object {{qid: {{measure: value}}}}")
    scores = {}
    for qid, row in per_query.items():
        value = row.get(measure) if isinstance(row, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{path}: query {qid!r} has no numeric {measure!r}")
        scores[str(qid)] = float(value)
    return scores


def _per_query_figures(
    results_dir: Path, results: Mapping[str, Any], baseline: str, measure: str, notes: list[str]
) -> list[ReportFigure]:
    figures = []
    base_slug = slug(baseline)  # from the label, not results.json's "slug": older files' slugs could collide
    for model in results["models"]:
        if model == baseline:
            continue
        for dataset in results["datasets"]:
            ours = _per_query_scores(results_dir, results, model, dataset, measure)
            theirs = _per_query_scores(results_dir, results, baseline, dataset, measure)
            if ours is None or theirs is None:
                missing = model if ours is None else baseline
                notes.append(
                    f"No per-query file for {missing} on {dataset} in results.json: "
                    f"{model} vs {baseline} on {dataset} is not plotted."
                )
                continue
            common = sorted(set(ours) & set(theirs))
            diffs = [ours[q] - theirs[q] for q in common]
            counts = plots.WinLossTie.of(diffs)
            mean = sum(diffs) / len(diffs) if diffs else 0.0
            caption = (
                f"{model} minus {baseline}, {measure} per query on {dataset}: {counts.wins} wins, "
                f"{counts.losses} losses, {counts.ties} ties over {len(diffs)} queries "
                f"(|Δ| ≤ {plots.TIE_TOLERANCE:g} is a tie); mean Δ = {mean:+.4f}."
            )
            only = len(ours) - len(common), len(theirs) - len(common)
            if any(only):
                caption += f" Queries only in {model}: {only[0]}; only in {baseline}: {only[1]} (left out)."
            filename = f"per_query_{slug(model)}_vs_{base_slug}__{slug(dataset)}.png"
            png = plots.per_query_differences(diffs, model, baseline, dataset, measure)
            figures.append(ReportFigure(filename, f"{model} vs {baseline} on {dataset}", caption, png))
    return figures
