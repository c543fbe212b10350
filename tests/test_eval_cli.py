"""``streamforge eval`` and ``streamforge ingest``, run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from streamforge.evaluation.collections import load_queries
from streamforge.evaluation.metrics import Retrieved, Span, ndcg_at, recall_at
from streamforge.evaluation.run import CORPUS, QUERIES
from tests.conftest import AppFactory, live_server
from tests.rag_support import BEES, BREAD, ROUTER, docx_bytes, markdown_bytes, pdf_bytes


async def run_cli(*args: str, limit: float = 600) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    async with asyncio.timeout(limit):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def test_metrics() -> None:
    relevant = [Span("a.md", 100, 150), Span("b.md", 0, 40)]
    perfect = [Retrieved("a.md", 90, 200), Retrieved("b.md", 0, 10)]
    assert ndcg_at(perfect, relevant) == 1.0
    assert recall_at(perfect, relevant) == 1.0
    # A second chunk over the same passage earns nothing more.
    doubled = [Retrieved("a.md", 90, 200), Retrieved("a.md", 120, 300), Retrieved("b.md", 0, 5)]
    assert ndcg_at(doubled, relevant) < 1.0
    assert recall_at(doubled, relevant) == 1.0
    assert recall_at([Retrieved("a.md", 150, 300)], relevant) == 0.0  # touching is not overlap
    assert ndcg_at([], relevant) == 0.0


def test_the_labelled_set_is_sound() -> None:
    queries = load_queries(QUERIES)
    assert len(queries) >= 100
    kinds = {q.kind for q in queries}
    assert kinds == {"keyword", "semantic", "mixed"}
    documents = {p.name: p.read_text(encoding="utf-8") for p in CORPUS.glob("*.md")}
    for query in queries:
        for document, evidence in query.relevant:
            assert documents[document].count(evidence) == 1, query.id


@pytest.mark.slow
async def test_eval_prints_the_three_modes_and_hybrid_wins() -> None:
    code, stdout, stderr = await run_cli("eval", "--embedder", "local", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["queries"] >= 100
    assert report["embedder"] == "all-MiniLM-L6-v2"
    modes = report["modes"]
    assert set(modes) == {"text", "vector", "hybrid"}
    for name in ("ndcg@10", "recall@10"):
        assert all(0.0 < modes[m][name] <= 1.0 for m in modes)
    assert modes["hybrid"]["ndcg@10"] > modes["vector"]["ndcg@10"]
    assert modes["hybrid"]["ndcg@10"] > modes["text"]["ndcg@10"]


async def test_eval_table(tmp_path: Path) -> None:
    code, stdout, stderr = await run_cli("eval", "--embedder", "simulated")
    assert code == 0, stderr
    for word in ("nDCG@10", "recall@10", "text", "vector", "hybrid", "279 queries"):
        assert word in stdout


async def test_ingest_uploads_with_progress(app_factory: AppFactory, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    (folder / "bees.md").write_bytes(markdown_bytes("Bees", [BEES]))
    (folder / "nested" / "bread.docx").write_bytes(docx_bytes("Bread", [BREAD]))
    (folder / "router.pdf").write_bytes(pdf_bytes([ROUTER]))
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n garbage")
    app = app_factory()
    async with live_server(app) as server:
        code, stdout, stderr = await run_cli(
            "ingest", str(folder), "--collection", "manuals", "--url", server.url
        )
        assert code == 0, stderr
        assert "3 of 3 documents ingested into manuals" in stdout
        # A bar per file, each ending ready; the file left out is named, with the reason.
        for name in ("bees.md", "bread.docx", "router.pdf"):
            assert any(name in line and "ready" in line for line in stderr.splitlines()), stderr
        assert "skipped" in stderr and "ignored.bin: .bin files are not supported" in stderr
        async with httpx.AsyncClient(base_url=server.url) as client:
            listed = (await client.get("/documents", params={"status": "ready"})).json()
            assert sorted(d["name"] for d in listed["items"]) == [
                "bees.md",
                "bread.docx",
                "router.pdf",
            ]
        code, stdout, stderr = await run_cli(
            "ingest", str(broken), "--collection", "manuals", "--url", server.url
        )
        assert code == 1
        assert f"failed: {broken}:" in stderr  # the path as given, not only its name
        assert "0 of 1 documents ingested" in stdout


async def test_ingest_against_a_server_that_is_down(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text("# A\n\nText.\n")
    code, _, stderr = await run_cli(
        "ingest", str(path), "--collection", "x", "--url", "http://127.0.0.1:9", limit=60
    )
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "cannot reach the StreamForge server" in lines[0]
    code, _, stderr = await run_cli("ingest", str(tmp_path / "missing.md"), "--collection", "x")
    assert code != 0 and "does not exist" in stderr


SHARED_IR = Path(__file__).resolve().parents[1] / ".." / "shared" / "ir"

SMART_DOCUMENTS = """.I 1
.T
Bees and hives
.A
Someone, A.
.W
Beekeepers inspect hives every ten days in spring.
.X
1\t5\t1
.I 2
.T
Sourdough bread
.W
A sourdough starter is fed with flour and water.
.I 3
.T
Routers
.W
Hold the reset button of the router for thirty seconds.
.I 4
.T
Empty
.W
"""
SMART_QUERIES = """.I 1
.W
how often are hives inspected by beekeepers
.I 2
.W
resetting a router
.I 3
.W
a query nobody judged
"""
SMART_JUDGEMENTS = "1 1 0 0\n2 3 0 0\n"


def smart_folder(root: Path) -> Path:
    folder = root / "tiny"
    folder.mkdir()
    (folder / "TINY.ALL").write_text(SMART_DOCUMENTS)
    (folder / "TINY.QRY").write_text(SMART_QUERIES)
    (folder / "TINY.REL").write_text(SMART_JUDGEMENTS)
    return folder


def test_smart_collections_load() -> None:
    from streamforge.evaluation.collections import load

    if not SHARED_IR.is_dir():
        pytest.skip(f"the shared test collections are not at {SHARED_IR}")
    cisi, cacm = load(SHARED_IR / "cisi"), load(SHARED_IR / "cacm")
    assert (len(cisi.files), len(cisi.queries)) == (1460, 76)
    assert (len(cacm.files), len(cacm.queries)) == (3204, 52)
    assert dict(cacm.files)["cacm-1.txt"].startswith(b"Preliminary Report-International")
    names = {name for name, _ in cisi.files}
    assert all(q.documents <= names for q in cisi.queries)


async def test_eval_runs_a_smart_collection_at_the_document_level(tmp_path: Path) -> None:
    folder = smart_folder(tmp_path)
    code, stdout, stderr = await run_cli("eval", str(folder), "--embedder", "simulated", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["collection"] == "tiny"
    assert (report["documents"], report["queries"]) == (4, 2)  # the unjudged query left out
    for mode in ("text", "vector", "hybrid"):
        scores = report["modes"][mode]
        assert scores["ndcg@10"] == 1.0 and scores["recall@10"] == 1.0
        assert "passage_ndcg@10" not in scores
    code, stdout, _ = await run_cli("eval", str(folder), "--embedder", "simulated")
    assert code == 0 and "tiny: 2 queries, 4 documents" in stdout.replace("\n", " ")
    code, _, stderr = await run_cli("eval", str(tmp_path / "missing"))
    assert code != 0 and "cannot read the test collection" in stderr
