"""Training: the only package that knows about sentence-transformers' trainer and distributed state.

``st_loss`` adapts the pure losses of ``retrodistill.losses`` to the ``(features, labels)`` interface
that ``SentenceTransformerTrainer`` calls; ``run`` is the ``train-student`` stage; ``model_card``
writes the student's ``README.md`` from its manifest and ``hub`` pushes a finished student;
``checkpoints`` marks the trainer's checkpoints complete and finds the one a re-run resumes from.
"""
