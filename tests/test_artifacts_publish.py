"""Publishing a directory and writing a file atomically: content, no missing moment, fsync."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from retrodistill import artifacts
from retrodistill.artifacts import publish_dir, write_text_atomic


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(text)
    (path / "sub").mkdir()
    (path / "sub" / "more.txt").write_text(text * 2)
    return path


def _exchange_supported(tmp_path: Path) -> bool:
    a, b = _folder(tmp_path / "probe-a", "a"), _folder(tmp_path / "probe-b", "b")
    return artifacts._rename_exchange(a, b)


def test_a_new_target_gets_the_staged_content(tmp_path: Path) -> None:
    staged = _folder(tmp_path / ".staging", "new")
    assert publish_dir(staged, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "data.txt").read_text() == "new"
    assert not staged.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "fallback"])
def test_an_existing_target_is_replaced_and_nothing_is_left_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(artifacts, "_rename_exchange", lambda first, second: False)
    target = _folder(tmp_path / "out", "old")
    (target / "only-in-old.txt").write_text("x")
    staged = _folder(tmp_path / ".staging", "new")
    publish_dir(staged, target)
    assert (target / "data.txt").read_text() == "new" and (target / "sub" / "more.txt").read_text() == "newnew"
    assert not (target / "only-in-old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_target_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    publish_dir(_folder(tmp_path / ".staging", "new"), tmp_path / "out")
    assert (tmp_path / "out" / "data.txt").read_text() == "new"


def test_a_polling_reader_never_sees_the_target_missing(tmp_path: Path) -> None:
    if not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here; the fallback has a short window")
    target = _folder(tmp_path / "out", "0")
    seen: list[str] = []
    missing = 0
    done = threading.Event()

    def read() -> None:
        nonlocal missing
        while not done.is_set():
            try:
                seen.append((target / "data.txt").read_text())
            except FileNotFoundError:
                missing += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 201):
            publish_dir(_folder(tmp_path / f".staging-{i}", str(i)), target)
    finally:
        done.set()
        reader.join()
    assert missing == 0
    assert (target / "data.txt").read_text() == "200"
    assert len(set(seen)) > 1  # the reader did run across the publishes


def test_publish_fsyncs_the_staged_files_and_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    publish_dir(_folder(tmp_path / ".staging", "new"), tmp_path / "out")
    # Two files, two folders (sub and the staged root), and the parent after the rename.
    assert len(synced) == 5


def test_atomic_writes_fsync_the_content_and_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        order.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        order.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_atomic(tmp_path / "x.json", "{}")
    assert (tmp_path / "x.json").read_text() == "{}"
    if Path("/proc/self/fd").is_dir():
        assert order == ["fsync-file", "replace", "fsync-dir"]
    else:
        assert order.count("replace") == 1 and len(order) == 3
