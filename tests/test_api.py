"""The HTTP surface, in process: endpoints, errors, streaming, fallback, auth."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import chat, sse_events
from plugins.recorder import Recorder

from clawrouter import hookimpl
from clawrouter.default_auth import hash_key
from clawrouter.providers.openai_compat import OpenAICompatibleProvider, OpenAISettings
from clawrouter.upstream import HttpxTransport
from plugins import echo_provider

URL = "/v1/chat/completions"


@pytest.fixture
async def client(clawrouter_router, clawrouter_client):
    return await clawrouter_client(clawrouter_router())


async def test_chat_completion(client):
    response = await client.post(URL, json=chat("What is x402?", model="eco"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] == 48
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["x-clawrouter-model"] == "simulated/eco"
    assert response.headers["x-clawrouter-provider"] == "simulated"
    assert response.headers["x-request-id"].startswith("req_")
    # cost = tokens x catalogue prices ($0.10/M in, $0.40/M out), exact
    expected = (usage["prompt_tokens"] * 100_000 + usage["completion_tokens"] * 400_000) / 1e12
    assert float(response.headers["x-clawrouter-cost-usd"]) == pytest.approx(expected, rel=0, abs=1e-15)


async def test_max_tokens_caps_output(client):
    body = (await client.post(URL, json=chat(model="eco", max_tokens=3))).json()
    assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"


async def test_streaming(client):
    response = await client.post(URL, json=chat(model="eco", stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 48
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 48
    assert response.text.endswith("data: [DONE]\n\n")


async def test_models_and_health(client):
    models = (await client.get("/v1/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert models["object"] == "list" and ids[:3] == ["simulated/eco", "simulated/standard", "simulated/premium"]
    assert {"auto", "eco", "premium"} <= set(ids)
    health = (await client.get("/-/health")).json()
    assert health["status"] == "ok" and health["providers"] == ["simulated"]


BAD_BODIES = [
    (b"{", "not valid JSON", None),
    (b"", "request body is empty", None),
    (b"   ", "request body is empty", None),
    (b"[]", "Expected `object`, got `array`", None),
    (b"null", "Expected `object`, got `null`", None),
    (b'"hi"', "Expected `object`, got `str`", None),
    (b"\xff\xfe", "not valid JSON", None),
    (b'{"messages":[{"role":"user","content":"hi"}]}', "missing required field `model`", None),
    (b'{"model":"auto"}', "missing required field `messages`", None),
    (b'{"model":"auto","messages":"hi"}', "Expected `array`, got `str` - at `$.messages`", "messages"),
    (b'{"model":7,"messages":[]}', "Expected `str`, got `int` - at `$.model`", "model"),
    (b'{"model":"auto","messages":[]}', "at least one message", "messages"),
    (b'{"model":"auto","messages":[{"role":"wizard","content":"hi"}]}', "at `$.messages[0].role`", "messages[0].role"),
    (b'{"model":"auto","messages":[{"role":"user","content":5}]}', "at `$.messages[0].content`", "messages[0].content"),
    (b'{"model":"auto","stream":"yes","messages":[{"role":"user","content":"hi"}]}', "at `$.stream`", "stream"),
    (
        b'{"model":"auto","max_tokens":"many","messages":[{"role":"user","content":"hi"}]}',
        "at `$.max_tokens`",
        "max_tokens",
    ),
    (
        b'{"model":"gpt-nonexistent","messages":[{"role":"user","content":"hi"}]}',
        "'gpt-nonexistent' is not in",
        "model",
    ),
    (b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}{}', "not valid JSON", None),
    (b"[" * 5000 + b"]" * 5000, "Expected `object`, got `array`", None),
    (b'{"model":"auto","messages":' + b"[" * 5000 + b"]" * 5000 + b"}", "at `$.messages[0]`", "messages[0]"),
]


@pytest.mark.parametrize(("body", "message", "param"), BAD_BODIES)
async def test_bad_bodies_get_a_400_naming_the_problem(client, body, message, param):
    response = await client.post(URL, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert error.get("param") == param
    assert "Traceback" not in response.text


async def test_body_over_limit_is_413(clawrouter_router, clawrouter_client):
    client = await clawrouter_client(clawrouter_router({"server": {"max_body_bytes": 100}}))
    big = chat("x" * 200)
    response = await client.post(URL, json=big)
    assert response.status_code == 413
    assert "exceeds the limit of 100 bytes" in response.json()["error"]["message"]

    async def chunked():
        yield b'{"model":"auto","messages":[{"role":"user","content":"'
        yield b"x" * 200
        yield b'"}]}'

    response = await client.post(URL, content=chunked())
    assert response.status_code == 413


async def test_methods_and_paths(client):
    assert (await client.get(URL)).status_code == 405
    assert (await client.post("/v1/models")).status_code == 405
    missing = await client.get("/v2/everything")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


async def test_unexpected_provider_exception_is_a_clean_500(clawrouter_router, clawrouter_client):
    class Broken(echo_provider.EchoProvider):
        async def chat(self, call):
            raise RuntimeError("secret internals")

    class Plugin:
        __name__ = "broken-provider"

        @hookimpl
        def register_providers(self, config):
            return [Broken("echo")]

        @hookimpl
        def register_models(self, config):
            return [{"id": "echo/model", "provider": "echo", "input_price": 1, "output_price": 1}]

    client = await clawrouter_client(clawrouter_router({"providers": {"echo": {"kind": "echo"}}}, plugins=[Plugin()]))
    response = await client.post(URL, json=chat(model="echo/model"))
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "internal error", "type": "server_error"}}


async def test_api_keys_are_checked_against_hashes(clawrouter_router, clawrouter_client):
    recorder = Recorder()
    config = {"auth": {"allow_anonymous": False, "api_keys": [{"name": "team-a", "sha256": hash_key("sk-team-a")}]}}
    client = await clawrouter_client(clawrouter_router(config, plugins=[recorder]))
    assert (await client.post(URL, json=chat(), headers={"authorization": "Bearer sk-team-a"})).status_code == 200
    assert (await client.post(URL, json=chat(), headers={"x-api-key": "sk-team-a"})).status_code == 200
    wrong = await client.post(URL, json=chat(), headers={"authorization": "Bearer sk-other"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    missing = await client.post(URL, json=chat())
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"


async def test_fallback_before_first_byte(clawrouter_router, clawrouter_client):
    config = {
        "providers": {
            "simulated": {"kind": "simulated"},
            "down": {"kind": "echo", "fail_before": True, "fallbacks": ["simulated/eco"]},
        }
    }
    router = clawrouter_router(config, plugins=[echo_provider])
    client = await clawrouter_client(router)
    for stream in (False, True):
        response = await client.post(URL, json=chat(model="down/model", stream=stream))
        assert response.status_code == 200
        assert response.headers["x-clawrouter-model"] == "simulated/eco"
    assert router.providers["down"].calls == 4  # one retry each time (max_retries = 1), then the fallback


async def test_failure_without_fallback_is_the_upstream_error(clawrouter_router, clawrouter_client):
    config = {"providers": {"down": {"kind": "echo", "fail_before": True}}}
    client = await clawrouter_client(clawrouter_router(config, plugins=[echo_provider]))
    response = await client.post(URL, json=chat(model="down/model"))
    assert response.status_code == 502
    assert response.json()["error"] == {"message": "down is down", "type": "upstream_error"}


async def test_stream_cut_after_first_byte_ends_with_in_band_error(clawrouter_router, clawrouter_client):
    recorder = Recorder()
    config = {"providers": {"cut": {"kind": "echo", "fail_after": 2, "fallbacks": []}}}
    router = clawrouter_router(config, plugins=[echo_provider, recorder])
    client = await clawrouter_client(router)
    response = await client.post(URL, json=chat("one two three four", model="cut/model", stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["one", "two"]
    assert json.loads(events[2]) == {"error": {"message": "cut broke mid-stream", "type": "upstream_error"}}
    assert len(events) == 3  # no [DONE] after an error
    await router.events.stop()
    assert recorder.events[-1].type == "request.failed"


async def test_capabilities_constrain_routing(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = await client.post(URL, json=chat(model="eco", tools=tools))
    assert response.headers["x-clawrouter-model"] == "simulated/standard"
    image = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    response = await client.post(URL, json={"model": "eco", "messages": [{"role": "user", "content": image}]})
    assert response.headers["x-clawrouter-model"] == "simulated/standard"
    response = await client.post(URL, json=chat(model="simulated/eco", tools=tools))
    assert response.status_code == 400 and "does not support tools" in response.json()["error"]["message"]


async def test_unknown_fields_are_forwarded_to_openai_compatible_upstreams(clawrouter_router, clawrouter_client):
    seen: list[dict] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body.get("stream"):
            chunks = [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "up",
                    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
                },
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "up",
                    "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                },
            ]
            text = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks) + "data: [DONE]\r\n\r\n"
            return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "up",
                "vendor_extra": True,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )

    class Plugin:
        __name__ = "mock-upstream"

        @hookimpl
        def register_providers(self, config):
            transport = HttpxTransport(httpx.MockTransport(upstream))
            settings = OpenAISettings(base_url="http://upstream.test/v1", api_key="sk-secret")
            return [OpenAICompatibleProvider("mock", settings, transport)]

        @hookimpl
        def register_models(self, config):
            return [
                {"id": "mock-model", "provider": "mock", "upstream": "up-name", "input_price": 1, "output_price": 1}
            ]

    router = clawrouter_router({"providers": {}}, plugins=[Plugin()])
    client = await clawrouter_client(router)
    body = chat(model="mock-model", seed=7, logit_bias={"50256": -100}, vendor_field={"nested": [1, 2]})
    response = await client.post(URL, json=body)
    assert response.status_code == 200
    assert response.json()["vendor_extra"] is True  # upstream fields reach the client
    sent = seen[-1]["body"]
    assert sent["model"] == "up-name"
    assert sent["seed"] == 7 and sent["logit_bias"] == {"50256": -100} and sent["vendor_field"] == {"nested": [1, 2]}
    assert seen[-1]["auth"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(router.providers["mock"])

    streamed = await client.post(URL, json={**body, "stream": True})
    sent = seen[-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    # the usage-only chunk the router asked for is not shown to a client that did not ask
    assert all(json.loads(e)["choices"] for e in events[:-1])
