"""The model process: ``python -m streamforge.chains.providers.local.worker --socket PATH ...``.

It loads the GGUF file into a ``LocalLlamaEngine``, proves the build on this machine by decoding
a few tokens (a llama.cpp build that uses an instruction this CPU lacks, or kernels that fault
on it, dies here, before the server calls the provider healthy), reports itself ready on its
standard output and serves ``protocol`` requests on a Unix socket until it is told to stop
(SIGTERM) or its parent goes away (its standard input closes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

import llama_cpp

from streamforge.chains.providers.base import ProviderError
from streamforge.chains.providers.local import protocol
from streamforge.chains.providers.local.engine import LocalLlamaEngine
from streamforge.chains.providers.local.types import Cancellation, GenerationResult

SELF_TEST_MESSAGES = [{"role": "user", "content": "Say hello."}]


def build_info() -> str:
    """llama.cpp's own line of the CPU features its build uses (``AVX2 = 1 | AMX_INT8 = 0``)."""
    info = llama_cpp.llama_print_system_info()
    return (info.decode(errors="replace") if isinstance(info, bytes) else str(info)).strip()


class ModelServer:
    def __init__(self, engine: LocalLlamaEngine, info: dict[str, Any]) -> None:
        self.engine = engine
        self.base_info = info
        self.connections = 0
        self.generations = 0

    def info(self) -> dict[str, Any]:
        return {**self.base_info, "generations": self.generations, "running": self.engine.running}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            line = await reader.readline()
            if not line:
                return
            request = protocol.decode(line)
            if request.get("op") == "info":
                writer.write(protocol.encode({"info": self.info()}))
            elif request.get("op") == "generate":
                await self.generate(request, reader, writer)
            else:
                writer.write(protocol.encode({"error": {"message": "unknown op"}}))
            await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def generate(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        cancellation = Cancellation()

        async def watch() -> None:
            # A cancel line, or the client going away, stops decoding within one token.
            while True:
                line = await reader.readline()
                if not line or protocol.decode(line).get("op") == "cancel":
                    cancellation.cancel()
                    return

        watcher = asyncio.create_task(watch())
        self.generations += 1
        pieces = self.engine.generate(
            request["messages"],
            max_tokens=int(request["max_tokens"]),
            temperature=float(request["temperature"]),
            stop=[str(s) for s in request.get("stop") or []],
            cancellation=cancellation,
        )
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if isinstance(piece, GenerationResult):
                        writer.write(protocol.encode(protocol.result_message(piece)))
                    else:
                        writer.write(protocol.encode({"text": piece}))
                    await writer.drain()
        except ProviderError as exc:
            writer.write(protocol.encode(protocol.error_message(exc)))
        except ConnectionError:
            cancellation.cancel()
        finally:
            watcher.cancel()


async def serve(engine: LocalLlamaEngine, socket_path: str, info: dict[str, Any]) -> None:
    model = ModelServer(engine, info)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The parent holds our standard input: when it closes, nobody is left to serve.
    threading.Thread(
        target=lambda: (sys.stdin.buffer.read(), loop.call_soon_threadsafe(stop.set)),
        daemon=True,
    ).start()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(model.handle, socket_path, limit=protocol.LINE_LIMIT)
    os.chmod(socket_path, 0o600)
    sys.stdout.buffer.write(protocol.encode({"ready": model.info()}))
    sys.stdout.flush()
    async with server:
        await stop.wait()
    await engine.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamforge-model", description=__doc__)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--context-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--self-test-tokens", type=int, default=4)
    args = parser.parse_args(argv)

    engine = LocalLlamaEngine(
        args.model, n_ctx=args.context_size, n_threads=args.threads, queue_depth=1 << 20
    )
    started = time.perf_counter()
    try:
        engine.load()
        tokens = 0
        for piece in engine.generate_sync(
            SELF_TEST_MESSAGES, max_tokens=args.self_test_tokens, temperature=0.0
        ):
            if isinstance(piece, GenerationResult):
                tokens = piece.completion_tokens
    except ProviderError as exc:
        sys.stdout.buffer.write(protocol.encode({"failed": exc.message}))
        sys.stdout.flush()
        return 3
    info = {
        "pid": os.getpid(),
        "model_path": engine.model_path,
        "context_window": engine.n_ctx,
        "threads": engine.n_threads,
        "build": build_info(),
        "llama_cpp_python": llama_cpp.__version__,
        "self_test": {"tokens": tokens, "seconds": round(time.perf_counter() - started, 3)},
    }
    asyncio.run(serve(engine, args.socket, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
