"""Reproduction matrix: run each entry's command, read its score, compare it with a published figure.

In the spirit of Pyserini's 2CR: a YAML file (``benchmarks/beir.yaml``) lists entries, each with the
exact command that produces a result and the figure it must reproduce. Every entry ends with one status:

============  =====================================================================================
``OK``        ``|value - expected| <= tolerance``
``FAIL``      out of tolerance, or the command failed, timed out or left no value in results.json
``REPORTED``  the entry has no expected figure yet (``expected: null``): the value is only reported
``SKIPPED``   something it needs is missing here (dataset folder, cached model, Python module)
============  =====================================================================================

An entry (keys other than these are an error naming the file, line and entry)::

    - name: scifact/minilm-l6-v2/dense            # unique; --filter matches substrings of it
      command: retrodistill evaluate --beir scifact --model sentence-transformers/all-MiniLM-L6-v2 --out {out}
      result: {model: sentence-transformers/all-MiniLM-L6-v2, dataset: scifact, measure: nDCG@10}
      expected: 0.6451                            # a number, or null (then the status is REPORTED)
      tolerance: 0.003                            # absolute; required unless expected is null
      source: MTEB leaderboard, ...               # where the expected figure comes from
      requires: {datasets: [scifact], models: [sentence-transformers/all-MiniLM-L6-v2], modules: []}

Conventions:

* ``command`` must contain ``{out}``. It is split with :func:`shlex.split` (no shell) and ``{out}`` is
  replaced, token by token, by ``OUT_ROOT/<slug>/out``; that folder is emptied before every run so a
  stale ``results.json`` is never read as new. The command's stdout and stderr go to
  ``OUT_ROOT/<slug>/command.log``. ``<slug>`` is the name with ``/`` turned into ``__``.
* A leading ``retrodistill`` runs this package's CLI and a leading ``python`` / ``python3`` runs
  :data:`sys.executable`, so every command uses the runner's own interpreter and installation.
* The value is ``OUT/results.json["results"][model][dataset][measure]``: the evaluate command's
  output (``retrodistill evaluate ... --out OUT``).
* ``requires`` is optional. A dataset is present when :func:`~retrodistill.data.download.resolve_dataset`
  finds it without downloading; a model is present when it is a local folder, or when it is in the
  Hugging Face cache (checked only when ``HF_HUB_OFFLINE`` is set, since otherwise it would download);
  a module is present when :func:`importlib.util.find_spec` finds it.

Example::

    entries = select(load_matrix("benchmarks/beir.yaml"), ["scifact"])
    outcomes = run_matrix(entries, "runs/reproduce", matrix="benchmarks/beir.yaml")
    # runs/reproduce/reproduce.json and reproduce.md now hold one row per entry
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retrodistill.artifacts import now_iso, write_json_atomic, write_text_atomic

Status = Literal["OK", "FAIL", "REPORTED", "SKIPPED"]
STATUSES: tuple[Status, ...] = ("OK", "FAIL", "REPORTED", "SKIPPED")

#: Added to the tolerance so that a value exactly ``tolerance`` away is OK despite float rounding
#: (``0.6481 - 0.6451`` is ``0.0030000000000000027``).
ROUNDING_SLACK = 1e-9
#: Lines of the command's log quoted in a FAIL's ``why``.
LOG_TAIL_LINES = 15
#: What a leading ``retrodistill`` becomes: this interpreter running the CLI's ``main``
#: (``python -m retrodistill.cli.app`` would do nothing: app.py has no ``__main__`` block).
CLI_ARGV = (
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'retrodistill'; from retrodistill.cli.app import main; main()",
)

_ENTRY_KEYS = ("name", "command", "result", "expected", "tolerance", "source", "requires")
_REQUIRED_KEYS = ("name", "command", "result", "expected", "source")
_RESULT_KEYS = ("model", "dataset", "measure")
_REQUIRES_KEYS = ("datasets", "models", "modules")
_OFFLINE_VALUES = ("1", "true", "yes", "on")


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


@dataclass
class Outcome:
    """What happened to one entry. ``diff`` is ``value - expected``; paths are strings (JSON-ready)."""

    name: str
    status: Status
    value: float | None
    expected: float | None
    tolerance: float | None
    diff: float | None
    source: str
    why: str
    command: str
    out_dir: str | None = None
    log: str | None = None
    wall_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- loading


def load_matrix(path: str | os.PathLike[str]) -> list[Entry]:
    """Read and strictly validate a matrix file: a YAML list of entries (see the module docstring).

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


# ---------------------------------------------------------------------------------------- requirements


def check_requirements(
    entry: Entry,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    hf_cache_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """Why ``entry`` must be skipped here, or ``None`` if everything it requires is present.

    Args:
        entry: the entry whose ``requires`` to check.
        data_dir: where named datasets live (``None``: ``$RETRODISTILL_DATA`` or ``./data``).
        hf_cache_dir: the Hugging Face hub cache to look in (``None``: the default, ``$HF_HOME/hub``).

    Returns:
        Every missing requirement, joined by ``"; "``; ``None`` when nothing is missing.
    """
    from retrodistill.data.download import default_data_dir, resolve_dataset

    reasons = []
    for dataset in entry.requires.datasets:
        try:
            resolve_dataset(dataset, data_dir, download=False)
        except FileNotFoundError:
            root = Path(data_dir) if data_dir is not None else default_data_dir()
            reasons.append(f"dataset {dataset!r} not found (not a folder, and not in {root})")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES:
        for model in entry.requires.models:
            if not _model_available(model, hf_cache_dir):
                reasons.append(f"model {model!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    for module in entry.requires.modules:
        if not _module_available(module):
            reasons.append(f"Python module {module!r} is not installed")
    return "; ".join(reasons) or None


def _model_available(model: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    if Path(model).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    # Every sentence-transformers model has modules.json, every transformers model config.json.
    for marker in ("modules.json", "config.json"):
        try:
            found = try_to_load_from_cache(model, marker, cache_dir=None if cache_dir is None else str(cache_dir))
        except ValueError:  # not a valid repo id
            return False
        if isinstance(found, str):
            return True
    return False


def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or the name is malformed
        return False


# --------------------------------------------------------------------------------------------- running


def command_argv(command: str, out_dir: str | os.PathLike[str]) -> list[str]:
    """Split ``command`` into arguments, put ``out_dir`` in place of ``{out}``, pin the interpreter.

    A leading ``retrodistill`` becomes :data:`CLI_ARGV`; a leading ``python`` or ``python3`` becomes
    :data:`sys.executable`.
    """
    argv = [token.replace("{out}", str(out_dir)) for token in shlex.split(command)]
    if argv and argv[0] == "retrodistill":
        return [*CLI_ARGV, *argv[1:]]
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def run_entry(
    entry: Entry,
    out_root: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> Outcome:
    """Run ``entry``'s command into a fresh ``OUT_ROOT/<slug>/out`` and judge the value it wrote.

    Args:
        entry: the entry to run (its requirements are not checked here: see :func:`check_requirements`).
        out_root: the runner's output folder.
        env: the command's environment (``None``: this process's).
        timeout_s: kill the command after this many seconds (``None``: no limit).

    Returns:
        An :class:`Outcome`: OK, FAIL (with the value and its difference, or the log's last lines) or
        REPORTED (no expected figure).
    """
    folder = Path(out_root) / entry.slug
    out_dir = folder / "out"
    log = folder / "command.log"
    if out_dir.exists():
        shutil.rmtree(out_dir)  # our own folder from an earlier run: never judge its stale results
    out_dir.mkdir(parents=True)

    def outcome(status: Status, why: str, value: float | None = None, wall: float | None = None) -> Outcome:
        diff = value - entry.expected if value is not None and entry.expected is not None else None
        return Outcome(
            entry.name, status, value, entry.expected, entry.tolerance, diff, entry.source, why,
            entry.command, str(out_dir), str(log), wall,
        )  # fmt: skip

    argv = command_argv(entry.command, out_dir)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as log_file:
        log_file.write(f"$ {entry.command.replace('{out}', str(out_dir))}\n")
        log_file.flush()
        try:
            proc = subprocess.run(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Unbuffered, so the log keeps stdout and stderr lines in the order they were written.
                env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            wall = time.perf_counter() - start
            return outcome("FAIL", f"timed out after {timeout_s:g} s{_log_tail(log)}", wall=wall)
        except OSError as err:
            return outcome("FAIL", f"cannot run {argv[0]!r}: {err}", wall=time.perf_counter() - start)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return outcome("FAIL", f"command exited with status {proc.returncode}{_log_tail(log)}", wall=wall)
    try:
        value = read_value(out_dir / "results.json", entry.result)
    except (FileNotFoundError, ValueError) as err:
        return outcome("FAIL", f"{err}{_log_tail(log, last_line=False)}", wall=wall)
    if entry.expected is None:
        return outcome("REPORTED", "no expected figure yet (expected: null)", value, wall)
    assert entry.tolerance is not None  # load_matrix requires a tolerance beside a number
    diff = value - entry.expected
    if abs(diff) <= entry.tolerance + ROUNDING_SLACK:
        return outcome("OK", "", value, wall)
    why = f"{value:.4f} is {diff:+.4f} from {entry.expected:.4f}, outside ±{entry.tolerance:g}"
    return outcome("FAIL", why, value, wall)


def read_value(path: Path, key: ResultKey) -> float:
    """``results.json["results"][model][dataset][measure]`` as a float.

    Raises:
        FileNotFoundError: there is no ``path``.
        ValueError: malformed JSON, a missing level (the message lists what that level holds), or a
            value that is not a number.
    """
    if not path.is_file():
        raise FileNotFoundError(f"the command wrote no {path}")
    try:
        node: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    trail = "results"
    for part in ("results", key.model, key.dataset, key.measure):
        if not isinstance(node, dict) or part not in node:
            holds = ", ".join(map(str, node)) if isinstance(node, dict) else type(node).__name__
            where = "the top level" if part == "results" else trail
            raise ValueError(f"{path}: {where} has no {part!r} (it holds: {holds or 'nothing'})")
        node = node[part]
        trail = f"{trail}[{part!r}]" if part != "results" else trail
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ValueError(f"{path}: {trail} is {node!r}, not a number")
    return float(node)


def _log_tail(log: Path, lines: int = LOG_TAIL_LINES, *, last_line: bool = True) -> str:
    """``": <last line>"`` (the usual culprit, kept on the first line of ``why``), then the log's tail."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    if not tail:
        return f" ({log} is empty)"
    head = f": {tail[-1].strip()}" if last_line else ""
    return f"{head}\nlast lines of {log}:\n" + "\n".join(tail)


def plan(
    entries: Sequence[Entry],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    hf_cache_dir: str | os.PathLike[str] | None = None,
) -> list[tuple[Entry, str | None]]:
    """Each entry with the reason it would be skipped (``None``: it would run). Runs nothing."""
    return [(e, check_requirements(e, data_dir, hf_cache_dir=hf_cache_dir)) for e in entries]


def run_matrix(
    entries: Sequence[Entry],
    out_root: str | os.PathLike[str],
    *,
    matrix: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    hf_cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    on_start: Callable[[Entry], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Check, run and judge every entry in order; rewrite the reports after each one.

    Commands run with this process's environment plus ``RETRODISTILL_DATA=data_dir`` when
    ``data_dir`` is given, so they find datasets where the requirement check found them. After every
    entry ``OUT_ROOT/reproduce.json`` and ``reproduce.md`` are rewritten (atomically), so an
    interrupted run still leaves a report of the entries it finished.

    Args:
        entries: what to run, in order (see :func:`select`).
        out_root: output folder; each entry works in ``OUT_ROOT/<slug>/``.
        matrix: the matrix file, recorded in the reports.
        data_dir, hf_cache_dir: see :func:`check_requirements`.
        timeout_s: per-command time limit.
        on_start, on_outcome: called before each command runs and after each entry is judged.
    """
    env = dict(os.environ)
    if data_dir is not None:
        from retrodistill.data.download import DATA_ENV

        env[DATA_ENV] = str(data_dir)
    outcomes: list[Outcome] = []
    for entry in entries:
        reason = check_requirements(entry, data_dir, hf_cache_dir=hf_cache_dir)
        if reason is not None:
            result = Outcome(entry.name, "SKIPPED", None, entry.expected, entry.tolerance, None, entry.source,
                             reason, entry.command)  # fmt: skip
        else:
            if on_start is not None:
                on_start(entry)
            result = run_entry(entry, out_root, env=env, timeout_s=timeout_s)
        outcomes.append(result)
        write_reports(outcomes, out_root, matrix=matrix)
        if on_outcome is not None:
            on_outcome(result)
    return outcomes


# --------------------------------------------------------------------------------------------- reports


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Number of outcomes per status, in :data:`STATUSES` order."""
    return {s: sum(o.status == s for o in outcomes) for s in STATUSES}


def write_reports(
    outcomes: Sequence[Outcome], out_root: str | os.PathLike[str], *, matrix: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Write ``OUT_ROOT/reproduce.json`` and ``OUT_ROOT/reproduce.md`` atomically; return their paths.

    reproduce.json: ``{"matrix", "created", "counts": {status: n}, "outcomes": [Outcome.to_dict(), ...]}``.
    """
    root = Path(out_root)
    created = now_iso()
    data = {
        "matrix": str(matrix) if matrix is not None else None,
        "created": created,
        "counts": counts(outcomes),
        "outcomes": [o.to_dict() for o in outcomes],
    }
    json_path, md_path = root / "reproduce.json", root / "reproduce.md"
    write_json_atomic(json_path, data)
    write_text_atomic(md_path, to_markdown(outcomes, matrix=matrix, created=created))
    return json_path, md_path


def to_markdown(outcomes: Sequence[Outcome], *, matrix: str | os.PathLike[str] | None = None, created: str = "") -> str:
    """A Markdown report: a summary line, then one table row per outcome."""
    summary = ", ".join(f"{n} {s}" for s, n in counts(outcomes).items())
    head = " · ".join(x for x in (str(matrix) if matrix else "", created, summary) if x)
    lines = [
        "# Reproduction matrix",
        "",
        head,
        "",
        "| name | status | value | expected | tolerance | diff | source | why |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        cells = [
            o.name, o.status, _fmt(o.value), _fmt(o.expected), _fmt(o.tolerance, "g"), _fmt(o.diff, "+.4f"),
            o.source, o.why,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")
