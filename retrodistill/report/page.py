"""The report page: HTML of the results table, significance legend, figures, datasets, models and manifest.

:func:`render_html` turns what :func:`retrodistill.report.html.build_report` gathered into one
self-contained page (inline CSS, figures as data URIs, no script, no URL); every text from the
results is escaped with :func:`html.escape`, numbers have 4 decimals like ``results.md``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrodistill.artifacts import MANIFEST
from retrodistill.report import plots

UP, DOWN = "▲", "▼"


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its file name (``.png``), heading, caption and renderings.

    The PNG is embedded in the page; the SVG and PDF (for a paper) are written beside it under the
    same stem.
    """

    filename: str
    title: str
    caption: str
    rendered: plots.Rendered

    @property
    def png(self) -> bytes:
        return self.rendered.png

    def files(self) -> dict[str, bytes]:
        """``{file name: bytes}`` of every format."""
        stem = self.filename.removesuffix(".png")
        return {f"{stem}.{fmt}": data for fmt, data in self.rendered.formats().items()}


def result_value(results: Mapping[str, Any], model: str, dataset: str, measure: str) -> float | None:
    """``results[model][dataset][measure]``; for ``"mean"`` absent, the mean over the datasets."""
    rows = results["results"].get(model) or {}
    value = (rows.get(dataset) or {}).get(measure)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if dataset == "mean":
        parts = [result_value(results, model, d, measure) for d in results["datasets"]]
        if parts and all(p is not None for p in parts):
            return sum(p for p in parts if p is not None) / len(parts)
    return None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "–" if value is None else _e(value)


def render_html(
    results_dir: Path,
    results: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    baseline: str | None,
    measure: str,
    figures: Sequence[ReportFigure],
    notes: Sequence[str],
) -> str:
    """The whole page as a string (see the module docstring for what it holds)."""
    title = f"retrodistill report: {results_dir.resolve().name}"
    today = _dt.date.today().isoformat()
    created = f"; results created {_e(manifest['created'])}" if manifest and manifest.get("created") else ""
    summary = (
        f"Models: {len(results['models'])}. Datasets: {len(results['datasets'])}. "
        f"Figures show {measure}. Baseline: {baseline if baseline is not None else 'none'}."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(today)}{created}. Source: <code>{_e(results_dir)}</code></p>',
        f"<p>{_e(summary)}</p>",
        "<h2>Results</h2>",
        _results_table(results, baseline, measure),
        _significance_legend(results, baseline, manifest),
        "<h2>Figures</h2>",
        *(f'<p class="note">{_e(note)}</p>' for note in notes),
        *(_figure(f) for f in figures),
        "<h2>Datasets</h2>",
        _datasets_table(results),
        "<h2>Models</h2>",
        _models_table(results, baseline),
        _manifest_section(manifest, results),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _significance_index(results: Mapping[str, Any], baseline: str | None) -> dict[tuple[str, str, str], dict]:
    index: dict[tuple[str, str, str], dict] = {}
    for entry in results["significance"]:
        if isinstance(entry, dict) and entry.get("baseline") == baseline:
            index[(str(entry.get("model")), str(entry.get("dataset")), str(entry.get("measure")))] = entry
    return index


def _mark(entry: Mapping[str, Any] | None) -> str:
    """The ``▲``/``▼`` of one cell (empty when not significant), with the test's numbers as a tooltip.

    The entry's ``mark`` is used when present; otherwise the sign of ``mean_diff`` of a
    ``significant`` entry decides.
    """
    if not entry:
        return ""
    diff = entry.get("mean_diff")
    if not isinstance(diff, int | float):
        diff = float(entry.get("mean", 0.0)) - float(entry.get("baseline_mean", 0.0))
    mark = entry.get("mark")
    if mark not in (UP, DOWN, ""):
        mark = (UP if diff > 0 else DOWN if diff < 0 else "") if entry.get("significant") is True else ""
    facts = [f"vs {entry.get('baseline')}: Δ = {diff:+.4f}"]
    facts += [f"{k} = {entry[k]:.4g}" for k in sorted(_P_KEYS) if isinstance(entry.get(k), int | float)]
    if entry.get("num_queries") is not None:
        facts.append(f"n = {entry['num_queries']}")
    css = {UP: "up", DOWN: "down"}.get(mark, "ns")
    return f' <span class="{css}" title="{_e("; ".join(facts))}">{mark}</span>'


def _results_table(results: Mapping[str, Any], baseline: str | None, measure: str) -> str:
    models, measures = list(results["models"]), [str(m) for m in results["measures"]]
    significance = _significance_index(results, baseline)
    head1 = "".join(
        f'<th colspan="{len(measures)}" class="model">{_e(m)}'
        + (' <span class="tag">baseline</span>' if m == baseline else "")
        + "</th>"
        for m in models
    )
    head2 = "".join(
        f"<th{_classes(i == 0, ms == measure)}>{_e(ms)}</th>" for _ in models for i, ms in enumerate(measures)
    )
    rows = []
    for dataset in [*results["datasets"], "mean"]:  # the mean row even for one dataset, as results.md
        cells = []
        best = {
            ms: max((v for m in models if (v := result_value(results, m, dataset, ms)) is not None), default=None)
            for ms in measures
        }
        for model in models:
            for i, ms in enumerate(measures):
                value = result_value(results, model, dataset, ms)
                is_best = value is not None and len(models) > 1 and value == best[ms]
                classes = _classes(i == 0, ms == measure, is_best)
                text = _num(value) + _mark(significance.get((model, dataset, ms)))
                cells.append(
                    f'<td{classes} data-model="{_e(model)}" '
                    f'data-dataset="{_e(dataset)}" data-measure="{_e(ms)}">{text}</td>'
                )
        row_class = ' class="mean"' if dataset == "mean" else ""
        rows.append(f'<tr{row_class}><th scope="row">{_e(dataset)}</th>{"".join(cells)}</tr>')
    return (
        '<div class="scroll"><table class="results"><thead>'
        f'<tr><th rowspan="2">dataset</th>{head1}</tr><tr>{head2}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _classes(first: bool, primary: bool, best: bool = False) -> str:
    """The class attribute of a results cell: a rule left of each model's group, the figures' measure, the best."""
    names = " ".join(name for name, on in (("first", first), ("primary", primary), ("best", best)) if on)
    return f' class="{names}"' if names else ""


def _significance_legend(results: Mapping[str, Any], baseline: str | None, manifest: Mapping[str, Any] | None) -> str:
    lines = [
        '<p class="legend">Bold: best value of the row for that measure. '
        "The mean row is the unweighted mean over datasets of each dataset's mean over its queries."
    ]
    entries = list(_significance_index(results, baseline).values())
    if baseline is None:
        lines.append("No baseline, so no significance marks.</p>")
        return " ".join(lines)
    if not entries:
        others = sorted({str(e.get("baseline")) for e in results["significance"] if isinstance(e, dict)})
        against = f" (its tests are against {', '.join(others)})" if others else ""
        lines.append(f"results.json holds no significance test against {_e(baseline)}{_e(against)}: no marks.</p>")
        return " ".join(lines)
    config = manifest.get("config") if manifest else None
    config = config if isinstance(config, dict) else {}
    alphas = sorted({e["alpha"] for e in entries if isinstance(e.get("alpha"), int | float)})
    alpha = alphas[0] if len(alphas) == 1 else config.get("alpha")
    alpha_text = f"α = {alpha:g}" if isinstance(alpha, int | float) else "α (not recorded in results.json)"
    fields = set().union(*(e.keys() for e in entries))
    tests = [name for key, name in _TESTS if key in fields]
    samples = config.get("permutations")
    if samples is not None and "p_randomization" in fields:
        seed = f", seed {config['seed']}" if config.get("seed") is not None else ""
        tests[-1] += f" ({samples} random sign flips{seed}; exact when 2^n is smaller)"
    holm = any(k.endswith("_holm") for k in fields)
    rule = (
        f"both Holm-corrected p-values are below {alpha_text}"
        if holm and len(tests) == 2
        else f"the <code>significant</code> flag of results.json is set ({alpha_text})"
    )
    lines.append(
        f"{UP} / {DOWN}: significantly better / worse than the baseline {_e(baseline)} on that dataset and "
        f"measure. Tests, two-sided and paired by query id: {_e(' and '.join(tests) or 'not recorded')}. "
        + (
            "p-values are Holm–Bonferroni-corrected across datasets (one family per model, measure and test). "
            if holm
            else "No multiple-comparison correction is recorded. "
        )
        + f"A cell is marked when {rule}. The mean row is not tested. Hover a mark for its p-values.</p>"
    )
    rows = "".join("<tr>" + "".join(f"<td>{_sig_cell(k, e.get(k))}</td>" for k in _SIG_KEYS) + "</tr>" for e in entries)
    lines.append(
        f"<details><summary>All {len(entries)} significance tests against {_e(baseline)}</summary>"
        f'<table class="plain"><thead><tr>{"".join(f"<th>{_e(k)}</th>" for k in _SIG_KEYS)}</tr></thead>'
        f"<tbody>{rows}</tbody></table></details>"
    )
    return "\n".join(lines)


_SIG_KEYS = (
    "model",
    "dataset",
    "measure",
    "mean",
    "baseline_mean",
    "mean_diff",
    "num_queries",
    "p_ttest",
    "p_randomization",
    "p_ttest_holm",
    "p_randomization_holm",
    "significant",
)
_P_KEYS = {k for k in _SIG_KEYS if k.startswith("p_")}
_TESTS = (("p_ttest", "a paired t-test"), ("p_randomization", "a paired randomization test"))


def _sig_cell(key: str, value: object) -> str:
    if isinstance(value, float) and key in _P_KEYS:
        return f"{value:.4g}"
    if isinstance(value, float) and key == "mean_diff":
        return f"{value:+.4f}"
    return _num(value)


def _figure(figure: ReportFigure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f"<figure><h3>{_e(figure.title)}</h3>"
        f'<img src="data:image/png;base64,{data}" alt="{_e(figure.title)}">'
        f'<figcaption>{_e(figure.caption)} <span class="file">({_e(figure.filename)})</span></figcaption>'
        "</figure>"
    )


def _datasets_table(results: Mapping[str, Any]) -> str:
    rows, grouped = [], False
    for name, facts in results["datasets"].items():
        facts = facts if isinstance(facts, dict) else {}
        identical = facts.get("ignore_identical_ids")
        threshold = facts.get("rel_threshold")
        members = facts.get("members")
        grouped = grouped or bool(members)
        cells = [
            name,
            facts.get("split", "–"),
            facts.get("queries", "–"),
            facts.get("documents", "–"),
            "dropped" if identical is True else "kept" if identical is False else "not recorded",
            f"grade ≥ {threshold}" if threshold is not None else "not recorded",
            ", ".join(map(str, members)) if members else "–",
            facts.get("note") or "",
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = ("dataset", "split", "queries", "documents", "doc with the query's id", "relevant if", "members", "note")
    text = [
        "A retrieved document whose id equals the query id is removed from the ranking where the table says "
        "“dropped” (BEIR's rule for ArguAna and Quora). Binary measures (RR, R) count a document as relevant "
        "when its qrels grade reaches the threshold; nDCG uses the grades themselves."
    ]
    if grouped:
        text.append(
            "A row with members scores the mean over its members of each member's mean; its per-query "
            "figure and tests pool the members' queries (ids prefixed with the member's name)."
        )
    if results.get("rules"):
        text.append(f"Rules of this evaluation: {results['rules']}.")
    return (
        f"<p>{_e(' '.join(text))}</p>"
        f'<table class="plain"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_MODEL_COLUMNS = ("kind", "id", "revision", "rerank", "slug")


def _models_table(results: Mapping[str, Any], baseline: str | None) -> str:
    """One row per model: its facts from results.json, other recorded settings (e.g. BM25's k1) last."""
    rows = []
    for label, facts in results["models"].items():
        facts = facts if isinstance(facts, dict) else {}
        rerank = facts.get("rerank")
        if isinstance(rerank, dict):
            rerank = f"{rerank.get('model')} @ {rerank.get('depth')}"
        settings = ", ".join(f"{k}={v}" for k, v in facts.items() if k not in _MODEL_COLUMNS)
        cells = [
            _e(label + (" (baseline)" if label == baseline else "")),
            _e(facts.get("kind") or "–"),
            f"<code>{_e(facts.get('id') or '–')}</code>",
            f"<code>{_e(facts.get('revision') or '–')}</code>",
            _e(rerank or "–"),
            _e(facts.get("slug") or "–"),
            _e(settings or "–"),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("model", *_MODEL_COLUMNS, "settings")
    return (
        f'<table class="plain"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _manifest_section(manifest: Mapping[str, Any] | None, results: Mapping[str, Any]) -> str:
    wall = results.get("wall_time_s")
    wall_text = f"<p>Evaluation wall time: {_e(f'{wall:.1f}')} s.</p>" if isinstance(wall, int | float) else ""
    if manifest is None:
        return f'<h2>Manifest</h2>{wall_text}<p class="note">No {MANIFEST} in the results folder.</p>'
    scalars = {k: v for k, v in manifest.items() if isinstance(v, str | int | float | bool) or v is None}
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    rest = {k: v for k, v in manifest.items() if k not in scalars and k != "versions"}
    parts = [
        "<h2>Manifest</h2>",
        wall_text,
        '<table class="plain"><tbody>'
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in scalars.items())
        + "</tbody></table>",
    ]
    if versions:
        parts.append(
            '<h3>Library versions</h3><table class="plain"><tbody>'
            + "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in versions.items())
            + "</tbody></table>"
        )
    if rest:
        text = json.dumps(rest, indent=2, sort_keys=True, default=str)
        parts.append(f"<details><summary>Rest of {MANIFEST}</summary><pre>{_e(text)}</pre></details>")
    return "\n".join(p for p in parts if p)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1320px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;margin-top:0}.note{background:#fff8e1;border-left:4px solid #f9a825;padding:.4rem .8rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{padding:.25rem .55rem;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
table.results td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.results th.model{text-align:center;border-left:2px solid #bbb;max-width:16rem;overflow-wrap:anywhere}
th,td{overflow-wrap:anywhere}
table.results .first{border-left:2px solid #bbb}table.results .primary{background:#f3f7fc}
table.results td.best{font-weight:bold}table.results tr.mean{border-top:2px solid #888;background:#fafafa}
.up{color:#2e7d32}.down{color:#c62828}.tag{font-size:.75rem;background:#eee;border-radius:3px;padding:0 .3rem}
.legend{font-size:.85rem;color:#444}figure{margin:1.2rem 0}figure h3{margin:.2rem 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85rem;color:#444}
.scroll{overflow-x:auto}.file{color:#888}code{font-size:.85em}pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:.8rem}
"""
