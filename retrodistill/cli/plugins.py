"""``retrodistill plugins``: every registered teacher, student, loss and index backend."""

from __future__ import annotations

import inspect
from typing import Any


def registries() -> dict[str, Any]:
    """Import every plug-in package (which registers its plug-ins) and return the registries."""
    from retrodistill.index import faiss_factory, faiss_flat  # noqa: F401  (registers the FAISS backends)
    from retrodistill.index.base import INDEXES
    from retrodistill.losses import LOSSES
    from retrodistill.students import STUDENTS
    from retrodistill.teachers import TEACHERS
    from retrodistill.teachers.pairwise import PAIRWISE_TEACHERS

    return {
        "teachers": TEACHERS,
        "pairwise teachers": PAIRWISE_TEACHERS,
        "students": STUDENTS,
        "losses": LOSSES,
        "index backends": INDEXES,
    }


def plugins() -> None:
    """List every registered plug-in with its parameters and defaults (the keys YAML configs accept)."""
    import dataclasses

    from rich.table import Table

    from retrodistill.cli.common import out_console
    from retrodistill.registry import parameters

    for kind, registry in registries().items():
        table = Table(title=kind, title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan")
        table.add_column("parameter")
        table.add_column("default")
        table.add_column("help")
        for name in registry.names():
            obj = registry.get(name)
            doc = (inspect.getdoc(obj) or "").splitlines()
            params = parameters(obj)
            first = True
            if not params:
                table.add_row(name, "-", "", doc[0] if doc else "")
            for p in params:
                default = "required" if p.default in (inspect.Parameter.empty, dataclasses.MISSING) else repr(p.default)
                table.add_row(name if first else "", p.name, default, p.help or (doc[0] if first and doc else ""))
                first = False
        out_console.print(table)
