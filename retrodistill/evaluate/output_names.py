"""How model and dataset names become file names and table cells: never colliding, never escaping.

A name is the user's: a hub id, a folder (``.``, ``../student``), a label such as
``MODEL>>rerank:RERANKER@100``, a dataset folder's name. It is written into

- a path (``runs/<slug>/<slug>/run.trec``, a report figure): :func:`slug` keeps it readable and
  makes it injective, so two names never share a folder, and keeps it one plain path component, so
  no name reaches outside the output folder;
- a Markdown table (``results.md``): :func:`escape_markdown`, so ``|`` cannot split a cell and
  ``<script>`` is text, not HTML;
- a terminal table (rich): :func:`escape_rich`, so ``[red]`` is text, not markup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: Characters of a name kept as they are in its slug; every other one becomes ``_``.
_PLAIN = re.compile(r"[^A-Za-z0-9._@+-]")
#: Longest readable part of a slug: file systems cap a name at 255 bytes, paths at a few thousand.
_READABLE_MAX = 80
#: Markdown and HTML characters escaped in a cell: backslash escapes for Markdown's own, entities for HTML's.
_MARKDOWN = {c: "\\" + c for c in "\\`*_~[]|#"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def slug(name: str) -> str:
    """A file name for ``name``: readable, one path component, and different for different names.

    ``/`` becomes ``__``, other characters outside ``[A-Za-z0-9._@+-]`` become ``_``, leading dots go
    (so ``.`` and ``..`` name no folder above), the readable part is cut at 80 characters, and the
    first 6 hex digits of sha256 over the exact name follow ``__``. Names that differ only in case
    get different digits, so they stay apart on a case-insensitive disk too.

    Example:
        >>> slug("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers__all-MiniLM-L6-v2__e9e2c8'
        >>> slug("..")
        '___5ec1f7'
    """
    readable = run_tag(name).lstrip(".")[:_READABLE_MAX] or "_"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{readable}__{digest}"


def run_tag(name: str) -> str:
    """``name`` as the tag column of a TREC run: ``/`` becomes ``__``, other odd characters ``_`` (not unique).

    Example:
        >>> run_tag("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers__all-MiniLM-L6-v2'
    """
    return _PLAIN.sub("_", name.replace("/", "__")) or "_"


def check_distinct_slugs(names: Iterable[str], what: str) -> None:
    """Refuse names whose slugs meet on a case-insensitive disk (a 6-digit hash collision: rare, but checked).

    Raises:
        ValueError: naming both names and the folder they would share.
    """
    seen: dict[str, str] = {}
    for name in names:
        key = slug(name).casefold()
        if key in seen and seen[key] != name:
            raise ValueError(
                f"{what} names {seen[key]!r} and {name!r} would share the output folder {slug(name)!r}; rename one"
            )
        seen[key] = name


def escape_markdown(text: str) -> str:
    """``text`` as literal text in a Markdown table cell: markup escaped, HTML as entities, one line.

    Example:
        >>> escape_markdown("a|b<script>")
        'a\\\\|b&lt;script&gt;'
    """
    one_line = " ".join(text.split()) if any(c in text for c in "\r\n\t\v\f") else text
    return "".join(_MARKDOWN.get(c, c) for c in one_line)


def escape_rich(text: str) -> str:
    """``text`` as literal text in a rich table or console line (``[...]`` is not markup)."""
    from rich.markup import escape

    return escape(text)
