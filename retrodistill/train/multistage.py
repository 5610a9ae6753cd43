"""Multi-stage recipes: ``stages:`` in a ``train-student`` config, run in order by one command.

Each entry of ``stages`` is a stage's name plus the config keys it changes; the rest comes from the
top of the file. Stage ``k`` starts from stage ``k - 1``'s student (the first from ``student``, pruned
to ``student.layers`` there and only there), so each stage can have its own data (``stage: corpus``
with documents, queries, pseudo-queries; ``stage: queries`` with a store), loss, teacher and budget.
Progressive distillation (PROD, Lin et al. 2023: a ladder of teachers, easy to hard) and curricula are
such lists: ``configs/prod_ladder.yaml``, ``configs/compress_2layer.yaml``::

    student: {model: sentence-transformers/all-MiniLM-L6-v2, layers: 2}
    out: runs/scifact/student-2layer
    stages:
      - {name: corpus, stage: corpus, store: null, loss: {name: embedding}, epochs: 3}
      - {name: scores, store: runs/scifact/minilm-scores, loss: {name: margin-mse}}

Merging: a stage's sections (``data``, ``student``, ``teacher_embeddings``) change key by key; ``loss``
is replaced whole (a loss is its name with its parameters), as is every ``params``. A stage may not set
``out``, ``stages``, ``student.model`` or ``student.layers``: those are the recipe's.

Layout: every stage but the last publishes into ``OUT.stages/K-NAME/`` (a student folder like any,
evaluable on its own); the last one publishes ``OUT``, whose manifest adds ``stages``: for each stage its
name, folder, resolved config, steps, training time and inputs, and ``recipe`` the config as given.

Resuming: run the same command again. A finished stage whose recorded config (less the keys that change
no weight, :data:`~retrodistill.train.checkpoints.RUNTIME_KEYS`) and teacher inputs equal this run's is
reused; the first stage that is not is trained, resuming from its own checkpoints when it has
``save_steps`` (:mod:`.checkpoints`), and every later stage is trained after it. A stage folder that
holds another run's student is refused unless ``overwrite``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from retrodistill.artifacts import MANIFEST, read_manifest
from retrodistill.config import ConfigError, TrainConfig, _build, to_dict
from retrodistill.train.checkpoints import RUNTIME_KEYS

logger = logging.getLogger(__name__)

_REPLACED = frozenset({"loss", "params"})  # sections a stage replaces whole instead of merging
_RECIPE_KEYS = ("out", "stages")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in _REPLACED:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def stages_dir(out: str | os.PathLike[str]) -> Path:
    """Where the stages before the last publish their students: ``OUT.stages`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(f"{out.name}.stages")


def stage_configs(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """Each stage's name and resolved config, in order; every stage is checked before any trains.

    Raises:
        ConfigError: a stage without a unique name, with a key the recipe owns or a key
            ``train-student`` does not know (named as ``stages[K].key``).
    """
    base = to_dict(config)
    base["stages"] = []
    folder = stages_dir(config.out)
    resolved: list[tuple[str, TrainConfig]] = []
    previous: Path | None = None
    for index, entry in enumerate(config.stages):
        where = f"stages[{index}]"
        changes = dict(entry)
        name = changes.pop("name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: each stage needs a name (letters, digits, - _ .), got {name!r}")
        if name in {n for n, _ in resolved}:
            raise ConfigError(f"{where}.name: {name!r} names two stages")
        owned = [k for k in _RECIPE_KEYS if k in changes]
        owned += [f"student.{k}" for k in ("model", "layers") if k in (changes.get("student") or {})]
        if owned:
            raise ConfigError(
                f"{where}: {', '.join(owned)} belong to the recipe, not a stage (each stage starts from the "
                "previous one's student; set them at the top of the config)"
            )
        merged = _merge(base, changes)
        last = index == len(config.stages) - 1
        merged["out"] = str(config.out) if last else str(folder / f"{index + 1}-{name}")
        if previous is not None:
            merged["student"]["model"] = str(previous)
            merged["student"]["layers"] = None  # pruned once, by the first stage
        try:
            stage = _build(TrainConfig, merged, f"{where}.")
        except ConfigError as err:
            raise ConfigError(str(err).replace(f"{where}..", f"{where}.")) from None
        resolved.append((name, stage))
        previous = Path(merged["out"])
    if not resolved:
        raise ConfigError("stages: the list is empty (leave the key out for a single-stage run)")
    return resolved


def _weights_key(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def _teacher_inputs(config: TrainConfig) -> dict[str, str]:
    """The current fingerprints of the teacher artifacts ``config`` reads (cheap: manifests only)."""
    found = {}
    for key, path in (
        ("teacher_scores", config.store),
        ("teacher_embeddings", config.teacher_embeddings.path),
        ("pair_store", config.pair_store),
    ):
        if path and (Path(path) / MANIFEST).is_file():
            fingerprint = read_manifest(path).get("fingerprint")
            if fingerprint:
                found[key] = str(fingerprint)
    return found


def reusable(folder: Path, config: TrainConfig) -> bool:
    """Whether ``folder`` holds a finished student this stage config would train again."""
    if not (folder / MANIFEST).is_file():
        return False
    manifest = read_manifest(folder)
    if manifest.get("stage") != "train-student":
        return False
    if _weights_key(manifest.get("config", {})) != _weights_key(to_dict(config)):
        return False
    recorded = manifest.get("inputs", {})
    return all(recorded.get(key) == value for key, value in _teacher_inputs(config).items())


def run_stages(config: TrainConfig, *, show_progress: bool = True, overwrite: bool = False, **publish: Any) -> Path:
    """Train every stage of ``config.stages`` in order (see the module docstring); returns ``config.out``.

    ``publish`` (``push_to_hub``) applies to the last stage's student.
    """
    from retrodistill.outputs import OutputExistsError, check_output
    from retrodistill.train.run import run, training_inputs

    stages = stage_configs(config)
    check_output(config.out, inputs=training_inputs(stages[0][1]), overwrite=overwrite)
    records: list[dict[str, Any]] = []
    retrain = False
    for index, (name, stage) in enumerate(stages):
        folder = Path(stage.out)
        last = index == len(stages) - 1
        started = time.perf_counter()
        if not retrain and not last and reusable(folder, stage):
            logger.warning("stage %d/%d (%s): reusing the finished student in %s", index + 1, len(stages), name, folder)
        else:
            retrain = True  # every later stage starts from a new student
            if not last and folder.exists() and not overwrite and any(folder.iterdir()):
                raise OutputExistsError(
                    f"{folder}: stage {name!r} holds a student of other settings or inputs; pass --overwrite "
                    "to train it (and the stages after it) again"
                )
            if show_progress:
                logger.warning("stage %d/%d (%s): training into %s", index + 1, len(stages), name, folder)
            extra = {"stages": records, "recipe": to_dict(config)} if last else {}
            run(
                stage,
                show_progress=show_progress,
                overwrite=overwrite or (not last and folder.exists()),
                manifest_extra={"recipe_stage": {"index": index + 1, "of": len(stages), "name": name}, **extra},
                **(publish if last else {}),
            )
        if not last:
            manifest = read_manifest(folder)
            records.append(
                {
                    "name": name,
                    "out": str(folder),
                    "config": manifest.get("config"),
                    "inputs": manifest.get("inputs"),
                    "steps": manifest.get("counts", {}).get("steps"),
                    "wall_time_s": manifest.get("wall_time_s"),
                    "reused": not retrain,
                    "seconds_here": round(time.perf_counter() - started, 3),
                }
            )
    return Path(config.out)
