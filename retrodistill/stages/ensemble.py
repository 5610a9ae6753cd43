"""Teacher ensembles: combine the stored scores of several teachers into one teacher-score store.

No model is run: an ensemble reads two or more complete stores (``data/store.py``) that scored the
same (query, document) pairs and writes a new store of the combined scores, so ``train-student``
takes it like any other store. For member ``k`` with raw score ``s_k`` of a pair, temperature
``T_k`` (1 unless calibrated) and weight ``w_k``::

    score = Σ_k  (w_k / Σ_j w_j) · norm_q(s_k / T_k)

where ``norm_q`` normalises one query's candidates at a time (``none``, ``zscore``, ``minmax``,
``rank``) and ``T_k`` is fitted on training qrels when asked (``calibrate_on``): both are defined
in :mod:`retrodistill.stages.ensemble_calibration`.

Hofstätter et al.'s T2 teacher (arXiv:2010.02666; github.com/sebastian-hofstaetter/neural-ranking-kd,
"Mean-Ensemble of BERT-Base_CAT + BERT-Large_CAT + ALBERT-Large_CAT") is the case of equal weights
and ``none``; ``configs/ensemble_t2.yaml`` spells it out.

**Pairs.** ``pairs="exact"`` (the default) requires every member to hold the same pairs, made from
the same corpus, queries and candidates; the result records those inputs, so ``train-student``
accepts it with the members' candidates. ``pairs="intersection"`` keeps the pairs every member
scored (members may come from other candidates, not from another corpus or other queries); the
result records no ``candidates`` input, since it covers no candidates file in full, so it serves
analysis (``inspect-teacher``), and ``train-student`` refuses it.

**Manifest.** The output is a teacher-score store with ``stage`` ``"ensemble"`` (one of the store
stages :meth:`TeacherStore.open` and ``train-student`` accept). Its ``teacher`` is the
ensemble's description, which ``train-student`` copies into the student's manifest::

    teacher   {"name": "ensemble",
               "members": [{"path", "teacher" (the member's own description), "fingerprint"}, ...],
               "weights" (normalised to sum 1), "normalization", "pairs",
               "calibration": null | {"method", "qrels": {"fingerprint", "source", ...},
                                      "rel_threshold", "bounds", "temperatures",
                                      "members": [{"temperature", "objective", "objective_at_1",
                                                   "queries", "positives", "at_bound"}, ...]}}
    inputs    the members' corpus / queries (/ candidates, exact pairs only) fingerprints
    config    the ensemble's settings, plus the members' ``candidates`` / ``triples`` / ``data``
              (exact pairs only) so ``train-student`` finds the candidates without ``--candidates``

and the store fields of :mod:`retrodistill.stages.score_teacher` (parts, fingerprint, counts, ...).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import now_iso, publish_dir, sha256_file, write_manifest
from retrodistill.config import to_dict
from retrodistill.data.part_store import pairs_fingerprint, rows_fingerprint
from retrodistill.data.store import TeacherStore, part_name, store_schema
from retrodistill.losses.normalization import NORMALIZATIONS, normalize_per_query
from retrodistill.outputs import staging_dir
from retrodistill.stages.ensemble_calibration import (
    TEMPERATURE_BOUNDS,
    Judgments,
    QueryGroups,
    fit_temperature,
    grades_of,
    load_judgments,
)

logger = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
"""``manifest["teacher"]["name"]`` of an ensemble store."""

PAIR_MODES = ("exact", "intersection")


@dataclass
class CalibrationConfig:
    """Training qrels to fit member temperatures on: a qrels file, or a dataset's split."""

    qrels: str | None = field(default=None, metadata={"help": "qrels file (BEIR TSV or TREC)"})
    dataset: str | None = field(default=None, metadata={"help": "or a BEIR name/folder: its qrels/{split}.tsv"})
    data_dir: str | None = None
    split: str = "train"
    rel_threshold: int = field(default=1, metadata={"help": "minimum grade of a positive"})


@dataclass
class EnsembleConfig:
    """``retrodistill ensemble-teachers``: member stores → one ensemble store."""

    members: list[str] = field(default_factory=list)
    weights: list[float] | None = field(default=None, metadata={"help": "one per member; default equal"})
    normalization: str = field(default="none", metadata={"help": "none, zscore, minmax or rank"})
    pairs: str = field(default="exact", metadata={"help": "exact or intersection"})
    calibrate: CalibrationConfig = field(default_factory=CalibrationConfig)
    out: str = "runs/ensemble-scores"
    part_size: int | None = field(default=None, metadata={"help": "pairs per part (default: the first member's)"})
    overwrite: bool = False


# --- reading and aligning members ---------------------------------------------------------------


def read_columns(store: TeacherStore, columns: Sequence[str]) -> Any:
    """Some columns of every part of ``store``, as one pyarrow Table with one chunk per column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for index in range(int(store.manifest["num_parts"])):
        path = store.path / part_name(index)
        if part_name(index) not in store.manifest.get("parts", {}) or not path.is_file():
            raise FileNotFoundError(f"{path}: part listed as complete is missing")
        tables.append(pq.read_table(path, columns=list(columns)))
    if not tables:
        return store_schema().empty_table().select(list(columns))
    return pa.concat_tables(tables).combine_chunks()


def _keys(ids: Any) -> Any:
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(ids.column("query_id"), ids.column("doc_id"), "\t")


def _examples(keys: Any, limit: int = 3) -> list[tuple[str, ...]]:
    return [tuple(k.split("\t", 1)) for k in keys[:limit].to_pylist()]


def _pair_difference(i: int, first: TeacherStore, other: TeacherStore, ids0: Any, ids: Any) -> str:
    import pyarrow.compute as pc

    keys0, keys = _keys(ids0), _keys(ids)
    extra = keys.filter(pc.invert(pc.is_in(keys, value_set=keys0)))
    missing = keys0.filter(pc.invert(pc.is_in(keys0, value_set=keys)))
    parts = [f"member {i} ({other.path}) has {len(ids):,} pairs, member 0 ({first.path}) has {len(ids0):,}"]
    if len(extra):
        parts.append(f"{len(extra):,} pairs only in member {i} (e.g. {_examples(extra)})")
    if len(missing):
        parts.append(f"{len(missing):,} pairs of member 0 missing from member {i} (e.g. {_examples(missing)})")
    if not len(extra) and not len(missing):
        parts.append("the same pairs in another order (is one store damaged?)")
    return (
        "ensemble members must score the same (query_id, doc_id) pairs: "
        + "; ".join(parts)
        + ". Pass pairs='intersection' (--pairs intersection) to keep only the pairs every member scored."
    )


def _aligned(stores: Sequence[TeacherStore], mode: str) -> tuple[Any, list[np.ndarray], list[int]]:
    """The common pairs (Table query_id, doc_id, sorted), each member's scores on them, rows dropped."""
    import pyarrow.compute as pc

    ids = [read_columns(s, ["query_id", "doc_id"]) for s in stores]
    scores = [read_columns(s, ["score"]).column("score").to_numpy().astype(np.float64) for s in stores]
    if mode == "exact":
        for i in range(1, len(stores)):
            if not ids[i].equals(ids[0]):
                raise ValueError(_pair_difference(i, stores[0], stores[i], ids[0], ids[i]))
        return ids[0], scores, [0] * len(stores)
    keys = [_keys(t) for t in ids]
    common = keys[0]
    for other in keys[1:]:
        common = common.filter(pc.is_in(common, value_set=other))
    if not len(common):
        raise ValueError(f"the members {[str(s.path) for s in stores]} have no (query_id, doc_id) pair in common")
    kept_ids: Any = None
    kept_scores: list[np.ndarray] = []
    dropped: list[int] = []
    for table, key, score in zip(ids, keys, scores, strict=True):
        # Filtering keeps each store's sorted order, so the members stay row-aligned.
        mask = pc.is_in(key, value_set=common)
        kept_ids = table.filter(mask) if kept_ids is None else kept_ids
        kept_scores.append(score[mask.to_numpy(zero_copy_only=False)])
        dropped.append(len(table) - len(common))
    return kept_ids, kept_scores, dropped


def _common_inputs(stores: Sequence[TeacherStore], mode: str) -> dict[str, str]:
    """The inputs every member shares; raise ``ValueError`` naming the members that differ."""
    keys = ("corpus", "queries", "candidates") if mode == "exact" else ("corpus", "queries")
    differences = []
    for key in keys:
        values = [s.inputs.get(key) for s in stores]
        if len(set(values)) > 1:
            listed = ", ".join(
                f"member {i} ({s.path}) has {v}" for i, (s, v) in enumerate(zip(stores, values, strict=True))
            )
            differences.append(f"{key}: {listed}")
    if differences:
        hint = (
            " With other candidates but the same collection, pairs='intersection' (--pairs intersection) "
            "combines the pairs they share (train-student will not accept the result)."
            if mode == "exact" and all(d.startswith("candidates") for d in differences)
            else ""
        )
        raise ValueError("ensemble members were scored from different inputs:\n  " + "\n  ".join(differences) + hint)
    first = stores[0].inputs
    return {k: first[k] for k in keys if first.get(k) is not None}


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"got {len(values)} weights for {n} members; give one weight per member")
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {values}")
    total = sum(values)
    return [w / total for w in values]


# --- the stage ---------------------------------------------------------------------------------


def ensemble_stores(
    members: Sequence[str | os.PathLike[str] | TeacherStore],
    out: str | os.PathLike[str],
    weights: Sequence[float] | None = None,
    normalization: str = "none",
    calibrate_on: str | os.PathLike[str] | Mapping[str, Mapping[str, int]] | Judgments | None = None,
    *,
    pairs: str = "exact",
    rel_threshold: int = 1,
    part_size: int | None = None,
    temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    overwrite: bool = False,
    config: Mapping[str, Any] | None = None,
) -> TeacherStore:
    """Combine member stores into the ensemble store ``out`` (formula and manifest: module docstring).

    Args:
        members: two or more complete teacher-score stores (paths or opened stores).
        out: the new store's directory; written beside itself and renamed into place when done.
        weights: one non-negative weight per member (normalised to sum 1); ``None``: equal (the mean).
        normalization: ``none``, ``zscore``, ``minmax`` or ``rank``, applied per query and member.
        calibrate_on: training qrels (a file, a mapping or :class:`Judgments`) to fit one
            temperature per member on; ``None``: every temperature is 1.
        pairs: ``exact`` (members must hold the same pairs) or ``intersection``.
        rel_threshold: minimum qrels grade of a positive, for calibration.
        part_size: pairs per part file (default: the first member's).
        temperature_bounds: the calibration's search interval for ``T``.
        overwrite: replace ``out`` if it exists.
        config: the resolved stage config to record (default: these arguments).

    Returns:
        The ensemble store, opened.

    Raises:
        ValueError: fewer than two members, bad weights or options, members with other pairs or
            inputs, ``out`` already existing without ``overwrite``, or unusable calibration qrels.
    """
    started_at, start = now_iso(), time.perf_counter()
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two member stores, got {len(members)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization {normalization!r} is not one of {', '.join(NORMALIZATIONS)}")
    if pairs not in PAIR_MODES:
        raise ValueError(f"pairs {pairs!r} is not one of {', '.join(PAIR_MODES)}")
    stores = [m if isinstance(m, TeacherStore) else TeacherStore.open(m) for m in members]
    destination = Path(out)
    if any(destination.resolve() == s.path.resolve() for s in stores):
        raise ValueError(f"--out {destination} is one of the members; choose another directory")
    if destination.is_file():
        raise ValueError(f"--out {destination} is a file; expected a directory for the store")
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise ValueError(f"{destination} exists and is not empty; pass --overwrite or choose another --out")
    shares = _weights(weights, len(stores))
    inputs = _common_inputs(stores, pairs)
    size = int(part_size if part_size is not None else stores[0].manifest.get("part_size", 50_000))
    if size < 1:
        raise ValueError(f"part_size must be positive, got {size}")

    ids, member_scores, dropped = _aligned(stores, pairs)
    groups = QueryGroups.from_query_ids(ids.column("query_id"))
    temperatures = [1.0] * len(stores)
    calibration: dict[str, Any] | None = None
    if calibrate_on is not None:
        judgments = calibrate_on if isinstance(calibrate_on, Judgments) else load_judgments(calibrate_on)
        grades, _ = grades_of(ids.column("query_id"), ids.column("doc_id"), judgments.qrels)
        positive = grades >= rel_threshold
        fits = [fit_temperature(s, groups, positive, temperature_bounds) for s in member_scores]
        temperatures = [f.temperature for f in fits]
        for store, fit in zip(stores, fits, strict=True):
            logger.info(
                "%s: temperature %.4g (NLL %.4f, at T=1 %.4f)",
                store.path,
                fit.temperature,
                fit.objective,
                fit.objective_at_1,
            )
            if fit.at_bound:
                logger.warning("%s: the fitted temperature %.3g is at a search bound", store.path, fit.temperature)
        if normalization != "none":
            logger.warning(
                "normalization %r ignores a positive scale: the temperatures do not change the scores", normalization
            )
        calibration = {
            "method": "listwise-softmax-nll",
            "qrels": judgments.describe(),
            "rel_threshold": rel_threshold,
            "bounds": list(temperature_bounds),
            "temperatures": temperatures,
            "members": [f.to_json() for f in fits],
        }

    combined = np.zeros(len(ids), dtype=np.float64)
    for share, temperature, scores in zip(shares, temperatures, member_scores, strict=True):
        combined += share * normalize_per_query(scores / temperature, groups, normalization)

    description = {
        "name": ENSEMBLE,
        "members": [
            {"path": str(s.path.resolve()), "teacher": s.manifest.get("teacher", {}), "fingerprint": s.fingerprint}
            for s in stores
        ],
        "weights": shares,
        "normalization": normalization,
        "pairs": pairs,
        "calibration": calibration,
    }
    recorded = (
        dict(config)
        if config is not None
        else {
            "members": [str(s.path) for s in stores],
            "weights": None if weights is None else [float(w) for w in weights],
            "normalization": normalization,
            "pairs": pairs,
            "calibrate_on": None if calibration is None else calibration["qrels"]["source"],
            "rel_threshold": rel_threshold,
            "part_size": size,
            "out": str(destination),
        }
    )
    if pairs == "exact":
        # train-student reads these to find the candidates the pairs came from (see train/run.py).
        member_config = stores[0].manifest.get("config", {})
        for key in ("candidates", "triples", "data"):
            if member_config.get(key) is not None:
                recorded[key] = member_config[key]
    manifest: dict[str, Any] = {
        "stage": "ensemble",
        "config": recorded,
        "teacher": description,
        "inputs": inputs,
        "dropped_pairs": dropped,
    }
    same_pairs = pairs == "exact" and len({s.manifest.get("pairs_fingerprint") for s in stores}) == 1
    if same_pairs and stores[0].manifest.get("pairs_fingerprint"):
        manifest["pairs_fingerprint"] = stores[0].manifest["pairs_fingerprint"]
    return _write_store(destination, ids, combined, size, manifest, overwrite, started_at, start)


def _write_store(
    destination: Path,
    ids: Any,
    scores: np.ndarray,
    part_size: int,
    manifest: dict[str, Any],
    overwrite: bool,
    started_at: str,
    start: float,
) -> TeacherStore:
    """Write the parts and manifest into a staging folder beside ``destination``, then rename it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "query_id": ids.column("query_id").cast(pa.string()),
            "doc_id": ids.column("doc_id").cast(pa.string()),
            "score": pa.array(scores.astype(np.float32)),
        },
        schema=store_schema(),
    )
    num_parts = max(1, math.ceil(len(table) / part_size))
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = staging_dir(destination)  # beside it; those of dead runs are removed
    try:
        parts = {}
        for index in range(num_parts):
            path = work / part_name(index)
            chunk = table.slice(index * part_size, part_size)
            pq.write_table(chunk, path)
            parts[part_name(index)] = {"rows": len(chunk), "sha256": sha256_file(path)}
        slices = [table.slice(i * part_size, part_size) for i in range(num_parts)]
        if "pairs_fingerprint" not in manifest:
            manifest["pairs_fingerprint"] = pairs_fingerprint(
                zip(_lazy(slices, "query_id"), _lazy(slices, "doc_id"), strict=True)
            )
        wall = round(time.perf_counter() - start, 3)
        manifest.update(
            {
                "created": started_at,
                "part_size": part_size,
                "num_parts": num_parts,
                "num_pairs": len(table),
                "parts": parts,
                "complete": True,
                "fingerprint": rows_fingerprint(
                    _lazy(slices, "query_id"), _lazy(slices, "doc_id"), _lazy(slices, "score")
                ),
                "counts": {
                    "pairs": len(table),
                    "queries": pc.count_distinct(table.column("query_id")).as_py(),
                    "documents": pc.count_distinct(table.column("doc_id")).as_py(),
                    "parts": num_parts,
                },
                "sessions": [{"started": started_at, "device": "cpu", "parts_scored": num_parts, "wall_time_s": wall}],
                "wall_time_s": wall,
            }
        )
        write_manifest(work, manifest)
        if destination.exists():
            if not overwrite and any(destination.iterdir()):
                raise ValueError(f"{destination} appeared while the ensemble was written; not replacing it")
        publish_dir(work, destination)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TeacherStore.open(destination)


def _lazy(slices: Iterable[Any], column: str) -> Iterator[Any]:
    """One column's values over consecutive table slices, converted to Python one slice at a time."""
    return chain.from_iterable(s.column(column).to_pylist() for s in slices)


def is_ensemble(manifest: Mapping[str, Any]) -> bool:
    """Whether a store's manifest describes an ensemble written by :func:`ensemble_stores`."""
    teacher = manifest.get("teacher")
    return isinstance(teacher, Mapping) and teacher.get("name") == ENSEMBLE


def open_members(store: TeacherStore) -> list[TeacherStore]:
    """The member stores of an ensemble store, checked against the fingerprints it recorded."""
    if not is_ensemble(store.manifest):
        raise ValueError(f"{store.path} is not an ensemble store")
    opened = []
    for i, member in enumerate(store.manifest["teacher"]["members"]):
        path = Path(member["path"])
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: member {i} of the ensemble {store.path} (recorded in its manifest.json) is missing"
            )
        opened_store = TeacherStore.open(path)
        if opened_store.fingerprint != member["fingerprint"]:
            raise ValueError(
                f"{path}: member {i} of the ensemble {store.path} changed since the ensemble was made "
                f"(fingerprint {opened_store.fingerprint}, recorded {member['fingerprint']})"
            )
        opened.append(opened_store)
    return opened


def run(config: EnsembleConfig) -> TeacherStore:
    """The ``ensemble-teachers`` stage: open the members, load calibration qrels, write the ensemble."""
    stores = [TeacherStore.open(m) for m in config.members]
    calibration = config.calibrate
    judgments = None
    if calibration.qrels is not None or calibration.dataset is not None:
        judgments = load_judgments(
            calibration.qrels,
            dataset=calibration.dataset,
            data_dir=calibration.data_dir,
            split=calibration.split,
            store_inputs=stores[0].inputs if stores else None,
        )
    return ensemble_stores(
        stores,
        config.out,
        weights=config.weights,
        normalization=config.normalization,
        calibrate_on=judgments,
        pairs=config.pairs,
        rel_threshold=calibration.rel_threshold,
        part_size=config.part_size,
        overwrite=config.overwrite,
        config=to_dict(config),
    )
