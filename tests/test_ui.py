"""The chat page at /ui, driven in Debian's Chromium by Playwright against a real server.

The simulated provider answers slowly (a word every 50 ms, a hundred words) with Markdown
that quotes the user's message, so a test can watch an answer grow, stop it, reload in the
middle of it, and make the "model" answer with hostile HTML.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Dialog, Locator, Page, async_playwright, expect

from tests.procs import ServerProcess, server_process
from tests.rag_support import pdf_bytes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / ".ci-artifacts"

ANSWER = (
    "## Answer\n\n"
    "You said: {message}\n\n"
    "Here is **bold**, *italic* and `inline code`, with [the docs](https://example.com/docs) "
    "and [a trap](javascript:alert(1)).\n\n"
    "- first point\n"
    "- second point\n\n"
    "1. one\n"
    "2. two\n\n"
    "```\nprint('hi')\n```\n\n"
)
HOSTILE = "<img src=x onerror=window.__pwned=1> <script>window.__pwned=2</script>"
ANSWER_TIMEOUT = 30_000  # ms
STREAMING = re.compile(r"\bstreaming\b")

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    env = {
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
        "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "100",
        "STREAMFORGE_LLM__SIMULATED__ANSWER": ANSWER,
        # A reload must not stop the answer it interrupts: the page resumes it.
        "STREAMFORGE_STREAMING__DISCONNECT_POLICY": "continue",
    }
    async with server_process(tmp_path_factory.mktemp("ui"), env) as process:
        yield process


def chromium() -> str:
    """Debian's Chromium; never a browser downloaded by Playwright."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium "
            "(python3 dev.py test installs it)"
        )
    return str(CHROMIUM)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class Problems:
    """Console errors and uncaught exceptions of a page (CSP violations are console errors)."""

    def __init__(self) -> None:
        self.errors: list[str] = []


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, server: ServerProcess) -> AsyncIterator[tuple[Page, Problems]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    problems = Problems()
    opened = await context.new_page()
    opened.on(
        "console",
        lambda message: problems.errors.append(message.text) if message.type == "error" else None,
    )
    opened.on("pageerror", lambda error: problems.errors.append(str(error)))
    opened.on("dialog", accept)
    try:
        yield opened, problems
    finally:
        await context.close()


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def open_ui(page: Page, server: ServerProcess) -> None:
    await page.goto(f"{server.url}/ui")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


async def send(page: Page, message: str) -> Locator:
    """Send a message and return the new answer's element."""
    before = await page.locator(".message.assistant").count()
    await page.fill("#input", message)
    await page.click("#send")
    answer = page.locator(".message.assistant").nth(before)
    await expect(answer).to_be_visible()
    return answer


async def text_of(answer: Locator) -> str:
    return await answer.locator(".content").inner_text()


async def wait_for_text(answer: Locator, chars: int, timeout: float = 15) -> str:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while len(text := await text_of(answer)) < chars:
        assert time.monotonic() < deadline, f"answer still {len(text)} chars: {text!r}"
        await asyncio.sleep(0.05)
    return text


async def current_session(page: Page) -> str:
    item = page.locator("#sessions .session.current")
    await expect(item).to_have_count(1)
    session_id = await item.get_attribute("data-session-id")
    assert session_id
    return session_id


async def stored_messages(server: ServerProcess, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        response = await client.get(f"/sessions/{session_id}/messages", params={"limit": 100})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items


async def rendered_from_storage(page: Page, session_id: str) -> str:
    """The last answer as the page renders it from the stored messages."""
    await page.evaluate("() => document.querySelectorAll('.message').forEach(m => m.remove())")
    await page.click(f'#sessions .session[data-session-id="{session_id}"] .open')
    last = page.locator(".message.assistant").last
    await expect(last).to_be_visible()
    await expect(last).not_to_have_class(STREAMING)
    return await text_of(last)


async def test_page_is_served_with_its_files(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        page = await client.get("/ui")
        script = await client.get("/ui/app.js")
        style = await client.get("/ui/style.css")
        slash = await client.get("/ui/", follow_redirects=True)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert slash.status_code == 200 and slash.text == page.text
    # No inline script or handler, nothing from another origin.
    assert "<script>" not in page.text
    assert not re.search(r"\son[a-z]+\s*=", page.text, re.IGNORECASE)
    assert "http://" not in page.text and "https://" not in page.text
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text


async def test_the_script_is_es_modules_served_as_static_files(server: ServerProcess) -> None:
    modules = (
        "dom",
        "http",
        "sse",
        "markdown",
        "view",
        "turn",
        "composer",
        "sessions",
        "documents",
        "collections",
        "passage",
        "key",
    )
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        texts = {name: (await client.get(f"/ui/{name}.js")).text for name in ("app", *modules)}
        for name in modules:
            # Each module is imported by the page (app.js or another module).
            assert any(f'from "./{name}.js"' in text for text in texts.values()), name
            response = await client.get(f"/ui/{name}.js")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/javascript")
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "innerHTML" not in response.text and "insertAdjacentHTML" not in response.text
            assert "export " in response.text
        unknown = await client.get("/ui/evil.js")
        escaped = await client.get("/ui/..%2Fapp.js")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert escaped.status_code == 404


async def test_answer_streams_as_markdown_and_hostile_html_stays_text(
    page: tuple[Page, Problems], server: ServerProcess
) -> None:
    tab, problems = page
    await open_ui(tab, server)
    answer = await send(tab, HOSTILE)

    seen: list[int] = []
    while len(seen) < 4:
        length = len(await text_of(answer))
        if length and (not seen or length > seen[-1]):
            seen.append(length)
        assert STREAMING.search(await answer.get_attribute("class") or ""), seen
        await asyncio.sleep(0.15)
    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)

    content = answer.locator(".content")
    text = await text_of(answer)
    assert "<img src=x onerror=window.__pwned=1>" in text
    assert "<script>window.__pwned=2</script>" in text
    assert await content.locator("img, script, iframe, object").count() == 0
    assert await tab.evaluate("() => window.__pwned") is None
    # The user's own message is plain text too.
    assert HOSTILE in await tab.locator(".message.user .content").inner_text()
    assert await tab.locator("#sessions img, #sessions script").count() == 0

    # The Markdown, as nodes.
    assert await content.locator("h2").first.inner_text() == "Answer"
    assert await content.locator("strong").first.inner_text() == "bold"
    assert await content.locator("em").first.inner_text() == "italic"
    assert await content.locator("p code").first.inner_text() == "inline code"
    assert await content.locator("pre code").first.inner_text() == "print('hi')"
    assert await content.locator("ul").first.locator("li").all_inner_texts() == [
        "first point",
        "second point",
    ]
    assert await content.locator("ol").first.locator("li").all_inner_texts() == ["one", "two"]
    link = content.locator("a").first
    assert await link.get_attribute("href") == "https://example.com/docs"
    assert await link.get_attribute("target") == "_blank"
    assert "noopener" in (await link.get_attribute("rel") or "")
    assert await content.locator('a[href^="javascript"]').count() == 0
    assert "[a trap](javascript:alert(1))" in text

    session_id = await current_session(tab)
    stored = await stored_messages(server, session_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["status"] == "completed"
    assert await rendered_from_storage(tab, session_id) == text
    assert not problems.errors


async def test_stop_ends_the_answer_and_it_is_stored_cancelled(
    page: tuple[Page, Problems], server: ServerProcess
) -> None:
    tab, problems = page
    await open_ui(tab, server)
    answer = await send(tab, "tell me a long story")
    await wait_for_text(answer, 40)
    await tab.click("#stop")
    await expect(answer).to_have_attribute("data-status", "cancelled", timeout=10_000)
    await expect(answer.locator(".status")).to_have_text("stopped")
    await expect(tab.locator("#stop")).to_be_hidden()
    stopped = await text_of(answer)
    await asyncio.sleep(1.0)
    assert await text_of(answer) == stopped

    session_id = await current_session(tab)
    stored = await stored_messages(server, session_id)
    assert stored[-1]["status"] == "cancelled"
    assert 0 < len(stored[-1]["content"]) < len(ANSWER) * 3
    assert await rendered_from_storage(tab, session_id) == stopped
    assert not problems.errors


async def test_reload_mid_answer_resumes_and_completes(
    page: tuple[Page, Problems], server: ServerProcess
) -> None:
    tab, problems = page
    resumes: list[str] = []
    tab.on(
        "request",
        lambda request: resumes.append(request.url) if "/chat/streams/" in request.url else None,
    )
    await open_ui(tab, server)
    answer = await send(tab, "survive a reload")
    partial = await wait_for_text(answer, 60)
    session_id = await current_session(tab)

    await tab.reload()
    await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
    answer = tab.locator(".message.assistant").last
    # Picked up where it was: the text shown before the reload, then more, live.
    await expect(answer).to_have_class(STREAMING)
    assert (await text_of(answer)).startswith(partial[:40])
    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    resumed = await text_of(answer)
    assert len(resumed) > len(partial)
    assert await tab.locator(".message.assistant").count() == 1

    assert resumes, "the page did not reopen the stream"
    last_event_id = int(resumes[0].rsplit("last_event_id=", 1)[1])
    assert last_event_id > 2  # from where it was, not from the start

    stored = await stored_messages(server, session_id)
    assert stored[-1]["status"] == "completed"
    assert await rendered_from_storage(tab, session_id) == resumed
    assert await tab.evaluate("() => sessionStorage.length") == 0
    assert not problems.errors


async def test_upload_then_answer_cites_the_document(
    page: tuple[Page, Problems], server: ServerProcess, tmp_path: Path
) -> None:
    tab, problems = page
    marker = f"quartzmarker{uuid.uuid4().hex[:8]}"
    notes = tmp_path / "valve-notes.md"
    notes.write_text(
        f"# Valve notes\n\nThe {marker} valve opens at dawn and closes at dusk.\n",
        encoding="utf-8",
    )
    await open_ui(tab, server)
    await tab.fill("#collection", "ui-notes")
    await tab.set_input_files("#file", str(notes))
    await tab.click("#upload")
    document = tab.locator(".document").first
    await expect(document).to_have_attribute("data-status", "ready", timeout=30_000)
    await expect(document.locator(".name")).to_have_text("valve-notes.md")
    await expect(document.locator(".state")).to_contain_text("Ready")

    await tab.check("#rag")
    answer = await send(tab, f"When does the {marker} valve open?")
    cited = answer.locator(".citation")
    await expect(cited.first).to_be_visible(timeout=10_000)
    await expect(cited.first.locator("summary")).to_contain_text("valve-notes.md")
    snippet = cited.first.locator(".snippet")
    await expect(snippet).to_be_hidden()
    await cited.first.locator("summary").click()
    await expect(snippet).to_be_visible()
    await expect(snippet).to_contain_text(marker)

    # Mid-answer: the session list, an answer being written and an open citation.
    await wait_for_text(answer, 80)
    assert STREAMING.search(await answer.get_attribute("class") or "")
    await expect(tab.locator("#sessions .session")).not_to_have_count(0)
    shot = tmp_path / "ui-mid-answer.png"
    await tab.screenshot(path=str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / shot.name)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 860)
    assert len(data) > 20_000  # a real page, not a blank one

    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    session_id = await current_session(tab)
    stored = await stored_messages(server, session_id)
    citations = stored[-1]["citations"]
    assert citations and marker in citations[0]["snippet"]
    # Loaded from storage, the citation is there too.
    await rendered_from_storage(tab, session_id)
    stored_citation = tab.locator(".message.assistant").last.locator(".citation").first
    await stored_citation.locator("summary").click()
    await expect(stored_citation.locator(".snippet")).to_contain_text(marker)
    assert not problems.errors


async def test_sessions_rename_delete_and_errors_in_plain_words(
    page: tuple[Page, Problems], server: ServerProcess
) -> None:
    tab, problems = page
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        created = (await client.post("/sessions", json={"title": "Old title"})).json()
    await open_ui(tab, server)
    item = tab.locator(f'#sessions .session[data-session-id="{created["id"]}"]')
    await expect(item.locator(".open")).to_have_text("Old title")

    await item.locator(".open").click()
    await item.locator(".rename").click()
    await item.locator("input").fill("New title")
    await item.locator("input").press("Enter")
    await expect(item.locator(".open")).to_have_text("New title")
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        assert (await client.get(f"/sessions/{created['id']}")).json()["title"] == "New title"

        # The session goes away behind the page's back: sending into it explains why not.
        assert (await client.delete(f"/sessions/{created['id']}")).status_code == 204
        expected = (
            await client.post("/chat", json={"message": "hi", "session_id": created["id"]})
        ).json()["error"]["message"]
    answer = await send(tab, "hi")
    await expect(answer.locator(".error")).to_have_text(expected)
    await expect(tab.locator("#send")).to_be_enabled()
    assert await tab.input_value("#input") == "hi"

    # Delete from the page (the confirmation is accepted by the fixture).
    await tab.click("#new-chat")
    await expect(tab.locator(".message")).to_have_count(0)
    answer = await send(tab, "a conversation to delete")
    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    session_id = await current_session(tab)
    doomed = tab.locator(f'#sessions .session[data-session-id="{session_id}"]')
    await doomed.locator(".delete").click()
    await expect(doomed).to_have_count(0)
    await expect(tab.locator(".message")).to_have_count(0)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        assert (await client.get(f"/sessions/{session_id}")).status_code == 404
    # A 404 in the console is the page's own request failing on purpose; nothing else.
    assert all("404" in error for error in problems.errors), problems.errors


async def test_a_server_with_authentication_takes_the_key_in_the_page(
    browser: Browser, tmp_path: Path
) -> None:
    """With authentication on, the page says it needs a key, keeps the one it is given, sends
    it with every call, and resumes a reloaded answer over fetch() with it (EventSource
    cannot send an Authorization header)."""
    env = {
        "STREAMFORGE_AUTH__ENABLED": "true",
        "STREAMFORGE_STREAMING__SIMULATED_DELAY": "0.05",
        "STREAMFORGE_LLM__SIMULATED__MIN_WORDS": "100",
        "STREAMFORGE_STREAMING__DISCONNECT_POLICY": "continue",
    }
    data_dir = tmp_path / "locked" / "data"
    created = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamforge",
        "keys",
        "create",
        "--user",
        "ada",
        "--create-database",
        env={**os.environ, **env, "STREAMFORGE_DATA_DIR": str(data_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(created.communicate(), 60)
    key = out.decode().strip()
    assert key.startswith("sf_")
    async with server_process(tmp_path, env, name="locked") as locked:
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        try:
            tab = await context.new_page()
            await open_ui(tab, locked)
            await expect(tab.locator("#notice-text")).to_contain_text("needs an API key")
            await tab.fill("#api-key", key)
            await tab.click("#save-key")
            await expect(tab.locator("#key-state")).to_contain_text("saved")
            answer = await send(tab, "behind a key")
            partial = await wait_for_text(answer, 60)
            await tab.reload()
            await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
            answer = tab.locator(".message.assistant").last
            await expect(answer).to_have_attribute(
                "data-status", "completed", timeout=ANSWER_TIMEOUT
            )
            assert len(await text_of(answer)) > len(partial)
            session_id = await current_session(tab)
        finally:
            await context.close()
        async with httpx.AsyncClient(base_url=locked.url, trust_env=False) as client:
            stored = await client.get(
                f"/sessions/{session_id}/messages", headers={"Authorization": f"Bearer {key}"}
            )
            assert stored.json()["items"][-1]["status"] == "completed"
            assert (await client.get(f"/sessions/{session_id}/messages")).status_code == 401


def in_view(box: dict[str, float] | None, width: int, height: int) -> bool:
    """Whether an element's box lies wholly within the first screen."""
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width + 0.5
        and box["y"] + box["height"] <= height + 0.5
    )


async def test_a_phone_gets_the_chat_first_and_the_sessions_in_a_drawer(
    browser: Browser, server: ServerProcess
) -> None:
    width, height = 390, 844
    context = await browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=True, has_touch=True
    )
    try:
        tab = await context.new_page()
        await open_ui(tab, server)
        answer = await send(tab, "Hello from a phone")
        await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
        # The chat is the first screen: the box to write in, its button and the answer.
        for selector in ("#input", "#send", "#menu"):
            assert in_view(await tab.locator(selector).bounding_box(), width, height), selector
        assert await tab.evaluate("() => document.scrollingElement.scrollHeight") <= height
        sidebar = tab.locator("#sidebar")
        box = await sidebar.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 0  # off the screen, to the left
        ARTIFACTS.mkdir(exist_ok=True)
        await tab.screenshot(path=str(ARTIFACTS / "ui-phone.png"))

        await tab.click("#menu")
        await expect(tab.locator("#menu")).to_have_attribute("aria-expanded", "true")
        await expect(tab.locator("#sessions .session").first).to_be_in_viewport()
        await tab.wait_for_timeout(300)  # the drawer's slide
        assert in_view(await sidebar.bounding_box(), width, height)
        item = tab.locator("#sessions .session").first
        # Rename and delete are there without hovering (a touch screen has no hover).
        await expect(item.locator(".rename")).to_be_visible()
        await expect(item.locator(".delete")).to_be_visible()
        await tab.screenshot(path=str(ARTIFACTS / "ui-phone-drawer.png"))

        # Opening a conversation closes the drawer.
        await item.locator(".open").click()
        await expect(tab.locator("#menu")).to_have_attribute("aria-expanded", "false")
        await expect(tab.locator(".message.assistant").last).to_be_visible()
    finally:
        await context.close()


async def test_a_failed_answer_says_why_and_offers_a_retry(
    page: tuple[Page, Problems], server: ServerProcess
) -> None:
    tab, problems = page
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        session = (await client.post("/sessions", json={"title": "Retry"})).json()
    # A stream that fails as a provider failure does: an error, then usage and done.
    failed = (
        "retry: 3000\n\n"
        "id: 1\nevent: session\n"
        f'data: {{"session_id":"{session["id"]}","stream_id":"gone","user_message_id":"u",'
        '"assistant_message_id":"a","provider":"simulated","model":null}\n\n'
        "id: 2\ndata: Half an answ\n\n"
        'id: 3\nevent: error\ndata: {"code":"provider_error","message":"The provider failed.",'
        '"retryable":true}\n\n'
        'id: 4\nevent: usage\ndata: {"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}\n\n'
        'id: 5\nevent: done\ndata: {"finish_reason":"error","status":"failed"}\n\n'
    )

    async def fail_once(route: Any) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=failed)

    await open_ui(tab, server)
    await tab.route("**/chat", fail_once)
    answer = await send(tab, "Please answer this")
    await expect(answer).to_have_attribute("data-status", "failed")
    await expect(answer.locator(".error")).to_have_text("The provider failed.")
    retry = answer.locator(".retry")
    await expect(retry).to_be_visible()
    await tab.unroute("**/chat", fail_once)

    await retry.click()
    await expect(retry).to_be_hidden()
    again = tab.locator(".message.assistant").last
    await expect(again).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    assert "Please answer this" in await text_of(again)
    await expect(again.locator(".retry")).to_be_hidden()
    stored = await stored_messages(server, session["id"])
    assert [m["content"] for m in stored if m["role"] == "user"] == ["Please answer this"]
    assert stored[-1]["status"] == "completed"

    # Unreachable server: the same offer.
    await tab.route("**/chat", lambda route: route.abort())
    lost = await send(tab, "Into the void")
    await expect(lost.locator(".retry")).to_be_visible()
    await tab.unroute("**/chat")
    assert all("Failed to load" in e or "ERR_FAILED" in e for e in problems.errors), problems.errors


@pytest.mark.parametrize(
    ("path", "marker"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")]
)
async def test_api_documentation_renders_with_the_network_blocked(
    browser: Browser, server: ServerProcess, path: str, marker: str
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    local = f"127.0.0.1:{server.port}"
    blocked: list[str] = []
    fetched: list[str] = []

    async def only_this_server(route: Any) -> None:
        url = route.request.url
        if url.startswith((f"http://{local}/", "data:")):
            fetched.append(url)
            await route.continue_()
        else:
            blocked.append(f"{route.request.resource_type} {url}")
            await route.abort()

    try:
        await context.route("**/*", only_this_server)
        opened = await context.new_page()
        await opened.goto(f"{server.url}{path}")
        await opened.wait_for_selector(marker, timeout=30_000)
        listed = await opened.locator(marker).count()
        text = await opened.locator("body").inner_text()
    finally:
        await context.close()

    # Nothing it needs comes from elsewhere (ReDoc's footer asks its maker's site for a logo).
    assert all(entry.startswith("image ") for entry in blocked), blocked
    assert any("/docs-assets/" in url for url in fetched), fetched
    # The operations are listed, from the server's own OpenAPI document.
    assert listed >= 10
    assert "/chat" in text and "/sessions" in text


# -- documents: one item per document, delete, re-index, collections, pages -------------------


async def upload_on_page(tab: Page, collection: str, path: Path) -> Locator:
    """Upload a file from the page and wait until it is ready; its item in the list."""
    await tab.fill("#collection", collection)
    await tab.set_input_files("#file", str(path))
    await tab.click("#upload")
    item = tab.locator(".document", has=tab.locator(".name", has_text=path.name))
    await expect(item).to_have_count(1)
    await expect(item).to_have_attribute("data-status", "ready", timeout=30_000)
    return item


async def api_get(server: ServerProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        return await client.get(path)


def shoot(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_documents_are_listed_once_reindexed_and_deleted_from_the_page(
    page: tuple[Page, Problems], server: ServerProcess, tmp_path: Path
) -> None:
    tab, problems = page
    marker = f"feldspar{uuid.uuid4().hex[:8]}"
    notes = tmp_path / f"kiln-{marker}.md"
    notes.write_text(f"# Kiln\n\nThe {marker} kiln fires at 1240 degrees.\n", encoding="utf-8")
    await open_ui(tab, server)
    item = await upload_on_page(tab, "ui-kiln", notes)
    document_id = await item.get_attribute("data-document-id")
    assert document_id
    await expect(item.locator(".collection")).to_have_text("in ui-kiln")

    # The same file again: the API keeps one document, and so does the list.
    item = tab.locator(f'.document[data-document-id="{document_id}"]')
    await tab.set_input_files("#file", str(notes))
    await tab.click("#upload")
    await expect(tab.locator(".document", has_text=notes.name)).to_have_count(1)
    await expect(item).to_have_attribute("data-status", "ready", timeout=30_000)
    await expect(tab.locator(f'.document[data-document-id="{document_id}"]')).to_have_count(1)
    await tab.wait_for_timeout(300)
    await expect(tab.locator(".document", has_text=notes.name)).to_have_count(1)
    listed = (await api_get(server, "/documents?collection=ui-kiln")).json()
    assert [d["id"] for d in listed["items"]] == [document_id]
    # After a reload, too.
    await open_ui(tab, server)
    await expect(tab.locator(".document", has_text=notes.name)).to_have_count(1)

    # Re-index: ingested again (a later ingestion time), ready again.
    before = (await api_get(server, f"/documents/{document_id}")).json()["ingested_at"]
    item = tab.locator(f'.document[data-document-id="{document_id}"]')
    await item.locator(".reindex").click()
    await expect(item).to_have_attribute("data-status", "ready", timeout=30_000)
    deadline = time.monotonic() + 30
    while (after := (await api_get(server, f"/documents/{document_id}")).json())[
        "ingested_at"
    ] == before:
        assert time.monotonic() < deadline, "re-index did not ingest the document again"
        await asyncio.sleep(0.2)
    assert after["status"] == "ready" and after["chunk_count"] >= 1
    await expect(item).to_have_attribute("data-status", "ready", timeout=30_000)
    await tab.screenshot(path=str(shoot("ui-documents.png")))

    # Delete (the confirmation is accepted by the fixture): gone from the page and the API.
    await item.locator(".delete").click()
    await expect(item).to_have_count(0)
    assert (await api_get(server, f"/documents/{document_id}")).status_code == 404
    await open_ui(tab, server)
    await expect(tab.locator(".document", has_text=notes.name)).to_have_count(0)
    assert not problems.errors


async def test_use_my_documents_searches_only_the_picked_collections(
    page: tuple[Page, Problems], server: ServerProcess, tmp_path: Path
) -> None:
    tab, problems = page
    marker = f"basalt{uuid.uuid4().hex[:8]}"
    first = tmp_path / "first.md"
    first.write_text(f"# First\n\nThe {marker} bridge opens at noon.\n", encoding="utf-8")
    second = tmp_path / "second.md"
    second.write_text(f"# Second\n\nThe {marker} bridge closes at midnight.\n", encoding="utf-8")
    await open_ui(tab, server)
    await upload_on_page(tab, "ui-pick-first", first)
    await upload_on_page(tab, "ui-pick-second", second)
    collections = (await api_get(server, "/collections?limit=100")).json()["items"]
    wanted = next(c["id"] for c in collections if c["name"] == "ui-pick-second")

    picks = tab.locator("#rag-collections input[type=checkbox]")
    await expect(picks).to_have_count(len(collections))
    for index in range(await picks.count()):
        box = picks.nth(index)
        await box.set_checked(await box.get_attribute("value") == wanted)
    await expect(tab.locator("#rag-scope")).to_have_text(f"1 of {len(collections)} collections")
    await tab.check("#rag")
    answer = await send(tab, f"When does the {marker} bridge open?")
    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    await expect(answer.locator(".citation").first).to_contain_text("second.md")
    stored = await stored_messages(server, await current_session(tab))
    citations = stored[-1]["citations"]
    assert citations and {c["collection_id"] for c in citations} == {wanted}

    # The choice outlives a reload; with nothing picked the page says so instead of sending.
    await open_ui(tab, server)
    box = tab.locator(f'#rag-collections input[value="{wanted}"]')
    await expect(box).to_be_checked()
    await box.uncheck()
    await tab.check("#rag")
    await tab.fill("#input", "anything")
    await tab.click("#send")
    await expect(tab.locator("#notice-text")).to_contain_text("Pick at least one collection")
    await expect(tab.locator(".message")).to_have_count(0)
    # Everything picked again: every collection is searched.
    for index in range(await picks.count()):
        await picks.nth(index).check()
    await expect(tab.locator("#rag-scope")).to_have_text("all collections")
    await tab.uncheck("#rag")
    assert not problems.errors


async def test_a_pdf_citation_shows_its_page_and_opens_the_passage(
    page: tuple[Page, Problems], browser: Browser, server: ServerProcess, tmp_path: Path
) -> None:
    tab, problems = page
    marker = f"obsidian{uuid.uuid4().hex[:8]}"
    # Page 2 is longer than a chunk, so page 3 (short) is a chunk of its own, from its start.
    pages = [
        "Chapter one is about harbours and the ships that leave them at dawn.",
        " ".join(
            f"Lighthouse {n} has a lens, a lamp and a keeper who trims the wicks at dusk."
            for n in range(14)
        ),
        f"Chapter three: the {marker} lock lifts barges eleven metres in nine minutes.",
    ]
    manual = tmp_path / "canal-manual.pdf"
    manual.write_bytes(pdf_bytes(pages))
    await open_ui(tab, server)
    item = await upload_on_page(tab, "ui-canal", manual)
    await expect(item.locator(".state")).to_contain_text("3 pages")
    collections = (await api_get(server, "/collections?limit=100")).json()["items"]
    canal = next(c["id"] for c in collections if c["name"] == "ui-canal")
    picks = tab.locator("#rag-collections input[type=checkbox]")
    for index in range(await picks.count()):
        box = picks.nth(index)
        await box.set_checked(await box.get_attribute("value") == canal)
    await tab.check("#rag")

    answer = await send(tab, f"How high does the {marker} lock lift barges?")
    await expect(answer).to_have_attribute("data-status", "completed", timeout=ANSWER_TIMEOUT)
    cited = answer.locator(".citation", has_text=marker).first
    await cited.locator("summary").click()
    await expect(cited.locator("summary .page")).to_have_text("page 3")
    await expect(cited.locator(".where")).to_contain_text("page 3, characters")
    await cited.locator(".open-passage").click()
    viewer = tab.locator("#viewer")
    await expect(viewer).to_be_visible()
    await expect(tab.locator("#viewer-title")).to_have_text("canal-manual.pdf")
    await expect(tab.locator("#viewer-where")).to_contain_text("Page 3")
    passage = viewer.locator("mark.passage")
    await expect(passage.first).to_contain_text(marker)
    await expect(passage.first).to_be_in_viewport()
    await expect(viewer.locator(".page-break")).to_have_text(["Page 1", "Page 2", "Page 3"])
    shot = shoot("ui-passage.png")
    await tab.screenshot(path=str(shot))
    assert png_size(shot) == (1280, 860)
    await tab.click("#viewer-close")
    await expect(viewer).to_be_hidden()

    stored = await stored_messages(server, await current_session(tab))
    pdf_citation = next(c for c in stored[-1]["citations"] if marker in c["snippet"])
    assert pdf_citation["page"] == 3
    # The text is the owner's: opening it needs the document's id, and the API has it.
    text = (await api_get(server, f"/documents/{pdf_citation['document_id']}/text")).json()
    assert marker in text["text"][pdf_citation["start"] : pdf_citation["end"]]
    session_id = await current_session(tab)
    await tab.uncheck("#rag")
    assert not problems.errors

    # A phone: the same citation, opened from the stored conversation.
    width, height = 390, 844
    context = await browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=True, has_touch=True
    )
    try:
        phone = await context.new_page()
        await open_ui(phone, server)
        await phone.click("#menu")
        await phone.locator(f'#sessions .session[data-session-id="{session_id}"] .open').click()
        cited = phone.locator(".message.assistant").last.locator(".citation", has_text=marker)
        await cited.first.locator("summary").click()
        await expect(cited.first.locator("summary .page")).to_have_text("page 3")
        await cited.first.locator(".open-passage").click()
        await expect(phone.locator("#viewer mark.passage").first).to_be_in_viewport()
        box = await phone.locator("#viewer").bounding_box()
        assert in_view(box, width, height)
        shot = shoot("ui-phone-passage.png")
        await phone.screenshot(path=str(shot))
        assert png_size(shot) == (width, height)
        await phone.click("#viewer-close")
        await phone.click("#menu")
        await phone.wait_for_timeout(300)  # the drawer's slide
        await phone.locator("#documents").scroll_into_view_if_needed()
        await phone.screenshot(path=str(shoot("ui-phone-documents.png")))
    finally:
        await context.close()
