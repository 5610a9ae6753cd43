"""One progress bar per long loop: rich, labelled, with the count, elapsed time and ETA, on stderr.

Every long loop of the toolkit (scoring pairs, encoding a corpus, mining queries) shows one bar made
here, so they all look alike, go to stderr (stdout stays for results) and vanish when done
(``transient``): a finished command leaves its summary, not a trail of 100% bars. Third-party bars
(sentence-transformers' ``Batches``) are switched off where ours is shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def progress_bar(
    total: int | None, description: str, unit: str, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A bar over ``total`` ``unit``s labelled ``description``; yields ``advance(n)`` (a no-op when disabled).

    ``total=None`` when the count is not known up front: the bar pulses and counts.

    Example:
        >>> with progress_bar(3, "encoding", "documents", enabled=False) as advance:
        ...     advance(3)
    """
    if not enabled:
        yield lambda n: None
        return
    with new_progress(unit) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def new_progress(unit: str) -> Any:
    """The toolkit's ``rich.progress.Progress``: label, bar, ``done/total unit``, elapsed, ETA; on stderr, transient."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
