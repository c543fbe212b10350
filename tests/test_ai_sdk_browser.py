"""The AI SDK's chat client in Debian's Chromium, against StreamForge.

``tests/js/chat_page.mjs`` is a small page built on the ``ai`` package's own chat client
(``AbstractChat``, the class ``useChat`` wraps, with ``DefaultChatTransport`` and resume on
load, as ``useChat({ resume: true })``). The test bundles it with the locked esbuild from the
same ``npm ci`` as ``tests/test_ai_sdk.py``, serves it on StreamForge's origin, blocks every
other address, and watches the answer grow, survive a reload and end as the stored reply.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import httpx
import pytest
from playwright.async_api import Locator, Page, Route, async_playwright, expect

from tests.conftest import AppFactory, live_server
from tests.test_ai_sdk import JS, node, stored
from tests.test_ui import ARTIFACTS, CHROMIUM_ARGS, chromium

__all__ = ["node"]  # the fixture, shared with tests/test_ai_sdk.py

pytestmark = pytest.mark.slow

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>AI SDK chat</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
.message { padding: .5rem .75rem; margin: .5rem 0; border-radius: .5rem; white-space: pre-wrap; }
.user { background: #e8eefc; } .assistant { background: #f3f3f3; }
#error { color: #b00020; } #status { color: #666; font-size: 13px; }
</style></head>
<body>
<div id="messages"></div>
<p id="status"></p>
<p id="error"></p>
<form id="composer"><input id="input" size="60" autocomplete="off">
<button id="send" type="submit">Send</button></form>
<script type="module" src="chat_page.js"></script>
</body>
</html>
"""
QUESTION = "Tell me a long story"


@pytest.fixture(scope="module")
def page_bundle(node: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """chat_page.mjs and the ``ai`` package bundled into one browser module, at test time."""
    if not (JS / "node_modules" / "esbuild" / "package.json").exists():
        npm = shutil.which("npm")
        assert npm is not None
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    out = tmp_path_factory.mktemp("ai-sdk-page") / "chat_page.js"
    built = subprocess.run(
        [node, str(JS / "bundle_page.mjs"), str(out)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return out.read_text(encoding="utf-8")


async def answer_text(answer: Locator) -> str:
    return await answer.locator(".content").inner_text()


async def watch_growth(tab: Page, answer: Locator, lengths: int) -> list[int]:
    """The distinct lengths the answer's text passes through while the chat is streaming."""
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while len(seen) < lengths:
        assert time.monotonic() < deadline, f"the answer stopped growing at {seen}"
        length = len(await answer_text(answer))
        status = await tab.locator("body").get_attribute("data-status")
        if length and (not seen or length > seen[-1]):
            assert status == "streaming", (status, seen)
            seen.append(length)
        await asyncio.sleep(0.1)
    return seen


async def test_the_answer_streams_into_the_page_and_survives_a_reload(
    app_factory: AppFactory, page_bundle: str
) -> None:
    streaming = {"simulated_delay": 0.05, "disconnect_policy": "continue", "disconnect_grace": 30}
    app = app_factory(
        streaming=streaming, llm={"provider": "simulated", "simulated": {"min_words": 150}}
    )
    async with (
        live_server(app) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1000, "height": 760})
        origin = f"{server.url}/"
        files = {
            "": (PAGE, "text/html"),
            "chat_page.js": (page_bundle, "text/javascript"),
        }
        blocked: list[str] = []
        problems: list[str] = []

        async def serve_page(route: Route) -> None:
            name = route.request.url.removeprefix(f"{origin}page/")
            body, content_type = files[name]
            await route.fulfill(status=200, body=body, content_type=content_type)

        async def block(route: Route) -> None:
            blocked.append(route.request.url)
            await route.abort()

        # The page is served on StreamForge's own origin; nothing else is reachable.
        await context.route(f"{origin}page/*", serve_page)
        await context.route(lambda url: not url.startswith(origin), block)
        tab = await context.new_page()
        tab.on("pageerror", lambda error: problems.append(str(error)))
        tab.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        try:
            await tab.goto(f"{origin}page/")
            await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
            await tab.fill("#input", QUESTION)
            await tab.click("#send")
            answer = tab.locator(".message.assistant")
            await expect(answer).to_have_count(1)

            # The text grows in the page as the tokens arrive.
            before = await watch_growth(tab, answer, 4)
            partial = await answer_text(answer)
            assert len(partial) >= before[-1]

            # A reload mid-answer: the page comes back with the chat and reattaches.
            await tab.reload()
            await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
            await expect(tab.locator(".message.user .content")).to_have_text(QUESTION)
            answer = tab.locator(".message.assistant")
            after = await watch_growth(tab, answer, 3)
            assert after[-1] > len(partial), (partial, after)
            shot = ARTIFACTS / "ai-sdk-chat-resumed.png"
            ARTIFACTS.mkdir(exist_ok=True)
            await tab.screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

            await expect(tab.locator("body")).to_have_attribute(
                "data-status", "ready", timeout=30_000
            )
            await expect(answer).to_have_count(1)
            session_id = await answer.get_attribute("data-session-id")
            assert session_id
            messages = await stored(client, session_id)
            assert [m["role"] for m in messages] == ["user", "assistant"]
            reply = messages[1]
            assert reply["status"] == "completed"
            assert await answer.get_attribute("data-id") == reply["id"]
            final = await answer_text(answer)
            assert final == reply["content"]
            assert final.startswith(partial)
            assert await tab.locator("#error").inner_text() == ""

            # Reloaded after the end, the page shows the finished chat and resumes nothing.
            await tab.reload()
            await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
            await expect(tab.locator(".message .content")).to_have_text([QUESTION, final])
            await expect(tab.locator("body")).to_have_attribute("data-status", "ready")
        finally:
            await context.close()
            await browser.close()
        assert blocked == []
        assert problems == []
