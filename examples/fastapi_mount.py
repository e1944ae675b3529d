"""Mount clawrouter inside an existing FastAPI app, under ``/llm``.

The host app keeps its own routes, its own middleware and its own lifespan.
``router.mount(app, "/llm")`` adds the router under ``/llm`` and chains the
router's start-up and shut-down around the host's lifespan, so the router is
ready before the first request and closed after the host's shut-down code ran.

Run it (uvicorn on http://127.0.0.1:8000)::

    python examples/fastapi_mount.py

    curl http://127.0.0.1:8000/hello                    # the host's own route
    curl http://127.0.0.1:8000/llm/v1/models            # the router
    curl http://127.0.0.1:8000/llm/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from clawrouter import Router

#: The header the host's middleware adds to every response (the router's too).
HEADER = "x-host-app"


def create_app(router: Router | None = None) -> FastAPI:
    """The host app, with ``router`` (default: ``Router()``) mounted under ``/llm``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The host's own start-up and shut-down; what it yields is request.state.
        app.state.events.append("startup")
        yield {"greeting": "hello from the host app"}
        app.state.events.append("shutdown")

    app = FastAPI(title="host app", lifespan=lifespan)
    app.state.events = []

    @app.middleware("http")
    async def add_host_header(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers[HEADER] = "fastapi"
        return response

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, Any]:
        return {"message": request.state.greeting, "events": list(request.app.state.events)}

    router = router if router is not None else Router()
    router.mount(app, "/llm")
    app.state.router = router
    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
