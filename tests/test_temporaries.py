"""Temporary files that name their writer, and the removal of those killed writers left."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrodistill.temporaries import host_tag, is_stale, remove_stale_temporaries, writer_atomic_path


def test_the_temporary_file_names_its_process_and_machine(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "run.trec"
    with writer_atomic_path(target) as tmp:
        assert re.fullmatch(rf"\.run\.trec\.{os.getpid()}-{host_tag()}-[^.]+\.tmp", tmp.name)
        assert tmp.parent == target.parent and not is_stale(tmp)
        tmp.write_text("done")
    assert target.read_text() == "done" and [p.name for p in target.parent.iterdir()] == ["run.trec"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.trec"
    target.write_text("old")
    with pytest.raises(RuntimeError), writer_atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_stale_means_a_dead_writer_here_or_an_old_file(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, here = child.pid, host_tag()
    other = "000000" if here != "000000" else "111111"
    names = {
        "dead": f".a.{dead}-{here}-x.tmp",
        "live": f".a.{os.getpid()}-{here}-x.tmp",
        "elsewhere": f".a.{dead}-{other}-x.tmp",
        "unnamed": ".a.x.tmp",
        "old": f".b.{os.getpid()}-{here}-x.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_text("x")
    an_hour_and_more = time.time() - 3700
    os.utime(tmp_path / names["old"], (an_hour_and_more, an_hour_and_more))
    removed = remove_stale_temporaries(tmp_path)
    assert {p.name for p in removed} == {names["dead"], names["old"]}
    assert remove_stale_temporaries(tmp_path / "missing") == []  # nothing to clean is not an error
