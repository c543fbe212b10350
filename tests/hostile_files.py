"""Hostile, malformed and good upload files, built in memory, for extraction tests.

Each hostile generator returns ``(filename, data, reason)``: the refusal's reason must contain
``reason``. Each good generator returns ``(filename, data, phrases)``: the extracted text must
contain every phrase. Bombs are built from repeated pre-compressed blocks, so neither building
nor holding them costs more than a few hundred kilobytes.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable

from docx import Document as DocxDocument
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

Hostile = tuple[str, bytes, str]
Good = tuple[str, bytes, tuple[str, ...]]

HOSTILE: list[Callable[[], Hostile]] = []
# Refused by the name and content checks in the server process: no worker is started.
REFUSED_EARLY: set[str] = set()
GOOD: list[Callable[[], Good]] = []

PDF_PAGES = (
    "The lighthouse keeper logs the weather at dawn and dusk.",
    "Fog signals sound every thirty seconds when visibility drops.",
)
DOCX_PHRASES = ("Harbour Manual", "Moorings are checked", "Berth", "Nine metres")
MIB = 1 << 20


def hostile(*, early: bool = False) -> Callable[[Callable[[], Hostile]], Callable[[], Hostile]]:
    def register(make: Callable[[], Hostile]) -> Callable[[], Hostile]:
        HOSTILE.append(make)
        if early:
            REFUSED_EARLY.add(make.__name__)
        return make

    return register


def good(make: Callable[[], Good]) -> Callable[[], Good]:
    GOOD.append(make)
    return make


# -- building blocks --------------------------------------------------------------------------


@functools.cache
def text_pdf(pages: tuple[str, ...] = PDF_PAGES) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def build_pdf(
    objects: list[bytes], *, root: int = 1, xref: bytes | None = None, startxref: int | None = None
) -> bytes:
    """A PDF of numbered ``objects`` with a correct xref table unless one is given."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    if xref is None:
        xref = b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        xref += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += xref
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (len(objects) + 1, root)
    out += b"startxref\n%d\n%%%%EOF\n" % (xref_at if startxref is None else startxref)
    return bytes(out)


def pdf_stream(content: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(content), extra, content)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
_PAGE = (
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
    b" /Resources << /Font << /F1 5 0 R >> >> >>"
)


def one_page_pdf(content: bytes, *, count: int = 1, extra: bytes = b"") -> bytes:
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count %d >>" % count,
            _PAGE,
            pdf_stream(content, extra),
            _FONT,
        ]
    )


def zeros_deflated(megabytes: int) -> tuple[bytes, int, int]:
    """A raw DEFLATE stream of ``megabytes`` MiB of zeros: (stream, crc32, adler32).

    One full-flushed block is compressed once and repeated; a full flush resets the window, so
    copies of it are valid blocks one after another.
    """
    zeros = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc, adler = 0, 1
    for _ in range(megabytes):
        crc, adler = zlib.crc32(zeros, crc), zlib.adler32(zeros, adler)
    return block * megabytes + final, crc, adler


def raw_zip(members: Iterable[tuple[str, int, bytes, int, int]]) -> bytes:
    """A ZIP from ``(name, method, payload, crc32, size)``: payloads are written as given."""
    out, central, count = bytearray(), bytearray(), 0
    for name, method, payload, crc, size in members:
        encoded = name.encode()
        fields = (method, 0, 0x21, crc, len(payload), size, len(encoded), 0)
        central += struct.pack("<4s2H", b"PK\x01\x02", 20, 20)
        central += struct.pack("<4H3L2H", 0, *fields)
        central += struct.pack("<3H2L", 0, 0, 0, 0, len(out)) + encoded
        out += struct.pack("<4sHH", b"PK\x03\x04", 20, 0)
        out += struct.pack("<3H3L2H", *fields) + encoded + payload
        count += 1
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(out), 0)
    return bytes(out + central + end)


def stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)


@functools.cache
def docx_file() -> bytes:
    document = DocxDocument()
    document.add_heading("Harbour Manual", level=1)
    document.add_paragraph("Moorings are checked before every spring tide.")
    document.add_paragraph("Visitors report to the harbour office on arrival.")
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(
        table.rows, (("Berth", "Depth"), ("North quay", "Nine metres")), strict=True
    ):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = document.add_table(rows=1, cols=3)
    merged.cell(0, 0).merge(merged.cell(0, 2)).text = "Spans three columns"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def docx_members() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(docx_file())) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# -- PDF --------------------------------------------------------------------------------------


@hostile()
def malformed_pdf() -> Hostile:
    noise = random.Random(7).randbytes(4000)
    return "garbage.pdf", b"%PDF-1.7\n" + noise, "the PDF could not be read"


@hostile()
def truncated_pdf() -> Hostile:
    data = text_pdf()
    return "truncated.pdf", data[: len(data) // 3], "the PDF could not be read"


@hostile()
def broken_xref_pdf() -> Hostile:
    # The table is garbage, startxref points nowhere and the trailer's /Root does not exist.
    data = build_pdf(
        [b"<< /Type /Pages /Kids [] /Count 0 >>"],
        root=7,
        xref=b"xref\n0 9\nnot a cross-reference table\n",
        startxref=3,
    )
    return "broken-xref.pdf", data, "the PDF could not be read"


def _encrypted(user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf())))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@hostile()
def encrypted_pdf() -> Hostile:
    return "locked.pdf", _encrypted("user-secret"), "the PDF is encrypted"


@hostile()
def encrypted_pdf_empty_password() -> Hostile:
    return "opens-anyway.pdf", _encrypted(""), "the PDF is encrypted"


@hostile(early=True)
def empty_pdf() -> Hostile:
    return "empty.pdf", b"", "the file is empty"


@hostile()
def blank_page_pdf() -> Hostile:
    pdf = FPDF()
    pdf.add_page()
    return "blank.pdf", bytes(pdf.output()), "no extractable text"


@hostile()
def pdf_decompression_bomb() -> Hostile:
    # One page whose content stream inflates to 200 MB of zeros.
    deflated, _, adler = zeros_deflated(200)
    content = b"\x78\xda" + deflated + struct.pack(">L", adler)
    data = one_page_pdf(content, extra=b"/Filter /FlateDecode ")
    return "bomb.pdf", data, "expands too much"


@hostile()
def pdf_page_tree_cycle() -> Hostile:
    data = build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
        ]
    )
    return "cycle.pdf", data, "the PDF could not be read"


@hostile()
def pdf_with_too_many_pages() -> Hostile:
    # 2,001 references to one page object: a few kilobytes.
    kids = b" ".join([b"3 0 R"] * 2001)
    data = build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count 2001 >>" % kids,
            _PAGE,
            pdf_stream(b"BT /F1 12 Tf 72 720 Td (again) Tj ET"),
            _FONT,
        ]
    )
    return "many-pages.pdf", data, "the PDF has more than 2000 pages"


# -- DOCX -------------------------------------------------------------------------------------


@hostile()
def docx_zip_bomb() -> Hostile:
    deflated, crc, _ = zeros_deflated(200)
    members = [stored(name, data) for name, data in docx_members().items()]
    members.append(("word/media/zeros.bin", zipfile.ZIP_DEFLATED, deflated, crc, 200 * MIB))
    return "bomb.docx", raw_zip(members), "zip bomb"


@hostile()
def docx_with_too_many_members() -> Hostile:
    members = [stored(name, data) for name, data in docx_members().items()]
    members += [stored(f"customXml/item{i}.xml", b"") for i in range(10_001)]
    return "crowded.docx", raw_zip(members), "more than 10000 files"


@hostile(early=True)
def docx_without_document_xml() -> Hostile:
    members = docx_members()
    del members["word/document.xml"]
    data = raw_zip(stored(name, body) for name, body in members.items())
    return "hollow.docx", data, "without word/document.xml"


@hostile()
def docx_with_corrupt_xml() -> Hostile:
    members = docx_members()
    members["word/document.xml"] = members["word/document.xml"][:300]
    data = raw_zip(stored(name, body) for name, body in members.items())
    return "corrupt.docx", data, "the DOCX could not be read"


@hostile(early=True)
def legacy_office_file_named_docx() -> Hostile:
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    return "old.docx", data, "legacy or encrypted Office document, not a DOCX"


# -- content that is not what the name says ---------------------------------------------------


@hostile(early=True)
def png_named_pdf() -> Hostile:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
    return "picture.pdf", data, "the file's content is a PNG image, not a PDF"


@hostile(early=True)
def pdf_named_txt() -> Hostile:
    return "report.txt", text_pdf(), "the file's content is a PDF document, not text"


@hostile(early=True)
def random_binary_named_txt() -> Hostile:
    data = bytes([0x80]) + random.Random(11).randbytes(4096)
    return "noise.txt", data, "the file is not UTF-8 text"


@hostile(early=True)
def latin1_markdown() -> Hostile:
    return "menu.md", "# Café crème\n\nSpécialité\n".encode("latin-1"), "not UTF-8 text"


@hostile(early=True)
def zip_named_html() -> Hostile:
    return "page.html", docx_file(), "the file's content is a ZIP archive, not HTML"


# -- names ------------------------------------------------------------------------------------


@hostile(early=True)
def path_traversal_name() -> Hostile:
    return "../../etc/passwd.txt", b"root:x:0:0\n", "must not contain a path"


@hostile(early=True)
def directory_in_name() -> Hostile:
    return "a/b.txt", b"hello\n", "must not contain a path"


@hostile(early=True)
def windows_traversal_name() -> Hostile:
    return "..\\win.txt", b"hello\n", "must not contain a path"


@hostile(early=True)
def nul_in_name() -> Hostile:
    return "evil\x00.txt", b"hello\n", "control characters"


@hostile(early=True)
def bell_in_name() -> Hostile:
    return "bell\x07.md", b"hello\n", "control characters"


@hostile(early=True)
def direction_override_in_name() -> Hostile:
    return "invoice\u202etxt.md", b"hello\n", "control characters"


@hostile(early=True)
def overlong_name() -> Hostile:
    return "n" * 300 + ".txt", b"hello\n", "longer than 255 characters"


@hostile(early=True)
def unsupported_extension() -> Hostile:
    return "setup.exe", b"MZ\x90\x00", "files of type .exe are not supported; supported: .txt"


# -- text and HTML ----------------------------------------------------------------------------


@hostile(early=True)
def empty_txt() -> Hostile:
    return "empty.txt", b"", "the file is empty"


@hostile(early=True)
def whitespace_only_md() -> Hostile:
    return "blank.md", b"\xef\xbb\xbf \n\t\r\n  \n", "the file is empty"


@hostile()
def deeply_nested_html() -> Hostile:
    depth = 100_000
    data = b"<html><body>" + b"<div>" * depth + b"deep inside" + b"</div>" * depth
    return "nested.html", data, "nested too deeply"


@hostile()
def script_only_html() -> Hostile:
    data = b"<script>document.write('never shown');</script><style>p{color:red}</style>"
    return "script.html", data, "the document contains no text"


@hostile()
def controls_only_txt() -> Hostile:
    return "controls.txt", b"\x00\x01\x02\x03\x1b\x08\x00", "the document contains no text"


def text_longer_than(max_chars: int) -> Hostile:
    return "long.txt", b"word " * max_chars, f"longer than {max_chars} characters"


def pdf_longer_than(max_chars: int) -> Hostile:
    data = text_pdf(tuple(f"Page {n}: " + "lorem ipsum " * 40 for n in range(3)))
    return "long.pdf", data, f"longer than {max_chars} characters"


# -- good files -------------------------------------------------------------------------------


@good
def fpdf_pdf() -> Good:
    return "lighthouse.pdf", text_pdf(), PDF_PAGES


@good
def python_docx() -> Good:
    return "harbour.docx", docx_file(), (*DOCX_PHRASES, "Spans three columns")


@good
def html_page() -> Good:
    data = (
        b"<!doctype html><html><head><title>Tides</title><style>p { color: red }</style>"
        b"<script>var hidden = 'never indexed';</script></head><body><h1>Tide tables</h1>"
        b"<p>High water at 06:12 &amp; 18:40.</p><table><tr><td>Spring</td><td>4.1 m</td></tr>"
        b"</table><p>Caf\xc3\xa9 on the pier.</p></body></html>"
    )
    return "tides.html", data, ("Tide tables", "High water at 06:12 & 18:40.", "Spring", "Café")


@good
def markdown_file() -> Good:
    data = b"# Knots\r\n\r\nA bowline makes a fixed loop.\r\n\r\n- reef knot\r\n- clove hitch\r\n"
    return "knots.markdown", data, ("# Knots", "A bowline makes a fixed loop.\n\n- reef knot")


@good
def utf16_text() -> Good:
    return "notes.TXT", "Ebb and flow — ½ tide\n".encode("utf-16"), ("Ebb and flow — ½ tide",)


@good
def recoverable_broken_xref_pdf() -> Good:
    # pypdf rebuilds the table by scanning for objects, so this one still reads.
    data = one_page_pdf(b"BT /F1 12 Tf 72 720 Td (Recovered text) Tj ET")
    head, _, _ = data.rpartition(b"startxref\n")
    return "repaired.pdf", head + b"startxref\n9\n%%EOF\n", ("Recovered text",)


@good
def pdf_claiming_a_billion_pages() -> Good:
    # /Count is not trusted: the page tree holds one page.
    data = one_page_pdf(b"BT /F1 12 Tf 72 720 Td (Only one page) Tj ET", count=10**9)
    return "billion.pdf", data, ("Only one page",)
