"""A sorted, memory-mappable index from string ids to integer rows, searched with ``numpy.searchsorted``.

On disk, beside the table whose rows it indexes::

    ids.sorted.npy   dtype S{width}, shape (n,)   the ids as UTF-8, sorted bytewise, NUL-padded
    order.npy        int64, shape (n,)            order[i] is the row of ids.sorted[i]

Invariants: ``ids.sorted`` is non-decreasing (strictly increasing once duplicates are refused);
no id is empty or ends in a NUL byte (numpy's ``S`` type would drop it, and two ids would become
one). Looking up ``k`` ids costs ``k · log2(n)`` comparisons and touches only the pages it reads,
so an 8.8M-id index opened with ``mmap_mode="r"`` costs no memory until it is searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

SORTED_FILE = "ids.sorted.npy"
ORDER_FILE = "order.npy"
_BLOCK = 1 << 20  # ids converted per step, so temporaries stay at a few tens of MB


def fixed_width(ids: pa.Array | pa.ChunkedArray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copy Arrow strings into a NUL-padded ``S{width}`` array without one Python object per id.

    Args:
        ids: a string or binary array without nulls.
        width: bytes per id; ``None`` takes the longest id (at least 1).

    Returns:
        ``(fixed, fits)``: ``fixed`` of shape ``(n,)`` and dtype ``S{width}``; ``fits[i]`` is False where
        id ``i`` is longer than ``width`` or ends in a NUL byte, so that ``fixed[i]`` is not that id.
    """
    import pyarrow as pa

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    if ids.null_count:
        raise ValueError("ids must not be null")
    n = len(ids)
    large = pa.types.is_large_string(ids.type) or pa.types.is_large_binary(ids.type)
    offset_type = np.dtype(np.int64 if large else np.int32)
    buffers = ids.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type, count=n + 1, offset=ids.offset * offset_type.itemsize)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None and n else np.zeros(1, np.uint8)
    if width is None:
        width = max(int(np.diff(offsets).max(initial=0)), 1)
    fits = np.empty(n, dtype=bool)
    out = np.zeros((n, width), np.uint8)
    # Block by block, so the int64 temporaries stay at a few MB whatever the number of ids.
    for begin in range(0, n, _BLOCK):
        block_offsets = offsets[begin : begin + _BLOCK + 1].astype(np.int64)
        starts, lengths = block_offsets[:-1], np.diff(block_offsets)
        ends_in_nul = (lengths > 0) & (data[np.maximum(starts + lengths - 1, 0)] == 0)
        fits[begin : begin + len(starts)] = (lengths <= width) & ~ends_in_nul
        block = out[begin : begin + _BLOCK]
        np.minimum(lengths, width, out=lengths)
        # One pass per byte position: width passes of vectorised gathers, no per-id Python work.
        for j in range(int(lengths.max(initial=0))):
            has = lengths > j
            block[has, j] = data[starts[has] + j]
    return out.view(f"S{width}").reshape(n), fits


class InvalidIdError(ValueError):
    """An id the index cannot hold; ``row`` says where it is."""

    def __init__(self, row: int, problem: str) -> None:
        super().__init__(problem)
        self.row = row
        self.problem = problem


class IdIndex:
    """Rows of string ids by binary search over their sorted, fixed-width bytes.

    Args:
        sorted_ids: ``S{width}`` array, sorted.
        order: int64 array; ``order[i]`` is the row holding ``sorted_ids[i]``.
    """

    def __init__(self, sorted_ids: np.ndarray, order: np.ndarray) -> None:
        if sorted_ids.shape != order.shape:
            raise ValueError(f"index arrays disagree: {sorted_ids.shape} ids, {order.shape} rows")
        self.sorted_ids = sorted_ids
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    @property
    def width(self) -> int:
        return int(self.sorted_ids.dtype.itemsize)

    @classmethod
    def build(cls, ids: pa.Array | pa.ChunkedArray) -> IdIndex:
        """Sort ``ids`` (row ``i`` holds ``ids[i]``); duplicates are kept, see :meth:`first_duplicate`.

        Raises:
            InvalidIdError: an id is null, empty or ends in a NUL byte.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        combined = ids
        if isinstance(combined, pa.ChunkedArray):
            combined = combined.combine_chunks() if combined.num_chunks else pa.array([], pa.string())
        if combined.null_count:
            raise InvalidIdError(int(np.flatnonzero(combined.is_null().to_numpy(zero_copy_only=False))[0]), "null id")
        # Arrow's sort is stable and bytewise, the order numpy compares ``S`` values in.
        indices = pc.sort_indices(combined)
        taken = combined.take(indices)
        del combined  # each copy of 8.8M ids is ~100 MB: hold one at a time
        sorted_ids, fits = fixed_width(taken)
        del taken
        order = indices.to_numpy().view(np.int64)  # row numbers < 2**63: the same bits, no copy
        if len(order) and sorted_ids[0] == b"":
            # Empty ids sort first, the earliest row first (the sort is stable).
            raise InvalidIdError(int(order[0]), "'_id' must be a non-empty string, got ''")
        if not fits.all():
            row = int(order[np.flatnonzero(~fits)].min())
            raise InvalidIdError(row, f"'_id' {ids[row].as_py()!r} ends in a NUL character, which ids may not")
        return cls(sorted_ids, order)

    def first_duplicate(self) -> tuple[int, int] | None:
        """``(row, first_row)`` for the earliest row whose id already appeared (at ``first_row``), or None."""
        if len(self) < 2:
            return None
        same = self.sorted_ids[1:] == self.sorted_ids[:-1]
        if not same.any():
            return None
        positions = np.flatnonzero(same) + 1  # sorted positions repeating the id just before them
        # A stable sort puts an id's first occurrence at the start of its run of equal ids.
        position = int(positions[np.argmin(self.order[positions])])
        start = position
        while start > 0 and self.sorted_ids[start - 1] == self.sorted_ids[position]:
            start -= 1
        return int(self.order[position]), int(self.order[start])

    def rows(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row of each id, ``-1`` where it is not indexed; int64, shape ``(len(ids),)``."""
        import pyarrow as pa

        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
        result = np.full(len(ids), -1, dtype=np.int64)
        if not len(self):
            return result
        for begin in range(0, len(ids), _BLOCK):
            keys, fits = fixed_width(ids.slice(begin, _BLOCK), self.width)
            result[begin : begin + len(keys)] = self._search(keys, fits)
        return result

    def rows_of(self, keys: Sequence[str]) -> np.ndarray:
        """:meth:`rows` for Python strings, encoded by numpy (``pa.array`` would import pandas: 0.4 s)."""
        result = np.full(len(keys), -1, dtype=np.int64)
        if not len(self):
            return result
        width = self.width
        for begin in range(0, len(keys), _BLOCK):
            encoded = [key.encode("utf-8") for key in keys[begin : begin + _BLOCK]]
            fits = np.fromiter((len(e) <= width and not e.endswith(b"\0") for e in encoded), bool, len(encoded))
            # An id that cannot be in the index is searched as b"", which no indexed id equals.
            fixed = np.array([e if ok else b"" for e, ok in zip(encoded, fits, strict=True)], dtype=f"S{width}")
            result[begin : begin + len(encoded)] = self._search(fixed.reshape(len(encoded)), fits)
        return result

    def row(self, key: str) -> int:
        """Row of one id, or -1; the short path for ``corpus[doc_id]``."""
        data = key.encode("utf-8")
        if not data or len(data) > self.width or data.endswith(b"\0") or not len(self):
            return -1
        sorted_ids = self.sorted_ids
        position = int(sorted_ids.searchsorted(data))
        if position < len(sorted_ids) and sorted_ids[position] == data:
            return int(self.order[position])
        return -1

    def _search(self, keys: np.ndarray, fits: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self.sorted_ids, keys)
        np.minimum(positions, len(self) - 1, out=positions)
        found = fits & (np.asarray(self.sorted_ids[positions]) == keys)
        return np.where(found, np.asarray(self.order[positions]), -1)

    def save(self, directory: Path) -> None:
        np.save(directory / SORTED_FILE, self.sorted_ids, allow_pickle=False)
        np.save(directory / ORDER_FILE, self.order, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> IdIndex:
        """Open a saved index memory-mapped: nothing is read until a lookup needs it."""
        return cls(
            np.load(directory / SORTED_FILE, mmap_mode="r", allow_pickle=False),
            np.load(directory / ORDER_FILE, mmap_mode="r", allow_pickle=False),
        )
