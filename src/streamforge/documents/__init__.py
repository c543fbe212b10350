"""Uploaded documents turned into plain text, away from the server process.

    extract   the pure part: file-name and content checks, one parser per format, normalising,
              and where each page of a PDF begins in the text (``page_of``)
    docx_text the DOCX parser, with its checks against zip bombs
    sandbox   runs the parser in a child process with time and memory limits
    worker    the child's entry point (``python -m streamforge.documents.worker``)

Every refusal is an ``extract.ExtractionFailed`` whose ``reason`` is a sentence for the user.
This package imports nothing on purpose: the worker must start without the server's modules.
"""
