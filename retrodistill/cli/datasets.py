"""``retrodistill datasets``: the evaluation datasets retrodistill knows, with their rules."""

from __future__ import annotations

_HEADERS = {
    "name": "name",
    "kind": "kind",
    "splits": "splits",
    "default_split": "default",
    "ignore_identical_ids": "drop id = qid",
    "rel_threshold": "rel ≥",
    "hosted": "hosted",
}


def datasets() -> None:
    """List every registered dataset: kind, splits, identical-id rule, relevance threshold, hosting, notes."""
    from rich.table import Table

    from retrodistill.cli.common import out_console
    from retrodistill.data.registry import registry_table

    table = Table(title="datasets (evaluate --beir NAME)", title_justify="left")
    for header in _HEADERS.values():
        table.add_column(header, no_wrap=header == "name")
    notes = []
    for row in registry_table():
        table.add_row(*(_cell(row[key]) for key in _HEADERS))
        if row.get("note"):
            notes.append(f"[bold]{row['name']}[/]: {row['note']}")
    out_console.print(table)
    for note in notes:
        out_console.print(note, highlight=False)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value).replace(", ", ",")
