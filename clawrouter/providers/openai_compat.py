"""Adapter for upstreams that speak OpenAI Chat Completions (OpenAI, and any
compatible server).

The request body is re-encoded from the client's raw fields with ``model``
replaced by the catalogue's upstream name, so fields the router does not know
reach the upstream untouched. Responses are forwarded as the upstream sent them;
only ``usage`` is read.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

import msgspec
from msgspec import Raw

from ..upstream import Timeouts, UpstreamResponse, UpstreamTransport, default_transport, header_float, iter_sse_data
from ..wire import decode_usage, decode_usage_chunk, encode
from .base import (
    ChatCall,
    Completion,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)

__all__ = ["OpenAICompatibleProvider", "OpenAISettings"]

_TRUE = Raw(b"true")
_INCLUDE_USAGE = Raw(b'{"include_usage":true}')


class OpenAISettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: str = ""
    api_key_env: str = ""
    headers: dict[str, str] = {}
    timeouts: Timeouts = Timeouts()

    def key(self) -> str:
        return self.api_key or (os.environ.get(self.api_key_env, "") if self.api_key_env else "")


class _UpstreamErrorBody(msgspec.Struct):
    class Detail(msgspec.Struct):
        message: str = ""
        code: str | int | None = None
        type: str | None = None

    error: Detail | str | None = None


_error_decoder = msgspec.json.Decoder(_UpstreamErrorBody)


def map_error(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """An upstream error response as a :class:`ProviderError` (never includes credentials)."""
    message, code = "", ""
    try:
        error = _error_decoder.decode(body).error
        if isinstance(error, str):
            message = error
        elif error is not None:
            message, code = error.message, str(error.code or error.type or "")
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = body[:200].decode("utf-8", "replace")
    text = f"{provider}: upstream answered {status}" + (f": {message}" if message else "")
    if status == 429:
        return UpstreamRateLimited(text, retry_after=header_float(headers, "retry-after"))
    if status in (401, 403):
        return UpstreamAuthError(f"{provider}: upstream refused the configured credentials ({status})")
    if status in (408, 504):
        return UpstreamTimeout(text)
    if status >= 500 or status == 404:
        return UpstreamServerError(text)
    lowered = f"{code} {message}".lower()
    if "context_length" in lowered or "maximum context" in lowered:
        return ContextWindowExceeded(text, code="context_length_exceeded")
    if "content_filter" in lowered or "content_policy" in lowered:
        return ContentPolicyViolation(text, code="content_policy_violation")
    return UpstreamBadRequest(text, code=code or None)


class OpenAICompatibleProvider:
    def __init__(
        self,
        name: str,
        settings: OpenAISettings | None = None,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or OpenAISettings()
        self.transport = transport or default_transport()
        self._url = self.settings.base_url.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json", **self.settings.headers}
        key = self.settings.key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleProvider(name={self.name!r}, base_url={self.settings.base_url!r})"

    async def start(self) -> None:
        await self.transport.start()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _post(self, body: dict[str, Raw]) -> UpstreamResponse:
        response = await self.transport.post(self._url, self._headers, encode(body), self.settings.timeouts)
        if response.status >= 400:
            raw = await response.read()
            raise map_error(self.name, response.status, response.headers, raw)
        return response

    async def chat(self, call: ChatCall) -> Completion:
        body = dict(call.raw)
        body["model"] = Raw(encode(call.model.upstream))
        body.pop("stream", None)
        body.pop("stream_options", None)
        response = await self._post(body)
        data = await response.read()
        usage = decode_usage(data)
        call.usage = usage
        return Completion(data, usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        body = dict(call.raw)
        body["model"] = Raw(encode(call.model.upstream))
        body["stream"] = _TRUE
        options = call.request.stream_options
        client_wants_usage = bool(options and options.include_usage is True)
        if not client_wants_usage:
            body["stream_options"] = _INCLUDE_USAGE
        response = await self._post(body)
        try:
            async for data in iter_sse_data(response.iter_chunks()):
                if data == b"[DONE]":
                    break
                if b'"usage"' in data:
                    usage, has_choices = decode_usage_chunk(data)
                    if usage is not None:
                        call.usage = usage
                        if not client_wants_usage and not has_choices:
                            continue  # a usage-only chunk the client did not ask for
                yield data
        finally:
            await response.aclose()
