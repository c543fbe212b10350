"""Generated requests from the app's own OpenAPI schema: never a 5xx, never a hang.

Schemathesis builds valid requests (positive) and invalid ones (negative) for every operation;
a real uvicorn server in a thread answers them over HTTP, with authentication on and an
administrator's key, so every route is reached past the key check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from streamforge.app import create_app
from tests.conftest import make_settings

EXAMPLES_PER_OPERATION = 150


async def admin_key(database_url: str) -> str:
    from streamforge.db.database import Database
    from streamforge.db.engine import create_engine
    from streamforge.models import Role
    from streamforge.services.auth import AuthService

    engine = create_engine(database_url)
    try:
        auth = AuthService(Database(engine))
        await auth.create_user("fuzzer", Role.ADMIN)
        return (await auth.create_key("fuzzer"))[0]
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, object], str]]:
    tmp: Path = tmp_path_factory.mktemp("property")
    settings = make_settings(
        tmp,
        limits={"max_message_chars": 2000, "max_body_bytes": 65536},
        auth={"enabled": True},
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "server failed to start"
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    key = asyncio.run(admin_key(settings.database_url))
    try:
        yield f"http://127.0.0.1:{port}", app.openapi(), key
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_generated_requests_never_get_a_server_error(
    served: tuple[str, dict[str, object], str],
) -> None:
    base_url, openapi, key = served
    authorization = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_dict(openapi)
    http = requests.Session()
    sent = 0
    statuses: dict[int, int] = {}

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                nonlocal sent
                response = case.call(
                    base_url=base_url, session=http, timeout=10, headers=authorization
                )
                sent += 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                if response.status_code >= 400 and case.path == "/v1/messages":
                    # Anthropic's Messages API answers in Anthropic's error shape.
                    assert response.json()["type"] == "error"
                    assert response.json()["error"]["type"]
                elif response.status_code >= 400:
                    assert response.json()["error"]["code"]

            try:
                check()
            except Unsatisfiable:
                # No invalid request exists for an operation without inputs (GET /).
                assert mode is GenerationMode.NEGATIVE

    assert sent >= 5000, statuses
    assert statuses.get(401, 0) == 0, "every request carries the key"
    assert not any(status >= 500 for status in statuses)
