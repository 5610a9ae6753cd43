"""Mining candidates: retrieval sources and the false-negative rules applied to them."""
