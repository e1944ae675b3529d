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
import os
from collections.abc import Mapping

import msgspec

from ..upstream import Timeouts, UpstreamTransport, default_transport
from .base import ProviderError

__all__ = ["HTTPProvider", "HTTPSettings"]


class HTTPSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings every HTTP provider kind has; kinds subclass it with their own defaults and fields.

    ``api_key`` (or the variable named by ``api_key_env``) is sent as the kind's
    credential header and never shown; ``headers`` are added to every request;
    ``prewarm`` opens a pooled connection at start (in the background).
    """

    kind: str = ""
    base_url: str = ""
    api_key: str = ""
    api_key_env: str = ""
    headers: dict[str, str] = {}
    timeouts: Timeouts = Timeouts()
    prewarm: bool = True

    def key(self) -> str:
        return self.api_key or (os.environ.get(self.api_key_env, "") if self.api_key_env else "")

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(kind={self.kind!r}, base_url={self.base_url!r})"


class HTTPProvider:
    def __init__(
        self,
        name: str,
        settings: HTTPSettings,
        transport: UpstreamTransport | None,
        *,
        auth: tuple[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``auth`` is ``(header, template)``, e.g. ``("authorization", "Bearer {key}")``;
        ``headers`` are the kind's defaults, which the operator's ``settings.headers`` override."""
        self.name = name
        self.transport = transport or default_transport()
        self.base_url = settings.base_url
        self._key = key = settings.key()
        self._headers = {"content-type": "application/json", **(headers or {}), **settings.headers}
        if key:
            from ..telemetry.logs import register_secret

            self._headers[auth[0]] = auth[1].format(key=key)
            register_secret(key)  # the logs hide it should it ever reach them
        self._prewarm_enabled = settings.prewarm
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
