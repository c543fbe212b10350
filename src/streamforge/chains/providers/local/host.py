"""``ModelHost``: one model process for all the workers of ``streamforge serve --workers N``.

The serving parent supervises the model process from a thread of its own (uvicorn's worker
supervisor has the main thread) and hands its socket to the workers, which attach to it
(``ModelProcess(endpoint=...)``) instead of each loading a copy of the model.
"""

from __future__ import annotations

import asyncio
import threading

from streamforge.chains.providers.local.process import ModelProcess


class ModelHost:
    def __init__(self, process: ModelProcess) -> None:
        self.process = process
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="model-host", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    def start(self) -> str:
        """Start the model process (waiting for its first answer); return its socket."""
        self._thread.start()
        self._started.wait()
        socket_path = self.process.socket_path
        assert socket_path is not None
        return socket_path

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.process.start()
        finally:
            self._started.set()
        await self._stop.wait()
        await self.process.aclose()
