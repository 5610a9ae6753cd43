"""Collections (corpus, queries, qrels), candidate lists and teacher-score stores."""
