"""What every adapter that calls its upstream over HTTP shares.

One pooled :class:`~clawrouter.upstream.UpstreamTransport` per provider,
opened at start with a pre-warmed connection (a background HEAD request, so
start-up never waits on the network) and closed at stop; request headers with
the credentials built once; credentials scrubbed from error messages and never
shown by ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from ..upstream import UpstreamTransport, default_transport
from .base import ProviderError

__all__ = ["HTTPProvider"]


class HTTPProvider:
    def __init__(
        self,
        name: str,
        transport: UpstreamTransport | None,
        *,
        base_url: str,
        key: str,
        auth: tuple[str, str] | None,
        headers: Mapping[str, str],
        prewarm: bool,
    ) -> None:
        """``auth`` is ``(header, template)``, e.g. ``("authorization", "Bearer {key}")``;
        ``headers`` (defaults first, then the operator's) are sent with every request."""
        self.name = name
        self.transport = transport or default_transport()
        self.base_url = base_url
        self._key = key
        self._headers = {"content-type": "application/json", **headers}
        if key and auth is not None:
            self._headers[auth[0]] = auth[1].format(key=key)
        self._prewarm_enabled = prewarm
        self._prewarm: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        await self.transport.start()
        if self._prewarm_enabled and self._prewarm is None:
            self._prewarm = asyncio.get_running_loop().create_task(self.transport.prewarm(self.base_url))

    async def aclose(self) -> None:
        if self._prewarm is not None:
            self._prewarm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prewarm
            self._prewarm = None
        await self.transport.aclose()

    def scrub(self, error: ProviderError) -> ProviderError:
        """``error`` with the credentials removed from its message."""
        if self._key and self._key in error.message:
            error.message = error.message.replace(self._key, "***")
            error.args = (error.message,)
        return error
