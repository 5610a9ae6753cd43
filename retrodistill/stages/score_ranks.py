"""The processes of one ``score-teacher`` run: this process's rank, and the messages between ranks.

:mod:`retrodistill.stages.score_teacher` documents how ranks share the parts of a store; this module
holds the plumbing: :func:`scoring_rank` reads the launcher's rank, :class:`Group` broadcasts rank
0's plan and waits at barriers over gloo, :func:`bind_gpu` gives each rank its GPU, and the
``ranks/rank-RRRRR.json`` progress files (:func:`rank_file`) in which each rank lists its finished
parts are merged into the manifest by rank 0 (:func:`absorb_rank_files`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.data.part_store import file_sha256, part_index

logger = logging.getLogger(__name__)

RANKS_DIR = "ranks"
#: How long a rank waits for the others at a barrier: the slowest rank's remaining parts must fit.
BARRIER_TIMEOUT = _dt.timedelta(hours=24)


@dataclass(frozen=True)
class ScoringRank:
    """This process's place among the processes scoring one store (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def share(self, todo: Sequence[int]) -> list[int]:
        """This rank's parts among ``todo`` (the parts left, in index order): every ``world_size``-th."""
        return list(todo[self.rank :: self.world_size])


def scoring_rank(environ: Mapping[str, str] | None = None) -> ScoringRank:
    """Read this process's rank from an initialised ``torch.distributed`` group or the environment.

    ``torchrun`` and ``accelerate launch`` set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without
    them (and without a process group) the process is rank 0 of 1.

    Raises:
        ValueError: a variable is not an integer, or the rank is outside ``[0, WORLD_SIZE)``.
    """
    env = os.environ if environ is None else environ
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    if "torch" in sys.modules:  # no process group can exist before torch is imported
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return ScoringRank(dist.get_rank(), dist.get_world_size(), local_rank)
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0 if world_size == 1 else None)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"environment: RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    return ScoringRank(rank, world_size, local_rank)


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"environment: WORLD_SIZE is above 1 but {name} is not set; launch with torchrun")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment: {name}={value!r} is not an integer") from None


class Group:
    """Broadcast and barrier among the ranks of one run, over gloo (small Python objects, on CPU)."""

    def __init__(self, me: ScoringRank) -> None:
        self.size = me.world_size
        self._group: Any = None
        self._owns_default = False
        if self.size == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(
                "gloo", init_method="env://", rank=me.rank, world_size=me.world_size, timeout=BARRIER_TIMEOUT
            )
            self._owns_default = True
        elif dist.get_backend() != "gloo":  # e.g. nccl from accelerate: objects would need a GPU each
            self._group = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank; a :class:`_RankZeroFailed` from rank 0 is raised instead."""
        if self.size > 1:
            import torch.distributed as dist

            box = [obj]
            dist.broadcast_object_list(box, src=0, group=self._group)
            obj = box[0]
        if isinstance(obj, _RankZeroFailed):
            kind = next((k for k in _SHARED_ERRORS if k.__name__ == obj.kind), RuntimeError)
            raise kind(f"rank 0 failed: {obj.message}")
        return obj

    @contextlib.contextmanager
    def failing_together(self) -> Iterator[None]:
        """Rank 0: on an error, tell the ranks waiting at the next broadcast, then raise it here."""
        try:
            yield
        except Exception as err:
            if self.size > 1:
                import torch.distributed as dist

                kind = next((k.__name__ for k in _SHARED_ERRORS if isinstance(err, k)), "RuntimeError")
                dist.broadcast_object_list([_RankZeroFailed(kind, str(err))], src=0, group=self._group)
            raise

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def close(self) -> None:
        if self.size == 1:
            return
        import torch.distributed as dist

        if self._owns_default:
            dist.destroy_process_group()
        elif self._group is not None:
            dist.destroy_process_group(self._group)


@dataclass
class _RankZeroFailed:
    """Sent in place of a broadcast's object when rank 0 failed before it (the ranks then raise)."""

    kind: str
    message: str


#: Errors the other ranks raise as such when rank 0 raised them (most specific first); others: RuntimeError.
_SHARED_ERRORS: tuple[type[Exception], ...] = (ArtifactMismatchError, FileNotFoundError, ValueError)


def bind_gpu(me: ScoringRank) -> None:
    """With many processes on a GPU node, make ``"cuda"`` mean this rank's GPU (``cuda:LOCAL_RANK``)."""
    if me.world_size == 1:
        return
    import torch

    if torch.cuda.is_available() and me.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(me.local_rank)


def absorb_rank_files(out: Path, manifest: dict[str, Any], *, strict_session: str | None) -> None:
    """Move the parts listed in ``ranks/*.json`` into ``manifest["parts"]``, with their session's counts.

    A listed part is taken only if its file has the listed sha256 and the part its expected rows.
    At the start of a run (``strict_session`` None) a part that fails this is left to be rescored
    (a crash may have come first); at the end, a part reported by this session that fails it
    raises ``RuntimeError``: the ranks do not see the same files.
    """
    part_size, num_pairs = int(manifest["part_size"]), int(manifest["num_pairs"])
    sessions = {s.get("id"): s for s in manifest["sessions"]}
    for path in sorted((out / RANKS_DIR).glob("rank-*.json")):
        try:
            progress = json.loads(path.read_text(encoding="utf-8"))
            parts: dict[str, Any] = progress["parts"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if strict_session is not None:
                raise RuntimeError(f"{path}: unreadable progress file ({err})") from None
            logger.warning("%s: unreadable progress file (%s); its parts will be scored again", path, err)
            continue
        for name, entry in parts.items():
            index = part_index(name)
            expected = min(part_size, num_pairs - index * part_size) if index is not None else -1
            file = out / name
            if (
                expected > 0
                and entry.get("rows") == expected
                and file.is_file()
                and file_sha256(file) == entry.get("sha256")
            ):
                manifest["parts"][name] = {"rows": entry["rows"], "sha256": entry["sha256"]}
            elif strict_session is not None and progress.get("session") == strict_session:
                raise RuntimeError(
                    f"{path} lists {name} ({entry}) but rank 0 finds "
                    f"{'no such file' if not file.is_file() else 'other contents'} in {out}: "
                    "is the store on a filesystem every rank shares?"
                )
        session = sessions.get(progress.get("session"))
        rank = progress.get("rank")
        if session is not None and isinstance(rank, int) and 0 <= rank < len(session.get("parts_by_rank", [])):
            session["parts_by_rank"][rank] = int(progress.get("parts_scored", 0))
            session["parts_scored"] = sum(session["parts_by_rank"])
            session["wall_time_s"] = max(float(session["wall_time_s"]), float(progress.get("wall_time_s", 0.0)))
    manifest["parts"] = dict(sorted(manifest["parts"].items()))


def rank_file(out: Path, rank: int) -> Path:
    """The progress file in which rank ``rank`` lists the parts it finished."""
    return out / RANKS_DIR / f"rank-{rank:05d}.json"


def delete_rank_files(out: Path) -> None:
    """Delete the ranks' progress files (and ``ranks/`` once empty): their parts are in the manifest."""
    directory = out / RANKS_DIR
    if directory.is_dir():
        for path in directory.glob("rank-*.json"):
            path.unlink()
        if not any(directory.iterdir()):
            directory.rmdir()
