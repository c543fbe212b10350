"""The LangServe peer of ``peers.py``: langchain-openai's ChatOpenAI, pointed at the upstream,
served by LangServe at ``/chat`` (so ``POST /chat/stream`` streams it).

It runs in the peers' own virtual environment, not the project's (``peers.py`` starts it as
``uvicorn _langserve_app:app --app-dir benchmarks``). Settings come from the environment:
``PEERS_UPSTREAM_URL`` (the upstream's base URL, ending in ``/v1``), ``PEERS_MODEL`` and
``PEERS_MAX_TOKENS``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from langchain_openai import ChatOpenAI
from langserve import add_routes

app = FastAPI(title="LangServe peer")
add_routes(
    app,
    ChatOpenAI(
        base_url=os.environ["PEERS_UPSTREAM_URL"],
        api_key="unused",  # the loopback upstream takes any key
        model=os.environ["PEERS_MODEL"],
        max_tokens=int(os.environ["PEERS_MAX_TOKENS"]),
        max_retries=0,
    ),
    path="/chat",
)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
