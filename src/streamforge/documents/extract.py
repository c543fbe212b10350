"""Plain text out of txt, md, html, pdf and docx files, or a reason the user can read.

Pure and synchronous. The checks on names and leading bytes (``check_filename``, ``sniff``) are
cheap enough for the server process; ``extract_bytes`` runs a parser on hostile input and belongs
in the sandboxed worker. Parsers are imported inside the function that needs them, so the worker
loads only one of them (DOCX's lives in ``docx_text``). For a PDF, ``Extracted.page_starts``
says where each page begins in the text, and ``page_of`` turns an offset into its page.
"""

from __future__ import annotations

import bisect
import codecs
import io
import re
import struct
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from streamforge.errors import ExtractionFailed as ExtractionFailed

FORMATS: Final = ("txt", "md", "html", "pdf", "docx")
MEDIA_TYPES: Final[Mapping[str, str]] = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_EXTENSIONS: Final[Mapping[str, str]] = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "html": "html",
    "htm": "html",
    "pdf": "pdf",
    "docx": "docx",
}
_SUPPORTED: Final = ", ".join(f".{fmt}" for fmt in FORMATS)

MAX_NAME_LENGTH: Final = 255
DEFAULT_MAX_PAGES: Final = 2000

_UTF8_BOM: Final = codecs.BOM_UTF8
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Magic numbers of binaries that people rename by mistake (or on purpose).
_SIGNATURES: Final = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"(\xb5/\xfd", "a zstd archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy or encrypted Office document"),
    (b"\xca\xfe\xba\xbe", "a Mach-O executable or Java class"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\x00asm", "a WebAssembly module"),
)
_KIND_NAMES: Final[Mapping[str, str]] = {
    "pdf": "a PDF",
    "docx": "a DOCX",
    "html": "HTML",
    "md": "text",
    "txt": "text",
}
# Text direction overrides let "evil\u202etxt.exe" display as "evilexe.txt".
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NOT_SPACE: Final = re.compile(rb"\S")
_C0: Final = re.compile(r"[\x00-\x08\x0b-\x1f]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
_CHUNK: Final = 1 << 20
_LINE_END_SPACE: Final = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES: Final = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    media_type: str
    pages: int | None
    # Where each page begins in ``text`` (the first is 0), for formats with pages; a page
    # without text begins where the next one does.
    page_starts: tuple[int, ...] | None = None


# -- names ------------------------------------------------------------------------------------


def check_filename(name: str) -> str:
    """The name to store for an upload called ``name``, or ExtractionFailed."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise ExtractionFailed("the file name is empty")
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc" or char in _BIDI_CONTROLS:
            raise ExtractionFailed("the file name contains control characters")
        if category == "Cs":
            raise ExtractionFailed("the file name is not valid Unicode")
    if len(name) > MAX_NAME_LENGTH:
        raise ExtractionFailed(f"the file name is longer than {MAX_NAME_LENGTH} characters")
    if "/" in name or "\\" in name:
        raise ExtractionFailed("the file name must not contain a path (/ or \\)")
    if name in (".", ".."):
        raise ExtractionFailed("the file name is not a plain file name")
    claimed_format(name)
    return name


def claimed_format(name: str) -> str:
    """The format a file name's extension claims (case-insensitive), or ExtractionFailed."""
    _, dot, extension = name.rpartition(".")
    if not dot or not extension:
        raise ExtractionFailed(f"the file name has no extension; supported: {_SUPPORTED}")
    fmt = _EXTENSIONS.get(extension.lower())
    if fmt is None:
        shown = extension if len(extension) <= 16 else extension[:16] + "…"
        raise ExtractionFailed(f"files of type .{shown} are not supported; supported: {_SUPPORTED}")
    return fmt


# -- content checks ---------------------------------------------------------------------------


def sniff(data: bytes, claimed: str) -> None:
    """Refuse content that does not match the claimed format, without parsing it.

    Reads the leading bytes, and for text formats decodes in chunks so nothing of the size of
    the upload is allocated. ZIP structure is left to the worker: a central directory can be
    made expensive to read.
    """
    if claimed not in FORMATS:
        raise ValueError(f"unknown format {claimed!r}")
    if claimed in ("txt", "md", "html"):
        _sniff_text(data, claimed)
        return
    body = memoryview(data)[len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0 :]
    if _NOT_SPACE.search(body) is None:
        raise ExtractionFailed("the file is empty")
    if claimed == "pdf":
        space = b" \t\r\n\f\x00"
        head = data[:1024].lstrip(space).removeprefix(_UTF8_BOM).lstrip(space)
        if not head.startswith(b"%PDF-"):
            raise _mismatch(data, claimed, "it does not start with %PDF-")
    elif not data.startswith(b"PK\x03\x04"):
        raise _mismatch(data, claimed, "it is not a ZIP archive")
    elif b"word/document.xml" not in _zip_directory(data):
        raise ExtractionFailed("the file is a ZIP archive without word/document.xml, not a DOCX")


def _sniff_text(data: bytes, claimed: str) -> None:
    kind = _binary_kind(data)
    if kind is not None:
        raise ExtractionFailed(f"the file's content is {kind}, not {_KIND_NAMES[claimed]}")
    if data.startswith(_UTF16_BOMS):
        decoder = codecs.getincrementaldecoder("utf-16")()
        failure = "the file is not valid UTF-16 text"
    else:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        failure = "the file is not UTF-8 text"
    view = memoryview(data)
    blank = True
    try:
        for start in range(0, len(data), _CHUNK):
            piece = decoder.decode(view[start : start + _CHUNK])
            blank = blank and (not piece or piece.isspace())
        piece = decoder.decode(b"", final=True)
        blank = blank and (not piece or piece.isspace())
    except UnicodeDecodeError:
        raise ExtractionFailed(failure) from None
    if blank:
        raise ExtractionFailed("the file is empty")


def _zip_directory(data: bytes) -> bytes:
    """The bytes of a ZIP's central directory, where member names are listed.

    Only located, not parsed; when the end record cannot be read the whole file is returned,
    and the worker's full check decides.
    """
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or len(data) < end + 22:
        return data
    size, offset = struct.unpack_from("<LL", data, end + 12)
    if offset + size > end:  # ZIP64 markers, or data before the archive
        return data
    return data[offset : offset + size]


def _binary_kind(data: bytes) -> str | None:
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            return kind
    return None


def _mismatch(data: bytes, claimed: str, why: str) -> ExtractionFailed:
    kind = _binary_kind(data)
    name = _KIND_NAMES[claimed]
    if kind is not None:
        return ExtractionFailed(f"the file's content is {kind}, not {name}")
    return ExtractionFailed(f"the file is not {name} ({why})")


# -- extraction -------------------------------------------------------------------------------


def page_of(page_starts: Sequence[int] | None, offset: int) -> int | None:
    """The page (from 1) holding character ``offset`` of the text, None without pages."""
    if not page_starts:
        return None
    return max(1, bisect.bisect_right(page_starts, offset))


def extract_bytes(
    data: bytes, fmt: str, *, max_chars: int, max_pages: int = DEFAULT_MAX_PAGES
) -> Extracted:
    """The normalised plain text of ``data`` read as ``fmt``, or ExtractionFailed.

    MemoryError propagates (the caller knows its memory limit); every other parser exception
    becomes a reason naming the format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    text = _Text(max_chars)
    starts: list[int] | None = None
    if fmt in ("txt", "md"):
        text.add(_decode(data))
    elif fmt == "html":
        text.add(_html_text(_decode(data)))
    elif fmt == "pdf":
        starts = _pdf_text(data, text, max_pages)
    else:
        _docx_text(data, text)
    result = text.result()
    if not result:
        if fmt == "pdf":
            raise ExtractionFailed(
                "the PDF has no extractable text (scanned images are not supported)"
            )
        raise ExtractionFailed("the document contains no text")
    return Extracted(
        text=result,
        media_type=MEDIA_TYPES[fmt],
        pages=None if starts is None else len(starts),
        page_starts=None if starts is None else tuple(starts),
    )


def normalize(text: str) -> str:
    """Unix newlines, no C0 controls but tab and newline, no lone surrogates, no trailing space."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _C0.sub(_control_replacement, text)
    if _SURROGATE.search(text):
        # Pairs the halves of astral characters that were decoded apart; lone ones become U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.rstrip()


def _control_replacement(match: re.Match[str]) -> str:
    # Vertical tab and form feed separate lines or pages; dropping them would glue words.
    return "\n" if match.group() in "\x0b\x0c" else ""


class _Text:
    """Blocks joined by a blank line, refused as soon as they pass ``max_chars``."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.blocks: list[str] = []
        self.length = 0

    def add(self, block: str) -> None:
        block = normalize(block)
        if not block.strip():
            return
        self.length += len(block) + (2 if self.blocks else 0)
        if self.length > self.max_chars:
            raise ExtractionFailed(f"the extracted text is longer than {self.max_chars} characters")
        self.blocks.append(block)

    def next_start(self) -> int:
        """Where the next block added will begin in the result."""
        return self.length + 2 if self.blocks else 0

    def result(self) -> str:
        return "\n\n".join(self.blocks)


def _decode(data: bytes) -> str:
    try:
        if data.startswith(_UTF16_BOMS):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractionFailed("the file is not UTF-8 text") from None


@contextmanager
def _reading(label: str) -> Iterator[None]:
    """Turn a parser's exceptions into a reason naming ``label``; MemoryError passes."""
    try:
        yield
    except (ExtractionFailed, MemoryError):
        raise
    except RecursionError:
        raise ExtractionFailed(f"the {label} is nested too deeply to read") from None
    except Exception as exc:
        raise ExtractionFailed(f"the {label} could not be read: {_cause(exc)}") from None


def _cause(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    message = lines[0].strip() if lines else ""
    if len(message) > 120:
        message = message[:117] + "..."
    return message or type(exc).__name__


def _html_text(markup: str) -> str:
    from inscriptis.html_engine import Inscriptis  # type: ignore[import-untyped]
    from lxml import etree, html  # type: ignore[import-untyped]

    with _reading("HTML"):
        # huge_tree lifts libxml2's 10 MB text-node cap (it drops the text silently otherwise);
        # the nesting cap stays, and reaching it is reported rather than losing the rest.
        parser = html.HTMLParser(huge_tree=True, remove_comments=True, remove_pis=True)
        try:
            tree = html.document_fromstring(markup, parser=parser)
        except etree.ParserError:
            return ""  # nothing but comments, doctype or whitespace
        for error in parser.error_log:
            if error.type_name == "ERR_RESOURCE_LIMIT":
                raise ExtractionFailed("the HTML is nested too deeply to read")
        etree.strip_elements(tree, "script", "style", "template", with_tail=False)
        text: str = Inscriptis(tree).get_text()
    # Layout padding: table cells end in spaces, blocks leave runs of blank lines.
    return _BLANK_LINES.sub("\n\n", _LINE_END_SPACE.sub("", text))


def _pdf_text(data: bytes, text: _Text, max_pages: int) -> list[int]:
    """Add each page's text; return where each page begins in the result."""
    import logging

    from pypdf import PdfReader

    # Broken files make pypdf log a warning per repaired object.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    with _reading("PDF"):
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                # Even with an empty user password: decrypting means trusting more of the file.
                raise ExtractionFailed("the PDF is encrypted")
            count = len(reader.pages)
            if count > max_pages:
                raise ExtractionFailed(f"the PDF has more than {max_pages} pages")
            starts: list[int] = []
            for page in reader.pages:  # the page tree may hold more pages than /Count says
                if len(starts) >= max_pages:
                    raise ExtractionFailed(f"the PDF has more than {max_pages} pages")
                starts.append(text.next_start())
                text.add(page.extract_text())
        except Exception as exc:
            if type(exc).__name__ == "LimitReachedError":
                raise ExtractionFailed(
                    "the PDF contains a stream that expands too much (decompression bomb?)"
                ) from None
            raise
    if not starts:
        raise ExtractionFailed("the PDF has no pages")
    return starts


def _docx_text(data: bytes, text: _Text) -> None:
    from streamforge.documents.docx_text import docx_text

    with _reading("DOCX"):
        docx_text(data, text)
