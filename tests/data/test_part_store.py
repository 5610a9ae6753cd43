"""Fingerprints computed column-wise equal those of ``sha256_strings`` over the same strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from retrodistill.artifacts import sha256_strings
from retrodistill.data import part_store
from retrodistill.data.part_store import StringsHasher, float_hex, pairs_fingerprint, rows_fingerprint


def test_float_hex_equals_python() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(2000).astype(np.float32).astype(np.float64),
            rng.standard_normal(50) * 1e300,
            [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -2.2e-308, 1.0, 4.0, -3.5],
        ]
    )
    assert float_hex(values).to_pylist() == [float(v).hex() for v in values]


def test_fingerprints_equal_sha256_strings_across_chunks(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(part_store, "HASH_CHUNK", 7)  # many chunks, so chunk borders are crossed
    rng = np.random.default_rng(1)
    n = 100
    q = [f"q{i % 9}é" for i in range(n)]
    d = [f"doc-{i}" if i % 5 else "" for i in range(n)]
    s = rng.standard_normal(n).astype(np.float32)
    expected_rows = sha256_strings(f"{a}\t{b}\t{float(c).hex()}" for a, b, c in zip(q, d, s, strict=True))
    assert rows_fingerprint(q, d, s.tolist()) == expected_rows
    assert rows_fingerprint(pa.chunked_array([q[:30], q[30:]]), pa.array(d), pa.array(s)) == expected_rows
    assert pairs_fingerprint(list(zip(q, d, strict=True))) == sha256_strings(
        f"{a}\t{b}" for a, b in zip(q, d, strict=True)
    )
    assert pairs_fingerprint(pa.table({"query_id": q, "doc_id": d})) == pairs_fingerprint(zip(q, d, strict=True))
    hasher = StringsHasher()
    hasher.update(pa.array(q[:40]), pa.array(np.arange(40, dtype=np.int32) - 3))
    hasher.update(pa.array(q[40:]), pa.array(np.arange(40, n, dtype=np.int64) - 3))
    assert hasher.hexdigest() == sha256_strings(f"{a}\t{i - 3}" for i, a in enumerate(q))
    assert rows_fingerprint([], [], []) == sha256_strings([])
