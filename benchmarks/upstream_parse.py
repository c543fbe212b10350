"""CPU per chunk of the upstream client's response parsing, in one process, without sockets.

The pass-through benchmark (``passthrough.py``) needs three processes on a quiet machine; this
one measures only what ``chains/providers/upstream.py`` does with the bytes that arrive: an
OpenAI-style stream of 258 ``data:`` frames, each its own HTTP chunk (as ``tests.vendors``
sends them), fed to ``UpstreamConnection.data_received`` in three ways (the whole response in
one read, one read per HTTP chunk, 4 KiB reads), the body taken after each read as the
provider does. It prints the best of 5 runs, in microseconds of process CPU per chunk.

``--old`` measures the hand-written parser that came before (``openai_compatible._Connection``):
run it with ``PYTHONPATH`` pointing at the ``src`` of a checkout from before the move.

Run from the repository root::

    python benchmarks/upstream_parse.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
from typing import Any

FRAME = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n'
)
FRAMES = 258  # 256 with content, the role and the finish frames
CHUNKS = [b"%x\r\n%b\r\n" % (len(FRAME), FRAME) for _ in range(FRAMES)] + [b"0\r\n\r\n"]
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
WHOLE = HEAD + b"".join(CHUNKS)


def per_chunk_us(connection_class: Any, pieces: list[bytes], responses: int) -> float:
    loop = asyncio.new_event_loop()
    best = float("inf")
    try:
        for _ in range(5):
            started = time.process_time()
            for _ in range(responses):
                connection = connection_class(loop, 5.0)
                for piece in pieces:
                    connection.data_received(piece)
                    if connection._body:
                        b"".join(connection._body)
                        connection._body.clear()
                assert connection.complete
            seconds = time.process_time() - started
            best = min(best, seconds / responses / FRAMES * 1e6)
    finally:
        loop.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", action="store_true", help="the parser before httptools")
    args = parser.parse_args()
    if args.old:
        module = importlib.import_module("streamforge.chains.providers.openai_compatible")
        connection_class = module._Connection
    else:
        module = importlib.import_module("streamforge.chains.providers.upstream")
        connection_class = module.UpstreamConnection
    ways = {
        "one read per response": [WHOLE],
        "one read per HTTP chunk": [HEAD, *CHUNKS],
        "4 KiB reads": [WHOLE[i : i + 4096] for i in range(0, len(WHOLE), 4096)],
    }
    for name, pieces in ways.items():
        print(f"  {name:<24} {per_chunk_us(connection_class, pieces, 300):6.3f} us/chunk")


if __name__ == "__main__":
    main()
