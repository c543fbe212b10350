"""Validate the retrieval evaluation set that ships beside this script.

Run it from anywhere with ``python src/streamforge/evaluation/data/check.py``. It uses only the
standard library, prints a short summary and exits with status 1 when any check fails.

Checks:

- every line of ``queries.jsonl`` is a JSON object with ``id``, ``query``, ``kind`` and
  ``relevant`` fields of the right types, and ids are unique;
- ``kind`` is ``keyword``, ``semantic`` or ``mixed``, and each query has 1 or 2 relevant passages;
- every referenced document exists in ``corpus/``;
- every evidence is 30 to 200 characters long, has no surrounding whitespace, no Markdown
  heading marker, never spans a blank line, and occurs exactly once in its document;
- there are at least 100 queries and every document in the corpus is referenced at least once;
- every document starts with a ``# Title`` line and is 2,500 to 5,000 characters long.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent
CORPUS_DIR = DATA_DIR / "corpus"
QUERIES_FILE = DATA_DIR / "queries.jsonl"

KINDS = ("keyword", "semantic", "mixed")
MIN_QUERIES = 100
MIN_EVIDENCE, MAX_EVIDENCE = 30, 200
MIN_DOCUMENT, MAX_DOCUMENT = 2500, 5000
BLANK_LINE = re.compile(r"\n[ \t]*\n")
HEADING = re.compile(r"(^|\n)[ \t]*#{1,6}[ \t]")


def load_corpus(errors: list[str]) -> dict[str, str]:
    """Read every Markdown document and check its shape."""
    documents: dict[str, str] = {}
    for path in sorted(CORPUS_DIR.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        documents[path.name] = text
        if not text.startswith("# "):
            errors.append(f"{path.name}: does not start with a '# Title' line")
        if not MIN_DOCUMENT <= len(text) <= MAX_DOCUMENT:
            errors.append(
                f"{path.name}: {len(text)} characters, expected {MIN_DOCUMENT} to {MAX_DOCUMENT}"
            )
    if not documents:
        errors.append(f"no documents found in {CORPUS_DIR}")
    return documents


def check_evidence(
    where: str, document: str, evidence: str, text: str | None, errors: list[str]
) -> None:
    """Check one evidence passage against its document."""
    if not MIN_EVIDENCE <= len(evidence) <= MAX_EVIDENCE:
        errors.append(
            f"{where}: evidence is {len(evidence)} characters, "
            f"expected {MIN_EVIDENCE} to {MAX_EVIDENCE}"
        )
    if evidence != evidence.strip():
        errors.append(f"{where}: evidence has leading or trailing whitespace")
    if BLANK_LINE.search(evidence):
        errors.append(f"{where}: evidence spans a blank line")
    if HEADING.search(evidence):
        errors.append(f"{where}: evidence contains a Markdown heading marker")
    if text is None:
        errors.append(f"{where}: document {document!r} does not exist in corpus/")
        return
    count = text.count(evidence)
    if count != 1:
        errors.append(f"{where}: evidence occurs {count} times in {document}, expected once")


def check_query(
    number: int, line: str, documents: dict[str, str], seen: set[str], errors: list[str]
) -> tuple[str, list[str]] | None:
    """Check one line of queries.jsonl; return its kind and referenced documents."""
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        errors.append(f"line {number}: invalid JSON ({exc})")
        return None
    if not isinstance(record, dict):
        errors.append(f"line {number}: not a JSON object")
        return None
    query_id = record.get("id")
    where = f"line {number} ({query_id})"
    if not isinstance(query_id, str) or not query_id:
        errors.append(f"line {number}: missing or empty 'id'")
    elif query_id in seen:
        errors.append(f"{where}: duplicate id")
    else:
        seen.add(query_id)
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        errors.append(f"{where}: missing or empty 'query'")
    kind = record.get("kind")
    if kind not in KINDS:
        errors.append(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    relevant = record.get("relevant")
    if not isinstance(relevant, list) or not 1 <= len(relevant) <= 2:
        errors.append(f"{where}: 'relevant' must be a list of 1 or 2 passages")
        return None
    referenced: list[str] = []
    for item in relevant:
        if not isinstance(item, dict):
            errors.append(f"{where}: relevant passage is not an object")
            continue
        document = item.get("document")
        evidence = item.get("evidence")
        if not isinstance(document, str) or not isinstance(evidence, str):
            errors.append(f"{where}: relevant passage needs string 'document' and 'evidence'")
            continue
        referenced.append(document)
        check_evidence(where, document, evidence, documents.get(document), errors)
    return (str(kind), referenced)


def main() -> int:
    errors: list[str] = []
    documents = load_corpus(errors)
    kinds: Counter[str] = Counter()
    per_document: Counter[str] = Counter()
    seen: set[str] = set()
    passages = 0
    lines = QUERIES_FILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            errors.append(f"line {number}: blank line")
            continue
        result = check_query(number, line, documents, seen, errors)
        if result is None:
            continue
        kind, referenced = result
        kinds[kind] += 1
        passages += len(referenced)
        per_document.update(referenced)
    if len(seen) < MIN_QUERIES:
        errors.append(f"only {len(seen)} queries, expected at least {MIN_QUERIES}")
    for name in documents:
        if per_document[name] == 0:
            errors.append(f"{name}: no query refers to this document")

    print(f"documents: {len(documents)}")
    print(f"queries: {len(seen)} ({passages} relevant passages)")
    for kind in KINDS:
        print(f"  {kind}: {kinds[kind]}")
    if documents:
        counts = [per_document[name] for name in documents]
        print(f"passages per document: min {min(counts)}, max {max(counts)}")
    if errors:
        print(f"FAILED: {len(errors)} problem(s)")
        for error in errors:
            print(f"  {error}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
