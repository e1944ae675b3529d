"""Adapter for Google's Gemini API (``models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``), answering in OpenAI's Chat Completions shape.

Settings (``[providers.NAME]`` with ``kind = "gemini"``): ``base_url``
(default ``https://generativelanguage.googleapis.com``), ``api_key`` or
``api_key_env`` (sent as ``x-goog-api-key``, never shown), ``headers``,
``timeouts``, ``drop_params`` (drop parameters Gemini cannot honour instead of
refusing them) and ``openapi_schemas`` (see *Tools* below).

Request translation
-------------------
* ``system``/``developer`` messages -> ``systemInstruction.parts`` (all of them,
  in order, wherever they appear); ``user`` -> ``user`` and ``assistant`` ->
  ``model`` contents; consecutive contents of the same role are merged (Gemini
  wants one turn per role change, e.g. all responses to parallel calls in one).
* Content parts: ``text``; ``image_url`` ``data:`` URLs -> ``inlineData``, other
  URLs -> ``fileData {fileUri, mimeType}`` with the MIME type guessed from the
  path's extension (else ``image/jpeg``; left out for Gemini Files API URIs,
  whose stored files know their type);
  ``input_audio`` -> ``inlineData audio/<format>``; ``file`` with ``file_data``
  -> ``inlineData`` (``file_id`` only when it is a URL). ``image_url.detail`` and
  message ``name`` have no Gemini equivalent and are ignored. Empty text parts
  are left out and a message left without parts is skipped. Any other part
  type is refused (content is never dropped, whatever ``drop_params`` says).
* Assistant ``tool_calls`` -> ``functionCall {name, args}`` parts (arguments
  JSON -> object); ``tool`` messages -> ``functionResponse {name, response:
  {"output": <content>}}`` in a ``user`` turn, the name recovered from the
  earlier tool call with the same id. Thought signatures Gemini attached to a
  function call are handed to the client as
  ``tool_calls[].extra_content.google.thought_signature`` (the convention of
  Google's own OpenAI-compatible endpoint) and sent back when the client
  returns them, which Gemini 3 requires for multi-turn function calling.
* Tools: ``tools[].function`` -> ``functionDeclarations`` with the schema in
  ``parametersJsonSchema`` (full JSON Schema, so OpenAI schemas with
  ``additionalProperties``, ``$ref``, type lists... pass unchanged);
  ``openapi_schemas = true`` sends ``parameters``/``responseSchema`` (Gemini's
  OpenAPI subset) instead. ``function.strict`` is ignored. ``tool_choice``:
  ``auto``/``none``/``required`` -> ``AUTO``/``NONE``/``ANY``, a named function
  -> ``ANY`` + ``allowedFunctionNames``, ``allowed_tools`` -> ``ANY`` +
  ``allowedFunctionNames`` (``required``) or only those declarations (``auto``).
* ``generationConfig``: ``max_completion_tokens``/``max_tokens`` ->
  ``maxOutputTokens``, ``temperature``, ``top_p`` -> ``topP``, ``top_k`` ->
  ``topK``, ``stop`` -> ``stopSequences``, ``n`` -> ``candidateCount``,
  ``seed``, ``presence_penalty``/``frequency_penalty`` (left out when 0),
  ``response_format`` ``json_object`` -> ``responseMimeType:
  application/json``, ``json_schema`` -> that plus ``responseJsonSchema``,
  ``reasoning_effort`` -> ``thinkingConfig`` (``thinkingLevel`` for Gemini 3 and
  later, where ``none`` becomes ``minimal``; ``thinkingBudget`` none 0 /
  minimal 512 / low 1024 / medium 8192 / high 24576 for earlier models).
* Ignored as advisory (no effect on the answer): ``user``, ``metadata``,
  ``store``, ``service_tier``, ``safety_identifier``, ``prompt_cache_key``,
  ``prompt_cache_retention``, ``stream_options`` on a non-streaming request.
* Unsupported, refused with a 400 naming the parameter (dropped instead when
  ``drop_params`` is true): ``logit_bias`` (non-empty), ``logprobs: true``,
  ``top_logprobs`` (non-zero), ``parallel_tool_calls: false`` (Gemini may always
  call several functions), ``modalities`` other than ``["text"]``, ``audio``,
  ``prediction``, ``web_search_options``, legacy ``functions``/``function_call``,
  non-function tools, an unknown ``response_format`` type, and any other field.
  These errors are :class:`UnsupportedParameter` (400, ``fallback``: another
  model of the chain may support the parameter).

Response translation
--------------------
Text parts of ``candidates[i]`` -> ``content`` (parts with ``thought: true`` are
never shown), ``functionCall`` parts -> ``tool_calls`` with ids
``call_<response id>_<n>`` (Gemini has none), ``finishReason`` STOP -> stop,
MAX_TOKENS -> length, SAFETY/RECITATION/BLOCKLIST/PROHIBITED_CONTENT/SPII/
IMAGE_SAFETY... -> content_filter, anything else -> stop, and tool_calls when the
candidate called functions. ``usageMetadata``: prompt_tokens =
promptTokenCount + toolUsePromptTokenCount (``cached_tokens`` =
cachedContentTokenCount), completion_tokens = candidatesTokenCount +
thoughtsTokenCount (``reasoning_tokens`` = thoughtsTokenCount), total =
totalTokenCount. A blocked prompt (``promptFeedback.blockReason``) is a
:class:`ContentPolicyViolation`. Streams are translated event by event as they
arrive; a stream that ends before a candidate finished is an error. Output parts
other than text and function calls (inline images, code execution) are not
translated: this adapter never asks for them.

Errors
------
Google's ``{"error": {"code", "message", "status", "details"}}``: 429 /
RESOURCE_EXHAUSTED -> :class:`UpstreamRateLimited` (``retry-after`` header, else
the ``RetryInfo.retryDelay`` of ``details``); 401/403, UNAUTHENTICATED,
PERMISSION_DENIED and 400 ``API_KEY_INVALID`` -> :class:`UpstreamAuthError`;
504 / DEADLINE_EXCEEDED -> :class:`UpstreamTimeout`; 5xx, 404 and
FAILED_PRECONDITION (e.g. region not supported) -> :class:`UpstreamServerError`;
a 400 about token counts -> :class:`ContextWindowExceeded`; any other 4xx ->
:class:`UpstreamBadRequest`. Error events inside a stream are mapped alike. The
key (and anything shaped like a Google API key) is removed from messages.
"""

from __future__ import annotations

import base64
import itertools
import logging
import mimetypes
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from ..upstream import UpstreamResponse, UpstreamTransport, header_float, iter_sse_data
from ..wire import ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, ImageURL, Usage, encode
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
)
from .http import HTTPProvider, HTTPSettings

__all__ = ["GeminiProvider", "GeminiSettings", "InvalidForGemini", "UnsupportedParameter", "map_error"]

log = logging.getLogger("clawrouter.gemini")


class GeminiSettings(HTTPSettings, kw_only=True, forbid_unknown_fields=True):
    kind: str = "gemini"
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key_env: str = "GEMINI_API_KEY"
    drop_params: bool = False
    openapi_schemas: bool = False


#: requests this adapter cannot express at all (400, final)
InvalidForGemini = UntranslatableRequest


# --- Gemini wire types (requests) -------------------------------------------


class _Blob(Struct):
    mimeType: str
    data: str


class _FileData(Struct, omit_defaults=True):
    fileUri: str
    mimeType: str | UnsetType = UNSET


class _CallOut(Struct):
    name: str
    args: dict[str, Raw]


class _Output(Struct):
    output: str


class _FunctionResponse(Struct):
    name: str
    response: _Output


class _Part(Struct, omit_defaults=True):
    text: str | UnsetType = UNSET
    inlineData: _Blob | UnsetType = UNSET
    fileData: _FileData | UnsetType = UNSET
    functionCall: _CallOut | UnsetType = UNSET
    functionResponse: _FunctionResponse | UnsetType = UNSET
    thoughtSignature: str | UnsetType = UNSET


class _Content(Struct, omit_defaults=True):
    parts: list[_Part]
    role: str | UnsetType = UNSET


# --- Gemini wire types (responses); unknown fields are skipped by the decoder --


class _RCall(Struct):
    name: str = ""
    args: Raw = Raw(b"{}")
    id: str | None = None


class _RPart(Struct):
    text: str | None = None
    thought: bool = False
    thoughtSignature: str | None = None
    functionCall: _RCall | None = None


class _RContent(Struct):
    parts: list[_RPart] = []


class _Candidate(Struct):
    content: _RContent | None = None
    finishReason: str | None = None
    index: int = 0


class _UsageMetadata(Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    totalTokenCount: int = 0
    cachedContentTokenCount: int = 0
    thoughtsTokenCount: int = 0
    toolUsePromptTokenCount: int = 0


class _PromptFeedback(Struct):
    blockReason: str | None = None
    blockReasonMessage: str | None = None


class _ErrorItem(Struct, rename={"type": "@type"}):
    type: str = ""
    reason: Any = None
    retryDelay: Any = None


class _GoogleError(Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_ErrorItem] = []


class _GoogleErrorBody(Struct):
    error: _GoogleError | None = None


class _Response(Struct):
    candidates: list[_Candidate] = []
    promptFeedback: _PromptFeedback | None = None
    usageMetadata: _UsageMetadata | None = None
    modelVersion: str | None = None
    responseId: str | None = None
    error: _GoogleError | None = None  # in-band error event of a stream


# --- thought signatures the client sent back (read only when present) -------


class _SigGoogle(Struct):
    thought_signature: str | None = None


class _SigExtra(Struct):
    google: _SigGoogle | None = None


class _SigToolCall(Struct):
    extra_content: _SigExtra | None = None


class _SigMessage(Struct):
    tool_calls: list[_SigToolCall] | None = None


# --- OpenAI output types ------------------------------------------------------


class _OutFunction(Struct):
    name: str
    arguments: str


class _OutToolCall(Struct, kw_only=True):
    index: int | UnsetType = UNSET
    id: str
    type: str = "function"
    function: _OutFunction
    extra_content: dict[str, Any] | UnsetType = UNSET


class _Message(Struct):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[_OutToolCall] | UnsetType = UNSET
    refusal: None = None


class _Choice(Struct):
    index: int
    message: _Message
    logprobs: None = None
    finish_reason: str = "stop"


class _Completion(Struct):
    id: str
    created: int
    model: str
    choices: list[_Choice]
    usage: Usage
    object: str = "chat.completion"


_response_decoder = msgspec.json.Decoder(_Response)
_error_decoder = msgspec.json.Decoder(_GoogleErrorBody | list[_GoogleErrorBody])
_sig_decoder = msgspec.json.Decoder(list[_SigMessage])
_args_decoder = msgspec.json.Decoder(dict[str, Raw])
_any_decoder = msgspec.json.Decoder()
_minify = msgspec.json.format

_NULL = Raw(b"null")
_EMPTY_ARGS: dict[str, Raw] = {}

_TYPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "stream_options",
    }
)
_ADVISORY = frozenset(
    {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention"}
)
_PENALTIES = {"presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high"})
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
    "mp3": "audio/mp3",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/mov",
    "txt": "text/plain",
}
_AUDIO = {"mp3": "audio/mp3", "wav": "audio/wav"}
_FILES_API = "https://generativelanguage.googleapis.com/v1beta/files/"

_TOKEN_LIMIT = (
    "token count",
    "tokens allowed",
    "maximum number of tokens",
    "too many tokens",
    "context window",
    "context length",
    "input is too long",
)
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")

# pre-encoded fragments of streamed chunks
_OPEN0 = b'{"index":0,"delta":{'
_ROLE = b'"role":"assistant"'
_ROLE_EMPTY = b'"role":"assistant","content":""'
_CLOSE = b'},"logprobs":null,"finish_reason":null}'
_TAIL = b"]}"
_TAIL_USAGE = b'],"usage":null}'
_FINISH_CLOSE = {
    reason: b'},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}'
    for reason in ("stop", "length", "content_filter", "tool_calls")
}

_PROCESS = os.urandom(5).hex()
_ids = itertools.count(1)


def _reseed() -> None:  # pragma: no cover - runs in forked children
    global _PROCESS, _ids
    _PROCESS, _ids = os.urandom(5).hex(), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def _token() -> str:
    return f"{_PROCESS}{next(_ids):08x}"


def _open(index: int) -> bytes:
    return _OPEN0 if index == 0 else b'{"index":%d,"delta":{' % index


def _usage(meta: _UsageMetadata | None) -> Usage:
    if meta is None:
        return Usage(0, 0, 0, {"cached_tokens": 0}, {"reasoning_tokens": 0})
    prompt = meta.promptTokenCount + meta.toolUsePromptTokenCount
    completion = meta.candidatesTokenCount + meta.thoughtsTokenCount
    return Usage(
        prompt,
        completion,
        meta.totalTokenCount or prompt + completion,
        {"cached_tokens": meta.cachedContentTokenCount},
        {"reasoning_tokens": meta.thoughtsTokenCount},
    )


def _finish(reason: str | None, called: bool) -> str:
    mapped = _FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def _tool_call(call: _RCall, ident: str, signature: str | None, index: int | UnsetType = UNSET) -> _OutToolCall:
    args = _minify(call.args, indent=-1).decode()
    extra: dict[str, Any] | UnsetType = UNSET
    if signature:
        extra = {"google": {"thought_signature": signature}}
    return _OutToolCall(index=index, id=ident, function=_OutFunction(call.name, args), extra_content=extra)


def _guess_mime(url: str) -> str | None:
    path = url.split("?", 1)[0].split("#", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    ext = name.rsplit(".", 1)[1].lower()
    return _MIME.get(ext) or mimetypes.guess_type(name)[0]


def _retry_delay(items: Sequence[_ErrorItem]) -> float | None:
    for item in items:
        delay = item.retryDelay
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def _redact(text: str, key: str) -> str:
    if key and key in text:
        text = text.replace(key, "[redacted]")
    return _GOOGLE_KEY.sub("[redacted]", text) if "AIza" in text else text


def map_error(provider: str, status: int, headers: Mapping[str, str], body: bytes, key: str = "") -> ProviderError:
    """A Gemini error response (``{"error": {"code", "message", "status", "details"}}``)
    as a :class:`ProviderError`; credentials never appear in the message."""
    error: _GoogleError | None = None
    message = ""
    try:
        decoded = _error_decoder.decode(body)
        if isinstance(decoded, list):
            decoded = decoded[0] if decoded else _GoogleErrorBody()
        error = decoded.error
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = body[:200].decode("utf-8", "replace")
    return _mapped(provider, status, headers, error, message, key)


def _mapped(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    error: _GoogleError | None,
    message: str,
    key: str,
) -> ProviderError:
    google_status = ""
    reasons: set[str] = set()
    details: Sequence[_ErrorItem] = ()
    if error is not None:
        message, google_status, details = error.message, error.status, error.details
        status = status or error.code
        reasons = {item.reason for item in details if isinstance(item.reason, str)}
    message = _redact(message, key)
    label = f"{status} {google_status}" if google_status else str(status)
    text = f"{provider}: upstream answered {label}" + (f": {message}" if message else "")
    if status == 429 or google_status == "RESOURCE_EXHAUSTED":
        retry = header_float(headers, "retry-after")
        if retry is None:
            retry = _retry_delay(details)
        return UpstreamRateLimited(text, retry_after=retry, code="rate_limit_exceeded")
    if (
        status in (401, 403)
        or google_status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or "API_KEY_INVALID" in reasons
        or "api key not valid" in message.lower()
    ):
        return UpstreamAuthError(f"{provider}: upstream refused the configured credentials ({label})")
    if status in (408, 504) or google_status == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(text)
    if status >= 500 or status == 404 or google_status == "FAILED_PRECONDITION":
        # FAILED_PRECONDITION: e.g. the API is not available in the operator's region or plan
        return UpstreamServerError(text)
    lowered = message.lower()
    if any(marker in lowered for marker in _TOKEN_LIMIT):
        return ContextWindowExceeded(text, code="context_length_exceeded")
    return UpstreamBadRequest(text, code=google_status.lower() or None)


class GeminiProvider(HTTPProvider):
    def __init__(
        self,
        name: str,
        settings: GeminiSettings | None = None,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.settings = settings = settings or GeminiSettings()
        super().__init__(name, settings, transport, auth=("x-goog-api-key", "{key}"))
        self._base = settings.base_url.rstrip("/") + "/v1beta/models/"
        self._params_field = "parameters" if self.settings.openapi_schemas else "parametersJsonSchema"
        self._schema_field = "responseSchema" if self.settings.openapi_schemas else "responseJsonSchema"
        self._tool_cache: dict[bytes, tuple[tuple[str, ...], tuple[bytes, ...], Raw | None]] = {}
        self._urls: dict[str, tuple[str, str]] = {}

    # --- requests -------------------------------------------------------------

    def _url(self, model: str, stream: bool) -> str:
        urls = self._urls.get(model)
        if urls is None:
            name = model[7:] if model.startswith("models/") else model
            urls = (f"{self._base}{name}:generateContent", f"{self._base}{name}:streamGenerateContent?alt=sse")
            if len(self._urls) > 1024:
                self._urls.clear()
            self._urls[model] = urls
        return urls[1] if stream else urls[0]

    def _unsupported(self, param: str, why: str = "") -> None:
        """Refuse ``param`` (or, with ``drop_params``, drop it and return)."""
        if self.settings.drop_params:
            log.debug("%s: dropped unsupported parameter %s", self.name, param)
            return
        raise UnsupportedParameter(
            f"{self.name}: parameter '{param}' is not supported by the Gemini API"
            + (f" ({why})" if why else "")
            + "; set drop_params to drop it",
            code="unsupported_parameter",
            param=param,
        )

    def _invalid(self, param: str, why: str) -> InvalidForGemini:
        return InvalidForGemini(f"{self.name}: {param}: {why}", code="invalid_value", param=param)

    def _body(self, call: ChatCall) -> bytes:
        request = call.request
        config: dict[str, Any] = {}
        body: dict[str, Any] = {}
        contents, system = self._contents(call)
        body["contents"] = contents
        if system:
            body["systemInstruction"] = _Content(system)
        self._generation(request, config)
        self._extras(call, config)
        self._tools(call, body)
        if config:
            body["generationConfig"] = config
        return encode(body)

    def _generation(self, request: ChatCompletionRequest, config: dict[str, Any]) -> None:
        cap = request.output_cap()
        if cap is not None:
            config["maxOutputTokens"] = cap
        if isinstance(request.temperature, float):
            config["temperature"] = request.temperature
        if isinstance(request.top_p, float):
            config["topP"] = request.top_p
        if isinstance(request.n, int) and request.n != 1:
            config["candidateCount"] = request.n
        stop = request.stop
        if isinstance(stop, str):
            config["stopSequences"] = [stop]
        elif stop:
            config["stopSequences"] = stop
        fmt = request.response_format
        if isinstance(fmt, dict):
            kind = fmt.get("type")
            if kind == "json_object":
                config["responseMimeType"] = "application/json"
            elif kind == "json_schema":
                config["responseMimeType"] = "application/json"
                spec = fmt.get("json_schema")
                schema = spec.get("schema") if isinstance(spec, dict) else None
                if schema is not None:
                    config[self._schema_field] = schema
            elif kind != "text":
                self._unsupported("response_format", f"type {kind!r}")

    def _extras(self, call: ChatCall, config: dict[str, Any]) -> None:
        """Fields the typed request does not hold: read from the raw body."""
        for key, raw in call.raw.items():
            if key in _TYPED or key in _ADVISORY or raw == _NULL:
                continue
            value = _any_decoder.decode(raw)
            if key == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self._invalid(key, "expected an integer")
                config["seed"] = value
            elif key in _PENALTIES:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise self._invalid(key, "expected a number")
                if value:
                    config[_PENALTIES[key]] = value
            elif key == "top_k":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self._invalid(key, "expected an integer")
                config["topK"] = value
            elif key == "reasoning_effort":
                self._thinking(call.model.upstream, value, config)
            elif key == "logit_bias":
                if value:
                    self._unsupported(key)
            elif key == "logprobs":
                if value is not False:
                    self._unsupported(key)
            elif key == "top_logprobs":
                if value:
                    self._unsupported(key)
            elif key == "parallel_tool_calls":
                if value is not True:
                    self._unsupported(key, "Gemini may always call several functions at once")
            elif key == "modalities":
                if value != ["text"]:
                    self._unsupported(key, "only text output")
            else:
                self._unsupported(key)

    def _thinking(self, model: str, effort: object, config: dict[str, Any]) -> None:
        if not isinstance(effort, str) or effort not in _EFFORTS:
            self._unsupported("reasoning_effort", f"value {effort!r}")
            return
        name = model[7:] if model.startswith("models/") else model
        generation = name[7:].split("-", 1)[0].split(".", 1)[0] if name.startswith("gemini-") else ""
        if generation.isdigit() and int(generation) >= 3:
            config["thinkingConfig"] = {"thinkingLevel": "minimal" if effort == "none" else effort}
        else:
            config["thinkingConfig"] = {"thinkingBudget": _BUDGETS[effort]}

    # --- messages ---------------------------------------------------------------

    def _contents(self, call: ChatCall) -> tuple[list[_Content], list[_Part]]:
        system: list[_Part] = []
        contents: list[_Content] = []
        names: dict[str, str] = {}
        signatures = self._signatures(call)
        for i, message in enumerate(call.request.messages):
            role = message.role
            if role == "user":
                parts = self._user_parts(message.content, i)
                turn = "user"
            elif role == "assistant":
                parts = self._text_parts(message.content, i, ("text", "refusal"))
                if message.tool_calls:
                    parts.extend(self._calls(message, i, names, signatures))
                turn = "model"
            elif role == "tool":
                parts = [self._response(message, i, names)]
                turn = "user"
            elif role in ("system", "developer"):
                system.extend(self._text_parts(message.content, i, ("text",)))
                continue
            else:
                raise self._invalid(f"messages[{i}].role", f"{role!r} messages are not supported; use tools")
            if not parts:
                continue
            if contents and contents[-1].role == turn:
                contents[-1].parts.extend(parts)
            else:
                contents.append(_Content(parts, turn))
        return contents, system

    @staticmethod
    def _signatures(call: ChatCall) -> list[_SigMessage] | None:
        if not call.body or b'"thought_signature"' not in call.body:
            return None
        raw = call.raw.get("messages")
        if raw is None:
            return None
        try:
            return _sig_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def _text_parts(self, content: str | list[ContentPart] | None, i: int, kinds: tuple[str, ...]) -> list[_Part]:
        if content is None:
            return []
        if isinstance(content, str):
            return [_Part(text=content)] if content else []
        parts: list[_Part] = []
        for j, part in enumerate(content):
            if part.type not in kinds:
                raise UnsupportedParameter(
                    f"{self.name}: messages[{i}].content[{j}]: part type {part.type!r} is not supported here",
                    code="unsupported_content",
                    param=f"messages[{i}].content[{j}].type",
                )
            if isinstance(part.text, str) and part.text:
                parts.append(_Part(text=part.text))
        return parts

    def _user_parts(self, content: str | list[ContentPart] | None, i: int) -> list[_Part]:
        if content is None or isinstance(content, str):
            return [_Part(text=content)] if content else []
        parts: list[_Part] = []
        for j, part in enumerate(content):
            kind = part.type
            where = f"messages[{i}].content[{j}]"
            if kind == "text":
                if isinstance(part.text, str) and part.text:
                    parts.append(_Part(text=part.text))
            elif kind == "image_url":
                image = part.image_url
                if not isinstance(image, ImageURL):
                    raise self._invalid(f"{where}.image_url", "missing")
                parts.append(self._media(image.url, f"{where}.image_url.url", "image/jpeg"))
            elif kind == "input_audio":
                audio = part.input_audio if isinstance(part.input_audio, dict) else {}
                data, fmt = audio.get("data"), audio.get("format")
                if not isinstance(data, str) or not isinstance(fmt, str):
                    raise self._invalid(f"{where}.input_audio", "needs data and format")
                parts.append(_Part(inlineData=_Blob(_AUDIO.get(fmt, f"audio/{fmt}"), data)))
            elif kind == "file":
                parts.append(self._file(part.file if isinstance(part.file, dict) else {}, where))
            else:
                raise UnsupportedParameter(
                    f"{self.name}: {where}: part type {kind!r} is not supported by the Gemini API",
                    code="unsupported_content",
                    param=f"{where}.type",
                )
        return parts

    def _media(self, url: str, where: str, mime: str | None = None) -> _Part:
        if url.startswith("data:"):
            comma = url.find(",")
            if comma < 0:
                raise self._invalid(where, "malformed data: URL")
            meta, payload = url[5:comma], url[comma + 1 :]
            if meta.endswith(";base64"):
                meta = meta[:-7]
            else:
                payload = base64.b64encode(unquote_to_bytes(payload)).decode()
            kind = meta.split(";", 1)[0] or mime or "application/octet-stream"
            return _Part(inlineData=_Blob(kind, payload))
        if url.startswith(("https://", "http://", "gs://")):
            guessed = _guess_mime(url)
            if guessed is None and not url.startswith(_FILES_API):  # a stored file knows its own type
                guessed = mime
            return _Part(fileData=_FileData(url, guessed if guessed else UNSET))
        raise self._invalid(where, "expected a data: or https: URL")

    def _file(self, file: dict[str, Any], where: str) -> _Part:
        data, ident, filename = file.get("file_data"), file.get("file_id"), file.get("filename")
        mime = _guess_mime(filename) if isinstance(filename, str) else None
        if isinstance(data, str) and data:
            if data.startswith("data:"):
                return self._media(data, f"{where}.file.file_data", mime)
            return _Part(inlineData=_Blob(mime or "application/pdf", data))
        if isinstance(ident, str) and ident.startswith(("https://", "gs://")):
            return self._media(ident, f"{where}.file.file_id", mime)
        raise UnsupportedParameter(
            f"{self.name}: {where}.file: only file_data (or a file URL) is supported by the Gemini API",
            code="unsupported_content",
            param=f"{where}.file",
        )

    def _calls(
        self, message: ChatMessage, i: int, names: dict[str, str], signatures: list[_SigMessage] | None
    ) -> list[_Part]:
        assert isinstance(message.tool_calls, list)
        sent = signatures[i].tool_calls if signatures is not None and i < len(signatures) else None
        parts: list[_Part] = []
        for j, call in enumerate(message.tool_calls):
            function = call.function
            if not isinstance(function, FunctionCall) or not isinstance(function.name, str) or not function.name:
                raise self._invalid(f"messages[{i}].tool_calls[{j}].function.name", "missing")
            arguments = function.arguments if isinstance(function.arguments, str) else ""
            if arguments.strip():
                try:
                    args = _args_decoder.decode(arguments)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    raise self._invalid(
                        f"messages[{i}].tool_calls[{j}].function.arguments", "not a JSON object"
                    ) from None
            else:
                args = _EMPTY_ARGS
            part = _Part(functionCall=_CallOut(function.name, args))
            if sent is not None and j < len(sent):
                extra = sent[j].extra_content
                if extra is not None and extra.google is not None and extra.google.thought_signature:
                    part.thoughtSignature = extra.google.thought_signature
            if isinstance(call.id, str):
                names[call.id] = function.name
            parts.append(part)
        return parts

    def _response(self, message: ChatMessage, i: int, names: dict[str, str]) -> _Part:
        ident = message.tool_call_id
        name = names.get(ident) if isinstance(ident, str) else None
        if name is None:
            if isinstance(message.name, str) and message.name:
                name = message.name
            else:
                raise self._invalid(
                    f"messages[{i}].tool_call_id", f"{ident!r} answers no tool call of an earlier assistant message"
                )
        content = message.content
        if isinstance(content, list):
            texts: list[str] = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise UnsupportedParameter(
                        f"{self.name}: messages[{i}].content[{j}]: tool results can only hold text",
                        code="unsupported_content",
                        param=f"messages[{i}].content[{j}].type",
                    )
                texts.append(part.text if isinstance(part.text, str) else "")
            text = "".join(texts)
        else:
            text = content or ""
        return _Part(functionResponse=_FunctionResponse(name, _Output(text)))

    # --- tools ------------------------------------------------------------------

    def _tools(self, call: ChatCall, body: dict[str, Any]) -> None:
        request = call.request
        if not request.tools:
            return
        raw = call.raw.get("tools")
        cache_key = bytes(raw) if raw is not None else encode(request.tools)
        cached = self._tool_cache.get(cache_key)
        if cached is None:
            cached = self._declarations(request.tools)
            if len(self._tool_cache) >= 256:
                self._tool_cache.clear()
            self._tool_cache[cache_key] = cached
        names, declarations, everything = cached
        if not declarations:
            return
        choice = request.tool_choice
        mode: str | None = None
        allowed: list[str] | None = None
        only: list[str] | None = None
        if isinstance(choice, str):
            mode = _MODES.get(choice)
            if mode is None:
                raise self._invalid("tool_choice", f"unknown value {choice!r}")
        elif isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "function":
                function = choice.get("function")
                name = function.get("name") if isinstance(function, dict) else None
                if not isinstance(name, str):
                    raise self._invalid("tool_choice.function.name", "missing")
                mode, allowed = "ANY", [name]
            elif kind == "allowed_tools":
                spec = choice.get("allowed_tools")
                spec = spec if isinstance(spec, dict) else {}
                listed = [
                    t["function"]["name"]
                    for t in spec.get("tools") or ()
                    if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
                ]
                if spec.get("mode") == "required":
                    mode, allowed = "ANY", listed
                else:
                    mode, only = "AUTO", listed
            else:
                self._unsupported("tool_choice", f"type {kind!r}")
        if only is not None:
            chosen = [d for n, d in zip(names, declarations, strict=True) if n in only]
            if not chosen:
                return
            body["tools"] = Raw(b'[{"functionDeclarations":[' + b",".join(chosen) + b"]}]")
        else:
            body["tools"] = everything
        if mode is not None:
            config: dict[str, Any] = {"mode": mode}
            if allowed:
                config["allowedFunctionNames"] = allowed
            body["toolConfig"] = {"functionCallingConfig": config}

    def _declarations(self, tools: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[bytes, ...], Raw | None]:
        names: list[str] = []
        declarations: list[bytes] = []
        for i, tool in enumerate(tools):
            kind = tool.get("type", "function")
            if kind != "function":
                self._unsupported(f"tools[{i}].type", f"{kind!r} tools")
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(function, dict) or not isinstance(name, str) or not name:
                raise self._invalid(f"tools[{i}].function.name", "missing")
            declaration: dict[str, Any] = {"name": name}
            description = function.get("description")
            if isinstance(description, str) and description:
                declaration["description"] = description
            parameters = function.get("parameters")
            if isinstance(parameters, dict) and not (
                self.settings.openapi_schemas and not parameters.get("properties")
            ):
                declaration[self._params_field] = parameters
            names.append(name)
            declarations.append(encode(declaration))
        everything = Raw(b'[{"functionDeclarations":[' + b",".join(declarations) + b"]}]") if declarations else None
        return tuple(names), tuple(declarations), everything

    # --- calls ------------------------------------------------------------------

    async def _post(self, url: str, body: bytes, call: ChatCall) -> UpstreamResponse:
        response = await self.transport.post(url, call.headers(self._headers), body, self.settings.timeouts)
        if response.status >= 400:
            raw = await response.read()
            raise map_error(self.name, response.status, response.headers, raw, self._key)
        return response

    def _blocked(self, event: _Response) -> ProviderError:
        feedback = event.promptFeedback
        if feedback is not None and feedback.blockReason:
            detail = f": {feedback.blockReasonMessage}" if feedback.blockReasonMessage else ""
            return ContentPolicyViolation(
                f"{self.name}: the upstream blocked the prompt ({feedback.blockReason}){detail}",
                code="content_policy_violation",
            )
        return UpstreamServerError(f"{self.name}: upstream answered without candidates")

    async def chat(self, call: ChatCall) -> Completion:
        body = self._body(call)
        response = await self._post(self._url(call.model.upstream, False), body, call)
        data = await response.read()
        try:
            answer = _response_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamServerError(f"{self.name}: upstream answered with an unreadable body") from None
        usage = _usage(answer.usageMetadata)
        call.usage = usage
        if not answer.candidates:
            raise self._blocked(answer)
        token = answer.responseId or _token()
        n = 0
        choices: list[_Choice] = []
        for candidate in answer.candidates:
            texts: list[str] = []
            calls: list[_OutToolCall] = []
            if candidate.content is not None:
                for part in candidate.content.parts:
                    if part.thought:
                        continue
                    if part.functionCall is not None:
                        calls.append(_tool_call(part.functionCall, f"call_{token}_{n}", part.thoughtSignature))
                        n += 1
                    elif part.text:
                        texts.append(part.text)
            message = _Message(content="".join(texts) if texts else None, tool_calls=calls or UNSET)
            choices.append(
                _Choice(candidate.index, message, finish_reason=_finish(candidate.finishReason, bool(calls)))
            )
        completion = _Completion(
            id=f"chatcmpl-{token}",
            created=int(time.time()),
            model=answer.modelVersion or call.model.upstream,
            choices=choices,
            usage=usage,
        )
        return Completion(encode(completion), usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        body = self._body(call)
        options = call.request.stream_options
        include_usage = bool(options and options.include_usage is True)
        tail = _TAIL_USAGE if include_usage else _TAIL
        response = await self._post(self._url(call.model.upstream, True), body, call)
        meta: _UsageMetadata | None = None
        head = b""
        token = ""
        started: set[int] = set()
        finished: set[int] = set()
        called: dict[int, int] = {}
        n = 0
        chunks = response.iter_chunks()
        events = iter_sse_data(chunks)
        try:
            async for data in events:
                try:
                    event = _response_decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    raise UpstreamServerError(f"{self.name}: upstream sent an unreadable stream event") from None
                if event.error is not None:
                    raise _mapped(self.name, event.error.code or 500, {}, event.error, "", self._key)
                if event.usageMetadata is not None:
                    meta = event.usageMetadata
                if not event.candidates:
                    if not head and event.promptFeedback is not None and event.promptFeedback.blockReason:
                        raise self._blocked(event)
                    continue
                if not head:
                    token = event.responseId or _token()
                    model = event.modelVersion or call.model.upstream
                    head = (
                        b'{"id":'
                        + encode(f"chatcmpl-{token}")
                        + b',"object":"chat.completion.chunk","created":'
                        + str(int(time.time())).encode()
                        + b',"model":'
                        + encode(model)
                        + b',"choices":['
                    )
                for candidate in event.candidates:
                    index = candidate.index
                    text = ""
                    calls: list[_OutToolCall] | None = None
                    if candidate.content is not None:
                        for part in candidate.content.parts:
                            if part.thought:
                                continue
                            if part.functionCall is not None:
                                if calls is None:
                                    calls = []
                                k = called.get(index, 0)
                                called[index] = k + 1
                                ident = f"call_{token}_{n}"
                                n += 1
                                calls.append(_tool_call(part.functionCall, ident, part.thoughtSignature, k))
                            elif part.text:
                                text = text + part.text if text else part.text
                    pieces: list[bytes] = []
                    if index not in started:
                        started.add(index)
                        pieces.append(_ROLE if text or calls else _ROLE_EMPTY)
                    if text:
                        pieces.append(b'"content":' + encode(text))
                    if calls:
                        pieces.append(b'"tool_calls":' + encode(calls))
                    if pieces:
                        yield head + _open(index) + b",".join(pieces) + _CLOSE + tail
                    if candidate.finishReason and index not in finished:
                        finished.add(index)
                        reason = _finish(candidate.finishReason, index in called)
                        yield head + _open(index) + _FINISH_CLOSE[reason] + tail
            if not head:
                raise UpstreamServerError(f"{self.name}: upstream stream ended without an answer")
            if started - finished:
                raise UpstreamServerError(f"{self.name}: upstream stream ended before the answer finished")
            usage = _usage(meta)
            call.usage = usage
            if include_usage:
                yield head + b'],"usage":' + encode(usage) + b"}"
        finally:
            await events.aclose()
            await chunks.aclose()
            if call.usage is None and meta is not None:
                call.usage = _usage(meta)
            await response.aclose()
