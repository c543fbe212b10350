"""nDCG@k and recall@k over passages judged relevant.

A query's relevant passages are character spans of documents. A retrieved chunk counts for a
passage when its span overlaps it; each passage is credited once, by the first chunk that
covers it, so overlapping chunks of one passage do not inflate the score. Gains are binary.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    document: str
    start: int
    end: int

    def overlaps(self, document: str, start: int, end: int) -> bool:
        return document == self.document and start < self.end and self.start < end


@dataclass(frozen=True, slots=True)
class Retrieved:
    document: str
    start: int
    end: int


def _credited(retrieved: Sequence[Retrieved], relevant: Sequence[Span], k: int) -> list[bool]:
    found: set[int] = set()
    gains = []
    for item in retrieved[:k]:
        gain = False
        for index, span in enumerate(relevant):
            if index not in found and span.overlaps(item.document, item.start, item.end):
                found.add(index)
                gain = True
                break
        gains.append(gain)
    return gains


def ndcg_at(retrieved: Sequence[Retrieved], relevant: Sequence[Span], k: int = 10) -> float:
    if not relevant:
        return 0.0
    gains = _credited(retrieved, relevant, k)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, gain in enumerate(gains) if gain)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal


def recall_at(retrieved: Sequence[Retrieved], relevant: Sequence[Span], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return sum(_credited(retrieved, relevant, k)) / len(relevant)


def documents_in_order(retrieved: Sequence[Retrieved]) -> list[str]:
    """Each document once, where its first chunk is (a document's best chunk ranks it)."""
    seen: dict[str, None] = {}
    for item in retrieved:
        seen.setdefault(item.document, None)
    return list(seen)


def document_ndcg_at(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """nDCG@k of a ranked list of documents with binary judgements."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal


def document_recall_at(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)
