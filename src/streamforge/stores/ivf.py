"""An inverted-file (IVF) index over one collection's vectors, in process memory.

sqlite-vec 0.1 searches exactly, one vector after another; its PyPI build has no SIMD, so a
query over 100,000 vectors of 384 dimensions takes about 110 ms here. Large collections on
SQLite are therefore also searched through this index, built from the vectors sqlite-vec
stores (which stay the source of truth): k-means splits the vectors into about √n cells,
stored cell by cell in one matrix; a query scores the centroids, then only the vectors of the
``probes`` nearest cells, with one matrix-vector product per cell. pgvector's IVFFlat works
the same way. Small collections never use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamforge.stores.base import Hit

# k-means runs on a sample of at most this many vectors, for this many rounds.
_SAMPLE = 25_000
_ROUNDS = 12


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: np.ndarray = (matrix / norms).astype(np.float32)
    return unit


def kmeans(vectors: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine) on a sample; returns unit centroids, one row a cell."""
    rng = np.random.default_rng(seed)
    sample = vectors
    if len(vectors) > _SAMPLE:
        sample = vectors[rng.choice(len(vectors), _SAMPLE, replace=False)]
    centroids = sample[rng.choice(len(sample), cells, replace=False)].copy()
    for _ in range(_ROUNDS):
        assignment = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, sample)
        counts = np.bincount(assignment, minlength=cells)
        empty = counts == 0
        # An empty cell restarts at a random vector rather than staying dead.
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        centroids = _unit(sums)
    return centroids


@dataclass(slots=True)
class IVFIndex:
    version: int
    centroids: np.ndarray  # (cells, d)
    offsets: np.ndarray  # (cells + 1,): cell c holds rows offsets[c]:offsets[c + 1]
    ids: np.ndarray  # (n,) chunk ids, grouped by cell
    matrix: np.ndarray  # (n, d) unit vectors, grouped by cell

    @classmethod
    def build(cls, version: int, ids: np.ndarray, vectors: np.ndarray) -> IVFIndex:
        vectors = _unit(vectors)
        cells = max(1, min(int(math.sqrt(len(vectors))), len(vectors)))
        centroids = kmeans(vectors, cells)
        assignment = np.empty(len(vectors), dtype=np.int64)
        for start in range(0, len(vectors), 20_000):  # bounded temporary memory
            block = vectors[start : start + 20_000]
            assignment[start : start + 20_000] = np.argmax(block @ centroids.T, axis=1)
        order = np.argsort(assignment, kind="stable")
        counts = np.bincount(assignment, minlength=cells)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(version, centroids, offsets, ids[order], np.ascontiguousarray(vectors[order]))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: np.ndarray, k: int, probes: int) -> list[Hit]:
        nearest = np.argsort(-(self.centroids @ query))[: max(1, probes)]
        ids: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for cell in nearest:
            start, end = self.offsets[cell], self.offsets[cell + 1]
            if end > start:
                ids.append(self.ids[start:end])
                scores.append(self.matrix[start:end] @ query)
        if not ids:
            return []
        all_ids = np.concatenate(ids)
        all_scores = np.concatenate(scores)
        if len(all_scores) > k:
            top = np.argpartition(-all_scores, k)[:k]
        else:
            top = np.arange(len(all_scores))
        top = top[np.argsort(-all_scores[top])]
        return [Hit(int(all_ids[i]), float(all_scores[i])) for i in top]
