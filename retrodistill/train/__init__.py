"""Training: the only package that knows about sentence-transformers' trainer and distributed state.

``st_loss`` adapts the pure losses of ``retrodistill.losses`` to the ``(features, labels)`` interface
that ``SentenceTransformerTrainer`` calls.
"""
