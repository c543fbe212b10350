"""DOCX text: the archive checked for bombs from its central directory, then read.

Split out of ``extract``, which calls ``docx_text`` inside its error handling; python-docx is
imported only here, so a worker parsing another format never loads it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from docx.table import Table

from streamforge.documents.extract import ExtractionFailed, _cause

DOCX_MAX_TOTAL_BYTES: Final = 100 * 1024 * 1024
DOCX_MAX_MEMBERS: Final = 10_000
DOCX_MAX_RATIO: Final = 100
# Small members may compress well past the ratio (runs of spaces in XML) without harm.
_DOCX_RATIO_FLOOR: Final = 1024 * 1024


class Text(Protocol):
    def add(self, block: str) -> None: ...


def docx_text(data: bytes, text: Text) -> None:
    """Add the paragraphs and table cells of a DOCX to ``text``, in document order."""
    _check_docx_archive(data)
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            _table_text(block, text)
        else:
            text.add(block.text)


def _table_text(table: Table, text: Text) -> None:
    from docx.table import Table

    seen: set[object] = set()  # a merged cell is returned once per grid cell it spans
    for row in table.rows:
        for cell in row.cells:
            if cell._tc in seen:
                continue
            seen.add(cell._tc)
            for block in cell.iter_inner_content():
                if isinstance(block, Table):
                    _table_text(block, text)
                else:
                    text.add(block.text)


def _check_docx_archive(data: bytes) -> None:
    """Refuse zip bombs and malformed archives from the central directory, before inflating.

    Reading through ``zipfile`` never yields more than a member's declared size and checks its
    CRC, so the declared sizes bound what python-docx will inflate.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error) as exc:
        raise ExtractionFailed(f"the DOCX is not a valid ZIP archive: {_cause(exc)}") from None
    with archive:
        members = archive.infolist()
    if len(members) > DOCX_MAX_MEMBERS:
        raise ExtractionFailed(f"the DOCX contains more than {DOCX_MAX_MEMBERS} files")
    if sum(member.file_size for member in members) > DOCX_MAX_TOTAL_BYTES:
        raise ExtractionFailed(
            f"the DOCX expands to more than {DOCX_MAX_TOTAL_BYTES // (1024 * 1024)} MB (zip bomb?)"
        )
    names = set()
    end_of_previous = 0
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.file_size > _DOCX_RATIO_FLOOR and member.file_size > DOCX_MAX_RATIO * max(
            member.compress_size, 1
        ):
            raise ExtractionFailed(
                f"the DOCX contains a file compressed more than {DOCX_MAX_RATIO}:1 (zip bomb?)"
            )
        if member.flag_bits & 0x1:
            raise ExtractionFailed("the DOCX is password-protected")
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ExtractionFailed("the DOCX uses an unsupported compression method")
        if member.filename in names:
            raise ExtractionFailed("the DOCX's ZIP structure is corrupt (duplicate names)")
        names.add(member.filename)
        # Members must lie one after another: overlapping ones are how the densest bombs work.
        start = member.header_offset
        header = data[start : start + 30]
        if start < end_of_previous or len(header) < 30 or not header.startswith(b"PK\x03\x04"):
            raise ExtractionFailed("the DOCX's ZIP structure is corrupt (overlapping members)")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        end_of_previous = start + 30 + name_length + extra_length + member.compress_size
        if end_of_previous > len(data):
            raise ExtractionFailed("the DOCX's ZIP structure is corrupt (truncated member)")
    if "word/document.xml" not in names:
        raise ExtractionFailed("the file is a ZIP archive without word/document.xml, not a DOCX")
