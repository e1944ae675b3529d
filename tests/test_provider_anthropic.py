"""The Anthropic Messages adapter against a fake Anthropic upstream.

The fake answers as Anthropic's public API reference describes: ``Message``
bodies, ``{"type": "error", "error": {...}}`` error bodies with their statuses
and rate-limit headers, and server-sent events framed as ``event:`` + ``data:``
lines. Most tests use ``HttpxTransport(httpx.MockTransport(...))`` and assert on
the exact upstream body; the streaming tests at the end go through the real
aiohttp transport to a server on 127.0.0.1, and through a Router.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import openai.types.chat as oa
import pytest
from helpers import sse_events

from clawrouter import hookimpl
from clawrouter.catalogue import ModelInfo
from clawrouter.errors import BadRequest
from clawrouter.providers import (
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from clawrouter.providers.anthropic import (
    AnthropicProvider,
    AnthropicSettings,
    InvalidForAnthropic,
    UnsupportedParameter,
)
from clawrouter.providers.base import ChatCall
from clawrouter.server import BackgroundServer
from clawrouter.upstream import AiohttpTransport, HttpxTransport, Timeouts
from clawrouter.wire import ChatCompletionChunk, decode_request

KEY = "sk-ant-api03-SECRETSECRET"
UPSTREAM = "claude-sonnet-4-5"
MODEL = ModelInfo(
    id="anthropic/claude-sonnet",
    provider="anthropic",
    upstream=UPSTREAM,
    input_price=3,
    output_price=15,
    max_output=8192,
)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)


# --- the fake upstream ---------------------------------------------------------------------------


def message(
    content: list[dict[str, Any]] | None = None,
    stop_reason: str | None = "end_turn",
    usage: dict[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Messages API response body."""
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 2095, "output_tokens": 503},
        **extra,
    }


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def sse(*events: dict[str, Any]) -> bytes:
    """Events framed as Anthropic sends them: an ``event:`` line, a ``data:`` line, a blank line."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def message_start(usage: dict[str, int] | None = None) -> dict[str, Any]:
    start = message(content=[], stop_reason=None, usage=usage or {"input_tokens": 25, "output_tokens": 1})
    return {"type": "message_start", "message": start}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def text_delta(index: int, text: str) -> dict[str, Any]:
    return delta(index, type="text_delta", text=text)


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 15, **usage: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens, **usage},
    }


MESSAGE_STOP = {"type": "message_stop"}
PING = {"type": "ping"}


class FakeAnthropic:
    """An httpx MockTransport handler: records each request, answers with ``respond(body)``."""

    def __init__(self, respond: Callable[[dict[str, Any]], httpx.Response] | None = None) -> None:
        self.respond = respond or (lambda body: httpx.Response(200, json=message()))
        self.requests: list[httpx.Request] = []
        self.heads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":  # the connection prewarm at start
            self.heads += 1
            return httpx.Response(404)
        self.requests.append(request)
        return self.respond(json.loads(request.content))

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def streaming(payload: bytes) -> Callable[[dict[str, Any]], httpx.Response]:
    def respond(body: dict[str, Any]) -> httpx.Response:
        assert body["stream"] is True
        return httpx.Response(200, content=payload, headers={"content-type": "text/event-stream"})

    return respond


def make(fake: FakeAnthropic, **settings: Any) -> AnthropicProvider:
    options = {"api_key": KEY, "base_url": "https://api.anthropic.test", **settings}
    return AnthropicProvider("anthropic", AnthropicSettings(**options), HttpxTransport(httpx.MockTransport(fake)))


def chat_call(messages: list[dict[str, Any]] | None = None, model: ModelInfo = MODEL, **fields: Any) -> ChatCall:
    body = {"model": "anthropic/claude-sonnet", "messages": messages or [{"role": "user", "content": "Hello"}]}
    raw = json.dumps({**body, **fields}).encode()
    return ChatCall(decode_request(raw), model, raw)


async def chat(fake: FakeAnthropic, messages=None, *, settings: dict | None = None, **fields) -> dict[str, Any]:
    provider = make(fake, **(settings or {}))
    try:
        call = chat_call(messages, **fields)
        completion = await provider.chat(call)
    finally:
        await provider.aclose()
    answer = json.loads(completion.body)
    oa.ChatCompletion.model_validate(answer)  # the OpenAI SDK accepts it
    assert completion.usage == call.usage
    return answer


async def stream(provider: AnthropicProvider, call: ChatCall) -> list[dict[str, Any]]:
    chunks = []
    async for data in provider.stream(call):
        _chunk_decoder.decode(data)  # the router's own chunk type accepts it
        chunk = json.loads(data)
        oa.ChatCompletionChunk.model_validate(chunk)  # and so does the OpenAI SDK
        chunks.append(chunk)
    return chunks


async def stream_with(fake: FakeAnthropic, call: ChatCall) -> list[dict[str, Any]]:
    provider = make(fake)
    try:
        return await stream(provider, call)
    finally:
        await provider.aclose()


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(d.get("content") or "" for d in deltas(chunks))


# --- requests --------------------------------------------------------------------------------------


async def test_request_url_headers_and_minimal_body():
    fake = FakeAnthropic()
    answer = await chat(fake)
    request = fake.requests[-1]
    assert str(request.url) == "https://api.anthropic.test/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    # max_tokens is required by Anthropic: the default, capped by the catalogue's max_output
    assert fake.body == {"model": UPSTREAM, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4096}
    assert answer["object"] == "chat.completion"
    assert answer["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert answer["model"] == "claude-sonnet-4-5-20250929"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 2095,
        "completion_tokens": 503,
        "total_tokens": 2598,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0},
    }


async def test_request_rate_limit_headers_are_reported_on_the_call():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
        "anthropic-ratelimit-tokens-remaining": "39000",
    }
    fake = FakeAnthropic(lambda body: httpx.Response(200, json=message(), headers=headers))
    provider = make(fake)
    call = chat_call()
    await provider.chat(call)
    assert call.ratelimit == (49, 50)
    call = chat_call()
    await make(FakeAnthropic()).chat(call)
    assert call.ratelimit is None
    await provider.aclose()


async def test_base_url_ending_in_v1_and_extra_headers():
    fake = FakeAnthropic()
    await chat(fake, settings={"base_url": "http://proxy.test/v1/", "headers": {"anthropic-beta": "x-2025"}})
    assert str(fake.requests[-1].url) == "http://proxy.test/v1/messages"
    assert fake.requests[-1].headers["anthropic-beta"] == "x-2025"


async def test_max_tokens():
    fake = FakeAnthropic()
    small = ModelInfo(id="h", provider="anthropic", upstream="claude-3-haiku", input_price=1, output_price=1)
    provider = make(fake, default_max_tokens=16000)
    await provider.chat(chat_call())
    assert fake.body["max_tokens"] == 8192  # capped by MODEL.max_output
    await provider.chat(chat_call(model=small))
    assert fake.body["max_tokens"] == 4096
    await provider.chat(chat_call(max_tokens=100))
    assert fake.body["max_tokens"] == 100
    await provider.chat(chat_call(max_tokens=100, max_completion_tokens=50))
    assert fake.body["max_tokens"] == 50
    await provider.chat(chat_call(max_tokens=None))
    assert fake.body["max_tokens"] == 8192


async def test_system_and_developer_messages_become_top_level_system():
    fake = FakeAnthropic()
    await chat(fake, [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}])
    assert fake.body["system"] == "You are terse."
    assert fake.body["messages"] == [{"role": "user", "content": "Hi"}]

    await chat(
        fake,
        [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Salut"},
            {"role": "system", "content": [{"type": "text", "text": "Be nice."}, {"type": "text", "text": "Really."}]},
            {"role": "user", "content": "Again"},
        ],
    )
    assert fake.body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French."},
        {"type": "text", "text": "Be nice."},
        {"type": "text", "text": "Really."},
    ]
    assert fake.body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": "Again"},
    ]


async def test_multi_turn_with_parallel_tool_calls_and_results():
    fake = FakeAnthropic()
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    clock = {"type": "function", "function": {"name": "now"}}
    await chat(
        fake,
        [
            {"role": "user", "content": "Weather in Paris and Oslo? And the time?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "toolu_02",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {"id": "toolu_03", "type": "function", "function": {"name": "now", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C sunny"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "-3C snow"}]},
            {"role": "tool", "tool_call_id": "toolu_03", "content": "12:00"},
            {"role": "user", "content": "Thanks! Which is warmer?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "name": "alice", "content": "ok"},
        ],
        tools=[weather, clock],
    )
    assert fake.body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in fake.body
    assert fake.body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo? And the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_03", "name": "now", "input": {}},
            ],
        },
        {
            "role": "user",  # three tool results and the next user turn, merged: roles must alternate
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "-3C snow"}]},
                {"type": "tool_result", "tool_use_id": "toolu_03", "content": "12:00"},
                {"type": "text", "text": "Thanks! Which is warmer?"},
            ],
        },
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "ok"},
    ]


async def test_consecutive_same_role_messages_are_merged_and_empty_ones_left_out():
    fake = FakeAnthropic()
    await chat(
        fake,
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "three"},
        ],
    )
    assert fake.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        }
    ]


async def test_images_from_data_and_https_urls_and_pdf_files():
    fake = FakeAnthropic()
    await chat(
        fake,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    },
                ],
            }
        ],
    )
    assert fake.body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        },
    ]


async def test_image_in_a_tool_result():
    fake = FakeAnthropic()
    await chat(
        fake,
        [
            {"role": "user", "content": "Screenshot?"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "function": {"name": "shot", "arguments": "{}"}}]},
            {
                "role": "tool",
                "tool_call_id": "t1",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}],
            },
        ],
        tools=[{"type": "function", "function": {"name": "shot", "parameters": {"type": "object"}}}],
    )
    assert fake.body["messages"][-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}
                ],
            }
        ],
    }


AUDIO = {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}


@pytest.mark.parametrize(
    ("messages", "error", "needle"),
    [
        # content Anthropic cannot take: another model of the chain may (fallback)
        ([{"role": "user", "content": [AUDIO]}], UnsupportedParameter, "input_audio"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gs://b/y.png"}}]}],
            UnsupportedParameter,
            "image_url.url",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}],
            UnsupportedParameter,
            "base64",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
            UnsupportedParameter,
            "file_data",
        ),
        ([{"role": "function", "name": "f", "content": "x"}], UnsupportedParameter, "function"),
        # requests that cannot be translated at all: final
        ([{"role": "tool", "content": "x"}], InvalidForAnthropic, "tool_call_id"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "[1]"}}]}],
            InvalidForAnthropic,
            "JSON object",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{nope"}}]}],
            InvalidForAnthropic,
            "JSON object",
        ),
    ],
)
async def test_untranslatable_messages_are_refused(messages, error, needle):
    fake = FakeAnthropic()
    with pytest.raises(error) as caught:
        await chat(fake, messages, settings={"drop_params": True})  # content is never dropped
    exc = caught.value
    assert isinstance(exc, BadRequest) and isinstance(exc, ProviderError)
    assert exc.status == 400 and needle in exc.message
    assert exc.fallback is (error is UnsupportedParameter) and not exc.retryable and not exc.unhealthy
    assert not fake.requests


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, {"type": "tool", "name": "f"}),
        ({"parallel_tool_calls": True}, None),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
)
async def test_tool_choice(fields, expected):
    fake = FakeAnthropic()
    await chat(
        fake, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], **fields
    )
    assert fake.body.get("tool_choice") == expected
    assert "parallel_tool_calls" not in fake.body


async def test_non_function_tools_are_refused():
    with pytest.raises(UnsupportedParameter, match="only function tools"):
        await chat(FakeAnthropic(), tools=[{"type": "web_search_preview"}])


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "sometimes"},
        {"tool_choice": {"type": "function"}},
        {"parallel_tool_calls": "no"},
        {"tools": [{"type": "function", "function": {"description": "no name"}}]},
    ],
)
async def test_malformed_tool_fields_are_refused(fields):
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidForAnthropic) as caught:
        await chat(FakeAnthropic(), **{"tools": tools, **fields})
    assert caught.value.status == 400 and not caught.value.fallback


async def test_sampling_parameters():
    fake = FakeAnthropic()
    await chat(
        fake,
        temperature=0.2,
        top_p=0.9,
        stop="\n\nHuman:",
        user="user-42",
        top_k=40,
        thinking={"type": "enabled", "budget_tokens": 2048},
        stream_options={"include_usage": True},
        stream=False,
    )
    assert fake.body == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4096,
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "user-42"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    await chat(fake, stop=["END", "STOP"], temperature=None, top_p=None)
    assert fake.body["stop_sequences"] == ["END", "STOP"]
    assert "temperature" not in fake.body and "top_p" not in fake.body


# --- unsupported parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},
        {"logprobs": True},
        {"top_logprobs": 3},
        {"presence_penalty": 0.5},
        {"frequency_penalty": -1},
        {"seed": 7},
        {"logit_bias": {"50256": -100}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        {"reasoning_effort": "high"},
        {"vendor_field": {"nested": [1]}},
    ],
)
async def test_unsupported_parameters_are_refused_naming_them(fields):
    fake = FakeAnthropic()
    (name,) = fields
    with pytest.raises(BadRequest) as caught:
        await chat(fake, **fields)
    error = caught.value
    assert isinstance(error, UnsupportedParameter) and isinstance(error, ProviderError) and error.fallback
    assert error.status == 400 and error.param == name and error.code == "unsupported_parameter"
    assert f"'{name}'" in error.message and "drop_params" in error.message
    assert not fake.requests  # never sent


async def test_several_unsupported_parameters_are_all_named():
    with pytest.raises(BadRequest) as caught:
        await chat(FakeAnthropic(), seed=1, logprobs=True)
    assert "'seed', 'logprobs' are not supported" in caught.value.message


async def test_no_op_values_of_unsupported_parameters_are_accepted():
    fake = FakeAnthropic()
    await chat(
        fake,
        n=1,
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0.0,
        seed=None,
        logit_bias={},
        response_format={"type": "text"},
        store=False,
    )
    assert fake.body == {"model": UPSTREAM, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4096}


async def test_drop_params_drops_them():
    fake = FakeAnthropic()
    await chat(
        fake,
        settings={"drop_params": True},
        n=3,
        seed=7,
        logprobs=True,
        presence_penalty=1,
        response_format={"type": "json_object"},
        vendor_field=1,
        temperature=0.5,
    )
    assert fake.body == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4096,
        "temperature": 0.5,
    }


# --- responses -----------------------------------------------------------------------------------


async def test_tool_use_response_and_thinking_is_not_content():
    content = [
        {"type": "thinking", "thinking": "The user wants weather. SECRET-THOUGHT", "signature": "EqQBCgIYAhIM"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    fake = FakeAnthropic(lambda body: httpx.Response(200, json=message(content, "tool_use")))
    answer = await chat(fake)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking both."
    assert "SECRET-THOUGHT" not in json.dumps(answer)
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("toolu_01A", "function", "get_weather"),
        ("toolu_01B", "function", "get_weather"),
    ]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "days": [1, 2]}
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": "Oslo"}


async def test_tool_use_only_response_has_null_content():
    content = [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]
    answer = await chat(FakeAnthropic(lambda body: httpx.Response(200, json=message(content, "tool_use"))))
    assert answer["choices"][0]["message"]["content"] is None
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


async def test_text_blocks_are_concatenated():
    content = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world", "citations": []}]
    answer = await chat(FakeAnthropic(lambda body: httpx.Response(200, json=message(content))))
    assert answer["choices"][0]["message"]["content"] == "Hello, world"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
async def test_stop_reasons(stop_reason, finish_reason):
    answer = await chat(FakeAnthropic(lambda body: httpx.Response(200, json=message(stop_reason=stop_reason))))
    assert answer["choices"][0]["finish_reason"] == finish_reason


async def test_usage_with_cache_tokens():
    usage = {
        "input_tokens": 50,
        "output_tokens": 200,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }
    fake = FakeAnthropic(lambda body: httpx.Response(200, json=message(usage=usage)))
    provider = make(fake)
    call = chat_call()
    completion = await provider.chat(call)
    expected = {
        "prompt_tokens": 4050,
        "completion_tokens": 200,
        "total_tokens": 4250,
        "prompt_tokens_details": {"cached_tokens": 3000, "cache_creation_tokens": 1000},
    }
    assert json.loads(completion.body)["usage"] == expected
    assert msgspec.to_builtins(call.usage) == expected and completion.usage is call.usage


async def test_malformed_upstream_body_is_a_server_error():
    fake = FakeAnthropic(lambda body: httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(UpstreamServerError):
        await chat(fake)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "client_status", "needle"),
    [
        (
            429,
            error_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            {
                "retry-after": "12",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-tokens-remaining": "900",
            },
            UpstreamRateLimited,
            429,
            "exhausted: requests",
        ),
        (
            529,
            error_body("overloaded_error", "Overloaded"),
            {},
            UpstreamServerError,
            502,
            "overloaded_error: Overloaded",
        ),
        (500, error_body("api_error", "Internal server error"), {}, UpstreamServerError, 502, "api_error"),
        (503, b"<html>upstream connect error</html>", {}, UpstreamServerError, 502, "upstream connect error"),
        (
            401,
            error_body("authentication_error", f"invalid x-api-key {KEY}"),
            {},
            UpstreamAuthError,
            502,
            "credentials",
        ),
        (
            403,
            error_body("permission_error", "Your API key does not have permission"),
            {},
            UpstreamAuthError,
            502,
            "403",
        ),
        (
            400,
            error_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
            {},
            ContextWindowExceeded,
            400,
            "prompt is too long",
        ),
        (
            400,
            error_body(
                "invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"
            ),
            {},
            ContextWindowExceeded,
            400,
            "context limit",
        ),
        (
            413,
            error_body("request_too_large", "Request exceeds the maximum size"),
            {},
            ContextWindowExceeded,
            400,
            "413",
        ),
        (
            400,
            error_body("invalid_request_error", "temperature: range: 0..1"),
            {},
            UpstreamBadRequest,
            400,
            "temperature: range: 0..1",
        ),
        (404, error_body("not_found_error", "model: claude-nope"), {}, UpstreamServerError, 502, "claude-nope"),
        (408, error_body("timeout_error", "Request timed out"), {}, UpstreamTimeout, 504, "timed out"),
        (504, error_body("timeout_error", "Gateway timeout"), {}, UpstreamTimeout, 504, "504"),
    ],
)
async def test_error_mapping(status, body, headers, error, client_status, needle):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    fake = FakeAnthropic(lambda _: httpx.Response(status, content=content, headers=headers))
    with pytest.raises(error) as caught:
        await chat(fake)
    exc = caught.value
    assert exc.status == client_status and needle in exc.message
    assert KEY not in exc.message and KEY not in exc.body().decode() and KEY not in str(exc)
    assert exc.fallback is (error is not UpstreamBadRequest)
    if status == 429:
        assert exc.retry_after == 12 and (b"retry-after", b"12") in exc.headers
        assert "tokens" not in exc.message.split("exhausted:")[1]


async def test_rate_limit_without_retry_after_uses_the_exhausted_limits_reset():
    headers = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": (datetime.now(UTC) + timedelta(seconds=30)).isoformat()[:19] + "Z",
        "anthropic-ratelimit-requests-remaining": "10",
    }
    body = json.dumps(error_body("rate_limit_error", "slow down")).encode()
    fake = FakeAnthropic(lambda _: httpx.Response(429, content=body, headers=headers))
    with pytest.raises(UpstreamRateLimited) as caught:
        await chat(fake)
    assert 0 < caught.value.retry_after <= 30 and "exhausted: tokens" in caught.value.message


async def test_start_prewarms_a_connection_in_the_background():
    fake = FakeAnthropic()
    provider = make(fake)
    await provider.start()
    for _ in range(100):
        if fake.heads:
            break
        await asyncio.sleep(0.01)
    await provider.aclose()
    assert fake.heads == 1 and not fake.requests
    unwarmed = make(fake, prewarm=False)
    await unwarmed.start()
    await asyncio.sleep(0.02)
    await unwarmed.aclose()
    assert fake.heads == 1


async def test_key_never_in_repr():
    provider = make(FakeAnthropic())
    assert KEY not in repr(provider) and KEY not in repr(provider.settings) and KEY not in str(provider.settings)
    assert "anthropic" in repr(provider)


async def test_key_from_environment(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-from-env")
    fake = FakeAnthropic()
    provider = AnthropicProvider(
        "a", AnthropicSettings(api_key_env="TEST_ANTHROPIC_KEY"), HttpxTransport(httpx.MockTransport(fake))
    )
    await provider.chat(chat_call())
    await provider.aclose()
    assert fake.requests[-1].headers["x-api-key"] == "sk-ant-from-env"
    assert "sk-ant-from-env" not in repr(provider)


# --- streams (mock transport) --------------------------------------------------------------------

TEXT_STREAM = sse(
    message_start({"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 10}),
    block_start(0, {"type": "text", "text": ""}),
    PING,
    text_delta(0, "Hello"),
    text_delta(0, ", "),
    text_delta(0, 'wor"ld\n'),
    block_stop(0),
    message_delta("end_turn", 15),
    MESSAGE_STOP,
)


async def test_streamed_text():
    fake = FakeAnthropic(streaming(TEXT_STREAM))
    call = chat_call(stream=True)
    chunks = await stream_with(fake, call)
    assert fake.body["stream"] is True and "stream_options" not in fake.body
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL" for c in chunks)
    assert all(c["model"] == "claude-sonnet-4-5-20250929" for c in chunks)
    assert deltas(chunks)[0] == {"role": "assistant", "content": ""}
    assert [d.get("content") for d in deltas(chunks)[1:4]] == ["Hello", ", ", 'wor"ld\n']
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len(chunks) == 5  # no usage chunk: the client did not ask
    assert msgspec.to_builtins(call.usage) == {
        "prompt_tokens": 35,
        "completion_tokens": 15,
        "total_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 10, "cache_creation_tokens": 0},
    }


async def test_streamed_usage_chunk_when_asked():
    call = chat_call(stream=True, stream_options={"include_usage": True})
    chunks = await stream_with(FakeAnthropic(streaming(TEXT_STREAM)), call)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == msgspec.to_builtins(call.usage)
    assert chunks[-1]["usage"]["total_tokens"] == 50


async def test_message_delta_usage_fields_override_message_start():
    payload = sse(
        message_start({"input_tokens": 25, "output_tokens": 1}),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "x"),
        block_stop(0),
        message_delta("max_tokens", 40, input_tokens=30, cache_creation_input_tokens=5),
        MESSAGE_STOP,
    )
    call = chat_call(stream=True)
    chunks = await stream_with(FakeAnthropic(streaming(payload)), call)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (35, 40)


async def test_streamed_tool_calls_with_arguments_split_across_deltas_and_thinking_not_leaking():
    payload = sse(
        message_start(),
        block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, type="thinking_delta", thinking="I should call SECRET-THOUGHT the tool"),
        delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        text_delta(1, "Let me check."),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}),
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"ci'),
        delta(2, type="input_json_delta", partial_json='ty": "Par'),
        delta(2, type="input_json_delta", partial_json='is"}'),
        block_stop(2),
        block_start(3, {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}}),
        delta(3, type="input_json_delta", partial_json="{}"),
        block_stop(3),
        message_delta("tool_use", 89),
        MESSAGE_STOP,
    )
    chunks = await stream_with(FakeAnthropic(streaming(payload)), chat_call(stream=True))
    assert "SECRET-THOUGHT" not in json.dumps(chunks) and "EqQB" not in json.dumps(chunks)
    assert text_of(chunks) == "Let me check."
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [c["function"]["arguments"] for c in calls[1:4]] == ['{"ci', 'ty": "Par', 'is"}']
    assert all(set(c) == {"index", "function"} and c["index"] == 0 for c in calls[1:4])
    assert calls[4]["index"] == 1 and calls[4]["id"] == "toolu_B" and calls[4]["function"]["name"] == "now"
    assert calls[5] == {"index": 1, "function": {"arguments": "{}"}}
    assert json.loads("".join(c["function"]["arguments"] for c in calls if c["index"] == 0)) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_input_given_whole_in_block_start_is_not_lost():
    payload = sse(
        message_start(),
        block_start(0, {"type": "tool_use", "id": "toolu_A", "name": "f", "input": {"a": 1}}),
        block_stop(0),
        message_delta("tool_use", 5),
        MESSAGE_STOP,
    )
    chunks = await stream_with(FakeAnthropic(streaming(payload)), chat_call(stream=True))
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls", [])]
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"a": 1}


async def test_unknown_events_and_blocks_are_ignored():
    payload = sse(
        message_start(),
        {"type": "some_future_event", "detail": {"x": 1}},
        block_start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        delta(0, type="input_json_delta", partial_json='{"query": "x"}'),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, type="citations_delta", citation={"type": "web_search_result_location", "url": "https://x"}),
        text_delta(1, "ok"),
        block_stop(1),
        message_delta(),
        MESSAGE_STOP,
    )
    chunks = await stream_with(FakeAnthropic(streaming(payload)), chat_call(stream=True))
    assert text_of(chunks) == "ok"
    assert not any("tool_calls" in d for d in deltas(chunks))


async def test_mid_stream_error_event_raises_the_mapped_error():
    payload = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    provider = make(FakeAnthropic(streaming(payload)))
    call = chat_call(stream=True)
    received = []
    with pytest.raises(UpstreamServerError) as caught:
        async for data in provider.stream(call):
            received.append(json.loads(data))
    await provider.aclose()
    assert text_of(received) == "Hel" and "Overloaded" in caught.value.message
    assert call.usage is not None and call.usage.prompt_tokens == 25  # known since message_start


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limit_error", UpstreamRateLimited),
        ("api_error", UpstreamServerError),
        ("invalid_request_error", UpstreamBadRequest),
        ("authentication_error", UpstreamAuthError),
    ],
)
async def test_error_event_before_any_chunk_raises_on_first_read(kind, error):
    payload = sse({"type": "error", "error": {"type": kind, "message": "nope"}})
    provider = make(FakeAnthropic(streaming(payload)))
    chunks = provider.stream(chat_call(stream=True)).__aiter__()
    with pytest.raises(error):
        await chunks.__anext__()  # before the first byte: the execute stage can still fall back
    await provider.aclose()


async def test_stream_cut_short_raises():
    payload = sse(message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Hel"))
    provider = make(FakeAnthropic(streaming(payload)))
    with pytest.raises(UpstreamUnavailable):
        await stream(provider, chat_call(stream=True))
    await provider.aclose()


async def test_http_error_on_stream_request_is_mapped_before_the_first_chunk():
    body = json.dumps(error_body("overloaded_error", "Overloaded")).encode()
    provider = make(FakeAnthropic(lambda _: httpx.Response(529, content=body)))
    chunks = provider.stream(chat_call(stream=True)).__aiter__()
    with pytest.raises(UpstreamServerError) as caught:
        await chunks.__anext__()
    assert caught.value.fallback
    await provider.aclose()


async def test_unsupported_parameter_on_stream_raises_before_sending():
    fake = FakeAnthropic(streaming(TEXT_STREAM))
    provider = make(fake)
    with pytest.raises(BadRequest, match="'seed'"):
        await provider.stream(chat_call(stream=True, seed=1)).__anext__()
    assert not fake.requests
    await provider.aclose()


# --- a real upstream on 127.0.0.1, through aiohttp -----------------------------------------------

GATE = threading.Event()
SEEN: list[dict[str, Any]] = []


async def anthropic_upstream(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] == "HEAD":  # the connection prewarm at start
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        received = await receive()
        body += received.get("body", b"")
        if not received.get("more_body"):
            break
    request = json.loads(body)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    SEEN.append({"path": scope["path"], "headers": headers, "body": request})
    if headers.get("x-api-key") != KEY:
        payload = json.dumps(error_body("authentication_error", "invalid x-api-key")).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return
    if request["model"] == "overloaded":
        payload = json.dumps(error_body("overloaded_error", "Overloaded")).encode()
        await send({"type": "http.response.start", "status": 529, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
        }
    )

    async def write(data: bytes) -> None:
        # split every write in two, mid-event, to exercise reassembly
        await send({"type": "http.response.body", "body": data[:7], "more_body": True})
        await send({"type": "http.response.body", "body": data[7:], "more_body": True})

    await write(sse(message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Hello")))
    # the rest is sent only once the client got "Hello": the adapter must translate as events arrive
    if request["model"] == "gated":
        await asyncio.to_thread(GATE.wait, 5)
    await write(sse(PING, text_delta(0, " world"), block_stop(0)))
    await write(sse(block_start(1, {"type": "tool_use", "id": "toolu_Z", "name": "f", "input": {}})))
    await write(
        sse(
            delta(1, type="input_json_delta", partial_json='{"q":'),
            delta(1, type="input_json_delta", partial_json=" 1}"),
        )
    )
    await write(sse(block_stop(1), message_delta("tool_use", 7)))
    await send({"type": "http.response.body", "body": sse(MESSAGE_STOP)})


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(anthropic_upstream) as running:
        yield running


@pytest.fixture
async def real(server):
    provider = AnthropicProvider(
        "anthropic",
        AnthropicSettings(base_url=server.url, api_key=KEY, timeouts=Timeouts(connect=1, first_byte=5, total=10)),
        AiohttpTransport(),
    )
    await provider.start()
    yield provider
    await provider.aclose()


def upstream_model(name: str) -> ModelInfo:
    return ModelInfo(id="anthropic/x", provider="anthropic", upstream=name, input_price=3, output_price=15)


async def test_stream_through_aiohttp_is_translated_as_events_arrive(real):
    GATE.clear()
    call = chat_call(model=upstream_model("gated"), stream=True, stream_options={"include_usage": True})
    chunks: list[dict[str, Any]] = []
    got_hello_before_rest = False
    try:
        async for data in real.stream(call):
            chunk = json.loads(data)
            oa.ChatCompletionChunk.model_validate(chunk)
            chunks.append(chunk)
            if deltas([chunk]) and deltas([chunk])[0].get("content") == "Hello":
                got_hello_before_rest = not GATE.is_set()
                GATE.set()
    finally:
        GATE.set()
    assert got_hello_before_rest
    seen = SEEN[-1]
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["anthropic-version"] == "2023-06-01" and seen["headers"]["x-api-key"] == KEY
    assert seen["body"]["stream"] is True and seen["body"]["model"] == "gated"
    assert deltas(chunks)[0]["role"] == "assistant"
    assert text_of(chunks) == "Hello world"
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_Z" and "".join(c["function"]["arguments"] for c in calls) == '{"q": 1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7
    assert call.usage.prompt_tokens == 25


async def test_errors_through_aiohttp(real, server):
    with pytest.raises(UpstreamServerError) as caught:
        await real.stream(chat_call(model=upstream_model("overloaded"), stream=True)).__anext__()
    assert "overloaded_error" in caught.value.message
    wrong = AnthropicProvider("a", AnthropicSettings(base_url=server.url, api_key="sk-ant-wrong"), AiohttpTransport())
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.chat(chat_call(model=upstream_model("x")))
    await wrong.aclose()
    assert "sk-ant-wrong" not in caught.value.message


# --- end to end, through a Router --------------------------------------------------------------


async def test_through_a_router(clawrouter_router, clawrouter_client):
    def respond(body: dict[str, Any]) -> httpx.Response:
        if body.get("stream"):
            return streaming(TEXT_STREAM)(body)
        return httpx.Response(200, json=message(usage={"input_tokens": 10, "output_tokens": 5}))

    fake = FakeAnthropic(respond)

    class Plugin:
        __name__ = "anthropic-test"

        @hookimpl
        def register_providers(self, config):
            return [make(fake)]

        @hookimpl
        def register_models(self, config):
            return [
                {
                    "id": "anthropic/claude-sonnet",
                    "provider": "anthropic",
                    "upstream": UPSTREAM,
                    "input_price": 3,
                    "output_price": 15,
                    "capabilities": ["streaming", "tools", "vision"],
                }
            ]

    router = clawrouter_router({"providers": {}}, plugins=[Plugin()])
    client = await clawrouter_client(router)
    request = {
        "model": "anthropic/claude-sonnet",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 64,
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    assert response.headers["x-clawrouter-provider"] == "anthropic"
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hi! My name is Claude."
    assert body["usage"]["total_tokens"] == 15
    assert float(response.headers["x-clawrouter-cost-usd"]) == pytest.approx((10 * 3 + 5 * 15) / 1e6)
    assert fake.body == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "system": "Be brief.",
    }
    assert KEY not in repr(router.providers["anthropic"])

    streamed = await client.post(
        "/v1/chat/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert streamed.status_code == 200
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text_of(chunks) == 'Hello, wor"ld\n'
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 50

    refused = await client.post("/v1/chat/completions", json={**request, "logit_bias": {"1": 5}})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and "'logit_bias'" in error["message"]
    assert error["param"] == "logit_bias"


async def test_unsupported_parameter_falls_back_to_the_next_model_of_the_chain(clawrouter_router, clawrouter_client):
    fake = FakeAnthropic()

    class Plugin:
        __name__ = "anthropic-fallback-test"

        @hookimpl
        def register_providers(self, config):
            return [make(fake)]

        @hookimpl
        def register_models(self, config):
            return [
                {
                    "id": "anthropic/claude-sonnet",
                    "provider": "anthropic",
                    "upstream": UPSTREAM,
                    "input_price": 3,
                    "output_price": 15,
                    "fallbacks": ["simulated/eco"],
                }
            ]

    router = clawrouter_router({"providers": {"simulated": {"kind": "simulated"}}}, plugins=[Plugin()])
    client = await clawrouter_client(router)
    request = {"model": "anthropic/claude-sonnet", "messages": [{"role": "user", "content": "Hi"}]}
    response = await client.post("/v1/chat/completions", json={**request, "seed": 7})
    assert response.status_code == 200 and response.headers["x-clawrouter-model"] == "simulated/eco"
    assert not fake.requests  # refused before reaching Anthropic
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200 and response.headers["x-clawrouter-model"] == "anthropic/claude-sonnet"
    assert router.breakers.get("anthropic", "anthropic/claude-sonnet").state == "closed"
