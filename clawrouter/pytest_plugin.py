"""pytest fixtures for plugin authors (loaded automatically when clawrouter is installed).

* ``clawrouter_router(config=None, plugins=(), entry_points=False, env=None)``:
  a factory building isolated :class:`~clawrouter.Router` objects (installed
  entry points are not loaded unless asked; ``env`` defaults to empty, so the
  machine's ``CLAWROUTER_*`` variables do not leak in).
* ``clawrouter_client(router)``: an async factory returning an
  ``httpx.AsyncClient`` that talks to the router in process, with the router
  started; client and router are closed after the test.

Example::

    async def test_my_provider(clawrouter_router, clawrouter_client):
        router = clawrouter_router({"providers": {"acme": {"kind": "acme"}}}, plugins=[my_plugin])
        client = await clawrouter_client(router)
        response = await client.post("/v1/chat/completions", json={...})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from .router import Router


@pytest.fixture
def clawrouter_router() -> Callable[..., Router]:
    from .config import Config, load_config
    from .router import Router

    def factory(
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        plugins: Iterable[object] = (),
        entry_points: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Router:
        env = {} if env is None else env
        if isinstance(config, Mapping):
            config = load_config(data=config, env=env)
        router = Router(config, plugins=plugins, entry_points=entry_points, env=env)
        return router

    return factory


@pytest.fixture
async def clawrouter_client() -> AsyncIterator[Callable[[Router], Awaitable[httpx.AsyncClient]]]:
    import httpx

    opened: list[tuple[Router, httpx.AsyncClient]] = []

    async def factory(router: Router) -> httpx.AsyncClient:
        await router.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://clawrouter.test")
        opened.append((router, client))
        return client

    yield factory
    for router, client in opened:
        await client.aclose()
        await router.stop()
