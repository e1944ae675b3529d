"""OpenTelemetry traces (``[observability] traces``): the span tree of a request (server span,
one span per stage, one client span per upstream attempt), the GenAI and clawrouter attributes,
W3C trace context in (``traceparent``, a host app's current span) and out (to upstreams),
sampling, OTLP export to a real local collector, the console exporters and config errors.

The upstream is a real OpenAI-compatible HTTP server on 127.0.0.1 (uvicorn in a thread) that
records the headers of every request it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import paid_router
import pytest
from helpers import chat
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_collector import OtlpCollector
from paid_router import make_router
from starlette.applications import Starlette
from starlette.middleware import Middleware

from clawrouter import ConfigError, hookimpl
from clawrouter.config import load_config
from clawrouter.context import SCOPE_KEY
from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.receipts import decode_receipt_header
from clawrouter.router import Router
from clawrouter.server import BackgroundServer
from clawrouter.telemetry.tracing import Trace

URL = "/v1/chat/completions"
ROOT = "POST /v1/chat/completions"
PROMPT_TOKENS, COMPLETION_TOKENS = 11, 3
STREAM_PAUSE = 0.3  # seconds between a "slow" upstream model's first and last chunks
TOLERANCE = 5_000_000  # ns: root and stage times come from different clocks (perf_counter, time_ns)

chain = paid_router.chain  # a fixture: one in-process chain per module
wallets = paid_router.wallets  # a fixture: (settler, agent funded, operator)


# --- a real OpenAI-compatible upstream -------------------------------------------------------


class FakeUpstream:
    """An OpenAI-compatible ``/v1/chat/completions`` that records each request's headers and body.

    By upstream model name: ``fail-*`` answers 503; ``slow-*`` streams with a pause of
    STREAM_PAUSE seconds before its last content chunk; anything else answers at once. Usage is
    always PROMPT_TOKENS / COMPLETION_TOKENS, the finish reason "stop"."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.loads(raw)
        record: dict[str, Any] = {
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            "body": body,
            "last_chunk_ns": 0,
        }
        self.requests.append(record)
        model = body["model"]
        if model.startswith("fail"):
            error = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
            await send(
                {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": error})
            return
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
        usage["total_tokens"] = PROMPT_TOKENS + COMPLETION_TOKENS
        if not body.get("stream"):
            completion = {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": usage,
            }
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": json.dumps(completion).encode()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        async def event(data: dict | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            await send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})

        await event(chunk({"role": "assistant", "content": "hello"}))
        if model.startswith("slow"):
            await asyncio.sleep(STREAM_PAUSE)
        await event(chunk({"content": " world"}))
        await event(chunk({}, "stop"))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            await event(
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        await event("[DONE]")
        record["last_chunk_ns"] = time.time_ns()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def served_upstream():
    app = FakeUpstream()
    with BackgroundServer(app) as server:
        app.url = server.url
        yield app


@pytest.fixture
def upstream(served_upstream):
    served_upstream.requests.clear()
    yield served_upstream
    served_upstream.requests.clear()


MODELS = [
    {
        "id": "t/alpha",
        "provider": "up",
        "upstream": "alpha-up",
        "input_price": 1.0,
        "output_price": 2.0,
        "quality": {"chat": 0.9, "coding": 0.9, "reasoning": 0.9},
        "fallbacks": ["t/beta"],
    },
    {
        "id": "t/beta",
        "provider": "up",
        "upstream": "beta-up",
        "input_price": 0.5,
        "output_price": 1.0,
        "quality": {"chat": 0.7, "coding": 0.7, "reasoning": 0.7},
    },
    {
        "id": "t/broken",
        "provider": "up",
        "upstream": "fail-up",
        "input_price": 0.1,
        "output_price": 0.1,
        "fallbacks": ["t/beta"],
    },
    {"id": "t/slow", "provider": "up", "upstream": "slow-up", "input_price": 0.1, "output_price": 0.1},
    {"id": "t/dead", "provider": "up", "upstream": "fail-dead", "input_price": 0.1, "output_price": 0.1},
]


def config(upstream: FakeUpstream, **observability: Any) -> dict[str, Any]:
    return {
        "providers": {
            "up": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-test", "prewarm": False}
        },
        "models": MODELS,
        "execution": {"max_retries": 0},
        "observability": observability,
    }


class SeeTrace:
    """A plugin that records ``ctx.trace`` as the auth stage sees it (and lets the default auth decide)."""

    __name__ = "see-trace"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def actor_from_request(self, router, scope, token):
        self.seen.append(scope[SCOPE_KEY].trace)
        return None


@pytest.fixture
def make(upstream, clawrouter_router, clawrouter_client):
    """``await make(**observability)``: a started router on the fake upstream and its client."""

    async def factory(*, plugins=(), **observability):
        router = clawrouter_router(config(upstream, **observability), plugins=plugins)
        return router, await clawrouter_client(router)

    return factory


# --- helpers -----------------------------------------------------------------------------------


def finished(router: Router) -> list[Any]:
    assert router.telemetry is not None and router.telemetry.tracing is not None
    router.telemetry.flush()
    return list(router.telemetry.tracing.exporter.get_finished_spans())


def by_trace(spans: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for span in spans:
        out.setdefault(span.context.trace_id, []).append(span)
    return out


def tree(spans: list[Any]) -> tuple[Any, dict[str, Any], list[Any]]:
    """(root, stage spans by name, attempt spans in order) of one request's spans, checking
    that they form one tree: the stages under the root, the attempts under the execute stage."""
    [root] = [s for s in spans if s.name == ROOT]
    assert root.kind == SpanKind.SERVER
    trace_id = root.context.trace_id
    assert all(s.context.trace_id == trace_id for s in spans)
    assert len({s.context.span_id for s in spans}) == len(spans)
    stage_spans = [s for s in spans if s.name.startswith("clawrouter.")]
    stages = {s.name: s for s in stage_spans}
    assert len(stages) == len(stage_spans), [s.name for s in stage_spans]  # one span per stage
    for span in stage_spans:
        assert span.kind == SpanKind.INTERNAL
        assert span.parent is not None and span.parent.span_id == root.context.span_id
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.attributes["clawrouter.attempt"])
    assert len(spans) == 1 + len(stage_spans) + len(attempts)
    if attempts:
        execute = stages["clawrouter.execute"]
        for span in attempts:
            assert span.parent is not None and span.parent.span_id == execute.context.span_id
            assert span.name.startswith("chat ")
    for span in spans:
        assert span.start_time <= span.end_time, span.name
        assert span.resource.attributes["service.name"] == "clawrouter"
        assert span.instrumentation_scope.name == "clawrouter"
    return root, stages, attempts


def within(inner: Any, outer: Any) -> None:
    assert outer.start_time - TOLERANCE <= inner.start_time, (inner.name, outer.name)
    assert inner.end_time <= outer.end_time + TOLERANCE, (inner.name, outer.name)


def parse(traceparent: str) -> tuple[str, int, int, str]:
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert len(trace_id) == 32 and len(parent_id) == 16
    return version, int(trace_id, 16), int(parent_id, 16), flags


def traceparent_of(trace_id: int, span_id: int, flags: str = "01") -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags}"


# --- 1. the span tree of a JSON request ------------------------------------------------------


async def test_json_request_span_tree_and_attributes(make, upstream):
    seen = SeeTrace()
    router, client = await make(plugins=[seen], traces="memory")
    response = await client.post(URL, json=chat(model="premium"))
    assert response.status_code == 200, response.text
    body = response.json()
    served = response.headers["x-clawrouter-model"]
    [sent] = upstream.requests
    upstream_model = sent["body"]["model"]
    assert [type(t) for t in seen.seen] == [Trace]

    spans = finished(router)
    root, stages, attempts = tree(spans)
    assert root.parent is None
    assert set(stages) == {"clawrouter.auth", "clawrouter.route", "clawrouter.execute"}
    [attempt] = attempts
    assert attempt.name == f"chat {upstream_model}"
    for span in [*stages.values(), attempt]:
        within(span, root)
    within(attempt, stages["clawrouter.execute"])
    auth, route, execute = stages["clawrouter.auth"], stages["clawrouter.route"], stages["clawrouter.execute"]
    assert auth.end_time <= route.start_time + TOLERANCE and route.end_time <= execute.start_time + TOLERANCE

    assert root.status.status_code == StatusCode.UNSET
    a = root.attributes
    assert a["http.request.method"] == "POST" and a["http.response.status_code"] == 200
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "premium"
    assert a["gen_ai.response.model"] == served
    assert a["gen_ai.provider.name"] == "up"
    assert a["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert a["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["clawrouter.profile"] == "premium"
    assert isinstance(a["clawrouter.strategy"], str) and a["clawrouter.strategy"]
    assert isinstance(a["clawrouter.decision_us"], float) and a["clawrouter.decision_us"] >= 0
    assert a["clawrouter.request_id"] == response.headers["x-request-id"]
    # the route stage's span lasts the decision's time
    assert route.attributes["clawrouter.strategy"] == a["clawrouter.strategy"]
    assert route.attributes["clawrouter.model"] == served
    assert route.end_time - route.start_time == pytest.approx(a["clawrouter.decision_us"] * 1000, abs=1000)
    assert auth.attributes["clawrouter.actor.kind"]
    assert execute.attributes["gen_ai.response.model"] == served
    b = attempt.attributes
    assert attempt.status.status_code == StatusCode.UNSET
    assert b["gen_ai.operation.name"] == "chat" and b["gen_ai.request.model"] == upstream_model
    assert b["gen_ai.provider.name"] == "up" and b["clawrouter.model"] == served
    assert b["gen_ai.response.model"] == served
    assert b["gen_ai.usage.input_tokens"] == PROMPT_TOKENS and b["gen_ai.usage.output_tokens"] == COMPLETION_TOKENS


# --- 2. a streamed request ------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "include_usage"])
async def test_streamed_request_attempt_lasts_until_the_stream_ends(make, upstream, include_usage):
    router, client = await make(traces="memory")
    request = chat(model="t/slow", stream=True)
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    response = await client.post(URL, json=request)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    [sent] = upstream.requests

    root, stages, attempts = tree(finished(router))
    assert set(stages) == {"clawrouter.auth", "clawrouter.route", "clawrouter.execute"}
    [attempt] = attempts
    assert attempt.name == "chat slow-up"
    for span in [*stages.values(), attempt]:
        within(span, root)
    within(attempt, stages["clawrouter.execute"])
    # the attempt ends with the stream, not with its first chunk
    assert attempt.end_time - attempt.start_time >= STREAM_PAUSE * 1e9 * 0.9
    assert attempt.end_time >= sent["last_chunk_ns"] - TOLERANCE
    assert root.attributes["gen_ai.response.model"] == "t/slow"
    assert root.attributes["gen_ai.usage.output_tokens"] == COMPLETION_TOKENS
    assert tuple(root.attributes.get("gen_ai.response.finish_reasons", ())) == ("stop",)
    assert tuple(attempt.attributes.get("gen_ai.response.finish_reasons", ())) == ("stop",)


# --- 3. trace context in and out --------------------------------------------------------------


async def test_incoming_traceparent_is_the_parent_and_is_propagated_upstream(make, upstream):
    router, client = await make(traces="memory")
    trace_id, parent_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    headers = {"traceparent": traceparent_of(trace_id, parent_id), "tracestate": "vendor=abc"}
    response = await client.post(URL, json=chat(model="t/alpha"), headers=headers)
    assert response.status_code == 200

    root, _, [attempt] = tree(finished(router))
    assert root.context.trace_id == trace_id
    assert root.parent is not None and root.parent.span_id == parent_id and root.parent.is_remote
    assert root.parent.trace_id == trace_id
    [sent] = upstream.requests
    version, sent_trace, sent_parent, flags = parse(sent["headers"]["traceparent"])
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    assert sent_parent == attempt.context.span_id
    assert sent["headers"]["tracestate"] == "vendor=abc"  # passed on unchanged


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # three fields
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has 4 fields
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",  # not hex
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
async def test_malformed_traceparent_starts_a_new_trace(make, upstream, bad):
    router, client = await make(traces="memory")
    response = await client.post(URL, json=chat(model="t/alpha"), headers={"traceparent": bad})
    assert response.status_code == 200, response.text

    root, _, [attempt] = tree(finished(router))
    assert root.parent is None
    assert root.context.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736
    [sent] = upstream.requests
    _, sent_trace, sent_parent, flags = parse(sent["headers"]["traceparent"])
    assert sent_trace == root.context.trace_id and sent_parent == attempt.context.span_id and flags == "01"


# --- 4. fallback ------------------------------------------------------------------------------


async def test_fallback_has_a_failed_and_a_successful_attempt(make, upstream):
    router, client = await make(traces="memory")
    response = await client.post(URL, json=chat(model="t/broken"))
    assert response.status_code == 200, response.text
    assert response.headers["x-clawrouter-model"] == "t/beta"

    root, stages, attempts = tree(finished(router))
    assert set(stages) == {"clawrouter.auth", "clawrouter.route", "clawrouter.execute"}
    first, second = attempts
    assert first.name == "chat fail-up" and second.name == "chat beta-up"
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes["error.type"]
    assert "gen_ai.response.model" not in first.attributes
    assert second.status.status_code == StatusCode.UNSET and "error.type" not in second.attributes
    assert second.attributes["gen_ai.response.model"] == "t/beta"
    assert [first.attributes["clawrouter.attempt"], second.attributes["clawrouter.attempt"]] == [1, 2]
    assert first.end_time <= second.start_time + TOLERANCE
    for span in attempts:
        within(span, stages["clawrouter.execute"])
    assert root.status.status_code == StatusCode.UNSET
    assert root.attributes["gen_ai.request.model"] == "t/broken"
    assert root.attributes["gen_ai.response.model"] == "t/beta"
    assert "error.type" not in root.attributes
    # each attempt sent its own span id upstream
    sent = [parse(r["headers"]["traceparent"]) for r in upstream.requests]
    assert [r["body"]["model"] for r in upstream.requests] == ["fail-up", "beta-up"]
    assert [p[2] for p in sent] == [first.context.span_id, second.context.span_id]
    assert {p[1] for p in sent} == {root.context.trace_id}


async def test_all_attempts_failing_marks_execute_and_root_as_errors(make, upstream):
    router, client = await make(traces="memory")
    response = await client.post(URL, json=chat(model="t/dead"))
    assert response.status_code >= 500

    root, stages, [attempt] = tree(finished(router))
    assert attempt.name == "chat fail-dead"
    assert attempt.status.status_code == StatusCode.ERROR and attempt.attributes["error.type"]
    execute = stages["clawrouter.execute"]
    assert execute.status.status_code == StatusCode.ERROR and execute.attributes["error.type"]
    within(attempt, execute)
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["error.type"] == str(response.status_code)
    assert root.attributes["http.response.status_code"] == response.status_code
    assert "gen_ai.response.model" not in root.attributes


async def test_client_errors_leave_the_server_span_status_unset(make, upstream):
    """OpenTelemetry's HTTP conventions: a SERVER span's status stays unset for a 4xx answer
    (the caller's error, not the server's); ``http.response.status_code`` tells it."""
    router, client = await make(traces="memory")
    response = await client.post(URL, json=chat(model="no/such-model"))
    assert 400 <= response.status_code < 500
    [root] = [s for s in finished(router) if s.name == ROOT]
    assert root.attributes["http.response.status_code"] == response.status_code
    assert "error.type" not in root.attributes
    assert root.status.status_code == StatusCode.UNSET, root.status.description
    assert upstream.requests == []


# --- 5. a paid request ------------------------------------------------------------------------


async def paid_call(chain, wallets) -> tuple[list[Any], dict, dict, httpx.Response]:
    """A 402 challenge then a paid call on the in-process chain: (spans, accepts, settlement, response)."""
    _, agent, _ = wallets
    router = make_router(chain, wallets, sections={"observability": {"traces": "memory"}})
    request = {"model": "eco", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 40}
    transport = httpx.ASGITransport(router.app)
    async with router.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://router.test") as client:
        challenge = await client.post(URL, json=request)
        assert challenge.status_code == 402
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        signature = payment_header(pay_exact(accepts, agent.private_key))
        response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": signature})
        assert response.status_code == 200, response.text
        settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
        assert settlement["success"] is True
        spans = finished(router)
    return spans, accepts, settlement, response


async def test_paid_request_has_verify_and_settle_spans(chain, wallets):
    spans, accepts, settlement, response = await paid_call(chain, wallets)
    traces = list(by_trace(spans).values())
    assert len(traces) == 2
    refused, paid = sorted(traces, key=lambda t: len(t))
    # the challenge: a verify span with error.type, nothing executed
    root, stages, attempts = tree(refused)
    assert root.attributes["http.response.status_code"] == 402
    assert set(stages) == {"clawrouter.auth", "clawrouter.route", "clawrouter.verify"}
    assert not attempts
    verify = stages["clawrouter.verify"]
    assert verify.status.status_code == StatusCode.ERROR and verify.attributes["error.type"]
    # the paid call
    quote = int(accepts["amount"]) / 1e6
    root, stages, [attempt] = tree(paid)
    assert set(stages) == {
        "clawrouter.auth",
        "clawrouter.verify",
        "clawrouter.route",
        "clawrouter.execute",
        "clawrouter.settle",
    }
    for span in [*stages.values(), attempt]:
        within(span, root)
    verify, settle = stages["clawrouter.verify"], stages["clawrouter.settle"]
    within(stages["clawrouter.route"], verify)  # paid: the route is decided while verifying
    assert verify.status.status_code == StatusCode.UNSET
    assert verify.attributes["clawrouter.payment.network"] == chain.network
    assert verify.attributes["clawrouter.payment.scheme"] == "exact"
    assert verify.attributes["clawrouter.quote_usd"] == pytest.approx(quote)
    assert settle.status.status_code == StatusCode.UNSET
    assert settle.attributes["clawrouter.payment.network"] == chain.network
    assert settle.attributes["clawrouter.payment.transaction"] == settlement["transaction"]
    assert settle.attributes["clawrouter.payment.settled"] is True
    assert settle.attributes["clawrouter.charged_usd"] > 0
    assert stages["clawrouter.execute"].end_time <= settle.start_time + TOLERANCE
    a = root.attributes
    assert root.status.status_code == StatusCode.UNSET
    assert a["clawrouter.payment.network"] == chain.network
    assert a["clawrouter.quote_usd"] == pytest.approx(quote)
    assert a["clawrouter.charged_usd"] == settle.attributes["clawrouter.charged_usd"]
    assert a["clawrouter.payment.transaction"] == settlement["transaction"]
    assert a["clawrouter.payment.settled"] is True
    assert a["gen_ai.response.model"] == response.headers["x-clawrouter-model"]


async def test_paid_request_charged_usd_is_what_the_settlement_charged(chain, wallets):
    """``clawrouter.charged_usd`` agrees with the PAYMENT-RESPONSE's amount and the receipt's
    ``charged`` (an ``exact`` payment charges what was signed, the whole quote)."""
    spans, accepts, settlement, response = await paid_call(chain, wallets)
    receipt = decode_receipt_header(response.headers["x-clawrouter-receipt"])
    charged = int(settlement["amount"]) / 1e6
    assert int(receipt.charged) / 1e6 == charged == int(accepts["amount"]) / 1e6
    [settle] = [s for s in spans if s.name == "clawrouter.settle"]
    [root] = [s for s in spans if s.name == ROOT and s.attributes["http.response.status_code"] == 200]
    assert settle.attributes["clawrouter.charged_usd"] == pytest.approx(charged)
    assert root.attributes["clawrouter.charged_usd"] == pytest.approx(charged)


# --- 6. a host app's current span -------------------------------------------------------------


class SpanMiddleware:
    """What a host's OpenTelemetry instrumentation does: each request runs in a server span."""

    def __init__(self, app: Any, tracer: Any, spans: list[Any]) -> None:
        self.app, self.tracer, self.spans = app, tracer, spans

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/llm/"):
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span(f"host {scope['path']}", kind=SpanKind.SERVER) as span:
            self.spans.append(span.get_span_context())
            await self.app(scope, receive, send)


async def test_host_apps_current_span_is_the_parent(upstream):
    router = Router(load_config(data=config(upstream, traces="memory"), env={}), entry_points=False, env={})
    provider = TracerProvider()  # the host's own, not the global one
    host_exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(host_exporter))
    tracer = provider.get_tracer("host-app")
    host_spans: list[Any] = []
    host = Starlette(middleware=[Middleware(SpanMiddleware, tracer=tracer, spans=host_spans)])
    router.mount(host, "/llm")
    try:
        transport = httpx.ASGITransport(host)
        async with router.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            response = await client.post("/llm" + URL, json=chat(model="t/alpha"))
            assert response.status_code == 200, response.text
            # and a span the test itself made current
            direct_transport = httpx.ASGITransport(router.app)
            async with httpx.AsyncClient(transport=direct_transport, base_url="http://router") as direct_client:
                with tracer.start_as_current_span("caller") as outer:
                    direct = await direct_client.post(URL, json=chat(model="t/alpha"))
            assert direct.status_code == 200
            spans = finished(router)
    finally:
        provider.shutdown()

    [host_context] = host_spans
    traces = by_trace(spans)
    assert len(traces) == 2
    root, _, [attempt] = tree(traces[host_context.trace_id])
    assert root.parent is not None and root.parent.span_id == host_context.span_id
    assert root.parent.trace_id == host_context.trace_id
    [host_span] = [s for s in host_exporter.get_finished_spans() if s.name.startswith("host ")]
    within(root, host_span)
    outer_context = outer.get_span_context()
    root, _, _ = tree(traces[outer_context.trace_id])
    assert root.parent is not None and root.parent.span_id == outer_context.span_id
    sent = [parse(r["headers"]["traceparent"]) for r in upstream.requests]
    assert [p[1] for p in sent] == [host_context.trace_id, outer_context.trace_id]
    assert sent[0][2] == attempt.context.span_id


# --- 7. sampling ------------------------------------------------------------------------------


async def test_sample_ratio_zero_exports_nothing_but_still_propagates(make, upstream):
    router, client = await make(traces="memory", sample_ratio=0)
    for _ in range(3):
        assert (await client.post(URL, json=chat(model="t/alpha"))).status_code == 200
    assert finished(router) == []
    assert len(upstream.requests) == 3
    sent = [parse(r["headers"]["traceparent"]) for r in upstream.requests]
    assert all(version == "00" and flags == "00" and trace_id and span_id for version, trace_id, span_id, flags in sent)
    assert len({p[1] for p in sent}) == 3  # a new trace each time
    # a caller's sampled traceparent is followed whatever the ratio
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    headers = {"traceparent": traceparent_of(trace_id, 0xB7AD6B7169203331)}
    assert (await client.post(URL, json=chat(model="t/alpha"), headers=headers)).status_code == 200
    root, _, [attempt] = tree(finished(router))
    assert root.context.trace_id == trace_id
    assert parse(upstream.requests[-1]["headers"]["traceparent"])[1:] == (trace_id, attempt.context.span_id, "01")


async def test_unsampled_incoming_traceparent_exports_nothing(make, upstream):
    router, client = await make(traces="memory", sample_ratio=1)
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    headers = {"traceparent": traceparent_of(trace_id, parent_id, "00")}
    response = await client.post(URL, json=chat(model="t/alpha"), headers=headers)
    assert response.status_code == 200
    assert finished(router) == []
    [sent] = upstream.requests
    version, sent_trace, sent_parent, flags = parse(sent["headers"]["traceparent"])
    assert (version, sent_trace, flags) == ("00", trace_id, "00")
    assert sent_parent not in (0, parent_id)  # the attempt's own (unexported) span id


# --- 8. traces off ------------------------------------------------------------------------------


async def test_traces_are_off_by_default(make, upstream):
    seen = SeeTrace()
    router, client = await make(plugins=[seen])
    assert router.telemetry is not None and router.telemetry.tracing is None
    headers = {"traceparent": traceparent_of(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)}
    assert (await client.post(URL, json=chat(model="t/alpha"), headers=headers)).status_code == 200
    assert (await client.post(URL, json=chat(model="t/slow", stream=True))).status_code == 200
    assert seen.seen == [None, None]
    assert len(upstream.requests) == 2
    assert all("traceparent" not in r["headers"] and "tracestate" not in r["headers"] for r in upstream.requests)


async def test_observability_disabled_has_no_telemetry_stage(make, upstream):
    seen = SeeTrace()
    router, client = await make(plugins=[seen], enabled=False)
    assert router.telemetry is None
    assert (await client.post(URL, json=chat(model="t/alpha"))).status_code == 200
    assert seen.seen == [None] and "traceparent" not in upstream.requests[0]["headers"]


# --- 9. OTLP export to a real collector -----------------------------------------------------------


async def wait_until(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def value_of(point: Any) -> float:
    return point.as_int if point.HasField("as_int") else point.as_double


def attributes_of(items: Any) -> dict[str, Any]:
    out = {}
    for kv in items:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return out


async def test_otlp_export_to_a_local_collector(upstream, clawrouter_router):
    with OtlpCollector() as collector:
        observability = {
            "traces": "otlp",
            "metrics": "otlp",
            "otlp_endpoint": collector.url + "/",
            "otlp_headers": {"x-tenant": "t1"},
            "export_interval_seconds": 0.5,
            "service_name": "claw-otlp",
        }
        router = clawrouter_router(config(upstream, **observability))
        await router.start()
        try:
            transport = httpx.ASGITransport(router.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for request in (chat(model="t/alpha"), chat(model="t/beta"), chat(model="t/alpha", stream=True)):
                    assert (await client.post(URL, json=request)).status_code == 200
            assert await wait_until(lambda: bool(collector.metrics), 2.0)  # the periodic export
        finally:
            await router.stop()  # flushes spans, exports metrics one last time
            if router.telemetry is not None and router.telemetry.tracing is not None:
                await asyncio.to_thread(router.telemetry.tracing.shutdown)
        assert collector.wait_for(lambda: bool(collector.traces), 2.0)
    assert collector.errors == []
    assert all(h.get("x-tenant") == "t1" for h in collector.headers)
    assert all(h.get("content-type") == "application/x-protobuf" for h in collector.headers)

    spans = []
    for message in collector.traces:
        for resource_spans in message.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            assert resource["service.name"] == "claw-otlp"
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "clawrouter"
                spans.extend(scope_spans.spans)
    assert len(spans) == 3 * 5
    roots = [s for s in spans if s.name == ROOT]
    assert len(roots) == 3 and all(s.kind == s.SPAN_KIND_SERVER and not s.parent_span_id for s in roots)
    trace_ids = {s.trace_id for s in roots}
    assert len(trace_ids) == 3 and {s.trace_id for s in spans} == trace_ids
    sent = {parse(r["headers"]["traceparent"])[1:3] for r in upstream.requests}
    attempts = [s for s in spans if s.kind == s.SPAN_KIND_CLIENT]
    assert sent == {(int.from_bytes(s.trace_id, "big"), int.from_bytes(s.span_id, "big")) for s in attempts}
    assert sorted(s.name for s in attempts) == ["chat alpha-up", "chat alpha-up", "chat beta-up"]
    names = sorted(s.name for s in spans if s not in roots and s not in attempts)
    assert names == sorted(["clawrouter.auth", "clawrouter.route", "clawrouter.execute"] * 3)
    for root in roots:
        attributes = attributes_of(root.attributes)
        assert attributes["gen_ai.usage.input_tokens"] == PROMPT_TOKENS
        assert attributes["http.response.status_code"] == 200

    last = collector.metrics[-1]  # cumulative: the final export has it all
    metrics: dict[str, Any] = {}
    for resource_metrics in last.resource_metrics:
        assert attributes_of(resource_metrics.resource.attributes)["service.name"] == "claw-otlp"
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                metrics[metric.name] = metric
    assert {"clawrouter.requests", "gen_ai.server.request.duration", "clawrouter.tokens"} <= set(metrics)
    requests = metrics["clawrouter.requests"].sum
    assert requests.is_monotonic
    by_model = {attributes_of(p.attributes)["gen_ai.response.model"]: value_of(p) for p in requests.data_points}
    assert by_model == {"t/alpha": 2, "t/beta": 1}
    duration = metrics["gen_ai.server.request.duration"]
    assert duration.unit == "s"
    points = duration.histogram.data_points
    assert sum(p.count for p in points) == 3
    for point in points:
        assert sum(point.bucket_counts) == point.count and point.sum > 0
        assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
    tokens: dict[str, float] = {}
    for point in metrics["clawrouter.tokens"].sum.data_points:
        kind = attributes_of(point.attributes)["gen_ai.token.type"]
        tokens[kind] = tokens.get(kind, 0) + value_of(point)
    assert tokens == {"input": 3 * PROMPT_TOKENS, "output": 3 * COMPLETION_TOKENS}


# --- 10. console exporters ------------------------------------------------------------------------

CONSOLE_SCRIPT = """
import asyncio, httpx
from clawrouter.config import load_config
from clawrouter.router import Router

async def main():
    data = {"observability": {"traces": "console", "metrics": "console", "service_name": "claw-console"}}
    router = Router(load_config(data=data, env={}), entry_points=False, env={})
    await router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "eco", "messages": [{"role": "user", "content": "hello"}]})
        assert response.status_code == 200, response.text
    await router.stop()

asyncio.run(main())
"""


def json_documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    out, at = [], 0
    while True:
        start = text.find("{", at)
        if start < 0:
            return out
        document, at = decoder.raw_decode(text, start)
        out.append(document)


def test_console_exporters_write_to_stdout(tmp_path):
    # In a child process: the SDK's console exporters bind sys.stdout when they are imported
    # (a default argument), which in-process capture (capsys/capfd) cannot reliably see.
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    documents = json_documents(result.stdout)
    spans = [d for d in documents if "context" in d and "name" in d]
    metric_exports = [d for d in documents if "resource_metrics" in d]
    names = sorted(s["name"] for s in spans)
    assert ROOT in names, names
    [root] = [s for s in spans if s["name"] == ROOT]
    assert root["kind"] == "SpanKind.SERVER"
    assert root["resource"]["attributes"]["service.name"] == "claw-console"
    assert {"clawrouter.auth", "clawrouter.route", "clawrouter.execute"} <= set(names)
    assert any(s["kind"] == "SpanKind.CLIENT" for s in spans)
    assert metric_exports
    exported = {
        m["name"] for rm in metric_exports[-1]["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
    }
    assert {"clawrouter.requests", "gen_ai.server.request.duration", "clawrouter.tokens"} <= exported


# --- 11. config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observability", "key"),
    [
        ({"traces": "jaeger"}, "observability.traces"),
        ({"metrics": "prometheus"}, "observability.metrics"),
        ({"traces": "memory", "sample_ratio": 2}, "observability.sample_ratio"),
        ({"traces": "memory", "sample_ratio": -0.1}, "observability.sample_ratio"),
        ({"enabled": False, "traces": "memory"}, "observability.enabled"),
        ({"enabled": False, "metrics": "console"}, "observability.enabled"),
        ({"metrics": "otlp", "export_interval_seconds": 0}, "observability.export_interval_seconds"),
    ],
)
def test_config_errors(observability, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Router(load_config(data={"observability": observability}, env={}), entry_points=False, env={})
