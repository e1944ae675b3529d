"""Adapter for Anthropic's Messages API (``POST {base_url}/v1/messages``).

Clients speak OpenAI Chat Completions; this adapter translates each request into
a Messages request and the answer (JSON or server-sent events) back into
OpenAI's shape, as the events arrive.

Requests
--------
* ``system`` and ``developer`` messages, wherever they appear, become the
  top-level ``system``: one text stays a string, several become text blocks in
  their original order.
* ``user`` and ``assistant`` text and multi-part content become content blocks;
  ``image_url`` parts become ``image`` blocks (``data:`` URLs as a ``base64``
  source with its media type, ``http(s)`` URLs as a ``url`` source; ``detail``
  has no Anthropic equivalent and is ignored); ``file`` parts with ``file_data``
  (a base64 ``data:`` URL, e.g. a PDF) become ``document`` blocks. Other part
  types (``input_audio``, ``file_id`` references, ...) are refused (see below).
* assistant ``tool_calls`` become ``tool_use`` blocks (``arguments``, a JSON
  string, is checked to be an object and sent as the ``input`` object without
  being re-encoded); ``tool`` messages become ``tool_result`` blocks of a user
  message. Consecutive messages of one role (several tool results, a tool
  result followed by a user message, ...) are merged into one message, since
  Anthropic requires roles to alternate. Messages with no content at all are
  left out. A message's ``name`` has no Anthropic equivalent and is ignored.
* ``tools[].function`` become ``{name, description, input_schema}``;
  ``tool_choice`` ``auto``/``none``/``required``/a named function become
  ``auto``/``none``/``any``/``tool``; ``parallel_tool_calls: false`` becomes
  ``disable_parallel_tool_use``.
* ``max_completion_tokens`` (else ``max_tokens``; else the provider's
  ``default_max_tokens``, capped by the catalogue's ``max_output``, since
  Anthropic requires one), ``temperature``, ``top_p``, ``stop`` (as
  ``stop_sequences``) and ``user`` (as ``metadata.user_id``) are translated;
  Anthropic's own ``top_k`` and ``thinking`` are forwarded as sent.

Every other request field is one Anthropic cannot honour. Fields set to
OpenAI's no-op default (``n: 1``, ``logprobs: false``, ``top_logprobs: 0``,
``presence_penalty: 0``, ``frequency_penalty: 0``, ``logit_bias: {}``,
``response_format: {"type": "text"}``, ``store: false``, ``service_tier:
"auto"``, or ``null`` for any of these and ``seed``) are accepted and not sent.
Any other value of those, and any other field (``seed``, ``response_format``
``json_object``/``json_schema``, ``reasoning_effort``, ``modalities``,
``audio``, ``prediction``, ``metadata``, ``functions``, unknown vendor
fields, ...), is refused with :class:`UnsupportedParameter` (a
:class:`~clawrouter.errors.BadRequest`, 400, naming the parameter; ``fallback``,
so the execute stage may try the next model of the chain), unless the
provider's ``drop_params`` is true, in which case it is dropped. Content
Anthropic cannot take (audio, ``file_id`` references, non-HTTP image URLs, a
legacy ``function`` message, non-function tools) is refused the same way,
whatever ``drop_params`` says; requests that cannot be translated at all (a
``tool`` message without ``tool_call_id``, tool call ``arguments`` that are not
a JSON object, a malformed ``tool_choice``) raise :class:`InvalidForAnthropic`
(400, final).

Responses
---------
``text`` blocks become ``content``, ``tool_use`` blocks ``tool_calls`` (their
``input`` object, as received, is the ``arguments`` string); ``thinking``,
``redacted_thinking`` and server-tool blocks are not shown. Stop reasons:
``end_turn``/``stop_sequence``/``pause_turn`` → ``stop``, ``max_tokens`` and
``model_context_window_exceeded`` → ``length``, ``tool_use`` → ``tool_calls``,
``refusal`` → ``content_filter``. Usage: ``prompt_tokens`` = ``input_tokens`` + cache reads + cache writes, with
``prompt_tokens_details`` ``{"cached_tokens": reads, "cache_creation_tokens":
writes}``; ``completion_tokens`` = ``output_tokens`` (which include thinking).

Streams are translated event by event: ``message_start`` gives the first chunk
(``delta.role = "assistant"``), text deltas give content chunks, a ``tool_use``
block start gives the tool call's ``index``/``id``/``function.name`` and its
``input_json_delta`` fragments the ``arguments``; ``message_delta`` gives the
``finish_reason`` chunk and the final usage; an ``error`` event raises the
mapped :class:`~clawrouter.providers.base.ProviderError`; a stream that ends
before the message did raises :class:`UpstreamUnavailable`.

Errors: 429 → :class:`UpstreamRateLimited` (``retry-after``, else the reset
time of the exhausted ``anthropic-ratelimit-*`` limit), 529/5xx/404 →
:class:`UpstreamServerError`, 401/402/403 → :class:`UpstreamAuthError`, 408/504
→ :class:`UpstreamTimeout`, 400 "prompt is too long" (and 413) →
:class:`ContextWindowExceeded`, other 4xx → :class:`UpstreamBadRequest`. The
key never appears in messages or reprs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from ..upstream import UpstreamResponse, UpstreamTransport, header_float, iter_sse_data
from ..wire import ChatMessage, ContentPart, Usage, encode
from .base import (
    ChatCall,
    Completion,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProviderError,
    UnsupportedParameter,
    UntranslatableRequest,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .http import HTTPProvider, HTTPSettings

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicProvider",
    "AnthropicSettings",
    "InvalidForAnthropic",
    "UnsupportedParameter",
    "map_error",
]

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicSettings(HTTPSettings, kw_only=True, forbid_unknown_fields=True):
    """``[providers.NAME]`` with ``kind = "anthropic"``.

    ``base_url`` may end in ``/v1`` or not; ``api_key`` (or the variable named by
    ``api_key_env``) is sent as ``x-api-key`` and never shown; ``headers`` are
    added to every request (e.g. ``anthropic-beta``; they may override
    ``anthropic-version``); ``drop_params`` drops parameters Anthropic cannot
    honour instead of refusing them; ``default_max_tokens`` is sent when the
    client gave no limit (capped by the model's ``max_output``); ``prewarm``
    opens a pooled connection at start.
    """

    kind: str = "anthropic"
    base_url: str = "https://api.anthropic.com"
    api_key_env: str = "ANTHROPIC_API_KEY"
    drop_params: bool = False
    default_max_tokens: int = 4096


#: requests this adapter cannot express at all (400, final)
InvalidForAnthropic = UntranslatableRequest


# --- request body (encoded only) ----------------------------------------------------------------


class _Text(Struct, tag="text"):
    text: str


class _Base64Source(Struct, tag="base64"):
    media_type: str
    data: str


class _URLSource(Struct, tag="url"):
    url: str


class _Image(Struct, tag="image"):
    source: _Base64Source | _URLSource


class _Document(Struct, tag="document", omit_defaults=True):
    source: _Base64Source | _URLSource
    title: str | UnsetType = UNSET


class _ToolUse(Struct, tag="tool_use"):
    id: str
    name: str
    input: Raw


class _ToolResult(Struct, tag="tool_result", omit_defaults=True):
    tool_use_id: str
    content: str | list[_Text | _Image | _Document | _ToolUse | _ToolResult] | UnsetType = UNSET


_Block = _Text | _Image | _Document | _ToolUse | _ToolResult


class _Message(Struct):
    role: str
    content: str | list[_Block]


class _Tool(Struct, omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    input_schema: dict[str, Any] = {}


class _ToolChoice(Struct, omit_defaults=True):
    type: str
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class _Metadata(Struct):
    user_id: str


class _Request(Struct, omit_defaults=True):
    model: str
    messages: list[_Message]
    max_tokens: int
    system: str | list[_Text] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: Raw | UnsetType = UNSET
    metadata: _Metadata | UnsetType = UNSET
    tools: list[_Tool] | UnsetType = UNSET
    tool_choice: _ToolChoice | UnsetType = UNSET
    thinking: Raw | UnsetType = UNSET
    stream: bool = False


# --- response bodies and stream events (decoded only) -------------------------------------------

_EMPTY_OBJECT = Raw(b"{}")


class _AUsage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _ABlock(Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: Raw = _EMPTY_OBJECT


class _AMessage(Struct):
    id: str = ""
    model: str = ""
    content: list[_ABlock] = []
    stop_reason: str | None = None
    usage: _AUsage | None = None


class _ADelta(Struct):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _AErrorDetail(Struct):
    type: str = ""
    message: str = ""


class _AError(Struct):
    error: _AErrorDetail | str | None = None


class _AEvent(Struct):
    type: str
    index: int = 0
    message: _AMessage | None = None
    content_block: _ABlock | None = None
    delta: _ADelta | None = None
    usage: _AUsage | None = None
    error: _AErrorDetail | None = None


# --- the OpenAI answer (encoded only; unlike wire.ToolCall, tool calls always carry "type") -----


class _OutFunction(Struct):
    name: str
    arguments: str


class _OutToolCall(Struct):
    id: str
    type: str
    function: _OutFunction


class _OutMessage(Struct):
    role: str
    content: str | None
    tool_calls: list[_OutToolCall] | UnsetType = UNSET  # UNSET is never encoded


class _OutChoice(Struct):
    index: int
    message: _OutMessage
    finish_reason: str
    logprobs: None = None


class _OutCompletion(Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_OutChoice]
    usage: Usage | None


_message_decoder = msgspec.json.Decoder(_AMessage)
_event_decoder = msgspec.json.Decoder(_AEvent)
_error_decoder = msgspec.json.Decoder(_AError)
_object_decoder = msgspec.json.Decoder(dict[str, Raw])
_any_decoder = msgspec.json.Decoder()

# --- translation tables -------------------------------------------------------------------------

# request fields translated (or, for stream/stream_options, decided by the adapter)
_TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "user",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
    }
)
# OpenAI fields Anthropic lacks, with the values that change nothing (accepted, not sent)
_NO_OP: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "seed": (None,),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "store": (None, False),
    "service_tier": (None, "auto", "default"),
}
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
# Anthropic error types, for `error` stream events (which carry no HTTP status)
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_CONTEXT_HINTS = ("prompt is too long", "exceed context limit", "context window", "context length")
_POLICY_HINTS = ("content filtering", "usage policy", "content policy")
_RATE_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")

# pre-encoded fragments of OpenAI chunks (a chunk is prefix + one of these)
_TAIL = b',"logprobs":null,"finish_reason":null}]}'
_ROLE = b'{"index":0,"delta":{"role":"assistant","content":""}' + _TAIL
_CONTENT_OPEN = b'{"index":0,"delta":{"content":'
_CONTENT_CLOSE = b"}" + _TAIL
_TOOL_OPEN = b'{"index":0,"delta":{"tool_calls":[{"index":'
_TOOL_ARGS_CLOSE = b"}}]}" + _TAIL
_TOOL_START_CLOSE = b',"arguments":""}}]}' + _TAIL
_FINISH_CHUNK = {
    reason: b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}'
    for reason in ("stop", "length", "tool_calls", "content_filter")
}
_USAGE_OPEN = b'],"usage":'


def _chunk_prefix(ident: str, created: int, model: str) -> bytes:
    return b"".join(
        (
            b'{"id":',
            encode(ident),
            b',"object":"chat.completion.chunk","created":',
            str(created).encode(),
            b',"model":',
            encode(model),
            b',"choices":[',
        )
    )


def _usage(u: _AUsage) -> Usage:
    cached = u.cache_read_input_tokens or 0
    written = u.cache_creation_input_tokens or 0
    prompt = (u.input_tokens or 0) + cached + written
    completion = u.output_tokens or 0
    return Usage(
        prompt,
        completion,
        prompt + completion,
        prompt_tokens_details={"cached_tokens": cached, "cache_creation_tokens": written},
    )


# --- errors -------------------------------------------------------------------------------------


def _retry_after(headers: Mapping[str, str], exhausted: list[str]) -> float | None:
    seconds = header_float(headers, "retry-after")
    if seconds is not None or not exhausted:
        return seconds
    now = time.time()
    waits: list[float] = []
    for limit in exhausted:
        reset = headers.get(f"anthropic-ratelimit-{limit}-reset")
        if reset:
            try:
                waits.append(datetime.fromisoformat(reset).timestamp() - now)
            except ValueError:
                continue
    return max(0.0, max(waits)) if waits else None


def map_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, *, secret: str = ""
) -> ProviderError:
    """An Anthropic error response as a :class:`ProviderError` (never includes credentials)."""
    kind, message = "", ""
    try:
        error = _error_decoder.decode(body).error
        if isinstance(error, str):
            message = error
        elif error is not None:
            kind, message = error.type, error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = body[:200].decode("utf-8", "replace")
    return _classify(provider, status, headers, kind, message, secret)


def _classify(
    provider: str, status: int, headers: Mapping[str, str], kind: str, message: str, secret: str
) -> ProviderError:
    if secret and secret in message:
        message = message.replace(secret, "***")
    detail = f"{kind}: {message}" if kind and message else (kind or message)
    text = f"{provider}: upstream answered {status}" + (f": {detail}" if detail else "")
    code = kind or None
    if status == 429 or kind == "rate_limit_error":
        exhausted = [n for n in _RATE_LIMITS if headers.get(f"anthropic-ratelimit-{n}-remaining") == "0"]
        if exhausted:
            text += f" (exhausted: {', '.join(exhausted)})"
        return UpstreamRateLimited(text, retry_after=_retry_after(headers, exhausted), code=code)
    if status in (401, 402, 403):
        what = "refused the configured credentials" if status != 402 else "refused the account (billing)"
        return UpstreamAuthError(f"{provider}: upstream {what} ({status}{' ' + kind if kind else ''})", code=code)
    if status in (408, 504):
        return UpstreamTimeout(text, code=code)
    if status >= 500 or status in (404, 409):
        return UpstreamServerError(text, code=code)
    lowered = message.lower()
    if status == 413 or any(hint in lowered for hint in _CONTEXT_HINTS):
        return ContextWindowExceeded(text, code="context_length_exceeded" if status != 413 else code)
    if any(hint in lowered for hint in _POLICY_HINTS):
        return ContentPolicyViolation(text, code="content_policy_violation")
    return UpstreamBadRequest(text, code=code)


# --- the adapter --------------------------------------------------------------------------------


class AnthropicProvider(HTTPProvider):
    """Anthropic Messages API adapter (see the module docstring for the translation)."""

    def __init__(
        self,
        name: str,
        settings: AnthropicSettings | None = None,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.settings = settings = settings or AnthropicSettings()
        super().__init__(
            name, settings, transport, auth=("x-api-key", "{key}"), headers={"anthropic-version": ANTHROPIC_VERSION}
        )
        base = settings.base_url.rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    # --- request ---

    def _body(self, call: ChatCall, stream: bool) -> bytes:
        request = call.request
        raw = call.raw
        top_k: Raw | UnsetType = UNSET
        thinking: Raw | UnsetType = UNSET
        parallel = True
        extra = raw.keys() - _TRANSLATED
        if extra:
            unsupported: list[str] = []
            for key in raw:  # in the client's order, for the error message
                if key in _TRANSLATED:
                    continue
                if key == "top_k":
                    top_k = raw[key]
                elif key == "thinking":
                    thinking = raw[key]
                elif key == "parallel_tool_calls":
                    value = _any_decoder.decode(raw[key])
                    if value is not None and not isinstance(value, bool):
                        raise InvalidForAnthropic("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
                    parallel = value is not False
                elif key not in _NO_OP or _any_decoder.decode(raw[key]) not in _NO_OP[key]:
                    unsupported.append(key)
            if unsupported and not self.settings.drop_params:
                names = ", ".join(f"'{k}'" for k in unsupported)
                plural = "s" if len(unsupported) > 1 else ""
                raise UnsupportedParameter(
                    f"parameter{plural} {names} {'are' if plural else 'is'} not supported by Anthropic models"
                    f" ({call.model.id}); remove {'them' if plural else 'it'}, or set"
                    f" providers.{self.name}.drop_params = true to drop unsupported parameters",
                    code="unsupported_parameter",
                    param=unsupported[0],
                )

        system, messages = _messages(request.messages)
        cap = request.output_cap()
        if cap is None:
            cap = min(self.settings.default_max_tokens, call.model.max_output)
        body = _Request(model=call.model.upstream, messages=messages, max_tokens=cap, system=system, stream=stream)
        if request.temperature is not None:
            body.temperature = request.temperature
        if request.top_p is not None:
            body.top_p = request.top_p
        stop = request.stop
        if isinstance(stop, str):
            body.stop_sequences = [stop]
        elif stop:
            body.stop_sequences = stop
        if request.user:
            body.metadata = _Metadata(request.user)
        body.top_k = top_k
        body.thinking = thinking
        if request.tools:
            body.tools = _tools(request.tools)
            body.tool_choice = _tool_choice(request.tool_choice, parallel)
        elif request.tool_choice is not None and request.tool_choice is not UNSET:
            body.tool_choice = _tool_choice(request.tool_choice, True)
        return encode(body)

    async def _post(self, call: ChatCall, body: bytes) -> UpstreamResponse:
        response = await self.transport.post(self._url, call.headers(self._headers), body, self.settings.timeouts)
        headers = response.headers
        if response.status >= 400:
            raw = await response.read()
            raise map_error(self.name, response.status, headers, raw, secret=self._key)
        remaining = header_float(headers, "anthropic-ratelimit-requests-remaining")
        if remaining is not None:
            limit = header_float(headers, "anthropic-ratelimit-requests-limit")
            if limit is not None:
                call.ratelimit = (remaining, limit)
        return response

    # --- answers ---

    async def chat(self, call: ChatCall) -> Completion:
        response = await self._post(call, self._body(call, stream=False))
        data = await response.read()
        try:
            message = _message_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UpstreamServerError(f"{self.name}: upstream sent a malformed message: {exc}") from None
        texts: list[str] = []
        tool_calls: list[_OutToolCall] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                arguments = bytes(block.input).decode()
                tool_calls.append(_OutToolCall(block.id, "function", _OutFunction(block.name, arguments)))
        if texts:
            content: str | None = texts[0] if len(texts) == 1 else "".join(texts)
        else:
            content = None if tool_calls else ""
        usage = _usage(message.usage) if message.usage is not None else None
        call.usage = usage
        finish = _FINISH.get(message.stop_reason or "", "stop")
        answer = _OutCompletion(
            message.id,
            "chat.completion",
            int(time.time()),
            message.model or call.model.upstream,
            [_OutChoice(0, _OutMessage("assistant", content, tool_calls or UNSET), finish)],
            usage,
        )
        return Completion(encode(answer), usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        body = self._body(call, stream=True)
        options = call.request.stream_options
        include_usage = bool(options and options.include_usage is True)
        response = await self._post(call, body)
        created = int(time.time())
        prefix = _chunk_prefix("", created, call.model.upstream)
        totals = _AUsage()
        tools: dict[int, bytes] = {}  # Anthropic block index -> the tool call's pre-encoded chunk opening
        pending: dict[int, str] = {}  # tool blocks whose input came whole in content_block_start
        finished = stopped = False
        chunks = response.iter_chunks()
        events = iter_sse_data(chunks)
        try:
            async for data in events:
                try:
                    event = _event_decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise UpstreamServerError(f"{self.name}: upstream sent a malformed stream event: {exc}") from None
                kind = event.type
                if kind == "content_block_delta":
                    delta = event.delta
                    if delta is None:
                        continue
                    if delta.type == "text_delta":
                        if delta.text:
                            yield b"".join((prefix, _CONTENT_OPEN, encode(delta.text), _CONTENT_CLOSE))
                    elif delta.type == "input_json_delta":
                        opening = tools.get(event.index)
                        if opening is not None and delta.partial_json:
                            if pending:
                                pending.pop(event.index, None)
                            yield b"".join((prefix, opening, encode(delta.partial_json), _TOOL_ARGS_CLOSE))
                    # thinking_delta, signature_delta, citations_delta: not shown
                elif kind == "content_block_start":
                    block = event.content_block
                    if block is None:
                        continue
                    if block.type == "tool_use":
                        number = str(len(tools)).encode()
                        tools[event.index] = _TOOL_OPEN + number + b',"function":{"arguments":'
                        start = b"".join(
                            (
                                _TOOL_OPEN,
                                number,
                                b',"id":',
                                encode(block.id),
                                b',"type":"function","function":{"name":',
                                encode(block.name),
                                _TOOL_START_CLOSE,
                            )
                        )
                        yield prefix + start
                        if bytes(block.input).strip() not in (b"{}", b""):
                            pending[event.index] = bytes(block.input).decode()
                    elif block.type == "text" and block.text:
                        yield b"".join((prefix, _CONTENT_OPEN, encode(block.text), _CONTENT_CLOSE))
                elif kind == "content_block_stop":
                    if pending and event.index in pending:
                        arguments = pending.pop(event.index)
                        yield b"".join((prefix, tools[event.index], encode(arguments), _TOOL_ARGS_CLOSE))
                elif kind == "message_start":
                    message = event.message
                    if message is not None:
                        prefix = _chunk_prefix(message.id, created, message.model or call.model.upstream)
                        if message.usage is not None:
                            totals = message.usage
                            call.usage = _usage(totals)
                    yield prefix + _ROLE
                elif kind == "message_delta":
                    if event.usage is not None:
                        update = event.usage
                        for field in _AUsage.__struct_fields__:
                            value = getattr(update, field)
                            if value is not None:
                                setattr(totals, field, value)
                        call.usage = _usage(totals)
                    delta = event.delta
                    if delta is not None and delta.stop_reason is not None and not finished:
                        finished = True
                        yield prefix + _FINISH_CHUNK[_FINISH.get(delta.stop_reason, "stop")]
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    error = event.error or _AErrorDetail()
                    status = _ERROR_STATUS.get(error.type, 500)
                    raise _classify(self.name, status, response.headers, error.type, error.message, self._key)
                # ping and event types added later: nothing to show
        finally:
            await events.aclose()
            await chunks.aclose()
            await response.aclose()
        if not finished:
            if not stopped:
                raise UpstreamUnavailable(f"{self.name}: upstream stream ended before the message was complete")
            yield prefix + _FINISH_CHUNK["stop"]
        if call.usage is None:
            call.usage = _usage(totals)
        if include_usage:
            yield b"".join((prefix, _USAGE_OPEN, encode(call.usage), b"}"))


# --- request translation helpers ----------------------------------------------------------------


def _messages(messages: list[ChatMessage]) -> tuple[str | list[_Text] | UnsetType, list[_Message]]:
    system: list[_Text] = []
    out: list[_Message] = []
    role = ""
    blocks: list[_Block] = []
    for i, message in enumerate(messages):
        kind = message.role
        new: list[_Block]
        if kind == "user":
            new, target = _parts(message.content, i, user=True), "user"
        elif kind == "assistant":
            new, target = _assistant(message, i), "assistant"
        elif kind == "tool":
            new, target = [_tool_result(message, i)], "user"
        elif kind in ("system", "developer"):
            system.extend(_system(message.content, i))
            continue
        else:
            raise UnsupportedParameter(
                f"messages[{i}]: role {kind!r} (legacy function calling) is not supported by Anthropic models;"
                " use tools and tool messages",
                param=f"messages[{i}].role",
            )
        if not new:
            continue
        if target == role:
            blocks.extend(new)
        else:
            if blocks:
                out.append(_message(role, blocks))
            role, blocks = target, new
    if blocks:
        out.append(_message(role, blocks))
    if not system:
        return UNSET, out
    return (system[0].text if len(system) == 1 else system), out


def _message(role: str, blocks: list[_Block]) -> _Message:
    if len(blocks) == 1:
        only = blocks[0]
        if type(only) is _Text:
            return _Message(role, only.text)
    return _Message(role, blocks)


def _system(content: str | list[ContentPart] | None, i: int) -> list[_Text]:
    if isinstance(content, str):
        return [_Text(content)] if content else []
    blocks: list[_Text] = []
    for j, part in enumerate(content or ()):
        if part.type != "text":
            raise UnsupportedParameter(
                f"messages[{i}].content[{j}]: a system message can only hold text, not {part.type!r}",
                param=f"messages[{i}].content",
            )
        if part.text:
            blocks.append(_Text(part.text))
    return blocks


def _parts(content: str | list[ContentPart] | None, i: int, *, user: bool) -> list[_Block]:
    if isinstance(content, str):
        return [_Text(content)] if content else []
    blocks: list[_Block] = []
    for j, part in enumerate(content or ()):
        kind = part.type
        if kind == "text":
            if part.text:
                blocks.append(_Text(part.text))
        elif kind == "image_url" and user and part.image_url is not UNSET:
            blocks.append(_Image(_source(part.image_url.url, f"messages[{i}].content[{j}].image_url.url")))
        elif kind == "file" and user and part.file is not UNSET:
            blocks.append(_document(part.file, f"messages[{i}].content[{j}].file"))
        elif kind == "refusal" and not user:
            continue  # an earlier refusal has no Anthropic block; its text is not part of the conversation
        else:
            raise UnsupportedParameter(
                f"messages[{i}].content[{j}]: content of type {kind!r} is not supported in"
                f" {'user' if user else 'assistant'} messages by Anthropic models",
                param=f"messages[{i}].content",
            )
    return blocks


def _source(url: str, where: str) -> _Base64Source | _URLSource:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise UnsupportedParameter(f"{where}: only base64 data: URLs can be sent to Anthropic", param=where)
        return _Base64Source(header[:-7].split(";", 1)[0], data)
    if url.startswith(("https://", "http://")):
        return _URLSource(url)
    raise UnsupportedParameter(f"{where}: expected an http(s) or base64 data: URL", param=where)


def _document(file: dict[str, Any], where: str) -> _Document:
    data = file.get("file_data")
    if not isinstance(data, str):
        raise UnsupportedParameter(
            f"{where}: only inline file_data (a base64 data: URL) can be sent to Anthropic", param=where
        )
    filename = file.get("filename")
    return _Document(_source(data, where + ".file_data"), filename if isinstance(filename, str) else UNSET)


def _assistant(message: ChatMessage, i: int) -> list[_Block]:
    blocks = _parts(message.content, i, user=False)
    if message.tool_calls:
        for j, call in enumerate(message.tool_calls):
            where = f"messages[{i}].tool_calls[{j}]"
            function = call.function
            if call.id is UNSET or function is UNSET or not isinstance(function.name, str):
                raise InvalidForAnthropic(f"{where}: a tool call needs an id and a function name", param=where)
            arguments = function.arguments if isinstance(function.arguments, str) else ""
            if not arguments.strip():
                tool_input = _EMPTY_OBJECT
            else:
                try:
                    _object_decoder.decode(arguments)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    raise InvalidForAnthropic(
                        f"{where}.function.arguments: Anthropic needs a JSON object",
                        param=f"{where}.function.arguments",
                    ) from None
                tool_input = Raw(arguments)
            blocks.append(_ToolUse(call.id, function.name, tool_input))
    return blocks


def _tool_result(message: ChatMessage, i: int) -> _ToolResult:
    if not message.tool_call_id:
        raise InvalidForAnthropic(
            f"messages[{i}]: a tool message needs a tool_call_id", param=f"messages[{i}].tool_call_id"
        )
    content = message.content
    if isinstance(content, str):
        return _ToolResult(message.tool_call_id, content if content else UNSET)
    blocks = _parts(content, i, user=True)
    return _ToolResult(message.tool_call_id, blocks if blocks else UNSET)


def _tools(tools: list[dict[str, Any]]) -> list[_Tool]:
    out: list[_Tool] = []
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise UnsupportedParameter(
                f"tools[{i}]: only function tools can be sent to Anthropic, not {tool.get('type')!r}",
                param=f"tools[{i}]",
            )
        name = function.get("name")
        if not isinstance(name, str):
            raise InvalidForAnthropic(f"tools[{i}].function.name is required", param=f"tools[{i}].function.name")
        description = function.get("description")
        schema = function.get("parameters")
        out.append(
            _Tool(
                name,
                description if isinstance(description, str) else UNSET,
                schema if isinstance(schema, dict) else _EMPTY_SCHEMA,
            )
        )
    return out


def _tool_choice(choice: str | dict[str, Any] | UnsetType | None, parallel: bool) -> _ToolChoice | UnsetType:
    disable: bool | UnsetType = UNSET if parallel else True
    if choice is None or choice is UNSET:
        return UNSET if parallel else _ToolChoice("auto", disable_parallel_tool_use=True)
    if isinstance(choice, str):
        kind = _TOOL_CHOICE.get(choice)
        if kind is None:
            raise InvalidForAnthropic(
                f"tool_choice {choice!r} is not one of 'auto', 'none', 'required'", param="tool_choice"
            )
        return _ToolChoice(kind, disable_parallel_tool_use=UNSET if kind == "none" else disable)
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidForAnthropic("tool_choice must name a function: {'type': 'function', 'function': {'name': ...}}")
    return _ToolChoice("tool", name, disable)
