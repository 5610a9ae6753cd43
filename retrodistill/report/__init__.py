"""The evaluation report: one self-contained HTML page with the results table and figures.

``build_report(results_dir)`` reads the folder ``retrodistill evaluate`` wrote and writes
``report.html`` plus its PNG figures (see :mod:`retrodistill.report.html`); the figures are drawn
by :mod:`retrodistill.report.plots`. matplotlib loads only when a figure is drawn.
"""

from __future__ import annotations

from retrodistill.report.html import ReportFigure, build_report, load_results
from retrodistill.report.plots import WinLossTie
from retrodistill.report.train_logs import read_train_log

__all__ = ["ReportFigure", "WinLossTie", "build_report", "load_results", "read_train_log"]
