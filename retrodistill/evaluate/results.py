"""What an evaluation computed, :class:`SuiteResult`, and its tables: Markdown, CSV, JSON, rich.

:func:`retrodistill.evaluate.suite.evaluate_suite` fills one and writes ``results.md``,
``results.csv`` and ``results.json`` from it (``results.tex``: :mod:`retrodistill.evaluate.latex`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.evaluate.output_names import escape_markdown, escape_rich

if TYPE_CHECKING:
    from retrodistill.evaluate.significance import Comparison


@dataclass
class SuiteResult:
    """What :func:`evaluate_suite` computed; ``results[label][dataset][measure]``."""

    models: dict[str, dict[str, Any]]
    datasets: dict[str, dict[str, Any]]
    measures: tuple[str, ...]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    per_query_paths: dict[str, dict[str, str]] = field(default_factory=dict)
    baseline: str | None = None
    alpha: float = 0.05
    significance: list[Comparison] = field(default_factory=list)
    rules: str = ""
    out_dir: Path | None = None
    wall_time_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    embedding_shards: dict[str, int] = field(default_factory=lambda: {"read": 0, "encoded": 0})
    #: What may make a figure mean something else than it seems to: the entries' own warnings
    #: (:func:`~retrodistill.data.registry.check_entry`) and self-hits found in the runs.
    warnings: list[str] = field(default_factory=list)

    def marks(self) -> dict[tuple[str, str, str], str]:
        """(model, dataset, measure) → ``"▲"``/``"▼"``/``""`` from the significance tests."""
        return {(c.model, c.dataset, c.measure): c.mark() for c in self.significance}

    def tables(self) -> dict[str, list[list[str]]]:
        """One table per measure: header ``["dataset", *models]``, a row per dataset, then ``mean``."""
        marks = self.marks()
        labels = list(self.models)
        out: dict[str, list[list[str]]] = {}
        for measure in self.measures:
            rows = [["dataset", *labels]]
            for dataset in [*self.datasets, "mean"]:
                row = [dataset]
                for label in labels:
                    value = self.results[label][dataset][measure]
                    row.append(f"{value:.4f}{marks.get((label, dataset, measure), '')}")
                rows.append(row)
            out[measure] = rows
        return out

    def to_markdown(self) -> str:
        # Names are the user's: escaped, so a "|" cannot split a cell nor "<script>" become HTML.
        lines: list[str] = []
        if self.rules:
            lines += [f"_{escape_markdown(self.rules)}_", ""]
        lines += [f"**Warning:** {escape_markdown(w)}" for w in self.warnings]
        if self.warnings:
            lines.append("")
        for measure, (header, *body) in self.tables().items():
            lines += [f"### {escape_markdown(measure)}", ""]
            lines.append("| " + " | ".join(escape_markdown(cell) for cell in header) + " |")
            lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
            lines += ["| " + " | ".join(escape_markdown(cell) for cell in row) + " |" for row in body]
            lines.append("")
        if self.baseline is not None and self.significance:
            lines.append(
                f"▲/▼: better/worse than {escape_markdown(self.baseline)}, significant at α = {self.alpha:g} "
                "by both a paired t-test and a paired randomization test, Holm–Bonferroni-corrected across datasets. "
                "The mean row is not tested."
            )
        return "\n".join(lines).rstrip() + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["model", "dataset", "measure", "value"])
        for label, by_dataset in self.results.items():
            for dataset, values in by_dataset.items():
                for measure in self.measures:
                    writer.writerow([label, dataset, measure, repr(values[measure])])
        return buffer.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {
            "measures": list(self.measures),
            "baseline": self.baseline,
            "rules": self.rules,
            "warnings": self.warnings,
            "models": self.models,
            "datasets": self.datasets,
            "results": self.results,
            "per_query": self.per_query_paths,
            "significance": [c.to_json() for c in self.significance],
            "cache": {"hits": self.cache_hits, "misses": self.cache_misses},
            "wall_time_s": round(self.wall_time_s, 3),
        }

    def to_rich_tables(self) -> list[Any]:
        from rich.table import Table

        tables = []
        for measure, (header, *body) in self.tables().items():
            table = Table(title=escape_rich(measure))
            table.add_column(escape_rich(header[0]))
            for name in header[1:]:
                table.add_column(escape_rich(name), justify="right")
            for i, row in enumerate(body):
                table.add_row(*(escape_rich(cell) for cell in row), end_section=i == len(body) - 2)
            tables.append(table)
        if not self.rules:
            return tables
        # The rules under each table as a line of their own: as the table's caption they were wrapped
        # to the table's width, a column of fragments under a narrow table.
        from rich.console import Group
        from rich.text import Text

        return [Group(table, Text(self.rules, style="dim italic")) for table in tables]
