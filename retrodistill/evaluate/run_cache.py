"""The run cache: every (model, collection) run kept on disk, checked on use, shared by evaluations.

One folder per entry, the key a sha256 over the model's identity
(:func:`~retrodistill.evaluate.runs.model_identity`,
and the reranker's and its depth), the collection's corpus and queries fingerprints and the ids of
the split's queries (:func:`cache_key`)::

    cache_dir/<key>/run.trec     the run (:mod:`retrodistill.evaluate.run_files`)
    cache_dir/<key>/key.json     {"what": "MODEL on DATASET", "rows": 6000, "sha256": "sha256:…", "depth": 1001}

What is cached is the run *before* the post-filters: the first stage's top ``depth = k + 1``
documents, self-hits included (one more than asked, so that dropping a document whose id is the
query's still leaves ``k``). The identical-id rule and the cut to ``k`` are applied on read
(:func:`~retrodistill.evaluate.runs.post_filter`), and the relevance threshold only when scoring,
so changing any of them never re-encodes a corpus nor recomputes a run; an entry serves every ``k`` below its depth. A
reranked column caches the reranker's scores of the first stage's top ``rerank_depth + 1``
(:func:`~retrodistill.evaluate.runs.rerank_scores`) and puts them in place on read
(:func:`~retrodistill.evaluate.runs.apply_rerank`).

An entry is used only when ``run.trec`` still has the sha256 and the row count its ``key.json``
records: a run cut short, edited or overwritten is reported in one warning line naming the entry,
recomputed and written over the entry (``run.trec`` first, then ``key.json``, each renamed into
place, so a reader never takes a half-written entry for a good one). An entry that cannot be read
or rewritten never stops an evaluation; temporary files killed runs left in the cache are removed
by the next run (:mod:`retrodistill.temporaries`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import sha256_file, sha256_strings
from retrodistill.data.collections import DataFormatError
from retrodistill.evaluate.metrics import Run
from retrodistill.evaluate.run_files import read_run, write_run
from retrodistill.temporaries import remove_stale_temporaries, writer_atomic_path

if TYPE_CHECKING:
    from retrodistill.data.collections import Collection

logger = logging.getLogger(__name__)

CACHE_ENV = "RETRODISTILL_CACHE"
#: Bump when a change to retrieval code changes runs, so old cache entries are not reused.
#: 2: runs are cached before the identical-id rule, at depth k + 1.
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """``$RETRODISTILL_CACHE/runs`` if set, else ``~/.cache/retrodistill/runs``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "runs" if root else Path.home() / ".cache" / "retrodistill" / "runs"


class _DamagedEntry(Exception):
    """A run cache entry whose run does not match its record (the message says how)."""


class RunCache:
    """Runs on disk by key (see the module docstring); ``root=None`` computes every run."""

    RUN, ENTRY = "run.trec", "key.json"

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0
        self._swept = False

    def get(self, key: str, compute: Callable[[], Run], what: str, depth: int | None = None) -> Run:
        """The entry's run, or ``compute()`` written as the entry.

        With ``depth``, the entry records it, and an entry of a smaller depth (or none) is a miss:
        its run has fewer documents per query than asked.
        """
        if self.root is None:
            self.misses += 1
            return compute()
        if not self._swept:  # once per evaluation: the leftovers of killed runs, not of this one
            remove_stale_temporaries(self.root, "*/.*.tmp")
            self._swept = True
        folder = self.root / key
        run = self._read(folder, what, depth)
        if run is not None:
            self.hits += 1
            logger.info("cache hit: %s (%s)", what, folder / self.RUN)
            return run
        self.misses += 1
        run = compute()
        self._write(folder, run, what, depth)
        return run

    def _read(self, folder: Path, what: str, depth: int | None = None) -> Run | None:
        """The entry's run if it is intact and deep enough; ``None`` (with a warning if it was damaged) otherwise."""
        run_path, entry_path = folder / self.RUN, folder / self.ENTRY
        if not run_path.exists() and not entry_path.exists():
            return None
        try:
            return self._verified(run_path, entry_path, depth)
        except _DamagedEntry as damage:
            logger.warning("run cache entry %s is damaged: %s; recomputing %s", folder, damage, what)
            return None

    def _verified(self, run_path: Path, entry_path: Path, depth: int | None = None) -> Run | None:
        """The run if it has the sha256 and row count of its entry; ``None`` for an entry without them.

        Raises:
            _DamagedEntry: saying what does not match or cannot be read.
        """
        try:
            entry = json.loads(entry_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _DamagedEntry(f"{self.ENTRY} cannot be read ({type(err).__name__})") from None
        if not isinstance(entry, dict):
            raise _DamagedEntry(f"{self.ENTRY} is not an object")
        if "sha256" not in entry or "rows" not in entry:
            # Written before entries recorded a checksum: nothing to verify it by, so it is a miss
            # (recomputed once, and rewritten with its checksum).
            logger.info(
                "run cache entry %s has no checksum (an older version wrote it): recomputing", entry_path.parent
            )
            return None
        if depth is not None and not (isinstance(entry.get("depth"), int) and entry["depth"] >= depth):
            logger.info(
                "run cache entry %s holds depth %s, %d asked: recomputing", entry_path.parent, entry.get("depth"), depth
            )
            return None
        try:
            if sha256_file(run_path) != entry["sha256"]:
                raise _DamagedEntry(f"{self.RUN} does not match the sha256 in {self.ENTRY}")
            run = read_run(run_path)
        except (OSError, UnicodeDecodeError, DataFormatError) as err:
            raise _DamagedEntry(f"{self.RUN} cannot be read ({type(err).__name__})") from None
        rows = sum(len(docs) for docs in run.values())
        if rows != entry["rows"]:
            raise _DamagedEntry(f"{self.RUN} has {rows} rows, {self.ENTRY} records {entry['rows']}")
        return run

    def _write(self, folder: Path, run: Run, what: str, depth: int | None = None) -> None:
        """Write ``run`` and its entry over whatever the folder held; a failure only costs the caching."""
        run_path = folder / self.RUN
        try:
            for path in (run_path, folder / self.ENTRY):
                if path.is_dir() and not path.is_symlink():  # a damaged entry's debris must not block the rename
                    shutil.rmtree(path)
            with writer_atomic_path(run_path) as tmp:
                write_run(tmp, run, tag="retrodistill")
                checksum = sha256_file(tmp)
            entry: dict[str, Any] = {"what": what, "rows": sum(len(docs) for docs in run.values()), "sha256": checksum}
            if depth is not None:
                entry["depth"] = depth
            with writer_atomic_path(folder / self.ENTRY) as tmp:
                tmp.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            logger.warning("run cache entry %s cannot be written (%s): %s is not cached", folder, err, what)


def cache_key(identity: Mapping[str, Any], collection: Collection) -> str:
    """The run cache's key: model identity, corpus and queries fingerprints, the split's query ids.

    Not ``k``, the identical-id rule nor the relevance threshold: they are applied to the cached run.
    """
    payload = {
        "version": CACHE_VERSION,
        "model": identity,
        "corpus": collection.fingerprints.get("corpus"),
        "queries": collection.fingerprints.get("queries"),
        # The queries file holds every split's queries: the run answers only this split's.
        "query_ids": sha256_strings(collection.queries),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
