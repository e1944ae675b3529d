"""Adapter for Ollama's native chat API, ``POST {base_url}/api/chat``.

Clients speak OpenAI Chat Completions; this adapter translates each request into
an Ollama chat request, and the answer (one JSON object, or newline-delimited
JSON objects when streaming) back into OpenAI's shape as it arrives. Ollama's
OpenAI-compatible endpoint (``/v1``) is served by clawrouter's built-in
``kind = "ollama"``; this adapter exists for what only the native API offers
(``keep_alive``, ``num_ctx`` per model, JSON-schema ``format``) and as a worked
example of a provider plugin.

Requests
--------
* ``system`` and ``developer`` messages become ``system`` messages; ``user``,
  ``assistant`` and ``tool`` keep their role. Text parts of a multi-part
  content are joined with newlines; ``image_url`` parts holding a base64
  ``data:`` URL go to the message's ``images`` (Ollama takes no image URLs, so
  ``http(s)`` URLs are refused, as are other part types such as
  ``input_audio`` and ``file``). A message's ``name`` is ignored.
* ``tools`` (``type: "function"``) are sent as they came (Ollama uses OpenAI's
  tool format). Assistant ``tool_calls`` are sent with their ``arguments``
  (a JSON string for OpenAI) as the JSON object Ollama expects; a ``tool``
  message gets the ``tool_name`` of the call it answers. ``tool_choice``
  ``auto`` sends the tools, ``none`` leaves them out; ``required`` and a named
  function cannot be honoured and are refused.
* ``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``,
  ``frequency_penalty`` and ``max_completion_tokens`` (else ``max_tokens``,
  as ``num_predict``) go to ``options``, with the model's ``num_ctx`` when the
  provider's settings give one. ``response_format`` ``json_object`` becomes
  ``format: "json"`` and ``json_schema`` the schema itself.
* Fields Ollama has no counterpart for are accepted at OpenAI's no-op value
  (``n: 1``, ``logprobs: false``, ``top_logprobs: 0``, ``logit_bias: {}``,
  ``modalities: ["text"]``, ``null``) and refused with a 400 naming the
  parameter otherwise (also ``audio``, ``prediction`` and the legacy
  ``functions``/``function_call``). Any other field (``user``, ``metadata``,
  ``parallel_tool_calls``, ...) is ignored.

Responses
---------
``message.content`` becomes ``content``, ``message.thinking`` becomes
``reasoning_content``, ``message.tool_calls`` become ``tool_calls`` (with ids
made up here, since Ollama gives none, and the ``arguments`` object as a JSON
string). ``done_reason`` ``length`` gives ``finish_reason: "length"``, tool
calls give ``"tool_calls"``, anything else ``"stop"``. Usage is
``prompt_eval_count`` / ``eval_count``.

A stream is translated line by line: the first chunk carries
``delta.role = "assistant"``, each line's text a content chunk, the line with
``done: true`` the ``finish_reason`` chunk and the usage (``call.usage``; and a
usage-only chunk when the client asked for ``stream_options.include_usage``).
A ``{"error": ...}`` line raises :class:`UpstreamServerError`.

Errors
------
``{"error": "..."}`` bodies are mapped by status: 404 (model not pulled) and
5xx to :class:`UpstreamServerError` (the router may fall back to another model),
400 to :class:`UpstreamBadRequest`, 401/403 (an authenticating proxy in front)
to :class:`UpstreamAuthError`, 429 to :class:`UpstreamRateLimited`, 408/504 to
:class:`UpstreamTimeout`. Connection failures and timeouts are mapped by the
transport (:class:`UpstreamUnavailable`, :class:`UpstreamTimeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from clawrouter.catalogue import CAPABILITIES
from clawrouter.config import ConfigError
from clawrouter.errors import BadRequest
from clawrouter.providers import (
    ChatCall,
    Completion,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from clawrouter.upstream import Timeouts, UpstreamResponse, UpstreamTransport, default_transport, header_float
from clawrouter.wire import ChatMessage, ContentPart, ToolCall, Usage

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KIND",
    "OllamaModel",
    "OllamaProvider",
    "OllamaSettings",
    "iter_lines",
    "load_settings",
    "map_error",
]

#: ``kind`` of the ``[providers.NAME]`` entries this plugin answers
KIND = "ollama-native"
#: the context window the catalogue assumes for a model without ``num_ctx``
DEFAULT_CONTEXT_WINDOW = 4096
#: the catalogue's ``max_output``, capped by the context window
DEFAULT_MAX_OUTPUT = 4096

Positive = Annotated[int, msgspec.Meta(gt=0)]


# --- settings --------------------------------------------------------------------------------


class OllamaModel(Struct, kw_only=True, forbid_unknown_fields=True):
    """One entry of ``models``: a name as Ollama knows it (``"qwen2.5:7b"``), or a table."""

    name: str
    #: catalogue capabilities (default: the provider's ``capabilities``)
    capabilities: list[str] | None = None
    #: sent as ``options.num_ctx`` and used as the catalogue's context window
    num_ctx: Positive | None = None


class OllamaSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.NAME]`` with ``kind = "ollama-native"``."""

    kind: str = KIND
    base_url: str = "http://127.0.0.1:11434"
    #: extra request headers (e.g. for a proxy in front of Ollama)
    headers: dict[str, str] = {}
    #: environment variable holding a bearer token (Ollama itself needs none)
    api_key_env: str = ""
    timeouts: Timeouts = Timeouts()
    #: how long Ollama keeps the model loaded after a request: a duration ("5m", "1h30m") or seconds (-1: forever)
    keep_alive: str | int | float | None = None
    #: open a pooled connection when the router starts
    prewarm: bool = True
    models: list[str | OllamaModel] = []
    #: defaults for the models listed as plain names
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["streaming"])
    num_ctx: Positive | None = None

    def resolved_models(self) -> list[OllamaModel]:
        """``models`` as tables, with the provider's defaults filled in."""
        out: list[OllamaModel] = []
        for entry in self.models:
            model = OllamaModel(name=entry) if isinstance(entry, str) else entry
            out.append(
                OllamaModel(
                    name=model.name,
                    capabilities=list(model.capabilities if model.capabilities is not None else self.capabilities),
                    num_ctx=model.num_ctx or self.num_ctx,
                )
            )
        return out

    def key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
# Go's time.ParseDuration syntax, which Ollama uses for keep_alive strings
_DURATION = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))*$|^0$")


def load_settings(name: str, data: Mapping[str, Any]) -> OllamaSettings:
    """Validate ``[providers.NAME]``; a :class:`ConfigError` names the offending key."""
    prefix = f"providers.{name}"
    try:
        settings = msgspec.convert(dict(data), OllamaSettings)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None
        key = prefix + (match["path"] or "")
        unknown = _UNKNOWN.match(match["msg"])
        if unknown:
            raise ConfigError(f"config key '{key}.{unknown['field']}': unknown key") from None
        raise ConfigError(f"config key '{key}': {match['msg'].replace('`', '')}") from None
    if not settings.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"config key '{prefix}.base_url': expected an http:// or https:// URL")
    if isinstance(settings.keep_alive, str) and not _DURATION.match(settings.keep_alive):
        raise ConfigError(
            f'config key \'{prefix}.keep_alive\': expected a duration such as "5m" or "1h30m", or a number of seconds'
        )
    _check_capabilities(f"{prefix}.capabilities", settings.capabilities)
    seen: set[str] = set()
    for index, entry in enumerate(settings.models):
        model = entry if isinstance(entry, OllamaModel) else OllamaModel(name=entry)
        key = f"{prefix}.models[{index}]"
        if not model.name.strip():
            raise ConfigError(f"config key '{key}': the model name is empty")
        if model.name in seen:
            raise ConfigError(f"config key '{key}': model {model.name!r} is listed twice")
        seen.add(model.name)
        if model.capabilities is not None:
            _check_capabilities(f"{key}.capabilities", model.capabilities)
    return settings


def _check_capabilities(key: str, capabilities: list[str]) -> None:
    unknown = sorted(set(capabilities) - CAPABILITIES)
    if unknown:
        raise ConfigError(f"config key '{key}': unknown {unknown}; expected some of {sorted(CAPABILITIES)}")


_EMPTY_OBJECT = Raw(b"{}")


# --- Ollama's wire format -----------------------------------------------------------------------


class _Function(Struct):
    name: str
    arguments: Raw  # a JSON object


class _ToolCall(Struct):
    function: _Function


class _Message(Struct):
    role: str
    content: str
    images: list[str] | UnsetType = UNSET
    tool_calls: list[_ToolCall] | UnsetType = UNSET
    tool_name: str | UnsetType = UNSET


class _Request(Struct):
    model: str
    messages: list[_Message]
    stream: bool  # always sent: Ollama streams unless told otherwise
    options: dict[str, Any] | UnsetType = UNSET
    tools: Raw | UnsetType = UNSET
    format: Raw | UnsetType = UNSET
    keep_alive: str | int | float | UnsetType = UNSET


class _InFunction(Struct):
    name: str = ""
    arguments: Raw = _EMPTY_OBJECT  # a JSON object, kept as received


class _InToolCall(Struct):
    function: _InFunction | None = None


class _InMessage(Struct):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[_InToolCall] | None = None


class _Response(Struct):
    """One answer, or one line of a stream (the last with ``done: true`` and the counts)."""

    message: _InMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: str | None = None


class _ErrorBody(Struct):
    error: str | None = None


# --- OpenAI's wire format (answers) ---------------------------------------------------------------------


class _OutFunction(Struct):
    name: str
    arguments: str


class _OutToolCall(Struct, kw_only=True):
    index: int | UnsetType = UNSET  # in stream deltas only
    id: str
    type: str = "function"
    function: _OutFunction


class _OutMessage(Struct, kw_only=True):
    role: str = "assistant"
    content: str | None
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[_OutToolCall] | UnsetType = UNSET


class _OutChoice(Struct, kw_only=True):
    index: int = 0
    message: _OutMessage
    finish_reason: str
    logprobs: None = None


class _OutCompletion(Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[_OutChoice]
    usage: Usage


class _OutDelta(Struct, kw_only=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[_OutToolCall] | UnsetType = UNSET


class _OutChunkChoice(Struct, kw_only=True):
    index: int = 0
    delta: _OutDelta
    finish_reason: str | None = None
    logprobs: None = None


class _OutChunk(Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[_OutChunkChoice]
    usage: Usage | UnsetType = UNSET


_encode = msgspec.json.Encoder().encode
_response_decoder = msgspec.json.Decoder(_Response)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_object_decoder = msgspec.json.Decoder(dict[str, Raw])
_any_decoder = msgspec.json.Decoder()
_FINISH = {"stop": "stop", "length": "length"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


# --- ids -------------------------------------------------------------------------------------


def _reseed() -> None:
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(4).hex()
    _COUNTER = itertools.count(1)


_PREFIX = ""
_COUNTER = itertools.count(1)
_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def _next_id(prefix: str) -> str:
    return f"{prefix}{_PREFIX}{next(_COUNTER):x}"


# --- request translation -------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: request fields Ollama cannot honour: accepted only at OpenAI's no-op value
_NO_OP: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v is None or (v == 1 and not isinstance(v, bool)),
    "logprobs": lambda v: v is None or v is False,
    "top_logprobs": lambda v: v is None or (v == 0 and not isinstance(v, bool)),
    "logit_bias": lambda v: v is None or v == {},
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "functions": lambda v: v is None,
    "function_call": lambda v: v is None,
}


def _raw_value(raw: Mapping[str, Raw], name: str) -> Any:
    value = raw.get(name)
    return None if value is None else _any_decoder.decode(value)


def _content(content: str | list[ContentPart] | None, index: int) -> tuple[str, list[str]]:
    """A message's text, and the base64 payloads of its images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        if part.type == "text":
            texts.append(part.text if isinstance(part.text, str) else "")
        elif part.type == "image_url":
            url = part.image_url.url if not isinstance(part.image_url, UnsetType) else ""
            header, comma, data = url.partition(",")
            if not (header.startswith("data:") and header.endswith(";base64") and comma and data):
                raise BadRequest(
                    "Ollama takes images inline only: send a base64 data: URL (data:image/png;base64,...)",
                    param=f"{where}.image_url.url",
                )
            images.append(data)
        else:
            raise BadRequest(f"content parts of type {part.type!r} are not supported by Ollama", param=f"{where}.type")
    return "\n".join(texts), images


def _messages(messages: list[ChatMessage]) -> list[_Message]:
    out: list[_Message] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the tool messages answering them
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise BadRequest(
                f"messages of role {message.role!r} are not supported; use tools", param=f"messages[{i}].role"
            )
        text, images = _content(message.content, i)
        item = _Message(role, text, images=images or UNSET)
        if role == "assistant" and not isinstance(message.tool_calls, UnsetType) and message.tool_calls:
            item.tool_calls = [_tool_call_in(i, k, call, names) for k, call in enumerate(message.tool_calls)]
        elif role == "tool" and isinstance(message.tool_call_id, str) and message.tool_call_id in names:
            item.tool_name = names[message.tool_call_id]
        out.append(item)
    return out


def _tool_call_in(i: int, k: int, call: ToolCall, names: dict[str, str]) -> _ToolCall:
    where = f"messages[{i}].tool_calls[{k}].function"
    function = call.function
    if isinstance(function, UnsetType) or not isinstance(function.name, str) or not function.name:
        raise BadRequest("a tool call needs a function name", param=f"{where}.name")
    arguments = function.arguments if isinstance(function.arguments, str) else ""
    if not arguments.strip():
        raw = _EMPTY_OBJECT
    else:
        try:
            _object_decoder.decode(arguments)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise BadRequest("arguments must be a JSON object (as a string)", param=f"{where}.arguments") from None
        raw = Raw(arguments.encode())
    if isinstance(call.id, str):
        names[call.id] = function.name
    return _ToolCall(_Function(function.name, raw))


def _tools(call: ChatCall) -> Raw | UnsetType:
    request = call.request
    if not request.tools:
        return UNSET
    for i, tool in enumerate(request.tools):
        function = tool.get("function")
        named = isinstance(function, dict) and isinstance(function.get("name"), str)
        if tool.get("type") != "function" or not named:
            raise BadRequest("only tools of type 'function' with a name are supported", param=f"tools[{i}]")
    choice = request.tool_choice
    if choice is None or isinstance(choice, UnsetType) or choice == "auto":
        return call.raw["tools"]  # Ollama takes OpenAI's tool format: forwarded as sent
    if choice == "none":
        return UNSET
    raise BadRequest(
        "Ollama cannot be made to call a tool: use tool_choice 'auto' or 'none'",
        param="tool_choice",
        code="unsupported_value",
    )


def _format(call: ChatCall) -> Raw | UnsetType:
    response_format = call.request.response_format
    if response_format is None or isinstance(response_format, UnsetType):
        return UNSET
    kind = response_format.get("type")
    if kind == "text":
        return UNSET
    if kind == "json_object":
        return Raw(b'"json"')
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return Raw(_encode(schema))
        raise BadRequest("json_schema needs a 'schema' object", param="response_format.json_schema.schema")
    raise BadRequest(f"response_format of type {kind!r} is not supported", param="response_format")


def _options(call: ChatCall, num_ctx: int | None) -> dict[str, Any]:
    request, raw = call.request, call.raw
    options: dict[str, Any] = {}
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    cap = request.output_cap()
    if cap is not None:
        options["num_predict"] = cap
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if _is_number(value):
            options[name] = value
    seed = _raw_value(raw, "seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise BadRequest("seed must be an integer", param="seed")
        options["seed"] = seed
    for name in ("presence_penalty", "frequency_penalty"):
        value = _raw_value(raw, name)
        if value is not None:
            if not _is_number(value):
                raise BadRequest(f"{name} must be a number", param=name)
            options[name] = value
    stop = request.stop
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list) and stop:
        options["stop"] = stop
    return options


def build_request(call: ChatCall, *, stream: bool, num_ctx: int | None = None, keep_alive: Any = None) -> bytes:
    """The ``/api/chat`` body for ``call`` (raises :class:`BadRequest` naming the parameter)."""
    raw = call.raw
    for name, is_no_op in _NO_OP.items():
        if name in raw and not is_no_op(_raw_value(raw, name)):
            raise BadRequest(f"{name} is not supported by Ollama", param=name, code="unsupported_parameter")
    options = _options(call, num_ctx)
    body = _Request(
        model=call.model.upstream,
        messages=_messages(call.request.messages),
        stream=stream,
        options=options or UNSET,
        tools=_tools(call),
        format=_format(call),
        keep_alive=UNSET if keep_alive is None else keep_alive,
    )
    return _encode(body)


# --- answers -------------------------------------------------------------------------------------


def _arguments(raw: Raw) -> str:
    """OpenAI's ``arguments`` (a JSON string) from Ollama's (a JSON object)."""
    data = bytes(raw).strip()
    if not data or data == b"null":
        return "{}"
    if data[:1] == b'"':  # already a string (not what Ollama documents): its text
        text = _any_decoder.decode(data)
        return text if isinstance(text, str) else "{}"
    return data.decode()


def _tool_calls_out(calls: list[_InToolCall] | None, start: int, *, indexed: bool) -> list[_OutToolCall]:
    out: list[_OutToolCall] = []
    for offset, call in enumerate(calls or ()):
        function = call.function or _InFunction()
        out.append(
            _OutToolCall(
                index=start + offset if indexed else UNSET,
                id=_next_id("call_"),
                function=_OutFunction(function.name, _arguments(function.arguments)),
            )
        )
    return out


def _usage(item: _Response) -> Usage:
    return Usage(item.prompt_eval_count, item.eval_count, item.prompt_eval_count + item.eval_count)


def _decode(provider: str, data: bytes) -> _Response:
    try:
        return _response_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamServerError(f"{provider}: Ollama answered with a malformed body") from None


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a newline-delimited stream, however its reads split them."""
    pending = b""
    async for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            line = line.strip()
            if line:
                yield line
    pending = pending.strip()
    if pending:
        yield pending


def map_error(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """An Ollama error response (``{"error": "..."}``) as a :class:`ProviderError`."""
    message = ""
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        message = _error_decoder.decode(body).error or ""
    if not message:
        message = body[:300].decode("utf-8", "replace").strip()
    text = f"{provider}: Ollama answered {status}" + (f": {message}" if message else "")
    if status == 404:  # the model is not pulled on this server: another model may serve the request
        return UpstreamServerError(text, code="model_not_found")
    if status == 429:
        return UpstreamRateLimited(text, retry_after=header_float(headers, "retry-after"))
    if status in (401, 403):
        return UpstreamAuthError(f"{provider}: Ollama (or a proxy in front of it) refused the request ({status})")
    if status in (408, 504):
        return UpstreamTimeout(text)
    if status >= 500:
        return UpstreamServerError(text)
    return UpstreamBadRequest(text)


# --- the adapter -----------------------------------------------------------------------------------


class OllamaProvider:
    """A :class:`clawrouter.providers.Provider` for one Ollama server."""

    def __init__(
        self,
        name: str,
        settings: OllamaSettings | None = None,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or OllamaSettings()
        self.transport = transport or default_transport()
        self._base = self.settings.base_url.rstrip("/")
        self._url = self._base + "/api/chat"
        headers = {"content-type": "application/json", **self.settings.headers}
        self._key = self.settings.key()
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        self._headers = headers
        self._num_ctx = {m.name: m.num_ctx for m in self.settings.resolved_models() if m.num_ctx}
        self._prewarm: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OllamaProvider(name={self.name!r}, base_url={self.settings.base_url!r})"

    async def start(self) -> None:
        await self.transport.start()
        if self.settings.prewarm and self._prewarm is None:
            # in the background: start-up never waits on the network
            self._prewarm = asyncio.get_running_loop().create_task(self.transport.prewarm(self._base + "/"))

    async def aclose(self) -> None:
        if self._prewarm is not None:
            self._prewarm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prewarm
            self._prewarm = None
        await self.transport.aclose()

    def _body(self, call: ChatCall, *, stream: bool) -> bytes:
        upstream = call.model.upstream
        num_ctx = self._num_ctx.get(upstream, self.settings.num_ctx)
        return build_request(call, stream=stream, num_ctx=num_ctx, keep_alive=self.settings.keep_alive)

    async def _post(self, body: bytes, call: ChatCall) -> UpstreamResponse:
        response = await self.transport.post(self._url, call.headers(self._headers), body, self.settings.timeouts)
        if response.status >= 400:
            raw = await response.read()
            error = map_error(self.name, response.status, response.headers, raw)
            if self._key and self._key in error.message:
                error.message = error.message.replace(self._key, "***")
                error.args = (error.message,)
            raise error
        return response

    async def chat(self, call: ChatCall) -> Completion:
        response = await self._post(self._body(call, stream=False), call)
        item = _decode(self.name, await response.read())
        if item.error:
            raise UpstreamServerError(f"{self.name}: Ollama failed: {item.error}")
        message = item.message or _InMessage()
        tool_calls = _tool_calls_out(message.tool_calls, 0, indexed=False)
        content = message.content or ""
        usage = _usage(item)
        body = _OutCompletion(
            id=_next_id("chatcmpl-"),
            created=int(time.time()),
            model=call.model.upstream,
            choices=[
                _OutChoice(
                    message=_OutMessage(
                        content=content if content or not tool_calls else None,
                        reasoning_content=message.thinking or UNSET,
                        tool_calls=tool_calls or UNSET,
                    ),
                    finish_reason="tool_calls" if tool_calls else _FINISH.get(item.done_reason or "", "stop"),
                )
            ],
            usage=usage,
        )
        call.usage = usage
        return Completion(_encode(body), usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        options = call.request.stream_options
        wants_usage = bool(options and options.include_usage is True)
        response = await self._post(self._body(call, stream=True), call)
        ident, created, model = _next_id("chatcmpl-"), int(time.time()), call.model.upstream
        role: str | UnsetType = "assistant"  # sent with the first chunk only
        tools = 0
        last: _Response | None = None
        try:
            async for line in iter_lines(response.iter_chunks()):
                item = _decode(self.name, line)
                if item.error:
                    raise UpstreamServerError(f"{self.name}: Ollama failed mid-stream: {item.error}")
                message = item.message or _InMessage()
                calls = _tool_calls_out(message.tool_calls, tools, indexed=True)
                tools += len(calls)
                if message.content or message.thinking or calls or not isinstance(role, UnsetType):
                    delta = _OutDelta(
                        role=role,
                        content=message.content or ("" if not isinstance(role, UnsetType) else UNSET),
                        reasoning_content=message.thinking or UNSET,
                        tool_calls=calls or UNSET,
                    )
                    role = UNSET
                    chunk = _OutChunk(id=ident, created=created, model=model, choices=[_OutChunkChoice(delta=delta)])
                    yield _encode(chunk)
                if item.done:
                    last = item
                    break
        finally:
            await response.aclose()
        if last is None:
            raise UpstreamServerError(f"{self.name}: Ollama's stream ended before its last line")
        call.usage = _usage(last)
        finish = "tool_calls" if tools else _FINISH.get(last.done_reason or "", "stop")
        choice = _OutChunkChoice(delta=_OutDelta(), finish_reason=finish)
        yield _encode(_OutChunk(id=ident, created=created, model=model, choices=[choice]))
        if wants_usage:
            yield _encode(_OutChunk(id=ident, created=created, model=model, choices=[], usage=call.usage))
