"""The report's figures, drawn on matplotlib's Agg canvas and returned as PNG, SVG and PDF bytes.

Each function takes plain numbers and returns a :class:`Rendered` figure, so
:mod:`retrodistill.report.html` can write the files, embed the PNG in the page and leave the vector
versions beside it for a paper. Conventions:

- No pyplot: figures are ``matplotlib.figure.Figure`` objects on a ``FigureCanvasAgg``, drawn
  inside ``matplotlib.style.context("default")``, so neither the caller's backend nor their
  ``matplotlibrc`` changes anything and the same input gives byte-identical files (the PNG
  ``Software`` tag, the SVG and PDF dates are left out; SVG ids are salted with a constant).
- One colour per model, the same in every figure: :func:`model_colors`.
- A per-query difference is ``model - baseline``; ``|difference| <= TIE_TOLERANCE`` is a tie.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrodistill.report.train_logs import training_series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
TIE_TOLERANCE = 1e-9
WIN_COLOR = "#2e7d32"
LOSS_COLOR = "#c62828"
_LINESTYLES = ("-", "--", ":", "-.")  # one per training log; colours tell the loss keys apart
_MAX_BARS = 150  # more queries than this are drawn as filled steps: same picture, far faster


@contextmanager
def _figure(width: float, height: float, ncols: int = 1, sharex: bool = False) -> Iterator[tuple[Figure, list[Axes]]]:
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, ncols, squeeze=False, sharex=sharex)[0]
        yield fig, list(axes)


@dataclass(frozen=True)
class Rendered:
    """One figure in every format the report writes: ``png`` (embedded in the page), ``svg``, ``pdf``."""

    png: bytes
    svg: bytes
    pdf: bytes

    def formats(self) -> dict[str, bytes]:
        return {"png": self.png, "svg": self.svg, "pdf": self.pdf}


#: Per format, the metadata that would make two renderings of the same figure differ.
_METADATA: dict[str, dict[str, None]] = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}


def _render(fig: Figure) -> Rendered:
    import matplotlib

    files = {}
    with matplotlib.rc_context({"svg.hashsalt": "retrodistill", "pdf.compression": 6}):
        for fmt, metadata in _METADATA.items():
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, metadata=metadata)
            files[fmt] = buffer.getvalue()
    return Rendered(**files)


def _wrap(text: str, width: int) -> str:
    """Break ``text`` into lines of at most ``width`` characters, after spaces, ``/``, ``>>`` or ``:``.

    Model labels (``org/model>>rerank:org/model@100``) have no spaces; breaking after their
    separators keeps names whole. A piece longer than ``width`` stays whole on its own line.
    """
    lines = [""]
    for piece in re.split(r"(?:(?<=[ /:])|(?<=>>))(?!>)", text):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def model_colors(labels: Sequence[str]) -> dict[str, str]:
    """A fixed colour per model label, in the given order (tab10, then tab20 beyond ten models)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(labels)}


def measure_per_dataset(
    values: Mapping[str, Mapping[str, float | None]],
    groups: Sequence[str],
    measure: str,
    colors: Mapping[str, str],
) -> Rendered:
    """Grouped bars: one group per dataset (the last one may be ``"mean"``), one bar per model.

    Args:
        values: ``values[model][group]``, ``None`` or absent where a model has no result.
        groups: the x-axis groups in order; a group named ``"mean"`` is set apart by a dashed line.
        measure: the measure's name, for the axis label.
        colors: a colour per model (see :func:`model_colors`).
    """
    models = list(values)
    n_bars = len(models) * len(groups)
    width = min(18.0, max(6.5, 1.5 + 0.32 * n_bars + 0.4 * len(groups)))
    bar = 0.8 / max(1, len(models))
    annotate = n_bars <= 36
    rotate = len(groups) > 6 or max((len(g) for g in groups), default=0) > 14
    with _figure(width, max(4.6, 0.3 * width)) as (fig, (ax,)):
        top = 0.0
        for i, model in enumerate(models):
            xs, ys = [], []
            for j, group in enumerate(groups):
                value = values[model].get(group)
                if value is not None and math.isfinite(value):
                    xs.append(j - 0.4 + bar * (i + 0.5))
                    ys.append(value)
            top = max([top, *ys])
            bars = ax.bar(xs, ys, width=bar * 0.95, color=colors[model], label=_wrap(model, 60))
            if annotate:
                ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2, rotation=90 if len(models) > 3 else 0)
        if "mean" in groups and len(groups) > 1:
            ax.axvline(groups.index("mean") - 0.5, color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, (top or 1.0) * (1.25 if annotate else 1.08))
        ax.set_ylabel(measure)
        ax.set_title(f"{measure} per dataset", fontsize=12)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        long_labels = any(len(m) > 40 for m in models)
        ncol = min(len(models), 2 if long_labels and width > 12 else 1 if long_labels else 3)
        fig.legend(loc="outside lower center", ncol=ncol, frameon=False, fontsize=9)
        return _render(fig)


@dataclass(frozen=True)
class WinLossTie:
    """How often the model beats, trails or ties the baseline per query."""

    wins: int
    losses: int
    ties: int

    @classmethod
    def of(cls, differences: Sequence[float]) -> WinLossTie:
        wins = sum(d > TIE_TOLERANCE for d in differences)
        losses = sum(d < -TIE_TOLERANCE for d in differences)
        return cls(wins, losses, len(differences) - wins - losses)


def per_query_differences(
    differences: Sequence[float], model: str, baseline: str, dataset: str, measure: str
) -> Rendered:
    """Per-query ``model - baseline`` differences, sorted from best to worst, as bars around zero.

    The title gives the dataset, the mean difference and the win/loss/tie counts (:class:`WinLossTie`).
    """
    diffs = sorted(differences, reverse=True)
    counts = WinLossTie.of(diffs)
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    with _figure(8.0, 4.2) as (fig, (ax,)):
        parts = (
            ([(x, d) for x, d in enumerate(diffs) if d > TIE_TOLERANCE], WIN_COLOR, "model better"),
            ([(x, d) for x, d in enumerate(diffs) if d < -TIE_TOLERANCE], LOSS_COLOR, "baseline better"),
        )
        for points, color, name in parts:
            label = f"{name}: {len(points)}"
            if len(diffs) <= _MAX_BARS:
                xs, ys = zip(*points, strict=True) if points else ((), ())
                ax.bar(xs, ys, width=0.8, color=color, linewidth=0, label=label)
            elif points:  # sorted, so wins (losses) are one run of queries: one filled step polygon
                ax.stairs(
                    [d for _, d in points],
                    [points[0][0] - 0.5, *(x + 0.5 for x, _ in points)],
                    baseline=0.0,
                    fill=True,
                    color=color,
                    linewidth=0,
                    label=label,
                )
            else:
                ax.bar([], [], color=color, label=label)
        ties = [x for x, d in enumerate(diffs) if abs(d) <= TIE_TOLERANCE]
        # ties have no bar; a tick on the zero line shows where they are
        ax.plot(ties, [0.0] * len(ties), "|", color="0.45", markersize=7, label=f"tie: {len(ties)}")
        ax.axhline(0, color="0.2", linewidth=0.8)
        limit = max([0.05, *(abs(d) for d in diffs)]) * 1.08
        ax.set_ylim(-limit, limit)
        ax.set_xlim(-0.5 if diffs else -1, max(len(diffs), 1) - 0.5)
        ax.set_xlabel(f"queries, sorted by difference (n = {len(diffs)})")
        ax.set_ylabel(f"Δ {measure}")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        title = f"{_wrap(model, 80)}\nvs {_wrap(baseline, 80)} on {dataset}"
        summary = f"{counts.wins} wins, {counts.losses} losses, {counts.ties} ties   (mean Δ {measure} = {mean:+.4f})"
        ax.set_title(f"{title}\n{summary}", fontsize=10)
        # wins, losses, ties in that order (matplotlib lists lines before bars); sorted best-first,
        # the upper right holds the smallest bars
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("tie"))
        ax.legend(
            [handles[i] for i in order], [labels[i] for i in order], loc="upper right", fontsize=8, framealpha=0.9
        )
        return _render(fig)


#: One line of a training-curves panel: the index of its log (its line style), its legend label, its points.
Curve = tuple[int, str, list[tuple[float, float]]]


def series_label(key: str) -> str:
    """A log key as the legend names it.

    ``loss`` stays; the term ``loss_margin-mse`` is ``loss: margin-mse``; ``eval_loss`` is ``eval loss``;
    ``eval_dev_nDCG@10`` is ``dev_nDCG@10`` (its panel says it is an evaluation).
    """
    if key.startswith("loss_"):
        return f"loss: {key.removeprefix('loss_')}"
    if key == "eval_loss":
        return "eval loss"
    return key.removeprefix("eval_")


def training_panels(logs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> tuple[list[Curve], list[Curve]]:
    """The lines :func:`training_curves` draws: ``(loss panel, evaluation panel)``.

    The loss panel holds ``loss``, each ``loss_<term>`` and ``eval_loss``; the evaluation panel every
    other ``eval_*`` series (:func:`retrodistill.report.train_logs.training_series`). With more than
    one log, each label starts with the log's.
    """
    losses: list[Curve] = []
    evals: list[Curve] = []
    for run, (name, log) in enumerate(logs):
        for panel, keyed in zip((losses, evals), training_series(log), strict=True):
            for key, points in keyed.items():
                label = f"{name}: {series_label(key)}" if len(logs) > 1 else series_label(key)
                panel.append((run, label, points))
    return losses, evals


def training_curves(logs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> Rendered:
    """Loss and each loss term against step; the evaluation figures against step in a second panel.

    Args:
        logs: ``(label, log_history)`` pairs; the label names the run in the legend.

    The lines are :func:`training_panels`'. The loss axis is logarithmic when all losses are
    positive and span more than 50x.
    """
    losses, evals = training_panels(logs)
    with _figure(12.0 if evals else 8.0, 4.8, ncols=2 if evals else 1, sharex=True) as (fig, axes):
        _plot_lines(axes[0], losses)
        finite = [v for _, _, points in losses for _, v in points if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
            axes[0].set_yscale("log")
        axes[0].set_title("training loss", fontsize=11)
        axes[0].set_ylabel("loss")
        if evals:
            _plot_lines(axes[1], evals)
            axes[1].set_title("evaluation", fontsize=11)
            axes[1].set_ylabel("value")
        return _render(fig)


def _plot_lines(ax: Axes, curves: Sequence[Curve]) -> None:
    for color, (run, label, points) in enumerate(curves):
        steps, values = zip(*points, strict=True)
        ax.plot(
            steps,
            values,
            _LINESTYLES[run % len(_LINESTYLES)],
            color=f"C{color % 10}",
            marker="o" if len(points) <= 30 else None,
            markersize=3,
            linewidth=1.3,
            label=_wrap(label, 45),
        )
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best", frameon=True, framealpha=0.85)
