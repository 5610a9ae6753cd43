"""Values of an Arrow string column by row number, read with ``pread`` when the table lives in a file.

Why not read them through the memory map: every page fault on a mapped file maps the pages around it
too (the kernel's fault-around, 64 KiB), so 10k random passages of an 8.8M-passage corpus fault in
most of its 3 GB, and all of it counts as the process's RSS from then on. Reading each value with
``os.pread`` at its offset in the file costs one system call (a few µs, served from the page cache)
and leaves RSS flat; only the column's offsets (4 bytes a row) are read through the map.

A column read from an uncompressed Arrow IPC file held as one memory-mapped buffer has its value
buffers inside that buffer, so a value's position in the file is its buffer's address less the
map's base address plus the value's offset. A column held in memory is read with Arrow's ``take``.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


class StringColumn:
    """Row-wise reads of one string column made of record-batch chunks.

    Args:
        chunks: the column's chunks, in row order.
        fd: a file descriptor open on the IPC file the chunks were mapped from, or None (in memory).
        base: the address of the mapped file's first byte (ignored when ``fd`` is None).
        size: the mapped file's size in bytes.
    """

    def __init__(self, chunks: list[pa.Array], fd: int | None = None, base: int = 0, size: int = 0) -> None:
        self.chunks = chunks
        self.starts = np.concatenate([[0], np.cumsum([len(c) for c in chunks], dtype=np.int64)]).astype(np.int64)
        self._start_list = self.starts.tolist()  # for bisect: one value costs µs, not numpy's call overhead
        self._fd = fd
        # Per chunk: value offsets (a view into the map) and where its value buffer starts in the file.
        self._offsets: list[np.ndarray] = []
        self._data_at: list[int] = []
        if fd is not None:
            for chunk in chunks:
                offsets, data_at = _locate(chunk, base, size)
                if offsets is None:  # a buffer outside the map (never for files we write): read in memory
                    self._fd = None
                    break
                self._offsets.append(offsets)
                self._data_at.append(data_at)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, rows: np.ndarray) -> list[str]:
        """The values at ``rows`` (int64, in range), in that order."""
        chunk_of = np.searchsorted(self.starts, rows, side="right") - 1
        result: list[str] = [""] * len(rows)
        for chunk in np.unique(chunk_of):
            where = np.flatnonzero(chunk_of == chunk)
            local = rows[where] - self.starts[chunk]
            for position, value in zip(where.tolist(), self._read(int(chunk), local), strict=True):
                result[position] = value
        return result

    def value(self, row: int) -> str:
        """The value at one ``row`` (in range): the path of ``corpus[doc_id]``."""
        chunk = bisect.bisect_right(self._start_list, row) - 1
        local = row - self._start_list[chunk]
        if self._fd is None:
            return str(self.chunks[chunk][local].as_py())
        offsets = self._offsets[chunk]
        begin, end = int(offsets[local]), int(offsets[local + 1])
        return os.pread(self._fd, end - begin, self._data_at[chunk] + begin).decode("utf-8") if end > begin else ""

    def iter_chunks(self) -> Iterator[list[str]]:
        """Every value, one chunk (a record batch, ~100k rows) at a time."""
        for index, chunk in enumerate(self.chunks):
            if self._fd is None:
                yield chunk.to_pylist()
                continue
            # One read of the chunk's whole value range, decoded by Arrow; freed once yielded.
            import pyarrow as pa

            offsets = self._offsets[index]
            first, last = int(offsets[0]), int(offsets[-1])
            data = os.pread(self._fd, last - first, self._data_at[index] + first)
            rebased = pa.py_buffer((offsets - offsets[0]).astype(offsets.dtype))
            yield pa.Array.from_buffers(chunk.type, len(chunk), [None, rebased, pa.py_buffer(data)]).to_pylist()

    def _read(self, chunk: int, local: np.ndarray) -> list[str]:
        if self._fd is None:
            import pyarrow as pa

            return list(self.chunks[chunk].take(pa.array(local)).to_pylist())
        offsets = self._offsets[chunk]
        begins = offsets[local].astype(np.int64)
        lengths = offsets[local + 1].astype(np.int64) - begins
        positions = begins + self._data_at[chunk]
        fd = self._fd
        return [
            os.pread(fd, length, position).decode("utf-8") if length else ""
            for position, length in zip(positions.tolist(), lengths.tolist(), strict=True)
        ]


def _locate(chunk: pa.Array, base: int, size: int) -> tuple[np.ndarray | None, int]:
    """``(offsets, file position of the value buffer)`` of a mapped string chunk; ``(None, 0)`` if not mapped."""
    import pyarrow as pa

    if chunk.null_count or not (pa.types.is_string(chunk.type) or pa.types.is_binary(chunk.type)):
        return None, 0
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=len(chunk) + 1, offset=chunk.offset * 4)
    if data_buffer is None or data_buffer.size == 0:
        return (offsets, 0) if offsets[-1] == offsets[0] else (None, 0)
    data_at = data_buffer.address - base
    if not 0 <= data_at <= size - data_buffer.size:
        return None, 0
    return offsets, data_at
