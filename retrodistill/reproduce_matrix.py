"""Reproduction matrix files: reading and strictly validating the YAML list of entries, and selecting from it.

The file format, the statuses and the conventions are described in :mod:`retrodistill.reproduce`,
which runs the entries read here and reports on them (and still exports every public name of this
module). An error names the file, the line (of the entry, or of its offending key) and the entry::

    benchmarks/beir.yaml:12: entry 2 (scifact/bm25): tolerance is required when expected is a number
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ENTRY_KEYS = ("name", "command", "result", "expected", "tolerance", "source", "requires")
_REQUIRED_KEYS = ("name", "command", "result", "expected", "source")
_RESULT_KEYS = ("model", "dataset", "measure")
_REQUIRES_KEYS = ("datasets", "models", "modules")


class MatrixError(ValueError):
    """A reproduction matrix file is malformed; the message names the file, line and entry."""


@dataclass(frozen=True)
class ResultKey:
    """Where an entry's value lies in ``results.json``: ``["results"][model][dataset][measure]``."""

    model: str
    dataset: str
    measure: str


@dataclass(frozen=True)
class Requirements:
    """What an entry needs on this machine; a missing one makes it SKIPPED."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One row of the matrix. ``where`` is ``FILE:LINE`` of the entry, for messages."""

    name: str
    command: str
    result: ResultKey
    expected: float | None
    tolerance: float | None
    source: str
    requires: Requirements = field(default_factory=Requirements)
    where: str = ""

    @property
    def slug(self) -> str:
        """The entry's folder name under the output root: ``/`` becomes ``__``, other odd characters ``_``."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name.replace("/", "__"))


def load_matrix(path: str | os.PathLike[str]) -> list[Entry]:
    """Read and strictly validate a matrix file: a YAML list of entries (format: :mod:`retrodistill.reproduce`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MatrixError: invalid YAML, an unknown or missing key, a value of the wrong type, a command
            without ``{out}``, or two entries with the same name; the message starts ``FILE:LINE:``
            and names the entry by its 1-based index and name.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such matrix file")
    text = file.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise MatrixError(f"{file}{line}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, list) or not data:
        raise MatrixError(f"{file}: expected a non-empty YAML list of entries at the top level")
    nodes = root.value if isinstance(root, yaml.SequenceNode) else [root] * len(data)
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for index, (item, node) in enumerate(zip(data, nodes, strict=True), start=1):
        line = node.start_mark.line + 1
        name = item.get("name") if isinstance(item, dict) else None
        label = f"entry {index}" + (f" ({name})" if isinstance(name, str) and name else "")
        fail = _Fail(f"{file}:", label, line, _key_lines(node))
        entry = _parse_entry(item, fail, where=f"{file}:{line}")
        for other in (entry.name, entry.slug):
            if other in seen:
                raise fail(f"name {entry.name!r} clashes with {seen[other]} (names and their slugs must be unique)")
        seen[entry.name] = seen[entry.slug] = label
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class _Fail:
    """Builds a :class:`MatrixError` that points at an entry's line, or at one of its keys' line."""

    prefix: str
    label: str
    line: int
    key_lines: Mapping[str, int]

    def __call__(self, problem: str, key: str | None = None) -> MatrixError:
        at = self.key_lines.get(key, self.line) if key is not None else self.line
        return MatrixError(f"{self.prefix}{at}: {self.label}: {problem}")


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """1-based line of each key of a mapping node (for messages that point at the offending key)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _parse_entry(item: Any, fail: _Fail, where: str) -> Entry:
    if not isinstance(item, dict):
        raise fail(f"expected a mapping with keys {', '.join(_ENTRY_KEYS)}; got {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in _ENTRY_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ENTRY_KEYS)}", unknown[0])
    missing = [k for k in _REQUIRED_KEYS if k not in item]
    if missing:
        raise fail(f"missing key(s) {', '.join(missing)} (expected may be null, but must be written)")

    name = _text(item["name"], "name", fail)
    if any(part in ("", ".", "..") for part in name.split("/")) or name.startswith("."):
        # Its folder OUT/<slug> must stay inside OUT: no empty, '.' or '..' parts, no hidden name.
        raise fail(f"name {name!r} may not start with '.' or have an empty, '.' or '..' part", "name")
    command = _text(item["command"], "command", fail)
    if "{out}" not in command:
        raise fail("command must contain {out}, the folder it writes results.json into", "command")
    try:
        shlex.split(command)
    except ValueError as err:
        raise fail(f"command cannot be split into arguments ({err})", "command") from None

    result = item["result"]
    if not isinstance(result, dict) or sorted(result) != sorted(_RESULT_KEYS):
        got = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise fail(f"result must be a mapping with exactly the keys {', '.join(_RESULT_KEYS)}; got {got}", "result")
    key = ResultKey(**{k: _text(result[k], f"result.{k}", fail, "result") for k in _RESULT_KEYS})

    expected = _number(item["expected"], "expected", fail, nullable=True)
    tolerance = _number(item.get("tolerance"), "tolerance", fail, nullable=True)
    if expected is not None and tolerance is None:
        raise fail("tolerance is required when expected is a number", "expected")
    if tolerance is not None and tolerance < 0:
        raise fail(f"tolerance must be >= 0, got {tolerance}", "tolerance")

    source = _text(item["source"], "source", fail)
    requires = item.get("requires") or {}
    if not isinstance(requires, dict):
        raise fail(f"requires must be a mapping with keys {', '.join(_REQUIRES_KEYS)}", "requires")
    unknown = sorted(str(k) for k in requires if k not in _REQUIRES_KEYS)
    if unknown:
        raise fail(
            f"unknown key(s) requires.{', requires.'.join(unknown)}; allowed: {', '.join(_REQUIRES_KEYS)}", "requires"
        )
    lists: dict[str, tuple[str, ...]] = {}
    for k in _REQUIRES_KEYS:
        values = requires.get(k) or []
        if not isinstance(values, list):
            raise fail(f"requires.{k} must be a list, got {type(values).__name__}", "requires")
        lists[k] = tuple(_text(v, f"requires.{k}[{i}]", fail, "requires") for i, v in enumerate(values))
    return Entry(name, command, key, expected, tolerance, source, Requirements(**lists), where)


def _text(value: Any, what: str, fail: _Fail, key: str | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what} must be a non-empty string, got {value!r}", key or what)
    return value


def _number(value: Any, what: str, fail: _Fail, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(f"{what} must be a finite number{' or null' if nullable else ''}, got {value!r}", what)
    return float(value)


def select(entries: Sequence[Entry], filters: Sequence[str] | None) -> list[Entry]:
    """The entries whose name contains any of ``filters`` (all entries when there are none).

    Raises:
        ValueError: a filter matches no entry (most likely a typo), listing the names.
    """
    if not filters:
        return list(entries)
    unmatched = [f for f in filters if not any(f in e.name for e in entries)]
    if unmatched:
        names = ", ".join(e.name for e in entries)
        raise ValueError(f"no entry name contains {', '.join(map(repr, unmatched))}; entries: {names}")
    return [e for e in entries if any(f in e.name for f in filters)]


__all__ = ["Entry", "MatrixError", "Requirements", "ResultKey", "load_matrix", "select"]
