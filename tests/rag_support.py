"""Helpers for retrieval tests: small real files of each format, upload and wait."""

from __future__ import annotations

import io
from typing import Any

import httpx
from docx import Document as DocxDocument

from streamforge.components import Components
from tests.hostile_files import text_pdf

BEES = (
    "Beekeepers inspect hives every ten days in spring. The entrance of a hive should face "
    "away from the prevailing wind, and a queen excluder keeps brood out of the honey supers."
)
BREAD = (
    "A sourdough starter is fed with equal weights of flour and water. Bulk fermentation "
    "takes four to six hours at room temperature before the loaf is shaped."
)
ROUTER = (
    "To reset the Harlow KT-9 router, hold the recessed button for thirty seconds until the "
    "status light blinks amber. Error code E-4471 means the firmware image is corrupt."
)
TIDES = (
    "Tide pools fill twice a day as the sea rises. Anemones close their tentacles when the "
    "water drains, and sea stars cling to rocks with hundreds of tube feet."
)


def pdf_bytes(paragraphs: list[str]) -> bytes:
    """A PDF with one paragraph a page."""
    return text_pdf(tuple(paragraphs))


def docx_bytes(title: str, paragraphs: list[str]) -> bytes:
    document = DocxDocument()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Season"
    table.rows[0].cells[1].text = "Spring"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def html_bytes(title: str, paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!doctype html><html><head><title>{title}</title><style>p {{ color: red }}</style>"
        f"<script>var hidden = 'never indexed';</script></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    ).encode()


def markdown_bytes(title: str, paragraphs: list[str]) -> bytes:
    return (f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n").encode()


async def create_collection(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.post("/collections", json={"name": name})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def upload(
    client: httpx.AsyncClient, collection: str, filename: str, data: bytes
) -> httpx.Response:
    return await client.post(
        "/documents", data={"collection": collection}, files={"file": (filename, data)}
    )


async def ingest(
    client: httpx.AsyncClient,
    components: Components,
    collection: str,
    filename: str,
    data: bytes,
) -> dict[str, Any]:
    """Upload a file, wait for ingestion, return the document as GET shows it."""
    response = await upload(client, collection, filename, data)
    assert response.status_code in (200, 202), response.text
    await components.documents.wait_idle()
    document = await client.get(f"/documents/{response.json()['id']}")
    assert document.status_code == 200
    body: dict[str, Any] = document.json()
    return body
