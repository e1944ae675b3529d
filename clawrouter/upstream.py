"""HTTP transports to upstream providers.

Adapters talk to upstreams through :class:`UpstreamTransport`, a deliberately
small interface with two implementations:

* :class:`AiohttpTransport` (default): aiohttp's client. Measured on the 2-core
  reference machine it costs about 300 µs CPU per proxied request, against about
  490 µs for httpx driven at the transport level and about 1,300 µs for
  ``httpx.AsyncClient`` with its default transport (``benchmarks/transports.py``).
* :class:`HttpxTransport`: wraps any ``httpx.AsyncBaseTransport``, so an adapter
  can be tested with ``httpx.MockTransport(handler)`` and run where aiohttp is not
  installed.

Both map network failures into :mod:`clawrouter.providers.base` errors:
timeouts to :class:`UpstreamTimeout`, connection failures to
:class:`UpstreamUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .providers.base import UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    import aiohttp
    import httpx

log = logging.getLogger("clawrouter.upstream")
PREWARM_TIMEOUT = 3.0

__all__ = [
    "AiohttpTransport",
    "HttpxTransport",
    "Timeouts",
    "UpstreamResponse",
    "UpstreamTransport",
    "default_transport",
    "iter_sse_batches",
    "iter_sse_data",
]


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds: to connect, to the first byte of the response (and between reads), in total."""

    connect: float = 5.0
    first_byte: float = 60.0
    total: float = 600.0


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncGenerator[bytes, None]: ...

    async def aclose(self) -> None: ...


class UpstreamTransport(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def prewarm(self, url: str) -> None:
        """Open a pooled connection to ``url``'s host (a HEAD request; errors ignored)."""
        ...

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts) -> UpstreamResponse:
        """Send a POST and return once the response headers arrived (body unread)."""
        ...


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out while sending the response") from exc
        except Exception as exc:
            raise UpstreamUnavailable(f"upstream connection failed: {type(exc).__name__}") from exc
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream stalled while streaming") from exc
        except Exception as exc:
            raise UpstreamUnavailable(f"upstream stream broke: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport:
    """aiohttp-backed transport with one pooled session per transport."""

    def __init__(self, *, limit: int = 256) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._client_error: type[Exception] = Exception

    async def start(self) -> None:
        if self._session is None:
            import aiohttp

            self._client_error = aiohttp.ClientError
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def prewarm(self, url: str) -> None:
        import aiohttp

        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.head(url, timeout=aiohttp.ClientTimeout(total=PREWARM_TIMEOUT)) as response:
                await response.read()
        except Exception as exc:
            log.debug("prewarm of %s failed: %s", url, exc)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts) -> UpstreamResponse:
        if self._session is None:
            await self.start()
        assert self._session is not None
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            import aiohttp

            timeout = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte
            )
        try:
            response = await self._session.post(url, data=body, headers=headers, timeout=timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from exc
        except self._client_error as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}") from exc
        return _AiohttpResponse(response)


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        import httpx

        try:
            return await self._response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("upstream timed out while sending the response") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream connection failed: {type(exc).__name__}") from exc
        finally:
            await self._response.aclose()

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        import httpx

        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("upstream stalled while streaming") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream stream broke: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """Transport over any ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(transport=self._transport)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def prewarm(self, url: str) -> None:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            await self._client.head(url, timeout=PREWARM_TIMEOUT)
        except Exception as exc:
            log.debug("prewarm of %s failed: %s", url, exc)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts) -> UpstreamResponse:
        import httpx

        if self._client is None:
            await self.start()
        assert self._client is not None
        timeout = httpx.Timeout(timeouts.total, connect=timeouts.connect, read=timeouts.first_byte)
        request = self._client.build_request("POST", url, content=body, headers=dict(headers), timeout=timeout)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}") from exc
        return _HttpxResponse(response)


def default_transport() -> UpstreamTransport:
    """aiohttp when it is installed, else httpx."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:  # pragma: no cover - aiohttp is a core dependency
        return HttpxTransport()
    return AiohttpTransport()


async def iter_sse_batches(chunks: AsyncIterator[bytes], *, json: bool = False) -> AsyncGenerator[list[bytes], None]:
    """The ``data:`` payloads of a server-sent event stream, as one list per read.

    Events that arrived together stay together, so a gateway can relay them in
    one write. Handles events split across reads, ``\r\n`` line ends, comments
    and multi-line data. ``[DONE]`` is passed through as ``b"[DONE]"``. With
    ``json``, a last event left unterminated by the end of the stream must be
    whole JSON, else the stream was cut: :class:`UpstreamUnavailable`.
    """
    pending = b""
    async for chunk in chunks:  # (the caller closes ``chunks``)
        buffer = pending + chunk if pending else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        pending = events.pop()
        batch: list[bytes] = []
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:
                batch.append(event[6:])  # the usual one-line event
            else:
                data = _event_data(event)
                if data is not None:
                    batch.append(data)
        if batch:
            yield batch
    if pending.strip():
        # the stream ended without closing its last event: pass it on only if it is whole
        data = _event_data(pending.rstrip(b"\r\n"))
        if data is not None:
            if json and data != b"[DONE]":
                try:
                    msgspec.json.decode(data)
                except msgspec.DecodeError:
                    raise UpstreamUnavailable("upstream stream ended in the middle of an event") from None
            yield [data]


async def iter_sse_data(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The ``data:`` payloads of a server-sent event stream, one per event."""
    async with contextlib.aclosing(iter_sse_batches(chunks)) as batches:
        async for batch in batches:
            for data in batch:
                yield data


def _event_data(event: bytes) -> bytes | None:
    lines: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


def header_float(headers: Mapping[str, str], name: str) -> float | None:
    value: Any = headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
