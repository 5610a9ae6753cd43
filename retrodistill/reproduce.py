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

The file is read and validated by :mod:`retrodistill.reproduce_matrix` (:func:`load_matrix`,
:func:`select`, :class:`Entry`, :class:`MatrixError`, all importable from here too); this module
checks each entry's requirements, runs it, judges its value and writes the reports.

Example::

    entries = select(load_matrix("benchmarks/beir.yaml"), ["scifact"])
    outcomes = run_matrix(entries, "runs/reproduce", matrix="benchmarks/beir.yaml")
    # runs/reproduce/reproduce.json and reproduce.md now hold one row per entry
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from retrodistill.artifacts import now_iso, write_json_atomic, write_text_atomic
from retrodistill.reproduce_matrix import Entry, MatrixError, Requirements, ResultKey, load_matrix, select

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

_OFFLINE_VALUES = ("1", "true", "yes", "on")


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


__all__ = [
    "CLI_ARGV",
    "LOG_TAIL_LINES",
    "ROUNDING_SLACK",
    "STATUSES",
    "Entry",
    "MatrixError",
    "Outcome",
    "Requirements",
    "ResultKey",
    "Status",
    "check_requirements",
    "command_argv",
    "counts",
    "load_matrix",
    "plan",
    "read_value",
    "run_entry",
    "run_matrix",
    "select",
    "to_markdown",
    "write_reports",
]
