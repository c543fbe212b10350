"""Memory of ``streamforge serve --workers N`` with the local model: one shared model process
against one model process per worker.

Starts the server twice with the ``local`` provider, Redis (``--redis``, default the machine's)
and a SQLite file: once as shipped (``llm.local.shared_across_workers`` true: the serving
parent runs one model process for all workers), once with it false (each worker starts its
own). After every worker has answered a short chat, it reads the memory of every process of the
server (the parent, the workers, the model processes) from ``/proc``:

* RSS: resident pages, counted in every process that maps them;
* PSS: resident pages with each shared page divided among the processes that share it, so the
  sum over processes is the memory the server really takes (the GGUF file is memory-mapped, so
  several model processes share its page cache, and RSS alone would count it N times).

Run from the repository root (Linux)::

    python benchmarks/model_memory.py --workers 2

It prints a table, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _client import HOST, free_port, process_tree, start_process

MODEL_MARK = b"streamforge.chains.providers.local.worker"


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def is_model(pid: int) -> bool:
    try:
        return MODEL_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def measure(shared: bool, workers: int, redis: str) -> dict[str, Any]:
    port = free_port()
    data = tempfile.mkdtemp(prefix="sf-memory-")
    env = {
        "STREAMFORGE_DATA_DIR": data,
        "STREAMFORGE_LLM__PROVIDER": "local",
        "STREAMFORGE_EMBEDDINGS__PROVIDER": "simulated",
        "STREAMFORGE_REDIS__URL": redis,
        "STREAMFORGE_REDIS__PREFIX": f"sf-memory-{os.getpid()}-{int(shared)}:",
        "STREAMFORGE_SERVER__LOG_LEVEL": "warning",
        "STREAMFORGE_LLM__LOCAL__SHARED_ACROSS_WORKERS": "true" if shared else "false",
    }
    command = ["streamforge", "serve", "--port", str(port), "--workers", str(workers)]
    process = start_process(command, env=env, quiet=True)
    try:
        seen: set[str] = set()
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=120) as client:
            deadline = time.monotonic() + 300
            while len(seen) < workers:
                assert time.monotonic() < deadline, "the workers did not all answer"
                try:
                    async with httpx.AsyncClient(base_url=client.base_url, timeout=120) as one:
                        health = (await one.get("/health")).json()
                        if health["components"]["provider"].get("status") != "ok":
                            await asyncio.sleep(0.5)
                            continue
                        worker = health["components"]["event_log"]["worker"]
                        if worker not in seen:
                            body = {"message": "Hi", "max_tokens": 8, "temperature": 0}
                            response = await one.post("/chat", json=body)
                            assert response.status_code == 200, response.text
                            seen.add(worker)
                except httpx.TransportError:
                    await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        pids = process_tree(process.pid)
        rows = [(pid, is_model(pid), *memory_kb(pid)) for pid in pids]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    models = [r for r in rows if r[1]]
    return {
        "shared": shared,
        "processes": len(rows),
        "model_processes": len(models),
        "rss_mb": round(sum(r[2] for r in rows) / 1024, 1),
        "pss_mb": round(sum(r[3] for r in rows) / 1024, 1),
        "model_pss_mb": round(sum(r[3] for r in models) / 1024, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    shared = await measure(True, args.workers, args.redis)
    separate = await measure(False, args.workers, args.redis)
    print(f"serve --workers {args.workers}, local model (SmolLM2-135M-Instruct Q4_1)")
    print(f"{'':24}{'processes':>10}{'model proc.':>12}{'RSS MB':>10}{'PSS MB':>10}")
    for name, row in (("one shared model", shared), ("one model per worker", separate)):
        print(
            f"{name:24}{row['processes']:>10}{row['model_processes']:>12}"
            f"{row['rss_mb']:>10}{row['pss_mb']:>10}"
        )
    saved = round(separate["pss_mb"] - shared["pss_mb"], 1)
    print(f"saved by sharing: {saved} MB PSS ({saved / separate['pss_mb']:.0%})")
    print(json.dumps({"workers": args.workers, "shared": shared, "separate": separate}))


if __name__ == "__main__":
    asyncio.run(main())
