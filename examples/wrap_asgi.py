"""Serve clawrouter beside a bare ASGI app (no framework), under ``/llm``.

``router.wrap(app, "/llm")`` returns one ASGI app: requests under ``/llm`` go
to the router, everything else to ``app``. Lifespan goes to both: the host's
own lifespan handler still runs, with the router's start-up and shut-down
chained in (a host that does not speak lifespan gets the router's own).
A pure ASGI middleware around the result adds a header to every response.

Run it (uvicorn on http://127.0.0.1:8000)::

    python examples/wrap_asgi.py

    curl http://127.0.0.1:8000/hello                    # the host's own route
    curl http://127.0.0.1:8000/llm/v1/models            # the router
    curl http://127.0.0.1:8000/llm/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from clawrouter import Router

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The header the middleware adds to every response (the router's too).
HEADER = "x-host-app"


class HostApp:
    """A bare ASGI app: ``GET /hello`` and ``404`` elsewhere, with its own lifespan."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.events.append("startup")
                self.state["greeting"] = "hello from the host app"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.events.append("shutdown")
                self.state.clear()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # the path includes root_path (ASGI)
            path = path[len(root) :] or "/"
        if path == "/hello" and scope["method"] in ("GET", "HEAD"):
            status = 200
            body = json.dumps({"message": self.state.get("greeting"), "events": self.events}).encode()
        else:
            status = 404
            body = json.dumps({"detail": "not found"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class HeaderMiddleware:
    """A pure ASGI middleware: adds ``x-host-app`` to every HTTP response."""

    def __init__(self, app: ASGIApp, value: str = "bare-asgi") -> None:
        self.app = app
        self.header = (HEADER.encode(), value.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(host: HostApp | None = None, router: Router | None = None) -> ASGIApp:
    """``host`` (default: a new :class:`HostApp`) with ``router`` (default:
    ``Router()``) under ``/llm``, inside :class:`HeaderMiddleware`."""
    host = host if host is not None else HostApp()
    router = router if router is not None else Router()
    return HeaderMiddleware(router.wrap(host, "/llm"))


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
