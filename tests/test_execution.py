"""The execution layer: retries with backoff and Retry-After, fallback, retry budget, circuit
breakers, presets, usage counting, the router's summary in the last stream chunk."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from helpers import chat, sse_events

from clawrouter import hookimpl
from clawrouter.breaker import CircuitBreaker
from clawrouter.providers.openai_compat import PRESETS, OpenAICompatibleProvider, OpenAISettings
from clawrouter.upstream import HttpxTransport

URL = "/v1/chat/completions"


def completion(model: str, text: str = "ok", usage: bool = True) -> dict:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return body


def sse(chunks: list[dict], done: bool = True) -> bytes:
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(model: str, content: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    out = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": choices}
    if usage:
        out["usage"] = usage
    return out


class Upstream:
    """A scripted OpenAI-compatible upstream: per upstream model, a list of responses to give in turn
    (the last one repeats). Records every request with its time."""

    def __init__(self, script: dict[str, list]) -> None:
        self.script = script
        self.requests: list[tuple[float, str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            self.requests.append((time.monotonic(), "HEAD", {}))
            return httpx.Response(404)
        body = json.loads(request.content)
        model = body["model"]
        self.requests.append((time.monotonic(), model, body))
        queue = self.script[model]
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        status, payload, headers = item
        if isinstance(payload, bytes):
            return httpx.Response(status, content=payload, headers={"content-type": "text/event-stream", **headers})
        return httpx.Response(status, json=payload, headers=headers)

    def attempts(self, model: str) -> int:
        return sum(1 for _, m, _ in self.requests if m == model)


def plugin(upstream: Upstream, models: list[str], *, kind: str = "openai", fallbacks: dict | None = None, **settings):
    class Plugin:
        __name__ = "scripted-upstream"

        @hookimpl
        def register_providers(self, config):
            transport = HttpxTransport(httpx.MockTransport(upstream))
            opts = OpenAISettings(kind=kind, base_url="http://upstream.test/v1", api_key="sk-test", **settings)
            return [OpenAICompatibleProvider("up", opts, transport)]

        @hookimpl
        def register_models(self, config):
            return [
                {
                    "id": m,
                    "provider": "up",
                    "input_price": 1.0,
                    "output_price": 2.0,
                    "fallbacks": (fallbacks or {}).get(m, []),
                    "quality": {"chat": 0.9 - i / 10},
                }
                for i, m in enumerate(models)
            ]

    return Plugin()


EXECUTION = {
    "backoff_base": 0.01,
    "backoff_max": 0.02,
    "max_retries": 1,
    "retry_budget": 2,
    "max_retry_wait": 0.5,
    "breaker_failures": 3,
    "breaker_cooldown": 0.3,
}


@pytest.fixture
def make(clawrouter_router, clawrouter_client):
    async def factory(script, models=None, *, execution=None, **kw):
        upstream = Upstream(script)
        models = models or list(script)
        config = {"providers": {}, "execution": {**EXECUTION, **(execution or {})}}
        router = clawrouter_router(config, plugins=[plugin(upstream, models, **kw)])
        return router, upstream, await clawrouter_client(router)

    return factory


async def test_429_retry_after_is_honoured(make):
    router, upstream, client = await make(
        {"a": [(429, {"error": {"message": "slow"}}, {"retry-after": "0.2"}), (200, completion("a"), {})]}
    )
    response = await client.post(URL, json=chat(model="a"))
    assert response.status_code == 200
    (t1, _, _), (t2, _, _) = [r for r in upstream.requests if r[1] == "a"]
    assert t2 - t1 >= 0.2


async def test_retry_after_longer_than_allowed_falls_back_at_once(make):
    router, upstream, client = await make(
        {"a": [(429, {"error": {"message": "slow"}}, {"retry-after": "30"})], "b": [(200, completion("b"), {})]},
        fallbacks={"a": ["b"]},
    )
    started = time.monotonic()
    response = await client.post(URL, json=chat(model="a"))
    assert response.status_code == 200 and response.headers["x-clawrouter-model"] == "b"
    assert time.monotonic() - started < 1 and upstream.attempts("a") == 1


async def test_5xx_is_retried_then_succeeds(make):
    router, upstream, client = await make(
        {"a": [(503, {"error": {"message": "busy"}}, {}), (200, completion("a"), {})]}
    )
    assert (await client.post(URL, json=chat(model="a"))).status_code == 200
    assert upstream.attempts("a") == 2


async def test_timeouts_are_retried_and_fall_back(make):
    router, upstream, client = await make(
        {"a": [httpx.ReadTimeout("slow")], "b": [(200, completion("b"), {})]}, fallbacks={"a": ["b"]}
    )
    response = await client.post(URL, json=chat(model="a"))
    assert response.headers["x-clawrouter-model"] == "b" and upstream.attempts("a") == 2


async def test_retry_budget_bounds_attempts_across_the_chain(make):
    failing = [(500, {"error": {"message": "down"}}, {})]
    router, upstream, client = await make(
        {"a": list(failing), "b": list(failing), "c": list(failing)},
        fallbacks={"a": ["b", "c"]},
        execution={"retry_budget": 1, "breaker_failures": 100},
    )
    response = await client.post(URL, json=chat(model="a"))
    assert response.status_code == 502
    assert [upstream.attempts(m) for m in "abc"] == [2, 1, 1]  # one retry in all, then fallbacks


async def test_context_overflow_falls_back_without_retry(make):
    overflow = (400, {"error": {"message": "maximum context length is 8192", "code": "context_length_exceeded"}}, {})
    router, upstream, client = await make({"a": [overflow], "b": [(200, completion("b"), {})]}, fallbacks={"a": ["b"]})
    response = await client.post(URL, json=chat(model="a"))
    assert response.headers["x-clawrouter-model"] == "b" and upstream.attempts("a") == 1


async def test_bad_request_is_final(make):
    bad = (400, {"error": {"message": "temperature too high", "code": "invalid_value"}}, {})
    router, upstream, client = await make({"a": [bad], "b": [(200, completion("b"), {})]}, fallbacks={"a": ["b"]})
    response = await client.post(URL, json=chat(model="a"))
    assert response.status_code == 400 and "temperature too high" in response.json()["error"]["message"]
    assert upstream.attempts("a") == 1 and upstream.attempts("b") == 0


async def test_circuit_breaker_opens_probes_once_and_closes(make):
    failing = (500, {"error": {"message": "down"}}, {})
    router, upstream, client = await make(
        {"a": [failing, failing, failing, (200, completion("a"), {})], "b": [(200, completion("b"), {})]},
        execution={"max_retries": 0},
        fallbacks={"a": ["b"]},
    )
    for _ in range(3):
        response = await client.post(URL, json=chat(model="a"))  # a fails, its fallback b serves
        assert response.headers["x-clawrouter-model"] == "b"
    assert router.breakers.get("up", "a").state == "open"
    decision = router.decide(router_request("auto"))
    assert decision.primary.id == "b" and decision.excluded == {"a": "circuit: open after repeated upstream failures"}
    before = upstream.attempts("a")
    assert (await client.post(URL, json=chat(model="a"))).status_code == 503  # explicit: skipped, not called
    assert upstream.attempts("a") == before
    await asyncio.sleep(0.35)  # cooldown: half-open, one probe allowed
    response = await client.post(URL, json=chat(model="a"))
    assert response.headers["x-clawrouter-model"] == "a"
    assert router.breakers.get("up", "a").state == "closed"


def router_request(model: str):
    from clawrouter.wire import decode_request

    return decode_request(json.dumps(chat(model=model)).encode())


def test_half_open_allows_a_single_probe():
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow() and not breaker.available()
    now[0] = 10.0
    assert breaker.available() and breaker.allow()  # the probe
    assert breaker.state == "half_open" and not breaker.allow() and not breaker.available()
    breaker.failure()  # the probe failed: open again for a new cooldown
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.release()  # a verdict-less end (e.g. a 400) counts as alive
    assert breaker.state == "closed"


async def test_stream_cut_after_chunks_is_in_band_and_counts_against_the_breaker(make):
    body = sse([chunk("a", "one"), chunk("a", " two")], done=False) + b"data: {broken"
    router, upstream, client = await make({"a": [(200, body, {})]})
    response = await client.post(URL, json=chat(model="a", stream=True))
    events = sse_events(response.text)
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["one", " two"]
    assert json.loads(events[-1])["error"]["type"] == "upstream_error" and "[DONE]" not in events
    assert router.breakers.get("up", "a").failures == 1


async def test_last_stream_chunk_carries_the_router_summary(make):
    usage = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    body = sse([chunk("a", "hi"), chunk("a", finish="stop"), chunk("a", usage=usage)])
    router, upstream, client = await make({"a": [(200, body, {})]})
    for include_usage in (True, False):
        request = chat(model="a", stream=True, stream_options={"include_usage": include_usage})
        events = sse_events((await client.post(URL, json=request)).text)
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert ("usage" in last) is include_usage
        # 10 x $1/M + 4 x $2/M
        assert last["clawrouter"] == {
            "model": "a",
            "provider": "up",
            "request_id": last["clawrouter"]["request_id"],
            "cost_usd": "0.000018",
        }
        assert all("clawrouter" not in json.loads(e) for e in events[:-2])


async def test_usage_is_counted_when_the_upstream_reports_none(make):
    body = sse([chunk("a", "three little words"), chunk("a", finish="stop")])
    router, upstream, client = await make(
        {"a": [(200, body, {})], "j": [(200, completion("j", "two words", usage=False), {})]}
    )
    response = await client.post(URL, json=chat("count me", model="j"))
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 2 and usage["prompt_tokens"] > 0
    assert "x-clawrouter-cost-usd" in response.headers
    events = sse_events(
        (await client.post(URL, json=chat(model="a", stream=True, stream_options={"include_usage": True}))).text
    )
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 3


async def test_mistral_preset_never_sends_stream_options(make):
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    body = sse([chunk("a", "hi", finish="stop"), chunk("a", usage=usage)])
    router, upstream, client = await make({"a": [(200, body, {})]}, kind="mistral")
    await client.post(URL, json=chat(model="a", stream=True, stream_options={"include_usage": True}))
    sent = [b for _, m, b in upstream.requests if m == "a"][-1]
    assert "stream_options" not in sent and sent["stream"] is True


def test_presets_resolve_and_can_be_overridden(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deep")
    settings = OpenAISettings(kind="deepseek")
    assert settings.base_url == PRESETS["deepseek"].base_url and settings.key() == "sk-deep"
    assert OpenAISettings(kind="ollama", base_url="http://127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"
    assert {
        "openai",
        "deepseek",
        "xai",
        "groq",
        "together",
        "fireworks",
        "mistral",
        "openrouter",
        "moonshot",
        "qwen",
        "perplexity",
        "ollama",
        "vllm",
        "llamacpp",
    } <= set(PRESETS)


async def test_connections_are_prewarmed_at_start(make):
    router, upstream, client = await make({"a": [(200, completion("a"), {})]})
    await asyncio.sleep(0.05)
    assert [m for _, m, _ in upstream.requests] == ["HEAD"]


async def test_upstream_error_messages_never_carry_the_key(make):
    echoing = (400, {"error": {"message": "key sk-test is not allowed to use model a"}}, {})
    router, upstream, client = await make({"a": [echoing]})
    response = await client.post(URL, json=chat(model="a"))
    assert response.status_code == 400 and "sk-test" not in response.text and "***" in response.text


async def test_rate_limit_headers_feed_routing_headroom(make):
    headers = {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "5"}
    router, upstream, client = await make({"a": [(200, completion("a"), headers)]})
    assert (await client.post(URL, json=chat(model="a"))).status_code == 200
    router.stats._refreshed = float("-inf")
    router.stats.maybe_refresh()
    assert router.stats.snapshot("a").headroom == 0.05
    assert router.stats.snapshot("a").latency is not None


async def test_client_gone_mid_stream_releases_the_upstream(clawrouter_router):
    from clawrouter.wire import ChatCompletionChunk, ChunkChoice, Delta, encode

    closed = []

    class Slow:
        name = "slow"

        async def start(self):
            return None

        async def aclose(self):
            return None

        async def chat(self, call):
            raise AssertionError("not used")

        async def stream(self, call):
            try:
                for i in range(100):
                    yield encode(ChatCompletionChunk("c", 0, "m", [ChunkChoice(0, Delta(content=str(i)))]))
                    await asyncio.sleep(0)
            finally:
                closed.append(True)

    class Plugin:
        __name__ = "slow-plugin"

        @hookimpl
        def register_providers(self, config):
            return [Slow()]

        @hookimpl
        def register_models(self, config):
            return [{"id": "slow/m", "provider": "slow", "input_price": 1, "output_price": 1}]

    router = clawrouter_router({"providers": {}}, plugins=[Plugin()])
    await router.start()
    body = json.dumps(chat(model="slow/m", stream=True)).encode()
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)
        if len(sent) > 3:
            raise OSError("client went away")

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "root_path": ""}
    await router.app(scope, receive, send)  # the router logs and swallows the broken connection
    assert closed == [True]
    await router.stop()
