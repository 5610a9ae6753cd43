"""Teacher-score stores: the teacher's score for every distinct (query, document) pair.

Layout of a store directory::

    STORE/
      manifest.json         stage, teacher (name, model, revision, max_length, dtype, ...), inputs
                            (corpus, queries, candidates fingerprints), part_size, parts, complete
      part-00000.parquet    query_id string, doc_id string, score float32
      part-00001.parquet    ...

Invariants (Tevatron-style): scores are the teacher's raw outputs (logits for cross-encoders,
similarities for bi-encoders), no activation applied; the pairs are the candidates' distinct
(query_id, doc_id) pairs in sorted order, cut into consecutive parts of ``part_size`` pairs, so
part ``i`` always holds the same pairs and a resumed run ends with exactly the rows of an
uninterrupted one. ``manifest["parts"]`` lists the parts that are complete (name → rows, sha256);
a part file not listed there is ignored and rewritten. ``complete`` is true once every part is.
The store's ``fingerprint`` (set when complete) hashes all rows in order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from retrodistill.artifacts import atomic_path, read_manifest, sha256_file

STAGE = "score-teacher"
#: Stages whose output is a teacher-score store: scored here, imported from a published file, or an
#: ensemble of other stores. All share this module's layout and invariants.
STORE_STAGES = frozenset({STAGE, "import-scores", "ensemble"})


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def store_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float32())])


def write_part(
    directory: str | os.PathLike[str], index: int, pairs: Sequence[tuple[str, str]], scores: Sequence[float]
) -> dict[str, Any]:
    """Write one part atomically; return its manifest entry (``rows``, ``sha256``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(pairs) != len(scores):
        raise ValueError(f"part {index}: {len(pairs)} pairs but {len(scores)} scores")
    table = pa.table(
        {
            "query_id": [q for q, _ in pairs],
            "doc_id": [d for _, d in pairs],
            "score": list(map(float, scores)),
        },
        schema=store_schema(),
    )
    path = Path(directory) / part_name(index)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return {"rows": len(pairs), "sha256": sha256_file(path)}


S = TypeVar("S", bound="PartStore")


@dataclass
class PartStore:
    """A complete store of Parquet parts listed in its manifest, read back.

    Subclasses name the manifest stages they accept, what they are called in errors, the command
    that resumes an incomplete one, and their row schema.
    """

    path: Path
    manifest: dict[str, Any]

    stages: ClassVar[frozenset[str]] = frozenset()
    what: ClassVar[str] = "store"
    resume_command: ClassVar[str] = ""

    @classmethod
    def schema(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def open(cls: type[S], path: str | os.PathLike[str]) -> S:
        directory = Path(path)
        manifest = read_manifest(directory)
        if manifest.get("stage") not in cls.stages:
            raise ValueError(f"{directory} is not a {cls.what} (stage {manifest.get('stage')!r})")
        if not manifest.get("complete"):
            done, total = len(manifest.get("parts", {})), manifest.get("num_parts", "?")
            raise ValueError(
                f"{directory} is incomplete ({done}/{total} parts); run `retrodistill {cls.resume_command}` "
                "again with the same arguments to resume it"
            )
        return cls(directory, manifest)

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs", {}))

    def table(self) -> Any:
        """All rows as one pyarrow Table, in part order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for index in range(int(self.manifest["num_parts"])):
            path = self.path / part_name(index)
            if part_name(index) not in self.manifest["parts"] or not path.is_file():
                raise FileNotFoundError(f"{path}: part listed as complete is missing")
            tables.append(pq.read_table(path))
        if not tables:
            return self.schema().empty_table()
        return pa.concat_tables(tables)


@dataclass
class TeacherStore(PartStore):
    """A complete teacher-score store, read back; :meth:`table` is sorted by (query_id, doc_id)."""

    stages: ClassVar[frozenset[str]] = STORE_STAGES
    what: ClassVar[str] = "teacher-score store"
    resume_command: ClassVar[str] = "score-teacher"

    @classmethod
    def schema(cls) -> Any:
        return store_schema()

    def scores(self) -> dict[tuple[str, str], float]:
        table = self.table()
        return dict(
            zip(
                zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True),
                table.column("score").to_pylist(),
                strict=True,
            )
        )
