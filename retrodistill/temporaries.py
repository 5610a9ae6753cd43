"""Temporary files that name their writer, and the removal of those a killed writer left behind.

A cache written by many runs (the run cache, the corpus-embedding cache) gets each file through a
temporary file beside it that is renamed into place. A run killed between the two leaves that
temporary file for ever; :func:`remove_stale_temporaries` deletes it on a later run.

Name of a temporary file for ``TARGET`` (:func:`retrodistill.artifacts.atomic_path`)::

    .TARGET.PID-HOST-XXXXXXXX.tmp      PID the writer's process id, HOST six hex digits naming its machine

A temporary file is stale when its writer is gone (judged by the process id only when ``HOST`` is
this machine: a cache on a shared disk may hold another machine's live writer) or when nothing
wrote to it for ``older_than_s`` seconds (a process id may have been reused; files named
without ``PID-HOST``, by earlier versions, are judged by age alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: A temporary file nothing has written to for this long is abandoned, whatever its name says.
STALE_AFTER_S = 3600.0
_OWNED = re.compile(r"^\..+\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[^.]+\.tmp$")


def host_tag() -> str:
    """Six hex digits naming this machine, so a process id is only judged on the machine it belongs to."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # not a process id at all
        return False
    return True


def writer_atomic_path(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """:func:`retrodistill.artifacts.atomic_path`: its temporary file is ``.NAME.PID-HOST-XXXXXXXX.tmp``."""
    from retrodistill.artifacts import atomic_path

    return atomic_path(path)


def is_stale(path: Path, *, older_than_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
    """Whether the temporary file ``path`` was left by a writer that is gone (see the module docstring)."""
    match = _OWNED.match(path.name)
    if match is not None and match["host"] == host_tag() and not process_alive(int(match["pid"])):
        return True
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:  # renamed into place or removed meanwhile: nothing to do
        return False
    return age > older_than_s


def remove_stale_temporaries(
    folder: str | os.PathLike[str], pattern: str = ".*.tmp", *, older_than_s: float = STALE_AFTER_S
) -> list[Path]:
    """Delete the stale temporary files matching ``pattern`` (a glob, may hold ``*/``) under ``folder``.

    Returns the files removed. A live writer's file is never touched; a folder that cannot be read
    is left alone (cleaning up is a courtesy, never a reason to fail).
    """
    removed: list[Path] = []
    now = time.time()
    try:
        candidates = [p for p in Path(folder).glob(pattern) if p.is_file()]
    except OSError:
        return removed
    for path in candidates:
        if is_stale(path, older_than_s=older_than_s, now=now):
            with contextlib.suppress(FileNotFoundError, PermissionError):  # another run may clean up too
                path.unlink()
                removed.append(path)
    if removed:
        logger.info("%s: removed %d temporary file(s) left by interrupted runs", folder, len(removed))
    return removed
