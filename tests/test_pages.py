"""Page numbers of PDF passages: extraction records where each page begins in the text, the
document keeps it, and every citation of a PDF passage says its page (``/search``, the
``sources`` event, the stored reply, the document's text); other formats say null."""

from __future__ import annotations

import httpx

from streamforge.documents.extract import extract_bytes, page_of
from streamforge.documents.sandbox import Limits, extract_isolated
from tests.conftest import AppFactory, live_server
from tests.rag_support import BEES, BREAD, ROUTER, TIDES, create_collection, ingest, pdf_bytes
from tests.sse_client import read_chat
from tests.test_chat_stream import ProbeProvider

# Page 3 is blank: it has no text, and takes no room in the extracted text.
PAGES = [BEES, BREAD, "", ROUTER]


def test_extraction_records_where_each_page_begins() -> None:
    extracted = extract_bytes(pdf_bytes(PAGES), "pdf", max_chars=100_000)
    starts = extracted.page_starts
    assert extracted.pages == 4 and starts is not None and len(starts) == 4
    text = extracted.text
    assert starts[0] == 0
    assert text[starts[1] :].startswith(BREAD[:40])
    # The blank page begins where the next page with text does.
    assert starts[2] == starts[3] and text[starts[3] :].startswith(ROUTER[:40])
    assert page_of(starts, text.index("queen excluder")) == 1
    assert page_of(starts, text.index("sourdough")) == 2
    assert page_of(starts, text.index("E-4471")) == 4
    assert page_of(starts, starts[1] - 1) == 1  # the blank line between pages 1 and 2
    assert page_of(None, 10) is None


def test_formats_without_pages_have_no_page_starts() -> None:
    for fmt, data in (("txt", BEES.encode()), ("md", f"# B\n\n{BEES}".encode())):
        extracted = extract_bytes(data, fmt, max_chars=100_000)
        assert extracted.pages is None and extracted.page_starts is None


async def test_the_sandboxed_worker_returns_the_page_starts() -> None:
    data = pdf_bytes(PAGES)
    isolated = await extract_isolated(data, "manual.pdf", Limits())
    assert isolated == extract_bytes(data, "pdf", max_chars=Limits().max_chars)
    plain = await extract_isolated(BEES.encode(), "bees.txt", Limits())
    assert plain.page_starts is None


async def test_citations_of_a_pdf_passage_carry_its_page(
    app_factory: AppFactory, rag_database_url: str
) -> None:
    probe = ProbeProvider(["See", " [1]."], delay=0)
    app = app_factory(rag_database_url, ingestion={"chunk_size": 200, "chunk_overlap": 0})
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        server.components.providers.register(probe)
        components = server.components
        await create_collection(client, "manuals")
        pdf = await ingest(client, components, "manuals", "manual.pdf", pdf_bytes(PAGES))
        assert pdf["status"] == "ready" and pdf["pages"] == 4
        await create_collection(client, "notes")
        note = await ingest(client, components, "notes", "tides.md", TIDES.encode())
        assert note["status"] == "ready"

        # The document's text: where its pages begin, and each chunk's page.
        body = (await client.get(f"/documents/{pdf['id']}/text")).json()
        starts = body["page_starts"]
        assert body["name"] == "manual.pdf" and body["media_type"] == "application/pdf"
        assert len(starts) == 4 and starts[0] == 0
        router_chunk = next(c for c in body["chunks"] if "E-4471" in c["text"])
        assert router_chunk["page"] == 4
        assert next(c for c in body["chunks"] if "sourdough" in c["text"])["page"] == 2
        assert body["text"][starts[3] :].startswith(ROUTER[:30])
        bare = (await client.get(f"/documents/{pdf['id']}/text?chunks=false")).json()
        assert bare["chunks"] == [] and bare["page_starts"] == starts
        assert bare["text"] == body["text"]
        plain = (await client.get(f"/documents/{note['id']}/text")).json()
        assert plain["page_starts"] is None
        assert all(chunk["page"] is None for chunk in plain["chunks"])

        # Search results.
        found = await client.post("/search", json={"query": "sourdough starter flour water"})
        hits = found.json()["results"]
        bread = next(hit for hit in hits if "sourdough" in hit["text"])
        assert bread["document_name"] == "manual.pdf" and bread["page"] == 2
        found = await client.post("/search", json={"query": "tentacles anemones", "top_k": 20})
        tides = next(hit for hit in found.json()["results"] if hit["document_name"] == "tides.md")
        assert tides["page"] is None

        # The sources of a reply, streamed and stored.
        stream = await read_chat(
            client,
            {
                "message": "What does error E-4471 mean?",
                "provider": "probe",
                "rag": {"collections": ["manuals"], "top_k": 2},
            },
        )
        sources = stream.typed("sources")[0]["sources"]
        assert sources[0]["document_name"] == "manual.pdf" and "E-4471" in sources[0]["snippet"]
        assert sources[0]["page"] == 4
        assert all(isinstance(source["page"], int) for source in sources)
        session_id = stream.session["session_id"]
        messages = (await client.get(f"/sessions/{session_id}/messages")).json()["items"]
        assert messages[-1]["citations"] == sources

        # Re-uploading other bytes under the name drops the old pages with the old text.
        changed = await ingest(client, components, "manuals", "manual.pdf", pdf_bytes([TIDES]))
        assert changed["pages"] == 1
        body = (await client.get(f"/documents/{pdf['id']}/text")).json()
        assert body["page_starts"] == [0]
        assert all(chunk["page"] == 1 for chunk in body["chunks"])
