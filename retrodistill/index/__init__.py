"""Retrieval indexes: dense FAISS backends (the only modules that import faiss) and BM25."""
