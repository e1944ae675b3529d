"""OpenAI Chat Completions wire types (msgspec).

The router validates requests against :class:`ChatCompletionRequest` and forwards
the original top-level fields it does not know untouched: a request is decoded
twice, once into the typed struct (validation, routing) and once into
``dict[str, msgspec.Raw]`` (a cheap scan that keeps every field's raw JSON), and
the upstream body is re-encoded from the raw mapping.

Decoders and encoders are created once, at import.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ContentPart",
    "Delta",
    "ErrorBody",
    "ErrorDetail",
    "Model",
    "ModelList",
    "RouteConstraints",
    "StreamOptions",
    "Usage",
    "decode_raw",
    "decode_request",
    "encode",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ImageURL(Struct, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class ContentPart(Struct, omit_defaults=True):
    """One part of a multi-part message (``text``, ``image_url``, ``input_audio``, ``file``...)."""

    type: str
    text: str | UnsetType = UNSET
    cache_control: dict[str, Any] | UnsetType = UNSET
    image_url: ImageURL | UnsetType = UNSET
    input_audio: dict[str, Any] | UnsetType = UNSET
    file: dict[str, Any] | UnsetType = UNSET


class FunctionCall(Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCall(Struct):  # not omit_defaults: clients need "type": "function"
    id: str | UnsetType = UNSET
    type: str = "function"
    function: FunctionCall | UnsetType = UNSET
    index: int | UnsetType = UNSET


class ChatMessage(Struct, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET


class StreamOptions(Struct, omit_defaults=True):
    include_usage: bool | UnsetType = UNSET


class RouteConstraints(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Routing constraints, in the request body as ``"clawrouter": {...}`` (never
    forwarded upstream) or as ``x-clawrouter-*`` headers (see docs/routing.md)."""

    max_price: float | None = None
    latency_slo_ms: float | None = None
    capabilities: list[str] = []
    models: list[str] = []
    deny_models: list[str] = []
    providers: list[str] = []
    deny_providers: list[str] = []
    min_quality: float | None = None
    profile: Literal["eco", "auto", "premium"] | None = None
    strategy: str | None = None


class ChatCompletionRequest(Struct, omit_defaults=True):
    """The fields of a chat completion request that the router reads.

    Unknown fields are accepted (and forwarded from the raw body); known fields
    are type-checked, so ``{"messages": "hi"}`` is refused with a message naming
    ``$.messages``.
    """

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    tools: list[dict[str, Any]] | UnsetType | None = UNSET
    tool_choice: str | dict[str, Any] | UnsetType | None = UNSET
    response_format: dict[str, Any] | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    clawrouter: RouteConstraints | UnsetType | None = UNSET

    def output_cap(self) -> int | None:
        """The request's own bound on output tokens, if it set one."""
        for value in (self.max_completion_tokens, self.max_tokens):
            if isinstance(value, int):
                return value
        return None


class Usage(Struct, omit_defaults=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | UnsetType | None = UNSET
    completion_tokens_details: dict[str, Any] | UnsetType | None = UNSET


class ResponseMessage(Struct):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET


class Choice(Struct):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    object: str = "chat.completion"
    usage: Usage | None = None
    system_fingerprint: str | UnsetType | None = UNSET


class Delta(Struct, omit_defaults=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | UnsetType | None = UNSET


class UsageOnly(Struct):
    """Reads only ``usage`` from an upstream body or chunk; everything else is skipped."""

    usage: Usage | None = None


class ErrorDetail(Struct, omit_defaults=True):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(Struct):
    error: ErrorDetail


class Model(Struct):
    id: str
    owned_by: str
    created: int = 0
    object: str = "model"


class ModelList(Struct):
    data: list[Model]
    object: str = "list"


_request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_raw_decoder = msgspec.json.Decoder(dict[str, Raw])
_usage_decoder = msgspec.json.Decoder(UsageOnly)
_encoder = msgspec.json.Encoder()

decode_request = _request_decoder.decode
decode_raw = _raw_decoder.decode
encode = _encoder.encode


def decode_usage(data: bytes) -> Usage | None:
    """``usage`` of an OpenAI-shaped body or chunk, or ``None``; never raises on shape."""
    try:
        return _usage_decoder.decode(data).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
