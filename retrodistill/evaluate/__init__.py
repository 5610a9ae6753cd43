"""Evaluation: dense retrieval runs, metrics (ir-measures), TREC run files and the BEIR-style table."""
