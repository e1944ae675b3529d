"""The examples of embedding the router in a host app, served for real.

Each example (``examples/fastapi_mount.py``, ``examples/starlette_mount.py``,
``examples/wrap_asgi.py``) is loaded by path and served by uvicorn on
127.0.0.1 (:class:`clawrouter.server.BackgroundServer`, lifespan on), so the
host's lifespan, its middleware and the router's start-up/shut-down chaining
all run as in production. Clients are plain ``httpx``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from clawrouter import Router
from clawrouter.server import BackgroundServer
from clawrouter.types import ASGIApp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KINDS = ["fastapi", "starlette", "wrap"]
MODULES = {"fastapi": "fastapi_mount", "starlette": "starlette_mount", "wrap": "wrap_asgi"}
SIMULATED = {"simulated/eco", "simulated/standard", "simulated/premium"}


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once, under a private module name."""
    module_name = f"_clawrouter_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Hosted:
    """One example's app, with an isolated router, and where its host records lifespan events."""

    app: ASGIApp
    router: Router
    events: list[str]
    header: str


def build(kind: str) -> Hosted:
    module = load_example(MODULES[kind])
    router = Router(env={}, entry_points=False)
    if kind == "wrap":
        host = module.HostApp()
        return Hosted(module.create_app(host=host, router=router), router, host.events, module.HEADER)
    app = module.create_app(router)
    assert app.state.router is router
    return Hosted(app, router, app.state.events, module.HEADER)


@pytest.fixture(params=KINDS)
def hosted(request: pytest.FixtureRequest) -> Hosted:
    return build(request.param)


@pytest.fixture(scope="module", params=KINDS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Hosted, httpx.Client]]:
    """One server per example for the module's read-only tests (start-up is the slow part)."""
    hosted = build(request.param)
    with BackgroundServer(hosted.app) as server, httpx.Client(base_url=server.url, timeout=5.0) as client:
        yield hosted, client


def chat(content: str = "hello there", model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


# --- lifespan -----------------------------------------------------------------------------


def test_lifespan_of_host_and_router_run_and_stop(hosted: Hosted) -> None:
    router = hosted.router
    assert hosted.events == []
    started = [router.started]
    with BackgroundServer(hosted.app) as server, httpx.Client(base_url=server.url, timeout=5.0) as client:
        # Both start-ups ran before any request, the router's without a request under /llm.
        assert hosted.events == ["startup"]
        started.append(router.started)
        response = client.get("/hello")
        assert response.status_code == 200
        # What the host's lifespan set is visible to its routes.
        assert response.json() == {"message": "hello from the host app", "events": ["startup"]}
    # Both shut-downs ran when the server stopped.
    assert hosted.events == ["startup", "shutdown"]
    started.append(router.started)
    assert started == [False, True, False]


# --- the host app is intact ------------------------------------------------------------------


def test_host_routes_still_answer_with_middleware(served: tuple[Hosted, httpx.Client]) -> None:
    hosted, client = served
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.json()["message"] == "hello from the host app"
    assert response.headers[hosted.header]
    assert "x-clawrouter-model" not in response.headers


def test_host_404_is_the_hosts_not_the_routers(served: tuple[Hosted, httpx.Client]) -> None:
    hosted, client = served
    response = client.get("/v1/models")  # the router's path, but outside the prefix
    assert response.status_code == 404
    assert "not_found_error" not in response.text  # not the router's OpenAI-shaped error
    assert response.headers[hosted.header]


# --- the router under /llm -------------------------------------------------------------------


def test_router_health_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    hosted, client = served
    response = client.get("/llm/-/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["providers"] == ["simulated"]
    # The host's middleware wraps the router too.
    assert response.headers[hosted.header]


def test_router_models_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    _, client = served
    response = client.get("/llm/v1/models")
    assert response.status_code == 200
    ids = {m["id"] for m in response.json()["data"]}
    assert ids >= SIMULATED | {"auto", "eco", "premium"}


def test_router_plugins_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    _, client = served
    response = client.get("/llm/-/plugins")
    assert response.status_code == 200
    assert "plugins" in response.json()


def test_router_unknown_path_under_prefix_is_routers_404(served: tuple[Hosted, httpx.Client]) -> None:
    _, client = served
    response = client.get("/llm/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_chat_completion_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    hosted, client = served
    response = client.post("/llm/v1/chat/completions", json=chat())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    assert response.headers["x-clawrouter-model"] in SIMULATED
    assert response.headers[hosted.header]


def test_chat_completion_explicit_model_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    _, client = served
    response = client.post("/llm/v1/chat/completions", json=chat(model="simulated/eco"))
    assert response.status_code == 200, response.text
    assert response.headers["x-clawrouter-model"] == "simulated/eco"


def test_chat_completion_stream_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    hosted, client = served
    payload = chat(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/llm/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers[hosted.header]
        text = response.read().decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content.strip()
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_chat_errors_under_prefix(served: tuple[Hosted, httpx.Client]) -> None:
    _, client = served
    response = client.post("/llm/v1/chat/completions", json=chat(model="no-such/model"))
    assert response.status_code == 400
    assert "no-such/model" in response.json()["error"]["message"]
    response = client.get("/llm/v1/chat/completions")
    assert response.status_code == 405


# --- the modules as shipped ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_example_module_app_serves(kind: str) -> None:
    """The module-level ``app`` (what ``python examples/<name>.py`` runs) works as is."""
    module = load_example(MODULES[kind])
    with BackgroundServer(module.app) as server, httpx.Client(base_url=server.url, timeout=5.0) as client:
        assert client.get("/hello").status_code == 200
        assert client.get("/llm/-/health").status_code == 200
        response = client.post("/llm/v1/chat/completions", json=chat())
        assert response.status_code == 200, response.text


# --- behind a proxy (root_path) --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_router_under_prefix_with_root_path(kind: str) -> None:
    """Served at ``root_path="/api"`` (``uvicorn --root-path /api`` behind a proxy), the
    router answers under ``/api/llm``. As uvicorn and Starlette do, the scope's ``path``
    includes ``root_path``."""
    hosted = build(kind)
    transport = httpx.ASGITransport(hosted.app, root_path="/api")
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as client:
            response = await client.get("/api/llm/-/health")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "ok"
            response = await client.post("/api/llm/v1/chat/completions", json=chat())
            assert response.status_code == 200, response.text
            assert response.headers["x-clawrouter-model"] in SIMULATED
    finally:
        await hosted.router.stop()  # started lazily by its first request (no lifespan here)
