"""What the three vendor servers share: the scripted behaviour, the request log, the ASGI
plumbing, the streaming driver, and the two ways to run a server (in the test's loop or in a
background thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import math
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

import uvicorn
from starlette.types import Receive, Scope, Send

DEFAULT_TOKENS: tuple[str, ...] = ("Hello", " from", " the", " loopback", " test", " server", ".")

JsonBody = dict[str, Any]
FrameKind = Literal["head", "token", "tail"]
Frame = tuple[FrameKind, bytes]
Headers = list[tuple[bytes, bytes]]


@dataclass(eq=False)
class Behaviour:
    """What a server does with one chat request.

    Every chat request takes the next queued behaviour (``server.enqueue``), or the server's
    default one (``server.behaviour``) when the queue is empty. A "token" is one streamed
    content chunk, and the usage the server reports counts them unless told otherwise.
    """

    tokens: Sequence[str] = DEFAULT_TOKENS
    prompt_tokens: int = 12
    # None: the number of content chunks actually produced.
    completion_tokens: int | None = None
    # Respond with this status and the vendor's error body instead of generating.
    fail_status: int | None = None
    # None: every request fails; n: the first n requests served by this behaviour fail, the
    # rest succeed (so a default behaviour with fail_times=1 is "429 once, then succeed").
    fail_times: int | None = None
    fail_message: str | None = None
    retry_after: float | str | None = None
    # Stream this many content chunks, then drop the connection mid-body.
    cut_after: int | None = None
    # Stream this many content chunks, then send the vendor's in-stream error and end.
    error_after: int | None = None
    error_status: int = 500
    # Seconds before each content chunk (non-streaming: per token, before answering).
    delay: float = 0.0
    # Seconds before the response starts (applies to failures too).
    latency: float = 0.0
    # Pre-encode every frame once (cached per behaviour) and send them back to back.
    fast: bool = False
    # The vendor's own finish value (e.g. "length", "max_tokens"); None derives it.
    finish_reason: str | None = None
    # The model named in responses; None echoes the request's.
    model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    _failures: int = field(default=0, init=False, repr=False)

    @classmethod
    def reply(cls, text: str, **options: Any) -> Behaviour:
        """Stream ``text`` word by word, each word keeping its leading whitespace."""
        return cls(tokens=tuple(re.findall(r"\s*\S+", text)), **options)

    @classmethod
    def failing(
        cls, status: int, times: int | None = None, *, retry_after: float | str | None = None
    ) -> Behaviour:
        return cls(fail_status=status, fail_times=times, retry_after=retry_after)

    @classmethod
    def many(cls, count: int, *, fast: bool = True, **options: Any) -> Behaviour:
        """``count`` small distinct tokens, for benchmarks."""
        return cls(tokens=tuple(f" w{index}" for index in range(count)), fast=fast, **options)

    @property
    def text(self) -> str:
        return "".join(self.tokens)


Outcome = Literal[
    "pending", "ok", "failed", "invalid", "cut", "stream_error", "disconnected", "served"
]


@dataclass
class RecordedRequest:
    """One request as the server received it, and how the server answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    raw_body: bytes
    body: Any  # the parsed JSON body, or None
    behaviour: Behaviour | None = None
    status: int | None = None
    outcome: Outcome = "pending"
    tokens_sent: int = 0
    # The client went away before the response was complete.
    disconnected: bool = False

    @property
    def json(self) -> JsonBody:
        assert isinstance(self.body, dict), f"not a JSON object: {self.raw_body!r}"
        return self.body


class ApiError(Exception):
    """A vendor error response; raised by request validation."""

    def __init__(self, status: int, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or f"error {status}")
        self.status = status
        self.message = message
        self.extra = extra


class ConnectionCut(Exception):
    """Raised inside the ASGI app after part of a body: uvicorn then closes the transport
    without the terminating chunk, which the client sees as an incomplete body."""


class _HideDeliberateCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


_CUT_FILTER = _HideDeliberateCuts()


def _hide_cut_tracebacks() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _CUT_FILTER not in logger.filters:
        logger.addFilter(_CUT_FILTER)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for a text, as a vendor's embedding model would return one:
    texts sharing words get similar vectors."""
    vector = [0.0] * dimensions
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def random_id(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class ChatCall:
    """The parts of a chat request the generic driver needs."""

    model: str
    stream: bool
    max_tokens: int | None = None
    # Vendor-specific switches (e.g. OpenAI's include_usage); part of the fast-mode cache key.
    flags: tuple[tuple[str, Any], ...] = ()

    def flag(self, name: str, default: Any = None) -> Any:
        return dict(self.flags).get(name, default)


@dataclass
class Plan:
    """What one chat response will contain."""

    call: ChatCall
    model: str
    tokens: Sequence[str]
    finish: str  # the vendor's own value
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class Exchange:
    """One HTTP exchange: sends ASGI messages and notices when the client goes away."""

    def __init__(self, receive: Receive, send: Send, record: RecordedRequest) -> None:
        self._receive = receive
        self._send = send
        self.record = record
        self.gone = asyncio.Event()
        self.started = False
        self.complete = False
        # The client went away before the response was complete.
        self.left_early = False
        self._watcher: asyncio.Task[None] | None = None

    async def read_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.left_early = True
                self.gone.set()
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return b"".join(chunks)

    async def _watch(self) -> None:
        while not self.gone.is_set():
            message = await self._receive()
            if message["type"] == "http.disconnect":
                # uvicorn also reports a disconnect once the response is complete.
                self.left_early = not self.complete
                self.gone.set()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def sleep(self, seconds: float) -> bool:
        """Wait, unless the client goes away first; True if it is still there."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)
        return not self.gone.is_set()

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        self.record.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        self.complete = not more
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, content_type: str, headers: Headers) -> None:
        await self.start(
            status,
            [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        )
        await self.write(body, more=False)


Handler = Callable[[Exchange], Awaitable[None]]
JSON_TYPE = "application/json"


class VendorServer:
    """Base of the vendor servers: an ASGI app plus a uvicorn runner.

    Subclasses name the chat route and encode the vendor's frames and error bodies.
    """

    vendor: ClassVar[str] = ""
    chat_path: ClassVar[str] = ""
    # What the SDK's base URL is, relative to the server root.
    base_path: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    default_models: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        models: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.models: list[str] = list(models if models is not None else self.default_models)
        self.embedding_requests: list[JsonBody] = []
        self.requests: list[RecordedRequest] = []
        self.host = host
        self._requested_port = port
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._fast_cache: dict[tuple[int, Any], tuple[Behaviour, list[Frame]]] = {}
        self._stack: contextlib.AsyncExitStack | contextlib.ExitStack | None = None
        self._routes: dict[tuple[str, str], Handler] = {("POST", self.chat_path): self._chat}
        self._routes.update(self.extra_routes())

    # -- scripting and inspection -----------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Behaviours for the next chat requests, one each, before the default applies again."""
        with self._lock:
            self._queue.extend(behaviours)

    def reset(self, behaviour: Behaviour | None = None) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self._fast_cache.clear()
            self.behaviour = behaviour or Behaviour()

    @property
    def pending(self) -> int:
        """Queued behaviours not yet used."""
        return len(self._queue)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == self.chat_path]

    @property
    def last_chat(self) -> RecordedRequest:
        chats = self.chat_requests
        assert chats, f"the {self.vendor} server has received no chat request"
        return chats[-1]

    async def settled(self, within: float = 5.0) -> None:
        """Wait until every request received so far is answered, cut or abandoned (the
        server notices a client leaving mid-stream only at its next chunk or sleep)."""
        deadline = time.monotonic() + within
        while any(request.outcome == "pending" for request in self.requests):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.vendor} server still has requests in flight")
            await asyncio.sleep(0.005)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.started, "the server is not running"
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the vendor's SDK as its base URL (or host)."""
        return self.url + self.base_path

    # -- running -----------------------------------------------------------------------------

    def _uvicorn(self) -> uvicorn.Server:
        _hide_cut_tracebacks()
        config = uvicorn.Config(
            self,
            host=self.host,
            port=self._requested_port,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        return uvicorn.Server(config)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Serve on a free loopback port in the current event loop."""
        server = self._uvicorn()
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"the {self.vendor} server stopped before it started")
            await asyncio.sleep(0.005)
        self._server = server
        try:
            yield self
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=15)

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Serve from a background thread with its own event loop: for sync clients, for
        clients that block the test's loop, and for benchmarks."""
        server = self._uvicorn()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run()
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"{self.vendor}-vendor-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.vendor} server did not start") from (
                    failure[0] if failure else None
                )
            time.sleep(0.005)
        self._server = server
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=15)

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(self.running())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        assert isinstance(stack, contextlib.AsyncExitStack)
        await stack.aclose()

    def __enter__(self) -> Self:
        stack = contextlib.ExitStack()
        stack.enter_context(self.in_thread())
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        assert isinstance(stack, contextlib.ExitStack)
        stack.close()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            raw_body=b"",
            body=None,
        )
        exchange = Exchange(receive, send, record)
        try:
            record.raw_body = await exchange.read_body()
            with self._lock:
                self.requests.append(record)
            handler = self.resolve(record.method, record.path)
            if handler is None:
                await self.not_found(exchange)
                return
            if record.raw_body:
                try:
                    record.body = json.loads(record.raw_body)
                except ValueError:
                    record.outcome = "invalid"
                    await self.send_error(exchange, ApiError(400, self.invalid_json_message))
                    return
            await handler(exchange)
        finally:
            await exchange.close()
            record.disconnected = exchange.left_early
            if record.disconnected and record.outcome == "pending":
                record.outcome = "disconnected"

    def resolve(self, method: str, path: str) -> Handler | None:
        return self._routes.get((method, path))

    # -- the chat route ----------------------------------------------------------------------

    def _next_behaviour(self) -> tuple[Behaviour, bool]:
        with self._lock:
            behaviour = self._queue.popleft() if self._queue else self.behaviour
            failing = False
            if behaviour.fail_status is not None and (
                behaviour.fail_times is None or behaviour._failures < behaviour.fail_times
            ):
                behaviour._failures += 1
                failing = True
            return behaviour, failing

    async def _chat(self, exchange: Exchange) -> None:
        record = exchange.record
        behaviour, failing = self._next_behaviour()
        record.behaviour = behaviour
        if not await exchange.sleep(behaviour.latency):
            return
        if failing:
            assert behaviour.fail_status is not None
            record.outcome = "failed"
            await self.send_error(
                exchange,
                ApiError(behaviour.fail_status, behaviour.fail_message),
                retry_after=behaviour.retry_after,
                extra_headers=behaviour.headers,
            )
            return
        try:
            call = self.parse_chat(record.body)
        except ApiError as error:
            record.outcome = "invalid"
            await self.send_error(exchange, error)
            return
        plan = self._plan(call, behaviour)
        if call.stream:
            await self._stream(exchange, plan, behaviour)
        else:
            await self._complete(exchange, plan, behaviour)

    def _plan(self, call: ChatCall, behaviour: Behaviour) -> Plan:
        tokens = behaviour.tokens
        finish = self.finish_value("stop")
        if call.max_tokens is not None and 0 <= call.max_tokens < len(tokens):
            tokens = tokens[: call.max_tokens]
            finish = self.finish_value("length")
        if behaviour.finish_reason is not None:
            finish = behaviour.finish_reason
        completion = behaviour.completion_tokens
        return Plan(
            call=call,
            model=behaviour.model or call.model,
            tokens=tokens,
            finish=finish,
            prompt_tokens=behaviour.prompt_tokens,
            completion_tokens=len(tokens) if completion is None else completion,
        )

    def _frames(self, plan: Plan, behaviour: Behaviour) -> Iterable[Frame]:
        if not behaviour.fast:
            return self.stream_frames(plan)
        key = (id(behaviour), (plan.model, plan.call.max_tokens, plan.call.flags))
        with self._lock:
            cached = self._fast_cache.get(key)
        if cached is None:
            cached = (behaviour, list(self.stream_frames(plan)))
            with self._lock:
                if len(self._fast_cache) > 64:
                    self._fast_cache.clear()
                self._fast_cache[key] = cached
        return cached[1]

    async def _stream(self, exchange: Exchange, plan: Plan, behaviour: Behaviour) -> None:
        record = exchange.record
        await exchange.start(
            200,
            [
                (b"content-type", self.stream_content_type.encode()),
                *self.stream_headers(),
                *self.response_headers(behaviour),
            ],
        )
        sent = 0
        in_tail = False
        delay = 0.0 if behaviour.fast else behaviour.delay
        for kind, frame in self._frames(plan, behaviour):
            if kind == "token" or (kind == "tail" and not in_tail):
                in_tail = kind == "tail"
                if behaviour.cut_after is not None and sent >= behaviour.cut_after:
                    record.outcome = "cut"
                    raise ConnectionCut(f"{self.vendor}: cut after {sent} tokens")
                if behaviour.error_after is not None and sent >= behaviour.error_after:
                    record.outcome = "stream_error"
                    await exchange.write(self.stream_error_frame(plan, behaviour.error_status))
                    await exchange.write(b"", more=False)
                    return
                if kind == "token" and delay and not await exchange.sleep(delay):
                    return
            if exchange.gone.is_set():
                return
            await exchange.write(frame)
            if kind == "token":
                sent += 1
                record.tokens_sent = sent
        await exchange.write(b"", more=False)
        record.outcome = "ok"

    async def _complete(self, exchange: Exchange, plan: Plan, behaviour: Behaviour) -> None:
        record = exchange.record
        if not await exchange.sleep(behaviour.delay * len(plan.tokens)):
            return
        body = dumps(self.completion_body(plan))
        headers = self.response_headers(behaviour)
        if behaviour.cut_after is not None:
            # Promise the whole body, deliver part of it.
            await exchange.start(
                200,
                [
                    (b"content-type", self.json_content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            )
            await exchange.write(body[: len(body) // 2])
            record.outcome = "cut"
            raise ConnectionCut(f"{self.vendor}: cut a non-streaming body")
        record.tokens_sent = len(plan.tokens)
        await exchange.respond(200, body, self.json_content_type, headers)
        record.outcome = "ok"

    # -- responses ---------------------------------------------------------------------------

    json_content_type: ClassVar[str] = JSON_TYPE
    invalid_json_message: ClassVar[str] = "invalid JSON body"

    async def send_json(
        self, exchange: Exchange, value: Any, *, status: int = 200, headers: Headers | None = None
    ) -> None:
        if exchange.record.outcome == "pending":
            exchange.record.outcome = "served"
        await exchange.respond(status, dumps(value), self.json_content_type, headers or [])

    async def send_error(
        self,
        exchange: Exchange,
        error: ApiError,
        *,
        retry_after: float | str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        headers = self.error_headers(error.status)
        if retry_after is not None:
            value = retry_after
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            headers.append((b"retry-after", str(value).encode()))
        for name, value in (extra_headers or {}).items():
            headers.append((name.lower().encode(), value.encode()))
        body = dumps(self.error_body(error.status, error.message, **error.extra))
        await exchange.respond(error.status, body, self.json_content_type, headers)

    async def not_found(self, exchange: Exchange) -> None:
        record = exchange.record
        record.outcome = "invalid"
        message = f"Invalid URL ({record.method} {record.path})"
        await self.send_error(exchange, ApiError(404, message))

    def response_headers(self, behaviour: Behaviour) -> Headers:
        headers = self.common_headers()
        headers.extend((k.lower().encode(), v.encode()) for k, v in behaviour.headers.items())
        return headers

    def stream_headers(self) -> Headers:
        return [(b"cache-control", b"no-cache")]

    # -- what each vendor supplies -----------------------------------------------------------

    def extra_routes(self) -> Mapping[tuple[str, str], Handler]:
        return {}

    def common_headers(self) -> Headers:
        return []

    def error_headers(self, status: int) -> Headers:
        return self.common_headers()

    def finish_value(self, generic: Literal["stop", "length"]) -> str:
        raise NotImplementedError

    def parse_chat(self, body: Any) -> ChatCall:
        raise NotImplementedError

    def stream_frames(self, plan: Plan) -> Iterator[Frame]:
        raise NotImplementedError

    def stream_error_frame(self, plan: Plan, status: int) -> bytes:
        raise NotImplementedError

    def completion_body(self, plan: Plan) -> JsonBody:
        raise NotImplementedError

    def error_body(self, status: int, message: str | None, **extra: Any) -> JsonBody:
        raise NotImplementedError


def require_object(body: Any, message: str) -> JsonBody:
    if not isinstance(body, dict):
        raise ApiError(400, message)
    return body


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def aclose_chat_model(model: Any) -> None:
    """Close the HTTP clients a LangChain chat model owns.

    ChatOllama opens its own clients and never closes them: pooled keep-alive sockets then
    surface as ResourceWarnings (errors under ``filterwarnings = error``) whenever the garbage
    collector runs. ChatOpenAI and ChatAnthropic share process-wide clients cached per base
    URL (and timeout), which a later model with the same URL reuses, so those are left open.
    """
    for name in ("_async_client", "_client"):
        client = getattr(model, name, None)
        if client is None or not type(client).__module__.startswith("ollama"):
            continue
        result = client.close()
        if inspect.isawaitable(result):
            await result
