"""Artifact directories: atomic writes, fingerprints and ``manifest.json``.

Every stage writes one directory holding its data and a ``manifest.json``::

    {
      "stage": "score-teacher",                # which command made it
      "created": "2026-11-21T10:00:00+00:00",
      "config": {...},                         # the resolved config
      "versions": {"retrodistill": "0.1.0", "torch": "...", ...},
      "inputs": {"corpus": "sha256:...", ...}, # fingerprints of what it read
      "fingerprint": "sha256:...",             # of this artifact's own data, for later stages
      "counts": {...}, "wall_time_s": 12.3,
      ...                                      # stage-specific fields
    }

A later stage compares the ``inputs`` it depends on with the fingerprints of what it is given and
refuses to mix artifacts that do not belong together (:func:`check_inputs`).

Writes are atomic and durable: a file through :func:`atomic_path`, a whole directory staged beside
its target and renamed onto it by :func:`publish_dir`. Deciding whether a command may write its
output (:func:`~retrodistill.outputs.check_output`, :func:`~retrodistill.outputs.guarded_output`,
:func:`~retrodistill.outputs.output_lock`, :func:`~retrodistill.outputs.staging_dir`,
:func:`~retrodistill.outputs.clean_stale_staging`) lives in :mod:`retrodistill.outputs`; those names
are importable from here too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from retrodistill.outputs import (
    OutputExistsError,
    OutputLockedError,
    check_output,
    clean_stale_staging,
    guarded_output,
    output_lock,
    staging_dir,
)

MANIFEST = "manifest.json"

_VERSIONED = (
    "retrodistill",
    "torch",
    "transformers",
    "sentence-transformers",
    "accelerate",
    "faiss-cpu",
    "faiss-gpu",
    "ir-measures",
    "pytrec-eval-terrier",
    "bm25s",
    "pyarrow",
)


class ArtifactMismatchError(ValueError):
    """Artifacts made from different inputs were given to one stage."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash leaves either the old file or no file, never a half-written one: the file's content is
    fsynced before the rename and the directory after it.
    """
    from retrodistill.temporaries import host_tag

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named .NAME.PID-HOST-XXXX.tmp, so a later run can tell a dead writer's leftover (temporaries.py).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{host_tag()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual umask-based mode
            os.chmod(tmp_path, 0o666 & ~_umask())
            # The content reaches the disk before the name does: after a power cut the path holds
            # the old file or the complete new one, never a renamed empty one.
            fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)  # the rename itself
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename into it, a new file) to the disk, where the OS allows it.

    Windows cannot open a directory, and some filesystems refuse fsync on one: there the entries are
    as durable as the filesystem makes them, and nothing is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (directories after their contents)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                fsync_file(file)
        fsync_dir(folder)


def _rename_exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the call does not exist (another OS, an old C library or kernel) or the
        filesystem does not support it; the caller then falls back to two renames.

    Raises:
        OSError: any other failure of the call.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def publish_dir(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Rename a fully written ``staged`` directory onto ``target``, replacing an existing one.

    A reader never sees ``target`` missing or half-written: ``staged``'s files are fsynced first;
    an absent (or empty) ``target`` is replaced by one ``rename``; an existing one is swapped with
    ``staged`` in one atomic ``renameat2(RENAME_EXCHANGE)`` and then removed from ``staged``'s
    place. Where that call is unavailable (not Linux, an old kernel or C library, a filesystem
    without it), the old directory is renamed aside and the new one renamed in: ``target`` is then
    absent between the two renames, and is never a mix. The parent directory is fsynced last.
    """
    import shutil

    staged, target = Path(staged), Path(target)
    _fsync_tree(staged)
    try:
        os.rename(staged, target)  # no target, or an empty one: replaced atomically
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not isinstance(err, FileExistsError):
            raise
        if _rename_exchange(staged, target):
            shutil.rmtree(staged, ignore_errors=True)  # now holds the old target
        else:
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            target.rename(backup)
            staged.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
    fsync_dir(target.parent)
    return target


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_strings(parts: Iterable[str]) -> str:
    """Fingerprint an ordered sequence of strings (unambiguous: each part is length-prefixed)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


#: Config keys that name another artifact or input file a later stage may need to find again.
INPUT_PATH_KEYS = ("candidates", "triples", "store", "teacher_scores", "pair_store")


def write_manifest(directory: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically, adding ``created``, library versions and ``relative_paths``.

    ``relative_paths`` records each existing input named in ``config`` (:data:`INPUT_PATH_KEYS`)
    relative to this artifact, so :func:`recorded_input` finds it after a ``cd`` or after both
    folders moved together.
    """
    data = dict(manifest)
    data.setdefault("created", now_iso())
    data.setdefault("versions", library_versions())
    config = data.get("config")
    if isinstance(config, Mapping) and "relative_paths" not in data:
        here = Path(directory).resolve()
        relative = {
            key: os.path.relpath(Path(value).resolve(), here)
            for key in INPUT_PATH_KEYS
            if isinstance(value := config.get(key), str) and value and Path(value).exists()
        }
        if relative:
            data["relative_paths"] = relative
    path = Path(directory) / MANIFEST
    write_json_atomic(path, data)
    return path


def recorded_input(directory: str | os.PathLike[str], manifest: Mapping[str, Any], key: str) -> Path | None:
    """Where the input ``key`` of the artifact at ``directory`` is now, or ``None`` if it names none.

    Tried in order: the path recorded relative to the artifact (it moves with it), then the path as
    given when the artifact was made (relative to that command's working directory).

    Raises:
        FileNotFoundError: the artifact names the input but it is at neither place.
    """
    given = (manifest.get("config") or {}).get(key)
    relative = (manifest.get("relative_paths") or {}).get(key)
    if not given and not relative:
        return None
    tried = []
    if relative:
        beside = Path(directory) / relative
        if beside.exists():
            return beside
        tried.append(str(beside))
    if given:
        if Path(given).exists():
            return Path(given)
        tried.append(str(given))
    raise FileNotFoundError(
        f"{directory} was made from {key} {given or relative}, which is not at {' nor '.join(tried)}: "
        f"pass --{key.replace('_', '-')} with where it is now"
    )


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a retrodistill artifact: {MANIFEST} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; is {directory} a retrodistill artifact?") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(data).__name__}; is {directory} an artifact?")
    return data


def check_inputs(
    expected: Mapping[str, str],
    actual: Mapping[str, str],
    *,
    artifact: str,
    given: str,
) -> None:
    """Raise :class:`ArtifactMismatchError` naming every input whose fingerprint differs.

    Args:
        expected: fingerprints recorded in the artifact's manifest (``manifest["inputs"]``).
        actual: fingerprints of what the current stage was given; only keys present in both are compared.
        artifact: what the manifest belongs to (e.g. ``"teacher store runs/scores"``), for the message.
        given: what the actual fingerprints describe (e.g. ``"collection data/scifact"``).
    """
    differing = [k for k in expected if k in actual and expected[k] != actual[k]]
    if differing:
        lines = [f"{artifact} was not made from {given}:"]
        for key in differing:
            lines.append(f"  {key}: artifact has {expected[key]}, given {actual[key]}")
        raise ArtifactMismatchError("\n".join(lines))


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def model_revision(
    model: str, revision: str | None = None, marker: str = "config.json", cache_dir: str | None = None
) -> str:
    """Identify the exact weights of ``model``.

    Args:
        model: a local directory or a Hugging Face Hub id.
        revision: the revision asked for (branch, tag or commit), for Hub ids.
        marker: a file every snapshot of the model has, used to find the snapshot in the Hub cache.
        cache_dir: the Hub cache to look in; ``None`` for the default (``$HF_HOME/hub``).

    Returns:
        For a local directory, ``sha256:<hex>`` over its weight files (relative path and content, in
        sorted order); for a Hub id, the commit hash of the cached snapshot the model was loaded from.
    """
    path = Path(model)
    if path.is_dir():
        return _sha256_weights(path)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, marker, cache_dir=cache_dir, revision=revision)
    if isinstance(cached, str) and Path(cached).parent.parent.name == "snapshots":
        return Path(cached).parent.name
    # Not in the cache under that name (it was loaded some other way): say so rather than guess.
    return revision or "unknown"


def _sha256_weights(directory: Path) -> str:
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and ".git" not in p.parts
    )
    if not files:
        raise FileNotFoundError(f"{directory}: no weight files ({', '.join(_WEIGHT_SUFFIXES)}) to fingerprint")
    digest = hashlib.sha256()
    for file in files:
        digest.update(os.fsencode(file.relative_to(directory).as_posix()) + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


__all__ = [
    "INPUT_PATH_KEYS",
    "MANIFEST",
    "ArtifactMismatchError",
    "OutputExistsError",
    "OutputLockedError",
    "atomic_path",
    "check_inputs",
    "check_output",
    "clean_stale_staging",
    "fsync_dir",
    "fsync_file",
    "guarded_output",
    "library_versions",
    "model_revision",
    "now_iso",
    "output_lock",
    "publish_dir",
    "read_manifest",
    "recorded_input",
    "sha256_file",
    "sha256_strings",
    "staging_dir",
    "write_json_atomic",
    "write_manifest",
    "write_text_atomic",
]
