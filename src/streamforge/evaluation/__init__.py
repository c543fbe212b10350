"""Retrieval quality: a labelled set shipped with the package, and the metrics it is scored by."""
