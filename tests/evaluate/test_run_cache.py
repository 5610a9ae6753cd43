"""The run cache: entries verified by sha256 and row count, damaged ones recomputed, leftovers removed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from retrodistill.data.collections import Collection, load_beir
from retrodistill.evaluate.metrics import Run
from retrodistill.evaluate.run_cache import RunCache
from retrodistill.temporaries import host_tag

RUN: Run = {"q1": {"d1": 2.5, "d2": 1.0}, "q2": {"d3": 0.5}}


@pytest.fixture()
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "test")


def _get(cache: RunCache, run: Run = RUN) -> tuple[Run, int]:
    """The cache's answer for key ``k`` and how many times it computed the run."""
    calls = []

    def compute() -> Run:
        calls.append(1)
        return {q: dict(d) for q, d in run.items()}

    return cache.get("k", compute, "model on toy"), len(calls)


def test_an_entry_records_the_sha256_and_rows_of_its_run(tmp_path: Path) -> None:
    cache = RunCache(tmp_path)
    assert _get(cache) == (RUN, 1)
    entry = json.loads((tmp_path / "k" / "key.json").read_text())
    run_bytes = (tmp_path / "k" / "run.trec").read_bytes()
    assert entry == {"what": "model on toy", "rows": 3, "sha256": "sha256:" + hashlib.sha256(run_bytes).hexdigest()}
    assert _get(cache) == (RUN, 0)
    assert (cache.hits, cache.misses) == (1, 1)


def _cut_at_a_line(path: Path) -> None:
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))


def _negate_scores(path: Path) -> None:
    lines = [line.split() for line in path.read_text().splitlines()]
    path.write_text("".join(f"{q} Q0 {d} {r} {-float(s)!r} {t}\n" for q, _, d, r, s, t in lines))


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _a_folder(path: Path) -> None:
    path.unlink()
    (path / "inner").mkdir(parents=True)


def _entry_not_json(path: Path) -> None:
    (path.parent / "key.json").write_bytes(b"\x00\xff{not json")


def _entry_a_list(path: Path) -> None:
    (path.parent / "key.json").write_text("[1, 2]")


def _run_removed(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_cut_at_a_line, "run.trec does not match the sha256 in key.json"),
        (_negate_scores, "run.trec does not match the sha256 in key.json"),
        (_random_bytes, "run.trec does not match the sha256 in key.json"),
        (_a_folder, "run.trec cannot be read (IsADirectoryError)"),
        (_run_removed, "run.trec cannot be read (FileNotFoundError)"),
        (_entry_not_json, "key.json cannot be read (UnicodeDecodeError)"),
        (_entry_a_list, "key.json is not an object"),
    ],
)
def test_a_damaged_entry_is_named_recomputed_and_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None], reason: str
) -> None:
    cache = RunCache(tmp_path)
    _get(cache)
    good = (tmp_path / "k" / "run.trec").read_bytes(), (tmp_path / "k" / "key.json").read_bytes()
    damage(tmp_path / "k" / "run.trec")
    with caplog.at_level(logging.WARNING, logger="retrodistill.evaluate.run_cache"):
        assert _get(cache) == (RUN, 1)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == f"run cache entry {tmp_path / 'k'} is damaged: {reason}; recomputing model on toy"
    assert ((tmp_path / "k" / "run.trec").read_bytes(), (tmp_path / "k" / "key.json").read_bytes()) == good
    assert _get(RunCache(tmp_path)) == (RUN, 0)  # the rewritten entry serves the next run


def test_a_row_count_that_disagrees_is_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = RunCache(tmp_path)
    _get(cache)
    entry_path = tmp_path / "k" / "key.json"
    entry_path.write_text(json.dumps({**json.loads(entry_path.read_text()), "rows": 4}))
    with caplog.at_level(logging.WARNING, logger="retrodistill.evaluate.run_cache"):
        assert _get(cache) == (RUN, 1)
    assert "run.trec has 3 rows, key.json records 4" in caplog.text
    assert json.loads(entry_path.read_text())["rows"] == 3


def test_an_entry_without_a_checksum_is_a_quiet_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = RunCache(tmp_path)
    _get(cache)
    (tmp_path / "k" / "key.json").write_text(json.dumps({"what": "model on toy"}))  # as older versions wrote
    with caplog.at_level(logging.WARNING, logger="retrodistill.evaluate.run_cache"):
        assert _get(cache) == (RUN, 1)
    assert not caplog.records
    assert "sha256" in json.loads((tmp_path / "k" / "key.json").read_text())


def test_an_entry_that_cannot_be_written_does_not_stop_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "k").write_text("a file where the entry's folder goes")
    with caplog.at_level(logging.WARNING, logger="retrodistill.evaluate.run_cache"):
        assert _get(RunCache(tmp_path)) == (RUN, 1)
    assert f"run cache entry {tmp_path / 'k'} cannot be written" in caplog.text
    assert (tmp_path / "k").read_text() == "a file where the entry's folder goes"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_killed_runs_are_removed_on_the_next(tmp_path: Path) -> None:
    entry = tmp_path / "0123abcd"
    entry.mkdir()
    here, other = host_tag(), "000000" if host_tag() != "000000" else "111111"
    files = {
        "dead": entry / f".run.trec.{_dead_pid()}-{here}-ab12cd34.tmp",
        "live": entry / f".key.json.{os.getpid()}-{here}-ab12cd34.tmp",
        "other-host": entry / f".run.trec.{_dead_pid()}-{other}-ab12cd34.tmp",  # its pid means nothing here
        "old-unnamed": entry / ".run.trec.x1y2z3.tmp",
        "fresh-unnamed": entry / ".run.trec.a1b2c3.tmp",
        "not-ours": entry / "notes.tmp",
    }
    for path in files.values():
        path.write_text("half a run")
    two_hours_ago = time.time() - 7200
    os.utime(files["old-unnamed"], (two_hours_ago, two_hours_ago))
    _get(RunCache(tmp_path))
    assert {name for name, path in files.items() if path.exists()} == {
        "live",
        "other-host",
        "fresh-unnamed",
        "not-ours",
    }
    assert not [p for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_cached_run_gives_the_metrics_of_a_fresh_one(tmp_path: Path, toy: Collection) -> None:
    from retrodistill.data.registry import SuiteEntry
    from retrodistill.evaluate.suite import evaluate_suite

    entry = SuiteEntry("toy", [toy], False, 1, "test")
    kwargs = {"k": 10, "cache_dir": tmp_path / "cache", "show_progress": False}
    first = evaluate_suite(["bm25s"], [entry], ("nDCG@10",), tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    (run_path,) = (tmp_path / "cache").glob("*/run.trec")
    _negate_scores(run_path)
    second = evaluate_suite(["bm25s"], [entry], ("nDCG@10",), tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    assert (second.cache_hits, second.cache_misses) == (0, 1)
    assert second.results == first.results
