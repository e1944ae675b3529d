"""Fidelity of the native Gemini adapter against a fake Gemini upstream.

The fake speaks the shapes of Google's public Gemini API reference:
``POST /v1beta/models/{model}:generateContent`` answering a
``GenerateContentResponse`` (pretty-printed, as Google sends it),
``:streamGenerateContent?alt=sse`` answering ``data: <GenerateContentResponse>``
events separated by ``\\r\\n\\r\\n``, and errors as
``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from helpers import sse_events

from clawrouter import hookimpl
from clawrouter.catalogue import ModelInfo
from clawrouter.errors import BadRequest
from clawrouter.providers import (
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from clawrouter.providers.base import ChatCall
from clawrouter.providers.gemini import (
    GeminiProvider,
    GeminiSettings,
    InvalidForGemini,
    UnsupportedParameter,
)
from clawrouter.server import BackgroundServer
from clawrouter.upstream import AiohttpTransport, HttpxTransport, Timeouts
from clawrouter.wire import decode_request

KEY = "AIzaSyD-test-key-0123456789abcdefghijk"
BASE = "http://gemini.test"
GENERATE = f"{BASE}/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = f"{BASE}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"

USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}


def candidate(parts: list[dict[str, Any]] | None, finish: str | None = "STOP", index: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index}
    if parts is not None:
        out["content"] = {"role": "model", "parts": parts}
    if finish:
        out["finishReason"] = finish
        out["safetyRatings"] = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
    return out


def answer(*candidates: dict[str, Any], usage: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "candidates": list(candidates),
        "usageMetadata": usage or USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "rid42",
        **extra,
    }


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\r\n\r\n" for e in events)


class FakeGemini:
    """Records every request; answers with what the test queued."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.payload: Any = answer(candidate([{"text": "ok"}]))
        self.headers: dict[str, str] = {}
        self.stream_body: Any = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.payload, bytes):
            content = self.payload
        elif "streamGenerateContent" in request.url.path and self.status == 200:
            content = self.stream_body if self.stream_body is not None else sse(self.payload)
            return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
        else:
            content = json.dumps(self.payload, indent=2).encode()  # Google pretty-prints
        return httpx.Response(
            self.status, content=content, headers={"content-type": "application/json", **self.headers}
        )

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def make_call(
    messages: list[dict[str, Any]] | None = None, upstream: str = "gemini-2.5-flash", **fields: Any
) -> ChatCall:
    body = json.dumps(
        {"model": "client-name", "messages": messages or [{"role": "user", "content": "hi"}], **fields}
    ).encode()
    info = ModelInfo(id="gem/flash", provider="gem", upstream=upstream, input_price=1, output_price=1)
    return ChatCall(decode_request(body), info, body)


@pytest.fixture
def fake() -> FakeGemini:
    return FakeGemini()


@pytest.fixture
async def gemini(fake: FakeGemini) -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(
        "gem",
        GeminiSettings(prewarm=False, base_url=BASE + "/", api_key=KEY),
        HttpxTransport(httpx.MockTransport(fake.handler)),
    )
    await provider.start()
    yield provider
    await provider.aclose()


async def drop_provider(fake: FakeGemini) -> GeminiProvider:
    return GeminiProvider(
        "gem",
        GeminiSettings(prewarm=False, base_url=BASE, api_key=KEY, drop_params=True),
        HttpxTransport(httpx.MockTransport(fake.handler)),
    )


async def collect(provider: GeminiProvider, call: ChatCall) -> list[dict[str, Any]]:
    return [json.loads(chunk) async for chunk in provider.stream(call)]


# --- requests -------------------------------------------------------------------


async def test_url_headers_system_instruction_and_text(gemini, fake):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello", "name": "ann"},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
    ]
    completion = await gemini.chat(make_call(messages))
    request = fake.requests[-1]
    assert str(request.url) == GENERATE
    assert request.headers["x-goog-api-key"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert fake.body == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}, {"text": "there"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
    }
    body = json.loads(completion.body)
    assert body["id"] == "chatcmpl-rid42"
    assert body["object"] == "chat.completion"
    assert body["model"] == "gemini-2.5-flash"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert completion.usage.total_tokens == 18


async def test_generation_config(gemini, fake):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    await gemini.chat(
        make_call(
            max_tokens=50,
            max_completion_tokens=100,
            temperature=0.3,
            top_p=0.9,
            top_k=40,
            stop="END",
            n=2,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.25,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": schema}},
            user="user-1",
            metadata={"k": "v"},
            store=False,
            logprobs=False,
            parallel_tool_calls=True,
            logit_bias={},
            stream_options={"include_usage": True},
        )
    )
    assert fake.body["generationConfig"] == {
        "maxOutputTokens": 100,
        "temperature": 0.3,
        "topP": 0.9,
        "topK": 40,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.25,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    await gemini.chat(
        make_call(
            max_tokens=5,
            stop=["a", "b"],
            temperature=1,
            presence_penalty=0,
            response_format={"type": "json_object"},
            seed=None,
        )
    )
    assert fake.body["generationConfig"] == {
        "maxOutputTokens": 5,
        "stopSequences": ["a", "b"],
        "temperature": 1.0,
        "responseMimeType": "application/json",
    }
    await gemini.chat(make_call(response_format={"type": "text"}, n=1))
    assert "generationConfig" not in fake.body


@pytest.mark.parametrize(
    ("upstream", "effort", "expected"),
    [
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "low", {"thinkingBudget": 1024}),
        ("models/gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "low"}),
        ("gemini-3.1-flash", "none", {"thinkingLevel": "minimal"}),
    ],
)
async def test_reasoning_effort(gemini, fake, upstream, effort, expected):
    await gemini.chat(make_call(upstream=upstream, reasoning_effort=effort))
    assert fake.body["generationConfig"] == {"thinkingConfig": expected}
    assert fake.requests[-1].url.path == f"/v1beta/models/{upstream.removeprefix('models/')}:generateContent"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "ping"}},
]
DECLARATIONS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "parametersJsonSchema": TOOLS[0]["function"]["parameters"],
    },
    {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
    {"name": "ping"},
]


async def test_multi_turn_with_parallel_function_calls_and_responses(gemini, fake):
    messages = [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather and time in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
                {"id": "call_c", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "19C"}]},
        {"role": "tool", "tool_call_id": "call_c", "content": "12:00"},
        {"role": "assistant", "content": "Paris 21C, Rome 19C, noon."},
        {"role": "user", "content": "Thanks"},
    ]
    await gemini.chat(make_call(messages, tools=TOOLS, tool_choice="auto"))
    assert fake.body == {
        "systemInstruction": {"parts": [{"text": "You are a weather bot."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather and time in Paris and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": '{"temp": 21}'}}},
                    {"functionResponse": {"name": "get_weather", "response": {"output": "19C"}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                ],
            },
            {"role": "model", "parts": [{"text": "Paris 21C, Rome 19C, noon."}]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ],
        "tools": [{"functionDeclarations": DECLARATIONS}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    }


async def test_tool_call_ids_reused_across_turns_resolve_to_the_latest_call(gemini, fake):
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "call_0", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "noon"},
        {"role": "assistant", "tool_calls": [{"id": "call_0", "function": {"name": "ping", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "pong"},
    ]
    await gemini.chat(make_call(messages, tools=TOOLS))
    users = [c["parts"][0] for c in fake.body["contents"] if c["role"] == "user"][1:]
    responses = [part["functionResponse"]["name"] for part in users]
    assert responses == ["get_time", "ping"]
    assert "toolConfig" not in fake.body


@pytest.mark.parametrize(
    ("choice", "config", "declared"),
    [
        ("none", {"mode": "NONE"}, ["get_weather", "get_time", "ping"]),
        ("required", {"mode": "ANY"}, ["get_weather", "get_time", "ping"]),
        (
            {"type": "function", "function": {"name": "ping"}},
            {"mode": "ANY", "allowedFunctionNames": ["ping"]},
            ["get_weather", "get_time", "ping"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "ping"}}]},
            },
            {"mode": "ANY", "allowedFunctionNames": ["ping"]},
            ["get_weather", "get_time", "ping"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
            },
            {"mode": "AUTO"},
            ["get_time"],
        ),
    ],
)
async def test_tool_choice(gemini, fake, choice, config, declared):
    await gemini.chat(make_call(tools=TOOLS, tool_choice=choice))
    assert fake.body["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in fake.body["tools"][0]["functionDeclarations"]] == declared


async def test_openapi_schemas_setting(fake):
    provider = GeminiProvider(
        "gem",
        GeminiSettings(prewarm=False, base_url=BASE, api_key=KEY, openapi_schemas=True),
        HttpxTransport(httpx.MockTransport(fake.handler)),
    )
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    await provider.chat(
        make_call(tools=TOOLS, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    )
    declarations = fake.body["tools"][0]["functionDeclarations"]
    assert declarations[0]["parameters"] == TOOLS[0]["function"]["parameters"]
    assert declarations[1] == {"name": "get_time"}  # Gemini refuses an OBJECT without properties
    assert fake.body["generationConfig"]["responseSchema"] == schema
    await provider.aclose()


async def test_images_audio_and_files(gemini, fake):
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo.webp"}},
        {"type": "image_url", "image_url": {"url": "https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
        {"type": "image_url", "image_url": {"url": "https://cdn.example.com/render?id=7"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain,hello%20world"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": "aGVsbG8="}},
    ]
    await gemini.chat(make_call([{"role": "user", "content": content}]))
    assert fake.body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is in these?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"fileUri": "https://example.com/cat.JPG?size=large", "mimeType": "image/jpeg"}},
                {"fileData": {"fileUri": "https://example.com/photo.webp", "mimeType": "image/webp"}},
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
                {"fileData": {"fileUri": "https://cdn.example.com/render?id=7", "mimeType": "image/jpeg"}},
                {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8gd29ybGQ="}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
            ],
        }
    ]


# --- responses --------------------------------------------------------------------


async def test_parallel_function_calls_in_the_response(gemini, fake):
    fake.payload = answer(
        candidate(
            [
                {"text": "Checking both."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": [1, 2]}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                {"functionCall": {"name": "ping"}},
            ]
        )
    )
    body = json.loads((await gemini.chat(make_call(tools=TOOLS))).body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking both."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_rid42_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":[1,2]}'},
        },
        {"id": "call_rid42_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        {"id": "call_rid42_2", "type": "function", "function": {"name": "ping", "arguments": "{}"}},
    ]
    # the arguments are the JSON of Gemini's args object
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "days": [1, 2]}


async def test_thought_signatures_round_trip(gemini, fake):
    fake.payload = answer(
        candidate(
            [
                {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"},
                {"functionCall": {"name": "ping", "args": {}}},
            ]
        )
    )
    message = json.loads((await gemini.chat(make_call(tools=TOOLS))).body)["choices"][0]["message"]
    calls = message["tool_calls"]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    assert "extra_content" not in calls[1]
    messages = [
        {"role": "user", "content": "time?"},
        message,
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "noon"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "pong"},
    ]
    await gemini.chat(make_call(messages, tools=TOOLS))
    assert fake.body["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "ping", "args": {}}},
        ],
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
async def test_finish_reasons(gemini, fake, reason, expected):
    filtered = expected == "content_filter"
    fake.payload = answer(candidate(None if filtered else [{"text": "partial"}], reason))
    choice = json.loads((await gemini.chat(make_call())).body)["choices"][0]
    assert choice["finish_reason"] == expected
    assert choice["message"]["content"] == (None if filtered else "partial")


async def test_usage_with_cached_and_thinking_tokens(gemini, fake):
    fake.payload = answer(
        candidate([{"text": "Thinking about it...", "thought": True}, {"text": "42"}]),
        usage={
            "promptTokenCount": 1200,
            "cachedContentTokenCount": 1024,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 250,
            "totalTokenCount": 1453,
        },
    )
    completion = await gemini.chat(make_call())
    body = json.loads(completion.body)
    assert body["choices"][0]["message"]["content"] == "42"  # the thought never shows
    assert body["usage"] == {
        "prompt_tokens": 1200,
        "completion_tokens": 253,
        "total_tokens": 1453,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 250},
    }
    assert completion.usage.completion_tokens == 253 and completion.usage.prompt_tokens == 1200


async def test_several_candidates(gemini, fake):
    fake.payload = answer(candidate([{"text": "one"}], index=0), candidate([{"text": "two"}], "MAX_TOKENS", index=1))
    choices = json.loads((await gemini.chat(make_call(n=2))).body)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "one", "stop"),
        (1, "two", "length"),
    ]


async def test_blocked_prompt(gemini, fake):
    fake.payload = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [{"category": "X", "probability": "HIGH"}]},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    }
    with pytest.raises(ContentPolicyViolation) as caught:
        await gemini.chat(make_call())
    assert caught.value.status == 400 and caught.value.fallback is True
    assert "SAFETY" in caught.value.message
    with pytest.raises(ContentPolicyViolation):
        await collect(gemini, make_call(stream=True))


# --- errors -------------------------------------------------------------------------


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


RETRY_INFO = [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "x"}]},
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://ai.google.dev"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
]
KEY_INVALID = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "g"}]

ERRORS = [
    (429, google_error(429, "RESOURCE_EXHAUSTED", "quota exceeded", RETRY_INFO), {}, UpstreamRateLimited, 429, 7),
    (
        429,
        google_error(429, "RESOURCE_EXHAUSTED", "quota", RETRY_INFO),
        {"retry-after": "3"},
        UpstreamRateLimited,
        429,
        3,
    ),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "quota"), {}, UpstreamRateLimited, 429, None),
    (500, google_error(500, "INTERNAL", "An internal error has occurred."), {}, UpstreamServerError, 502, None),
    (503, google_error(503, "UNAVAILABLE", "The model is overloaded."), {}, UpstreamServerError, 502, None),
    (401, google_error(401, "UNAUTHENTICATED", "Request had invalid credentials."), {}, UpstreamAuthError, 502, None),
    (
        403,
        google_error(403, "PERMISSION_DENIED", f"Consumer 'api_key:{KEY}' has been suspended."),
        {},
        UpstreamAuthError,
        502,
        None,
    ),
    (400, google_error(400, "INVALID_ARGUMENT", "API key not valid.", KEY_INVALID), {}, UpstreamAuthError, 502, None),
    (
        400,
        google_error(
            400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed."
        ),
        {},
        ContextWindowExceeded,
        400,
        None,
    ),
    (
        400,
        google_error(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature'"),
        {},
        UpstreamBadRequest,
        400,
        None,
    ),
    (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline expired."), {}, UpstreamTimeout, 504, None),
    (404, google_error(404, "NOT_FOUND", "models/gemini-9 is not found"), {}, UpstreamServerError, 502, None),
    (
        400,
        google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
        {},
        UpstreamServerError,
        502,
        None,
    ),
    (502, b"<html>bad gateway</html>", {}, UpstreamServerError, 502, None),
]


@pytest.mark.parametrize(("status", "payload", "headers", "error", "code", "retry"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_are_mapped(gemini, fake, status, payload, headers, error, code, retry, stream):
    fake.status, fake.payload, fake.headers = status, payload, headers
    with pytest.raises(error) as caught:
        if stream:
            await collect(gemini, make_call(stream=True))
        else:
            await gemini.chat(make_call())
    exc = caught.value
    assert exc.status == code
    assert KEY not in exc.message and KEY not in str(exc) and KEY not in exc.body().decode()
    if error is UpstreamRateLimited:
        assert exc.retry_after == retry
        if retry is not None:
            assert (b"retry-after", str(retry).encode()) in exc.headers
    if error is UpstreamBadRequest:
        assert "generation_config.temperature" in exc.message and exc.fallback is False
        assert exc.code == "invalid_argument"
    if error is ContextWindowExceeded:
        assert exc.code == "context_length_exceeded" and exc.fallback is True


async def test_error_event_inside_a_stream(gemini, fake):
    fake.stream_body = sse(
        answer(candidate([{"text": "Hel"}], None)), google_error(503, "UNAVAILABLE", "The model is overloaded.")
    )
    chunks: list[dict[str, Any]] = []
    with pytest.raises(UpstreamServerError):
        async for chunk in gemini.stream(make_call(stream=True)):
            chunks.append(json.loads(chunk))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}


async def test_truncated_stream_is_an_error(gemini, fake):
    fake.stream_body = sse(answer(candidate([{"text": "Hel"}], None)))
    call = make_call(stream=True)
    with pytest.raises(UpstreamServerError, match="before the answer finished"):
        await collect(gemini, call)
    assert call.usage is not None and call.usage.prompt_tokens == 11  # known usage is kept


# --- unsupported parameters --------------------------------------------------------------

UNSUPPORTED = [
    ("logit_bias", {"50256": -100}),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("parallel_tool_calls", False),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("prediction", {"type": "content", "content": "x"}),
    ("web_search_options", {}),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("vendor_field", {"nested": True}),
    ("reasoning_effort", "extreme"),
]


@pytest.mark.parametrize(("param", "value"), UNSUPPORTED)
async def test_unsupported_parameter_is_refused_naming_it(gemini, fake, param, value):
    with pytest.raises(UnsupportedParameter) as caught:
        await gemini.chat(make_call(**{param: value}))
    exc = caught.value
    assert isinstance(exc, BadRequest) and isinstance(exc, ProviderError)
    assert exc.status == 400 and exc.type == "invalid_request_error"
    assert f"'{param}'" in exc.message and exc.param == param and exc.code == "unsupported_parameter"
    assert json.loads(exc.body())["error"]["param"] == param
    assert fake.requests == []  # nothing was sent
    with pytest.raises(UnsupportedParameter):  # streaming refuses before the first byte too
        await collect(gemini, make_call(stream=True, **{param: value}))


@pytest.mark.parametrize(("param", "value"), UNSUPPORTED)
async def test_drop_params_drops_them(fake, param, value):
    provider = await drop_provider(fake)
    completion = await provider.chat(make_call(temperature=0.5, **{param: value}))
    assert json.loads(completion.body)["choices"][0]["message"]["content"] == "ok"
    assert fake.body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"temperature": 0.5},
    }
    await provider.aclose()


async def test_unsupported_tools_and_content(gemini, fake):
    tools = [{"type": "web_search"}, TOOLS[2]]
    with pytest.raises(UnsupportedParameter) as caught:
        await gemini.chat(make_call(tools=tools))
    assert caught.value.param == "tools[0].type"
    provider = await drop_provider(fake)
    await provider.chat(make_call(tools=tools))
    assert fake.body["tools"] == [{"functionDeclarations": [{"name": "ping"}]}]
    # content parts are never silently dropped
    content = [{"type": "video_url", "video_url": {"url": "https://x/y.mp4"}}]
    for p in (gemini, provider):
        with pytest.raises(UnsupportedParameter) as caught:
            await p.chat(make_call([{"role": "user", "content": content}]))
        assert caught.value.param == "messages[0].content[0].type"
    await provider.aclose()


async def test_untranslatable_requests_are_final_400s(gemini, fake):
    cases = [
        ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}], "tool_call_id"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1"}}]}],
            "arguments",
        ),
        ([{"role": "function", "name": "f", "content": "1"}], "role"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}], "url"),
    ]
    for messages, where in cases:
        with pytest.raises(InvalidForGemini) as caught:
            await gemini.chat(make_call(messages))
        assert caught.value.status == 400 and caught.value.fallback is False
        assert where in caught.value.param
    assert fake.requests == []


async def test_key_never_in_repr(gemini, monkeypatch):
    assert KEY not in repr(gemini) and KEY not in repr(gemini.settings) and KEY not in str(gemini.settings)
    monkeypatch.setenv("GEMINI_TEST_KEY", "AIzaFromTheEnvironment0123456789abcdef")
    settings = msgspec.convert(
        {"kind": "gemini", "api_key_env": "GEMINI_TEST_KEY", "drop_params": True}, GeminiSettings
    )
    provider = GeminiProvider("env", settings, HttpxTransport())
    assert provider._headers["x-goog-api-key"] == "AIzaFromTheEnvironment0123456789abcdef"
    assert "AIzaFrom" not in repr(provider) and "AIzaFrom" not in repr(settings)
    assert settings.base_url == "https://generativelanguage.googleapis.com" and settings.drop_params is True
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "gemini", "api_version": "v1"}, GeminiSettings)


# --- streaming ----------------------------------------------------------------------------


async def test_streamed_text_arrives_as_it_is_produced(gemini, fake):
    gate = asyncio.Event()
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        first = answer(candidate([{"text": "Hel"}], None), usage={"promptTokenCount": 11, "totalTokenCount": 11})
        sent.append(1)
        yield sse(first)
        await asyncio.wait_for(gate.wait(), 5)  # the adapter must not wait for more
        sent.append(2)
        yield sse(answer(candidate([{"text": "lo"}], None)))[:25]  # an event split across reads
        yield sse(answer(candidate([{"text": "lo"}], None)))[25:]
        yield sse(answer(candidate([{"text": "!"}], "STOP")))

    fake.stream_body = body()
    call = make_call(stream=True)
    chunks = []
    async for raw in gemini.stream(call):
        chunk = json.loads(raw)
        chunks.append(chunk)
        if len(chunks) == 1:
            assert sent == [1]
            gate.set()
    assert str(fake.requests[-1].url) == STREAM
    assert fake.requests[-1].headers["x-goog-api-key"] == KEY
    assert fake.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}  # no "stream" field
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-rid42" for c in chunks)
    assert all(c["model"] == "gemini-2.5-flash" and "usage" not in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {"content": "!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert call.usage.total_tokens == 18


async def test_streamed_function_calls_and_usage_chunk(gemini, fake):
    fake.stream_body = sse(
        answer(candidate([{"text": "Thinking", "thought": True}], None), usage={"promptTokenCount": 11}),
        answer(
            candidate(
                [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
                None,
            )
        ),
        answer(candidate([{"functionCall": {"name": "ping", "args": {}}}], "STOP")),
        answer(
            usage={
                "promptTokenCount": 11,
                "candidatesTokenCount": 9,
                "thoughtsTokenCount": 30,
                "cachedContentTokenCount": 4,
                "totalTokenCount": 50,
            }
        ),
    )
    call = make_call(stream=True, stream_options={"include_usage": True}, tools=TOOLS)
    chunks = await collect(gemini, call)
    assert all(c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}  # the thought is not shown
    assert deltas[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_rid42_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                "extra_content": {"google": {"thought_signature": "c2ln"}},
            },
            {
                "index": 1,
                "id": "call_rid42_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
        ]
    }
    assert deltas[2] == {
        "tool_calls": [
            {"index": 2, "id": "call_rid42_2", "type": "function", "function": {"name": "ping", "arguments": "{}"}}
        ]
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 39,
        "total_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert call.usage.completion_tokens == 39
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "Thinking" not in text


async def test_streamed_safety_stop(gemini, fake):
    fake.stream_body = sse(
        answer(candidate([{"text": "Sure, "}], None)), answer(candidate(None, "SAFETY"), usage=USAGE)
    )
    chunks = await collect(gemini, make_call(stream=True))
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}


# --- a real upstream through aiohttp -------------------------------------------------------

SEEN: list[dict[str, Any]] = []


async def fake_gemini_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    SEEN.append({"path": scope["path"], "query": scope["query_string"], "headers": headers, "body": json.loads(body)})
    if headers.get("x-goog-api-key") != KEY:
        error = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", KEY_INVALID)
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(error).encode()})
        return
    if not scope["path"].endswith(":streamGenerateContent"):
        data = json.dumps(answer(candidate([{"text": "plain"}])), indent=2).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i, word in enumerate(["one ", "two ", "three"]):
        event = sse(answer(candidate([{"text": word}], "STOP" if i == 2 else None)))
        await send({"type": "http.response.body", "body": event[:17], "more_body": True})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": event[17:], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def gemini_server():
    with BackgroundServer(fake_gemini_app) as running:
        yield running


async def test_streaming_through_aiohttp_against_a_real_server(gemini_server):
    settings = GeminiSettings(
        base_url=gemini_server.url, api_key=KEY, timeouts=Timeouts(connect=1, first_byte=2, total=5)
    )
    provider = GeminiProvider("gem", settings, AiohttpTransport())
    await provider.start()
    try:
        call = make_call(stream=True, stream_options={"include_usage": True})
        chunks = await collect(provider, call)
        seen = SEEN[-1]
        assert seen["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        assert seen["query"] == b"alt=sse"
        assert seen["headers"]["x-goog-api-key"] == KEY and "authorization" not in seen["headers"]
        assert seen["body"] == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "one two three"
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"]["total_tokens"] == 18 and call.usage.total_tokens == 18
        completion = await provider.chat(make_call())
        assert json.loads(completion.body)["choices"][0]["message"]["content"] == "plain"
    finally:
        await provider.aclose()
    wrong = GeminiProvider(
        "gem", GeminiSettings(prewarm=False, base_url=gemini_server.url, api_key="AIzaWrongKey0123456789abcdefghij")
    )
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.chat(make_call())
    assert "AIzaWrong" not in caught.value.message
    await wrong.aclose()


# --- end to end through a Router ---------------------------------------------------------------


async def test_end_to_end_through_the_router(clawrouter_router, clawrouter_client, fake):
    class Plugin:
        __name__ = "gemini-test"

        @hookimpl
        def register_providers(self, config):
            transport = HttpxTransport(httpx.MockTransport(fake.handler))
            return [GeminiProvider("google", GeminiSettings(prewarm=False, base_url=BASE, api_key=KEY), transport)]

        @hookimpl
        def register_models(self, config):
            return [
                {
                    "id": "google/flash",
                    "provider": "google",
                    "upstream": "gemini-2.5-flash",
                    "input_price": 0.3,
                    "output_price": 2.5,
                    "capabilities": ["streaming", "tools", "vision", "json_mode", "reasoning"],
                }
            ]

    router = clawrouter_router({"providers": {}}, plugins=[Plugin()])
    client = await clawrouter_client(router)
    url = "/v1/chat/completions"
    fake.payload = answer(candidate([{"text": "Bonjour"}]))
    request = {"model": "google/flash", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0.2}
    response = await client.post(url, json=request)
    assert response.status_code == 200, response.text
    assert response.headers["x-clawrouter-provider"] == "google"
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Bonjour" and body["usage"]["total_tokens"] == 18
    assert str(fake.requests[-1].url) == GENERATE
    # the router injects its default output cap, so what is generated is what was quoted
    assert fake.body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 1024}
    assert KEY not in repr(router.providers["google"])

    fake.stream_body = sse(answer(candidate([{"text": "Bon"}], None)), answer(candidate([{"text": "jour"}], "STOP")))
    streamed = await client.post(url, json={**request, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Bonjour"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7
    assert str(fake.requests[-1].url) == STREAM

    refused = await client.post(url, json={**request, "logit_bias": {"1": 5}})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "logit_bias" in error["message"] and error["param"] == "logit_bias"
    assert error["type"] == "invalid_request_error"
