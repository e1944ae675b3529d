"""The aiohttp and httpx transports against a real upstream on 127.0.0.1, and SSE parsing."""

from __future__ import annotations

import asyncio
import json

import pytest

from clawrouter.catalogue import ModelInfo
from clawrouter.providers import (
    ContentPolicyViolation,
    ContextWindowExceeded,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from clawrouter.providers.base import ChatCall
from clawrouter.providers.openai_compat import OpenAICompatibleProvider, OpenAISettings
from clawrouter.server import BackgroundServer
from clawrouter.upstream import AiohttpTransport, HttpxTransport, Timeouts, iter_sse_batches, iter_sse_data
from clawrouter.wire import decode_request

ERRORS = {
    "rate": (429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after": "7"}),
    "server": (503, {"error": {"message": "overloaded"}}, {}),
    "auth": (401, {"error": {"message": "bad key sk-upstream"}}, {}),
    "context": (400, {"error": {"message": "too long", "code": "context_length_exceeded"}}, {}),
    "policy": (400, {"error": {"message": "refused", "code": "content_filter"}}, {}),
    "bad": (400, {"error": {"message": "temperature must be <= 2", "code": "invalid_value"}}, {}),
    "html": (502, "<html>bad gateway</html>", {}),
}


async def upstream(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    model = request["model"]
    if model == "slow":
        await asyncio.sleep(1)
    if model in ERRORS:
        status, payload, headers = ERRORS[model]
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": data})
        return
    if request.get("stream"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"w{i} "}}],
            }
            # split each event across two writes to exercise reassembly
            text = f"data: {json.dumps(chunk)}\n\n".encode()
            await send({"type": "http.response.body", "body": text[:10], "more_body": True})
            await send({"type": "http.response.body", "body": text[10:], "more_body": True})
        usage = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        }
        await send(
            {
                "type": "http.response.body",
                "body": f": comment\n\ndata: {json.dumps(usage)}\n\n".encode(),
                "more_body": True,
            }
        )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    data = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(upstream) as running:
        yield running


def call(model: str, stream: bool = False) -> ChatCall:
    body = json.dumps(
        {"model": "client-name", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    info = ModelInfo(id="m", provider="up", upstream=model, input_price=1, output_price=1)
    return ChatCall(decode_request(body), info, body)


@pytest.fixture(params=["aiohttp", "httpx"])
async def provider(request, server):
    transport = AiohttpTransport() if request.param == "aiohttp" else HttpxTransport()
    settings = OpenAISettings(
        base_url=server.url + "/v1",
        api_key="sk-upstream",
        timeouts=Timeouts(connect=1, first_byte=0.3, total=2),
        prewarm=False,
    )
    provider = OpenAICompatibleProvider("up", settings, transport)
    await provider.start()
    yield provider
    await provider.aclose()


async def test_chat_and_stream(provider):
    completion = await provider.chat(call("real"))
    assert json.loads(completion.body)["model"] == "real" and completion.usage.total_tokens == 3
    c = call("real", stream=True)
    batches = [batch async for batch in provider.stream(c)]
    assert all(isinstance(batch, list) for batch in batches)  # chunks that arrived together stay together
    chunks = [json.loads(x) for batch in batches for x in batch]
    assert [ch["choices"][0]["delta"]["content"] for ch in chunks] == ["w0 ", "w1 ", "w2 "]
    assert c.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("rate", UpstreamRateLimited, 429),
        ("server", UpstreamServerError, 502),
        ("auth", UpstreamAuthError, 502),
        ("context", ContextWindowExceeded, 400),
        ("policy", ContentPolicyViolation, 400),
        ("bad", UpstreamBadRequest, 400),
        ("html", UpstreamServerError, 502),
        ("slow", UpstreamTimeout, 504),
    ],
)
async def test_errors_are_mapped(provider, model, error, status):
    with pytest.raises(error) as caught:
        await provider.chat(call(model))
    assert caught.value.status == status
    assert "sk-upstream" not in caught.value.message
    if model == "rate":
        assert caught.value.retry_after == 7 and (b"retry-after", b"7") in caught.value.headers
    if model == "bad":
        assert "temperature must be <= 2" in caught.value.message and caught.value.fallback is False


async def test_connection_refused_is_unavailable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for transport in (AiohttpTransport(), HttpxTransport()):
        provider = OpenAICompatibleProvider("gone", OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1"), transport)
        with pytest.raises(UpstreamUnavailable):
            await provider.chat(call("x"))
        await provider.aclose()


async def test_sse_parser_edge_cases():
    async def feed(*parts: bytes):
        for part in parts:
            yield part

    got = [
        x
        async for x in iter_sse_data(feed(b"data: a\r\n\r\ndata:", b" b\n", b"data: c\n\n: ping\n\nevent: x\ndata: d"))
    ]
    assert got == [b"a", b"b\nc", b"d"]


async def test_sse_batches_keep_events_that_arrived_together():
    async def feed(*parts: bytes):
        for part in parts:
            yield part

    batches = [b async for b in iter_sse_batches(feed(b"data: 1\n\ndata: 2\n\ndata: 3", b"\n\n"))]
    assert batches == [[b"1", b"2"], [b"3"]]
    with pytest.raises(UpstreamUnavailable, match="middle of an event"):
        [b async for b in iter_sse_batches(feed(b'data: {"a": 1}\n\ndata: {"cut'), json=True)]
    assert [b async for b in iter_sse_batches(feed(b'data: {"a": 1}'), json=True)] == [[b'{"a": 1}']]
