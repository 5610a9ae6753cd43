"""Output directories: may a command write here, and writing them so that a failure destroys nothing.

The rule every command follows (:func:`check_output`): an output never equals or contains one of
its inputs, and an existing, non-empty output is refused unless it is the command's own resumable
artifact or ``--overwrite`` is given. :func:`guarded_output` applies that rule around the writing
and puts a replaced directory back if the command fails; :func:`output_lock` keeps a second run off
an output being written; :func:`staging_dir` makes a folder beside the output, to be renamed onto
it by :func:`retrodistill.artifacts.publish_dir`, and :func:`clean_stale_staging` removes those of
runs that were killed.

Split out of :mod:`retrodistill.artifacts` (manifests, fingerprints, atomic writes and
:func:`~retrodistill.artifacts.publish_dir`), which still exports every public name here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path


class OutputExistsError(ValueError):
    """An output path would destroy or corrupt something the user has."""


def _describe_contents(path: Path) -> str:
    from retrodistill.artifacts import MANIFEST  # not at the top: artifacts re-exports this module's names

    if path.is_file() or path.is_symlink():
        return "a file"
    manifest = path / MANIFEST
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stage = json.loads(manifest.read_text(encoding="utf-8")).get("stage")
            if stage:
                return f"a {stage} artifact"
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def check_output(
    out: str | os.PathLike[str],
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    resumable: Iterable[str] = (),
    overwrite: bool = False,
) -> str:
    """Decide whether a command may write its output directory ``out``.

    The rule every command follows: an output never equals or contains one of the command's inputs
    (not even with ``--overwrite``); an existing, non-empty ``out`` is refused unless it is this
    command's own resumable artifact (its manifest's stage is in ``resumable``) or ``overwrite`` is set.

    Args:
        out: the output directory.
        inputs: what the command reads, by option name (``{"--store": "runs/scores"}``); ``None`` values
            and hub ids that are not local paths are ignored.
        resumable: manifest stages of artifacts this command resumes in place.
        overwrite: the user passed ``--overwrite``.

    Returns:
        ``"new"`` (absent or empty), ``"resume"`` (own resumable artifact) or ``"replace"`` (exists;
        ``overwrite`` given).

    Raises:
        OutputExistsError: with a one-line message naming the path and what to do.
    """
    from retrodistill.artifacts import MANIFEST  # not at the top: artifacts re-exports this module's names

    target = Path(out).expanduser().resolve()
    for option, given in (inputs or {}).items():
        if given is None or str(given) == "":
            continue
        source = Path(given).expanduser()
        if not source.exists():
            continue
        source = source.resolve()
        if source == target or target in source.parents:
            relation = "is" if source == target else "contains"
            raise OutputExistsError(
                f"--out {out} {relation} the input {option} {given}; writing there would destroy it: "
                "choose another --out"
            )
    if not target.exists() and not target.is_symlink():
        return "new"
    if target.is_dir() and not any(target.iterdir()):
        return "new"
    stages = set(resumable)
    if stages and target.is_dir() and (target / MANIFEST).is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads((target / MANIFEST).read_text(encoding="utf-8")).get("stage") in stages:
                return "resume"
    if overwrite:
        if target.is_file() or target.is_symlink():
            raise OutputExistsError(f"--out {out} is a file; give a directory")
        return "replace"
    raise OutputExistsError(
        f"--out {out} exists and holds {_describe_contents(target)}; pass --overwrite to replace it, "
        "or choose another --out"
    )


@contextlib.contextmanager
def guarded_output(
    out: str | os.PathLike[str],
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    resumable: Iterable[str] = (),
    overwrite: bool = False,
) -> Iterator[str]:
    """:func:`check_output`, then let the block write ``out``; a replaced directory is kept until it succeeds.

    With ``overwrite`` over an existing directory, the old one is moved aside (``.NAME.replaced-PID``)
    before the block runs and removed only after it succeeds; if the block fails, whatever it wrote
    is removed and the old directory is put back. A command that cannot resume (no ``resumable``
    stages) and fails leaves no new folder behind. Yields the state :func:`check_output` returned.
    """
    import shutil

    resumable = frozenset(resumable)
    existed = Path(out).exists()
    state = check_output(out, inputs=inputs, resumable=resumable, overwrite=overwrite)
    if state != "replace":
        try:
            yield state
        except BaseException:
            # A command that cannot resume leaves nothing half-written where there was nothing.
            if not resumable and not existed and Path(out).is_dir():
                shutil.rmtree(out, ignore_errors=True)
            raise
        return
    target = Path(out)
    aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    target.rename(aside)
    try:
        yield state
    except BaseException:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        aside.rename(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


_STAGING = ".staging-"


def staging_dir(target: str | os.PathLike[str]) -> Path:
    """A fresh folder beside ``target`` (same filesystem, so publishing it is one rename).

    Named ``.NAME.staging-PID-HOST-XXXX``: :func:`clean_stale_staging` removes those of dead processes, so
    folders of killed runs do not pile up.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    from retrodistill.temporaries import host_tag

    prefix = f".{target.name}{_STAGING}{os.getpid()}-{host_tag()}-"
    staged = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    # mkdtemp makes 0700 folders; the published artifact gets the mode a plain mkdir would give it.
    mask = os.umask(0)
    os.umask(mask)
    staged.chmod(0o777 & ~mask)
    return staged


def clean_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders beside ``target`` left by processes that no longer run; return them.

    Only folders named by :func:`staging_dir` for this ``target`` are considered, and only when the
    process id in the name is gone (a live run's staging folder is never touched).
    """
    import shutil

    from retrodistill.temporaries import host_tag, process_alive

    target = Path(target)
    prefix = f".{target.name}{_STAGING}"
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        if not path.name.startswith(prefix) or not path.is_dir():
            continue
        pid_text, _, rest = path.name[len(prefix) :].partition("-")
        host = rest.partition("-")[0]
        # A process id is judged only on its own machine (a shared disk may hold another's live run).
        if pid_text.isdigit() and host == host_tag() and not process_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class OutputLockedError(ValueError):
    """Another live process is writing the same output."""


@contextlib.contextmanager
def output_lock(target: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``target`` while a command writes it, so a second run refuses.

    The lock file holds ``PID HOST``; one left by a process that is gone (on this host) is stale and
    taken over. Only a lock of a live process refuses.

    Raises:
        OutputLockedError: naming the process that holds it.
    """
    import socket

    from retrodistill.temporaries import process_alive

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text(encoding="utf-8").strip().partition(" ")
            except OSError:
                continue  # released meanwhile
            if pid_text.isdigit() and (host != socket.gethostname() or process_alive(int(pid_text))):
                where = "" if host == socket.gethostname() else f" on {host}"
                raise OutputLockedError(
                    f"{target} is being written by another {command} (process {pid_text}{where}, lock {lock}): "
                    "wait for it to finish, or stop it and run again to resume"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(me + "\n")
        break
    else:
        raise OutputLockedError(f"{target}: could not take the lock {lock}")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8").strip() == me:
                lock.unlink()


__all__ = [
    "OutputExistsError",
    "OutputLockedError",
    "check_output",
    "clean_stale_staging",
    "guarded_output",
    "output_lock",
    "staging_dir",
]
