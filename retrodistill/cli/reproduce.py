"""``retrodistill reproduce``: run a reproduction matrix and mark each entry OK, FAIL, REPORTED or SKIPPED."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from retrodistill.cli.common import DataDirOption, console, out_console, user_errors

if TYPE_CHECKING:
    from retrodistill.reproduce import Outcome
    from retrodistill.reproduce_matrix import Entry

_STYLE = {"OK": "green", "FAIL": "bold red", "REPORTED": "cyan", "SKIPPED": "yellow"}


def reproduce(
    matrix: Annotated[
        Path,
        typer.Argument(help="Reproduction matrix: a YAML list of entries (command, result, expected, tolerance)."),
    ] = Path("benchmarks/beir.yaml"),
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Run only entries whose name contains this text (repeatable: any of them)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would run and what would be skipped, and why; run nothing.")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="Output folder: reproduce.json, reproduce.md and one folder per entry.")
    ] = Path("runs/reproduce"),
    data_dir: DataDirOption = None,
    timeout: Annotated[
        float | None, typer.Option(help="Fail an entry whose command runs longer than this many seconds.")
    ] = None,
) -> None:
    """Run a reproduction matrix: each entry's command, its value, and the published figure it must match.

    Each entry's value is read from OUT/<entry>/out/results.json: OK within the tolerance, FAIL outside it
    or when the command fails, REPORTED when the entry has no expected figure yet, SKIPPED when its
    dataset, cached model or Python module is missing here.

    Writes OUT/reproduce.json and OUT/reproduce.md; exits with status 1 if any entry FAILs.

    Example: retrodistill reproduce benchmarks/beir.yaml --filter scifact --dry-run
    """
    from retrodistill.reproduce import counts, plan, run_matrix
    from retrodistill.reproduce_matrix import load_matrix, select

    with user_errors():
        entries = select(load_matrix(matrix), filter_)
        if dry_run:
            out_console.print(_plan_table(plan(entries, data_dir)))
            return

        def started(entry: Entry) -> None:
            console.print(f"[bold]running[/] {entry.name}  (log: {out / entry.slug / 'command.log'})", highlight=False)

        def finished(outcome: Outcome) -> None:
            value = "" if outcome.value is None else f" {outcome.value:.4f}"
            note = f"  {_first_line(outcome.why)}" if outcome.status in ("FAIL", "SKIPPED") else ""
            console.print(
                f"  [{_STYLE[outcome.status]}]{outcome.status}[/] {outcome.name}{value}{note}", highlight=False
            )

        outcomes = run_matrix(
            entries, out, matrix=matrix, data_dir=data_dir, timeout_s=timeout, on_start=started, on_outcome=finished
        )
    out_console.print(_outcome_table(outcomes))
    summary = ", ".join(f"{n} {s}" for s, n in counts(outcomes).items())
    console.print(f"[green]wrote[/] {out / 'reproduce.md'} and reproduce.json  ({summary})", highlight=False)
    if any(o.status == "FAIL" for o in outcomes):
        raise typer.Exit(1)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


def _outcome_table(outcomes: list[Outcome]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="reproduction matrix (details: reproduce.md)", title_justify="left")
    table.add_column("name", overflow="fold")
    for column in ("status", "value", "expected", "diff"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for o in outcomes:
        expected = "" if o.expected is None else f"{o.expected:.4f} ± {o.tolerance:g}"
        table.add_row(
            escape(o.name), f"[{_STYLE[o.status]}]{o.status}[/]", _fmt(o.value), expected, _fmt(o.diff, "+.4f"),
            escape(_first_line(o.why)),
        )  # fmt: skip
    return table


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _plan_table(rows: list[tuple[Entry, str | None]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="reproduction matrix (dry run)", title_justify="left")
    table.add_column("name", overflow="fold")
    for column in ("would", "expected"):
        table.add_column(column, no_wrap=True)
    table.add_column("command / why skipped", min_width=24)
    for entry, reason in rows:
        would = "[yellow]skip[/]" if reason else "[green]run[/]"
        expected = "null" if entry.expected is None else f"{entry.expected:.4f} ± {entry.tolerance:g}"
        table.add_row(escape(entry.name), would, expected, escape(reason or entry.command))
    return table
