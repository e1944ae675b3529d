"""Adapter for upstreams that speak OpenAI Chat Completions (OpenAI, and any
compatible server).

The request body is re-encoded from the client's raw fields with ``model``
replaced by the catalogue's upstream name, so fields the router does not know
reach the upstream untouched. Responses are forwarded as the upstream sent them;
only the generated text and ``usage`` are read. An upstream that reports no
usage gets it counted (:mod:`clawrouter.tokens`), so every answer carries usage.

``kind`` selects a preset (:data:`PRESETS`: base URL, key variable, quirks) for
OpenAI, DeepSeek, xAI, Groq, Together, Fireworks, Mistral, OpenRouter, Moonshot,
Qwen (DashScope compatible mode), Perplexity, and local servers (Ollama, vLLM,
llama.cpp); any preset value can be overridden in the provider's settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import msgspec
from msgspec import Raw

from ..tokens import count_tokens, prompt_tokens
from ..upstream import UpstreamResponse, UpstreamTransport, header_float, iter_sse_batches
from ..wire import ChatCompletionChunk, Usage, decode_usage, encode
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
from .http import HTTPProvider, HTTPSettings

__all__ = ["PRESETS", "OpenAICompatibleProvider", "OpenAISettings", "Preset"]

_TRUE = Raw(b"true")
_INCLUDE_USAGE = Raw(b'{"include_usage":true}')


class Preset(msgspec.Struct, frozen=True):
    """What differs between OpenAI-compatible upstreams."""

    base_url: str
    api_key_env: str = ""
    #: the upstream accepts ``stream_options`` (else it is never sent; usage is counted if absent)
    stream_options: bool = True
    headers: dict[str, str] = {}


#: ``kind = "<name>"`` in ``[providers.X]`` selects one; every field can be overridden.
PRESETS: dict[str, Preset] = {
    "openai": Preset("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "deepseek": Preset("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "xai": Preset("https://api.x.ai/v1", "XAI_API_KEY"),
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "fireworks": Preset("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    # Mistral refuses unknown fields, stream_options among them, and reports usage in streams by itself.
    "mistral": Preset("https://api.mistral.ai/v1", "MISTRAL_API_KEY", stream_options=False),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "moonshot": Preset("https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
    "qwen": Preset("https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY"),
    "perplexity": Preset("https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    "ollama": Preset("http://127.0.0.1:11434/v1"),
    "vllm": Preset("http://127.0.0.1:8000/v1"),
    "llamacpp": Preset("http://127.0.0.1:8080/v1"),
}


class OpenAISettings(HTTPSettings, kw_only=True, forbid_unknown_fields=True):
    """``[providers.NAME]`` for ``kind`` = any key of :data:`PRESETS`; empty values take the preset's."""

    kind: str = "openai"
    stream_options: bool | None = None

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.kind, PRESETS["openai"])
        self.base_url = self.base_url or preset.base_url
        self.api_key_env = self.api_key_env or preset.api_key_env
        self.headers = {**preset.headers, **self.headers}
        if self.stream_options is None:
            self.stream_options = preset.stream_options


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
        pass
    if not message:
        message = body[:300].decode("utf-8", "replace").strip()
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


class _FunctionDelta(msgspec.Struct):
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Delta | None = None


class _Chunk(msgspec.Struct):
    """What the adapter reads of a chunk or a body: generated text (to count tokens
    when the upstream reports no usage) and usage. The rest is skipped."""

    choices: list[_Choice] = []
    usage: Usage | None = None

    def text(self) -> str:
        parts: list[str] = []
        for choice in self.choices:
            delta = choice.delta or choice.message
            if delta is None:
                continue
            parts.extend(t for t in (delta.content, delta.reasoning_content) if t)
            for call in delta.tool_calls or ():
                if call.function is not None and call.function.arguments:
                    parts.append(call.function.arguments)
        return "".join(parts)


_chunk_decoder = msgspec.json.Decoder(_Chunk)


def _counted(call: ChatCall, generated: str) -> Usage:
    prompt, completion = prompt_tokens(call.request), count_tokens(generated)
    return Usage(prompt, completion, prompt + completion)


class OpenAICompatibleProvider(HTTPProvider):
    def __init__(
        self,
        name: str,
        settings: OpenAISettings | None = None,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.settings = settings = settings or OpenAISettings()
        super().__init__(name, settings, transport, auth=("authorization", "Bearer {key}"))
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._openai = settings.base_url.startswith("https://api.openai.com/")

    async def _post(self, body: dict[str, Raw], call: ChatCall) -> UpstreamResponse:
        headers = call.headers(self._headers)
        response = await self.transport.post(self._url, headers, encode(body), self.settings.timeouts)
        remaining = response.headers.get("x-ratelimit-remaining-requests")
        if remaining is not None:  # OpenAI, Groq, Together...: feeds routing's rate-limit headroom
            limit = header_float(response.headers, "x-ratelimit-limit-requests")
            left = header_float(response.headers, "x-ratelimit-remaining-requests")
            if limit and left is not None:
                call.ratelimit = (left, limit)
        if response.status >= 400:
            raw = await response.read()
            raise self.scrub(map_error(self.name, response.status, response.headers, raw))
        return response

    def _body(self, call: ChatCall) -> dict[str, Raw]:
        body = dict(call.raw)
        body["model"] = Raw(encode(call.model.upstream))
        if self._openai and "max_tokens" in body and "max_completion_tokens" not in body:
            # OpenAI's current models refuse the deprecated max_tokens
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body

    async def chat(self, call: ChatCall) -> Completion:
        body = self._body(call)
        body.pop("stream", None)
        body.pop("stream_options", None)
        response = await self._post(body, call)
        data = await response.read()
        usage = decode_usage(data)
        if usage is None:  # count it, and tell the client
            try:
                usage = _counted(call, _chunk_decoder.decode(data).text())
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise UpstreamServerError(f"{self.name}: upstream answered with a malformed body") from None
            stripped = data.rstrip()
            if stripped.endswith(b"}"):
                data = stripped[:-1] + b',"usage":' + encode(usage) + b"}"
        call.usage = usage
        return Completion(data, usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        """Yields the chunks of each upstream read together (see :class:`Provider`)."""
        body = self._body(call)
        body["stream"] = _TRUE
        options = call.request.stream_options
        client_wants_usage = bool(options and options.include_usage is True)
        if not self.settings.stream_options:
            body.pop("stream_options", None)
        elif not client_wants_usage:
            body["stream_options"] = _INCLUDE_USAGE
        response = await self._post(body, call)
        seen: list[bytes] = []  # kept to count tokens if the upstream never reports usage
        done = False
        chunks = response.iter_chunks()
        events = iter_sse_batches(chunks, json=True)
        try:
            async for batch in events:
                out: list[bytes] = []
                for data in batch:
                    if data == b"[DONE]":
                        done = True
                        break
                    if data[:1] != b"{" or data[-1:] != b"}":
                        _decode_chunk(self.name, data)  # raises unless it is JSON after all
                    if b'"usage"' in data:
                        chunk = _decode_chunk(self.name, data)
                        if chunk.usage is not None:
                            call.usage = chunk.usage
                            if not client_wants_usage and not chunk.choices:
                                continue  # a usage-only chunk the client did not ask for
                    elif call.usage is None:
                        seen.append(data)
                    out.append(data)
                if out:
                    yield out
                if done:
                    break
        finally:
            await events.aclose()
            await chunks.aclose()
            await response.aclose()
        if call.usage is None:  # the upstream reported none: count it
            generated = "".join(_decode_chunk(self.name, data).text() for data in seen)
            call.usage = _counted(call, generated)
            if client_wants_usage:
                yield [encode(ChatCompletionChunk("", 0, call.model.upstream, [], usage=call.usage))]


def _decode_chunk(provider: str, data: bytes) -> _Chunk:
    try:
        return _chunk_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamServerError(f"{provider}: upstream sent a malformed stream event") from None
