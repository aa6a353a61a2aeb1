"""Task heads: each module builds a model for one task and knows its loss, metrics and decoding."""
