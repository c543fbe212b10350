"""The textbook reference that ``streamforge eval`` is held to, outside StreamForge's code.

For each collection: Okapi BM25 over whole documents, all-MiniLM-L6-v2 over whole documents
(sentence-transformers' own ``encode``, batch 64, which sorts texts by length; the model cuts
each text at 256 tokens), and reciprocal rank fusion of the two (k = 60, the top 100 of
each). Scored at the document level (nDCG@10, recall@10) with the same judgements and the
same document texts (title and abstract) that ``streamforge eval`` uploads.

``bm25s`` is not installed in the project's environment, so BM25 is implemented here:
Okapi BM25 with k1 = 1.2, b = 0.75 and idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (the
Lucene form, never negative); tokens are runs of two or more word characters, lower-cased,
with the English stop words of ``streamforge.stores.base`` removed and no stemming (the
defaults of ``bm25s.tokenize``, with a similar stop-word list).

Also printed: how fast the embedder alone embeds the documents (documents/s), the figure
ingestion is compared with.

    python benchmarks/reference_fusion.py ../shared/ir/cisi ../shared/ir/cacm shipped
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from streamforge.chains.embeddings import minilm_path
from streamforge.evaluation.collections import TestCollection, document_set, load
from streamforge.evaluation.metrics import document_ndcg_at, document_recall_at
from streamforge.stores.base import STOPWORDS

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
K1, B = 1.2, 0.75
RRF_K, DEPTH = 60, 100


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


class BM25:
    def __init__(self, texts: Sequence[str]) -> None:
        self.docs = [Counter(tokens(text)) for text in texts]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.average = float(self.lengths.mean()) or 1.0
        df: Counter[str] = Counter()
        for doc in self.docs:
            df.update(doc.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for index, doc in enumerate(self.docs):
            for term, count in doc.items():
                self.postings.setdefault(term, []).append((index, count))

    def search(self, query: str, depth: int) -> list[int]:
        scores: dict[int, float] = {}
        for term in set(tokens(query)):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for index, tf in self.postings[term]:
                norm = K1 * (1 - B + B * self.lengths[index] / self.average)
                scores[index] = scores.get(index, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return [index for index, _ in ranked[:depth]]


def rrf(legs: Sequence[Sequence[int]], k: int) -> list[int]:
    scores: dict[int, float] = {}
    for leg in legs:
        for rank, index in enumerate(leg, start=1):
            scores[index] = scores.get(index, 0.0) + 1.0 / (k + rank)
    return [i for i, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def run(collection: TestCollection, model: object) -> dict[str, object]:
    names = [name for name, _ in collection.files]
    texts = [data.decode("utf-8", "replace") for _, data in collection.files]
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)  # type: ignore[attr-defined]
    embed_seconds = time.perf_counter() - started
    queries = [q.query for q in collection.queries]
    query_vectors = model.encode(queries, batch_size=64, normalize_embeddings=True)  # type: ignore[attr-defined]
    bm25 = BM25(texts)
    scores: dict[str, list[tuple[float, float]]] = {"bm25": [], "vector": [], "rrf": []}
    for query, query_vector in zip(collection.queries, query_vectors, strict=True):
        relevant = document_set(query)
        lexical = bm25.search(query.query, DEPTH)
        similarity = vectors @ query_vector
        dense = [int(i) for i in np.argsort(-similarity, kind="stable")[:DEPTH]]
        for mode, ranked in (
            ("bm25", lexical),
            ("vector", dense),
            ("rrf", rrf([lexical, dense], RRF_K)),
        ):
            docs = [names[i] for i in ranked]
            scores[mode].append(
                (document_ndcg_at(docs, relevant), document_recall_at(docs, relevant))
            )
    return {
        "collection": collection.name,
        "documents": len(texts),
        "queries": len(queries),
        "embed_docs_per_s": round(len(texts) / embed_seconds, 1),
        **{
            mode: {
                "ndcg@10": round(statistics.fmean(s[0] for s in pairs), 4),
                "recall@10": round(statistics.fmean(s[1] for s in pairs), 4),
            }
            for mode, pairs in scores.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collections", nargs="+", help="SMART folders or 'shipped'")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    results = []
    for ref in args.collections:
        result = run(load(ref), model)
        results.append(result)
        print(
            f"{result['collection']:8} {result['documents']:5} documents {result['queries']:4} "
            f"queries  nDCG@10 bm25 {result['bm25']['ndcg@10']:.4f}"  # type: ignore[index]
            f"  vector {result['vector']['ndcg@10']:.4f}"  # type: ignore[index]
            f"  rrf {result['rrf']['ndcg@10']:.4f}"  # type: ignore[index]
            f"  (embedder alone: {result['embed_docs_per_s']} documents/s)",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
