"""Part stores on disk: the one writer of resumable Parquet parts, their checks, and the fingerprints.

A *part store* is a directory of Parquet parts listed in its ``manifest.json``::

    STORE/
      manifest.json         stage, inputs, part_size, num_parts, parts, complete, fingerprint, ...
      part-00000.parquet    the rows of part 0 (schema set by the store kind)
      part-00001.parquet    ...

``manifest["parts"]`` maps the name of every *complete* part to ``{"rows": n, "sha256": "sha256:…"}``;
a part file not listed there is ignored and rewritten. Teacher-score stores (:mod:`.store`), pairwise
stores (:mod:`.pair_store`) and imported stores all share this layout.

This module holds what every writer of such a directory needs, so each stage only decides *which*
rows go into part ``i``:

* :func:`write_table_part`: write part ``i`` atomically and return its manifest entry;
* :func:`part_is_complete`, :func:`delete_temporary_files`: what a resumed run keeps and cleans;
* :class:`PartWriter`: a single-process writer that records each part in the manifest as it goes
  and publishes a staged directory (``import-scores``);
* :func:`verify_parts`: on open, every listed part must still have its recorded sha256 (checked
  once per file version: the result is cached by device, inode, size and mtime);
* the fingerprints, computed column-wise over Arrow arrays in chunks, with the values of
  :func:`retrodistill.artifacts.sha256_strings` over the same strings:

  =====================  ===========================================================
  :func:`pairs_fingerprint`  ``query_id<TAB>doc_id`` per pair, in order
  :func:`rows_fingerprint`   ``query_id<TAB>doc_id<TAB>float.hex(score)`` per row
  =====================  ===========================================================
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import MANIFEST, atomic_path, publish_dir, sha256_file, write_manifest

#: Rows hashed per step by :class:`StringsHasher`: bounds the memory of a fingerprint.
HASH_CHUNK = 1 << 18
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: The two hex digits of each byte value, as two uint8 side by side (``_HEX_PAIRS[0xAB]`` reads "ab").
_HEX_PAIRS = (
    np.stack([_HEX_DIGITS[np.arange(256) >> 4], _HEX_DIGITS[np.arange(256) & 15]], axis=1).copy().view(np.uint16)[:, 0]
)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_index(name: str) -> int | None:
    """The index of a part file name (``part-00003.parquet`` → 3), or ``None`` for another name."""
    stem = name.removeprefix("part-").removesuffix(".parquet")
    return int(stem) if stem.isdigit() and part_name(int(stem)) == name else None


# ---------------------------------------------------------------- fingerprints


class StringsHasher:
    """``sha256_strings`` fed Arrow columns: each row is its columns' text joined by ``separator``.

    Every row is hashed as ``len(utf8) (8 bytes, little-endian) + utf8``, exactly as
    :func:`retrodistill.artifacts.sha256_strings` hashes a Python string, so the digest equals
    ``sha256_strings(sep.join(row) for row in rows)``. Floats are written as ``float.hex`` of their
    float64 value, integers in decimal, strings as they are.

    Example:
        >>> import pyarrow as pa
        >>> from retrodistill.artifacts import sha256_strings
        >>> h = StringsHasher()
        >>> h.update(pa.array(["q1", "q2"]), pa.array(["d1", "d2"]))
        >>> h.hexdigest() == sha256_strings(["q1\\td1", "q2\\td2"])
        True
    """

    def __init__(self, separator: str = "\t") -> None:
        self.separator = separator
        self.rows = 0
        self._digest = hashlib.sha256()

    def update(self, *columns: Any) -> None:
        """Hash the rows of ``columns`` (Arrow arrays or chunked arrays, numpy arrays, or sequences)."""
        import pyarrow as pa

        arrays = [_as_arrow(c) for c in columns]
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        total = lengths.pop()
        for start in range(0, total, HASH_CHUNK):
            parts = [_as_text(_one_chunk(a.slice(start, HASH_CHUNK))) for a in arrays]
            rows = parts[0] if len(parts) == 1 else _join(parts, self.separator)
            if rows.null_count:
                raise ValueError("cannot fingerprint a missing (null) value")
            self._digest.update(_length_prefixed(pa.array(rows).cast(pa.binary())))
        self.rows += total

    def hexdigest(self) -> str:
        return "sha256:" + self._digest.hexdigest()


def _as_arrow(column: Any) -> Any:
    """An Arrow array or chunked array (kept chunked: only a slice at a time is ever combined)."""
    import pyarrow as pa

    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column
    if isinstance(column, np.ndarray):
        return pa.array(column)
    return pa.array(list(column))


def _one_chunk(array: Any) -> Any:
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        return array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    return array


def _as_text(array: Any) -> Any:
    """An Arrow array as strings: floats as ``float.hex``, integers in decimal."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    if pa.types.is_floating(kind):
        return float_hex(array.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(kind):
        return pc.cast(array, pa.string())
    raise TypeError(f"cannot fingerprint a column of type {kind}")


def _join(parts: list[Any], separator: str) -> Any:
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, separator)


def _length_prefixed(binary: Any) -> bytes:
    """The bytes ``len(s) (u64 LE) + s`` of every element of a binary array, concatenated."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(binary)
    if n == 0:
        return b""
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int32, count=n + 1, offset=binary.offset * 4)
    lengths = np.diff(offsets).astype("<u8")
    prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8), n, [None, pa.py_buffer(lengths.tobytes())])
    joined = pc.binary_join_element_wise(prefix.cast(pa.binary()), binary, b"")
    start, stop = np.frombuffer(joined.buffers()[1], dtype=np.int32, count=n + 1, offset=joined.offset * 4)[[0, -1]]
    return joined.buffers()[2].to_pybytes()[start:stop]


def float_hex(values: np.ndarray) -> Any:
    """``float(v).hex()`` of each value, vectorised, as an Arrow string array.

    Example:
        >>> float_hex(np.array([1.5, -0.0, 2.0**-1074, float("inf"), float("nan")])).to_pylist()
        ['0x1.8000000000000p+0', '-0x0.0p+0', '0x0.0000000000001p-1022', 'inf', 'nan']
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    n = len(bits)
    negative = (bits >> np.uint64(63)).astype(bool)
    exponent = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    # The 52 mantissa bits are the low 13 nibbles of the big-endian bytes: two hex digits per byte.
    pairs = _HEX_PAIRS[mantissa.astype(">u8").view(np.uint8).reshape(n, 8)[:, 1:]]
    digits = np.ascontiguousarray(pairs.view(np.uint8).reshape(n, 14)[:, 1:])
    offsets = np.arange(0, 13 * (n + 1), 13, dtype=np.int32)
    fraction = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(digits.tobytes()))
    # Two takes from small tables instead of per-row formatting: "[-]0x1." / "[-]0x0." and "p±E".
    lead = _table("leads", ["0x1.", "-0x1.", "0x0.", "-0x0."]).take(
        pa.array(negative.astype(np.int8) + 2 * (exponent == 0).astype(np.int8))
    )
    powers = _table("powers", [f"p{e - 1023:+d}" for e in range(2048)]).take(pa.array(np.maximum(exponent, 1)))
    text = pc.binary_join_element_wise(lead, fraction, powers, "")
    zero = (exponent == 0) & (mantissa == 0)
    special = exponent == 0x7FF
    if zero.any() or special.any():
        names = np.where(
            special,
            np.where(mantissa != 0, "nan", np.where(negative, "-inf", "inf")),
            np.where(negative, "-0x0.0p+0", "0x0.0p+0"),
        )
        text = pc.if_else(pa.array(zero | special), pa.array(names), text)
    return text


_TABLES: dict[str, Any] = {}


def _table(name: str, values: list[str]) -> Any:
    """A small constant Arrow string array, built once."""
    import pyarrow as pa

    if name not in _TABLES:
        _TABLES[name] = pa.array(values, type=pa.string())
    return _TABLES[name]


def pairs_fingerprint(pairs: Any) -> str:
    """Fingerprint of the ordered (query_id, doc_id) pairs a store covers.

    Args:
        pairs: a table with ``query_id`` and ``doc_id`` columns, or an iterable of tuples (small).
    """
    hasher = StringsHasher()
    if hasattr(pairs, "column"):
        hasher.update(pairs.column("query_id"), pairs.column("doc_id"))
    else:
        rows = list(pairs)
        hasher.update([q for q, _ in rows], [d for _, d in rows])
    return hasher.hexdigest()


def rows_fingerprint(query_ids: Any, doc_ids: Any, scores: Any) -> str:
    """Fingerprint of a store's rows in order: ``query_id<TAB>doc_id<TAB>float.hex(score)`` each."""
    import pyarrow as pa

    hasher = StringsHasher()
    if isinstance(scores, (pa.Array, pa.ChunkedArray)):
        values = scores.cast(pa.float64())
    else:  # a sequence of numbers: every one is a float (``4`` is hashed as ``float(4).hex()``)
        values = np.asarray(scores if isinstance(scores, np.ndarray) else list(scores), dtype=np.float64)
    hasher.update(query_ids, doc_ids, values)
    return hasher.hexdigest()


# ---------------------------------------------------------------- writing parts


def write_table_part(directory: str | os.PathLike[str], index: int, table: Any) -> dict[str, Any]:
    """Write ``table`` as part ``index`` atomically; return its manifest entry (``rows``, ``sha256``)."""
    import pyarrow.parquet as pq

    path = Path(directory) / part_name(index)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    digest = sha256_file(path)
    _remember(path, digest)
    return {"rows": table.num_rows, "sha256": digest}


def part_is_complete(directory: Path, index: int, manifest: Mapping[str, Any]) -> bool:
    """A part is complete when the manifest lists it and its file still has the recorded sha256."""
    entry = manifest.get("parts", {}).get(part_name(index))
    path = directory / part_name(index)
    return entry is not None and path.is_file() and file_sha256(path) == entry.get("sha256")


def delete_temporary_files(directory: Path, extra: Sequence[str] = ()) -> None:
    """Delete the ``atomic_path`` temporaries (``.NAME.XXXX.tmp``) a killed process left."""
    for pattern in (".part-*.parquet.*.tmp", f".{MANIFEST}.*.tmp", *extra):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


class PartWriter:
    """Writes the parts of one store directory in one process, recording each in the manifest.

    The manifest is saved after every part, so a killed run loses at most the part being written;
    :meth:`finish` marks the store complete with its fingerprint. Used by ``import-scores`` (into a
    staging directory that :meth:`publish` renames onto the target) and by ``score-teacher`` when it
    runs alone.
    """

    def __init__(self, directory: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self.manifest.setdefault("parts", {})
        self.directory.mkdir(parents=True, exist_ok=True)

    def done(self) -> set[int]:
        """The parts the manifest lists whose file still has its sha256."""
        return {i for i in range(int(self.manifest["num_parts"])) if part_is_complete(self.directory, i, self.manifest)}

    def write(self, index: int, table: Any, *, save: bool = True) -> dict[str, Any]:
        """Write part ``index`` and list it in the manifest (saved unless ``save`` is false)."""
        entry = write_table_part(self.directory, index, table)
        self.manifest["parts"][part_name(index)] = entry
        if save:
            self.save()
        return entry

    def save(self) -> None:
        self.manifest["parts"] = dict(sorted(self.manifest["parts"].items()))
        write_manifest(self.directory, self.manifest)

    def finish(self, fingerprint: str) -> None:
        """Mark the store complete (every part must be listed) with its rows' ``fingerprint``."""
        missing = [
            part_name(i) for i in range(int(self.manifest["num_parts"])) if part_name(i) not in self.manifest["parts"]
        ]
        if missing:
            raise RuntimeError(f"{self.directory}: cannot complete the store, parts missing: {missing[:5]}")
        self.manifest["fingerprint"] = fingerprint
        self.manifest["complete"] = True
        self.save()

    def publish(self, target: str | os.PathLike[str]) -> Path:
        """Rename this (staging) directory onto ``target`` (see :func:`retrodistill.artifacts.publish_dir`)."""
        return publish_dir(self.directory, target)


# ---------------------------------------------------------------- checking parts on open

_VERIFIED: dict[tuple[int, int, int, int], str] = {}  # (device, inode, size, mtime_ns) → sha256
_LOCK = threading.Lock()


def _file_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _remember(path: Path, digest: str) -> None:
    with _LOCK:
        _VERIFIED[_file_key(path)] = digest


def file_sha256(path: Path) -> str:
    """``sha256_file(path)``, computed once per version of the file (same inode, size and mtime)."""
    key = _file_key(path)
    with _LOCK:
        known = _VERIFIED.get(key)
    if known is None:
        known = sha256_file(path)
        with _LOCK:
            _VERIFIED[key] = known
    return known


class PartChangedError(ValueError):
    """A part of a complete store is missing or no longer has the sha256 its manifest records."""


def verify_parts(directory: Path, manifest: Mapping[str, Any], rebuild: str) -> None:
    """Check that every part listed in ``manifest`` exists with its recorded sha256.

    Args:
        directory: the store directory.
        manifest: its manifest.
        rebuild: the command that rebuilds the store, for the message.

    Raises:
        PartChangedError: naming the first missing or changed part and ``rebuild``.
    """
    parts = manifest.get("parts")
    num_parts = manifest.get("num_parts")
    if not isinstance(parts, Mapping) or not isinstance(num_parts, int) or isinstance(num_parts, bool):
        raise PartChangedError(
            f"{directory / 'manifest.json'}: no 'parts' mapping and integer 'num_parts', so the store's parts cannot "
            f"be checked; rebuild it with {rebuild}"
        )
    for index in range(num_parts):
        name = part_name(index)
        path = directory / name
        entry = parts.get(name)
        if entry is None or not path.is_file():
            raise PartChangedError(f"{path}: part listed as complete is missing; rebuild the store with {rebuild}")
        if file_sha256(path) != entry.get("sha256"):
            raise PartChangedError(
                f"{path}: this part was changed after it was written (its sha256 is not the "
                f"{entry.get('sha256')} the manifest records), so the store cannot be trusted; rebuild it with "
                f"{rebuild}"
            )


def iter_part_tables(directory: Path, manifest: Mapping[str, Any], columns: Iterable[str] | None = None) -> Any:
    """Yield the parts of a store as pyarrow Tables, in part order (memory-mapped reads)."""
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(columns)
    for index in range(int(manifest["num_parts"])):
        path = directory / part_name(index)
        if part_name(index) not in manifest.get("parts", {}) or not path.is_file():
            raise FileNotFoundError(f"{path}: part listed as complete is missing")
        yield pq.read_table(path, columns=wanted, memory_map=True)
