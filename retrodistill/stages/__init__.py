"""The pipeline's stages: each one a recipe ``run(config) -> artifact`` over the artifact layer.

A stage reads the artifacts of earlier stages (:mod:`retrodistill.data`), checks their fingerprints,
and writes one artifact directory with its ``manifest.json``. The scorers it runs live in
:mod:`retrodistill.teachers`; this package holds no model code.

Stage modules, each with its ``retrodistill`` command and the artifact it writes:

- :mod:`.mine_negatives` (``mine-negatives``): candidates, BM25 top-k plus the judged documents.
- :mod:`.import_scores` (``import-scores``): a teacher-score store and its candidates from a published
  score file, no rescoring (the format readers and the merge are ``data/import_readers.py`` and
  ``data/import_merge.py``: they read artifact formats).
- :mod:`.score_teacher` (``score-teacher``): a teacher-score store in resumable parts; how many ranks
  share one run is :mod:`.score_ranks`.
- :mod:`.score_pairwise` (``score-pairwise``): a pair store of a pairwise teacher's ``P(d_i ≻ d_j | q)``.
- :mod:`.ensemble` (``ensemble-teachers``): an ensemble store from member stores; per-query
  normalisation and temperature calibration are :mod:`.ensemble_calibration`.
- :mod:`.inspect_teacher` (``inspect-teacher``): ``inspect.json`` and plots about a store.
- :mod:`.embed_teacher` (``embed-teacher``): a teacher-embedding store, its documents through the
  corpus-embedding cache that evaluation shares.

Two stages live elsewhere, beside what only they know about: ``train-student`` is
:func:`retrodistill.train.run.run` (``train/`` is the only package that knows the trainer and
distributed state), and ``evaluate`` is :mod:`retrodistill.evaluate` (retrieval, metrics, the BEIR
suite). The teacher-embedding stage (``embed-teacher``) is :mod:`retrodistill.stages.embed_teacher`.
"""
