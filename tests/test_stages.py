"""Each stage works on its own, around any ASGI app."""

from __future__ import annotations

import httpx
from helpers import chat

from clawrouter.context import SCOPE_KEY
from clawrouter.default_auth import hash_key
from clawrouter.stages import AuthMiddleware, ExecuteApp, RouteMiddleware
from clawrouter.wire import encode


def inner_app(seen: list):
    async def app(scope, receive, send):
        seen.append(scope)
        if scope["type"] != "http":
            return
        ctx = scope.get(SCOPE_KEY)
        body = encode(
            {
                "actor": ctx.actor.id if ctx else None,
                "model": ctx.decision.primary.id if ctx and ctx.decision else None,
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_auth_alone(clawrouter_router):
    router = clawrouter_router({"auth": {"api_keys": [{"name": "ops", "sha256": hash_key("k")}]}})
    seen: list = []
    app = AuthMiddleware(inner_app(seen), router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        assert (await client.get("/anything", headers={"authorization": "Bearer k"})).json()["actor"] == "api_key:ops"
        assert (await client.get("/anything", headers={"authorization": "Bearer nope"})).status_code == 401
    assert len(seen) == 1


async def test_route_alone_decides_and_non_http_passes_through(clawrouter_router):
    router = clawrouter_router()
    seen: list = []
    app = RouteMiddleware(inner_app(seen), router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        response = await client.post("/", json=chat(model="premium"))
        assert response.json() == {"actor": "anonymous", "model": "simulated/premium"}
        assert (await client.post("/", content=b"{")).status_code == 400

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        raise AssertionError("nothing to send")

    await app({"type": "websocket", "path": "/"}, receive, send)
    assert seen[-1]["type"] == "websocket" and SCOPE_KEY not in seen[-1]


async def test_execute_alone(clawrouter_router):
    router = clawrouter_router()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(ExecuteApp(router)), base_url="http://t") as client:
        response = await client.post("/", json=chat(model="eco"))
    assert response.status_code == 200 and response.headers["x-clawrouter-model"] == "simulated/eco"


def test_request_ids_are_unique_and_differ_after_fork():
    import os

    from clawrouter.context import _request_id

    ids = {_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and exit at once
        os.write(write, _request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child[:16] != _request_id()[:16]
