"""Test collections that ``streamforge eval`` scores: the shipped set and SMART-format ones.

A collection is documents (a file name and its bytes, uploaded as a user would) and judged
queries. The shipped set judges passages (character spans, ``evaluation/data/README.md``);
the classic SMART collections (CISI, CACM, Cranfield…) judge whole documents:

- ``*.ALL`` / ``*.all``: records opened by ``.I <id>``, fields ``.T`` title, ``.W`` text and
  others (``.A`` authors, ``.B``, ``.N``, ``.X``…) that are skipped;
- the query file (``*.QRY`` or ``query.text``): the same format, the query in ``.W``;
- the judgements (``*.REL`` or ``qrels.text``): ``query-id doc-id …`` per line.

A document is uploaded as ``<collection>-<id>.txt`` holding its title and text; queries
without judgements are left out. Documents with no text fail ingestion like any empty file
and are simply never retrieved.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from streamforge.evaluation.metrics import Span

DATA = Path(__file__).resolve().parent / "data"
SHIPPED = "shipped"
_FIELD = re.compile(r"^\.([A-Z])(?:\s+(.*))?$")


@dataclass(frozen=True, slots=True)
class Judged:
    id: str
    query: str
    kind: str
    # Passage judgements: (document name, evidence text); empty for document judgements.
    relevant: list[tuple[str, str]]
    # Document judgements: the names of the relevant documents.
    documents: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TestCollection:
    name: str
    files: list[tuple[str, bytes]]
    queries: list[Judged]
    # True when queries judge passages, so passage-level scores exist.
    passages: bool


def _records(text: str) -> dict[str, dict[str, str]]:
    """``.I`` records of a SMART file: id → field letter → text."""
    records: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    field: str | None = None
    for line in text.splitlines():
        match = _FIELD.match(line.rstrip())
        if match:
            letter, rest = match.group(1), (match.group(2) or "").strip()
            if letter == "I":
                current = records.setdefault(rest, {})
                field = None
            elif current is not None:
                field = letter
                current.setdefault(field, [])
                if rest:
                    current[field].append(rest)
            continue
        if current is not None and field is not None:
            current[field].append(line.strip())
    return {
        key: {letter: " ".join(" ".join(lines).split()) for letter, lines in fields.items()}
        for key, fields in records.items()
    }


def _find(folder: Path, *parts: str) -> Path:
    """The file of the folder whose name holds one of ``parts`` (``cran.all.1400``,
    ``CISI.ALL``, ``query.text``, ``cranqrel``…)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and any(part in path.name.lower() for part in parts):
            return path
    raise FileNotFoundError(f"{folder} has no file named like {' or '.join(parts)}")


def load_smart(folder: Path) -> TestCollection:
    """A SMART-format collection from its folder (documents, queries, judgements)."""
    name = folder.name.lower()
    documents = _records(_find(folder, ".all").read_text(encoding="utf-8", errors="replace"))
    queries = _records(_find(folder, "qry", "query").read_text(encoding="utf-8", errors="replace"))
    judged: dict[str, set[str]] = {}
    qrels = _find(folder, "rel").read_text(encoding="utf-8", errors="replace")
    for line in qrels.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            judged.setdefault(str(int(parts[0])), set()).add(f"{name}-{int(parts[1])}.txt")
    files = []
    for key, fields in documents.items():
        body = "\n\n".join(part for part in (fields.get("T", ""), fields.get("W", "")) if part)
        files.append((f"{name}-{int(key)}.txt", body.encode("utf-8")))
    chosen = []
    for key, fields in queries.items():
        relevant = judged.get(str(int(key)))
        text = fields.get("W", "")
        if relevant and text:
            chosen.append(Judged(f"{name}-q{int(key)}", text, "all", [], frozenset(relevant)))
    return TestCollection(name, files, chosen, passages=False)


def load_queries(path: Path) -> list[Judged]:
    """The shipped set's queries (``queries.jsonl``)."""
    judged = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        judged.append(
            Judged(
                id=row["id"],
                query=row["query"],
                kind=row.get("kind", "unknown"),
                relevant=[(r["document"], r["evidence"]) for r in row["relevant"]],
            )
        )
    return judged


def load_shipped() -> TestCollection:
    corpus = DATA / "corpus"
    files = [
        (p.name, p.read_bytes())
        for p in sorted(corpus.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]
    return TestCollection(SHIPPED, files, load_queries(DATA / "queries.jsonl"), passages=True)


def load(ref: str | Path) -> TestCollection:
    """``shipped`` or the folder of a SMART-format collection."""
    if str(ref) == SHIPPED:
        return load_shipped()
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of a test collection")
    return load_smart(folder)


def passage_spans(query: Judged, texts: dict[str, str]) -> list[Span]:
    spans = []
    for document, evidence in query.relevant:
        text = texts.get(document)
        if text is None:
            raise ValueError(f"query {query.id}: no document {document!r} in the corpus")
        start = text.find(evidence)
        if start < 0:
            raise ValueError(f"query {query.id}: evidence not found in {document!r}")
        spans.append(Span(document, start, start + len(evidence)))
    return spans


def document_set(query: Judged) -> frozenset[str]:
    """The documents judged relevant, for either kind of judgement."""
    return query.documents or frozenset(document for document, _ in query.relevant)
