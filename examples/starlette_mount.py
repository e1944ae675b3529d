"""Mount clawrouter inside an existing Starlette app, under ``/llm``.

The host app keeps its own routes, its own (pure ASGI) middleware and its own
lifespan. ``router.mount(app, "/llm")`` adds the router under ``/llm`` and
chains the router's start-up and shut-down around the host's lifespan.

Run it (uvicorn on http://127.0.0.1:8000)::

    python examples/starlette_mount.py

    curl http://127.0.0.1:8000/hello                    # the host's own route
    curl http://127.0.0.1:8000/llm/-/health             # the router
    curl http://127.0.0.1:8000/llm/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawrouter import Router

#: The header the host's middleware adds to every response (the router's too).
HEADER = "x-host-app"


class HostHeaderMiddleware:
    """A pure ASGI middleware: adds ``x-host-app`` to every HTTP response."""

    def __init__(self, app: ASGIApp, value: str = "starlette") -> None:
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


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"message": request.state.greeting, "events": list(request.app.state.events)})


def create_app(router: Router | None = None) -> Starlette:
    """The host app, with ``router`` (default: ``Router()``) mounted under ``/llm``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # The host's own start-up and shut-down; what it yields is request.state.
        app.state.events.append("startup")
        yield {"greeting": "hello from the host app"}
        app.state.events.append("shutdown")

    app = Starlette(
        routes=[Route("/hello", hello)],
        middleware=[Middleware(HostHeaderMiddleware)],
        lifespan=lifespan,
    )
    app.state.events = []

    router = router if router is not None else Router()
    router.mount(app, "/llm")
    app.state.router = router
    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
