"""Execute stage: call the provider along the route's chain and answer.

Retryable errors are retried with backoff within a per-request budget; errors
that allow it (``ProviderError.fallback``) move on to the next model of the
chain, but only before the first byte reached the client; models whose circuit
breaker is open are skipped. This stage is the only retry owner: transports and
adapters never retry. Once a stream has
started, an upstream failure ends it with an in-band SSE error event
(``data: {"error": {...}}``) and a clean close, and the request counts as failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..context import RequestContext, get_context
from ..errors import ClawError, ServiceUnavailable
from ..pricing import cost_pico, usd
from ..providers.base import ChatCall, Completion, ProviderError, UpstreamRateLimited
from ..types import Receive, Scope, Send
from ..wire import ChatCompletionRequest, Usage, encode
from .route import header_constraints

if TYPE_CHECKING:
    from ..catalogue import ModelInfo
    from ..router import Router

log = logging.getLogger("clawrouter.execute")

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")
_DONE = b"data: [DONE]\n\n"


def _model_headers(ctx: RequestContext, model: ModelInfo) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-clawrouter-model", model.id.encode()),
        (b"x-clawrouter-provider", model.provider.encode()),
        (b"x-request-id", ctx.request_id.encode()),
    ]
    if ctx.decision is not None:
        headers.append((b"x-clawrouter-decision-us", f"{ctx.decision.elapsed_ns / 1000:.1f}".encode()))
    return headers


class ExecuteApp:
    """The pipeline's endpoint: an ASGI app, not a middleware."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        ctx = get_context(scope, self.router)
        trace = ctx.trace
        try:
            request = await ctx.chat_request(scope, receive)
            if ctx.decision is None:
                ctx.decision = self.router.decide(request, header_constraints(scope))
                if trace is not None:
                    trace.route(ctx.decision)
            if trace is not None:
                trace.execute_started = time.time_ns()
            if request.stream:
                await self._stream(ctx, request, send)
            else:
                await self._json(ctx, request, send)
        except ClawError as exc:
            if trace is not None and trace.execute_started:
                trace.stage("execute", trace.execute_started, {"error.type": exc.code or str(exc.status)})
            await ctx.fail(exc, send)

    def _finish(self, ctx: RequestContext, model: ModelInfo, usage: Usage | None, last: bytes | None = None) -> None:
        ctx.model = model
        ctx.usage = usage
        if usage is not None:
            ctx.cost_pico = cost_pico(model, usage.prompt_tokens, usage.completion_tokens)
        trace = ctx.trace
        if trace is not None:
            now = time.time_ns()
            attempt = trace.attempts[-1] if trace.attempts else None
            if attempt is not None and not attempt.end:
                attempt.end = now  # a stream's attempt lasts until its last chunk
            if last is not None and not trace.finish_reasons:
                trace.note_finish(last)
            # the model and usage attributes are the collector's to add (spans_of)
            failed = {"error.type": "stream_interrupted"} if ctx.error else None
            trace.stage("execute", trace.execute_started or now, failed)

    async def _json(self, ctx: RequestContext, request: ChatCompletionRequest, send: Send) -> None:
        completion, model = await self._attempt(ctx, request, stream=False)
        assert isinstance(completion, Completion)
        self._finish(ctx, model, completion.usage, completion.body if ctx.trace is not None else None)
        ctx.status, ctx.succeeded = 200, True
        body = completion.body
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *_model_headers(ctx, model)]
        if completion.usage is not None:
            headers.append((b"x-clawrouter-cost-usd", usd(ctx.cost_pico).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, ctx: RequestContext, request: ChatCompletionRequest, send: Send) -> None:
        (first, chunks, call), model = await self._attempt(ctx, request, stream=True)  # type: ignore[misc]
        try:
            await self._relay(ctx, first, chunks, call, model, send)
        finally:
            # a client that went away, or any error: release the upstream connection now
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def _relay(
        self,
        ctx: RequestContext,
        first: bytes | list[bytes] | None,
        chunks: AsyncIterator[bytes | list[bytes]],
        call: ChatCall,
        model: ModelInfo,
        send: Send,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_SSE, _NO_CACHE, *_model_headers(ctx, model)],
            }
        )
        ctx.status = 200
        # The closing chunk (finish_reason or usage) is held until the stream ends, so the
        # router can add its own summary (model, provider, cost) to the last chunk.
        held: bytes | None = None
        try:
            trace = ctx.trace
            if first is not None:
                if trace is not None:
                    trace.note_finish(first)
                held = await _forward(send, first, None)
            async for item in chunks:
                if trace is not None:
                    trace.note_finish(item)
                held = await _forward(send, item, held)
        except ProviderError as exc:
            ctx.error = exc.message
            self._breaker_verdict(model, exc)
            if ctx.trace is not None and ctx.trace.attempts:
                ctx.trace.attempts[-1].error = exc.code or exc.type
            self._finish(ctx, model, call.usage)
            if held is not None:
                await send({"type": "http.response.body", "body": b"data: " + held + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: " + exc.body() + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._finish(ctx, model, call.usage, held)
        ctx.succeeded = True
        self.router.stats.success(model.id, time.perf_counter() - ctx.attempt_started, ctx.ttft)
        if call.ratelimit is not None:
            self.router.stats.ratelimit(model.id, *call.ratelimit)
        if held is not None:
            if held.endswith(b"}"):
                summary = {"model": model.id, "provider": model.provider, "request_id": ctx.request_id}
                if call.usage is not None:
                    summary["cost_usd"] = usd(ctx.cost_pico)
                held = held[:-1] + b',"clawrouter":' + encode(summary) + b"}"
            await send({"type": "http.response.body", "body": b"data: " + held + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": _DONE, "more_body": False})

    def _breaker_verdict(self, model: ModelInfo, exc: ProviderError) -> None:
        """Feed a failure to the model's circuit breaker and live statistics."""
        router = self.router
        breaker = router.breakers.get(model.provider, model.id)
        if exc.unhealthy:
            breaker.failure()
            router.stats.failure(model.id)
        else:
            breaker.release()
        if isinstance(exc, UpstreamRateLimited):
            router.stats.rate_limited(model.id, exc.retry_after)

    async def _attempt(
        self, ctx: RequestContext, request: ChatCompletionRequest, *, stream: bool
    ) -> tuple[Completion | tuple[bytes | list[bytes] | None, AsyncIterator[bytes | list[bytes]], ChatCall], ModelInfo]:
        """Try the chain in order until one model starts answering.

        Each model gets up to ``[execution] max_retries`` retries of retryable
        errors (exponential backoff with full jitter, or the upstream's
        ``Retry-After`` when it is at most ``max_retry_wait``), within a budget
        of ``retry_budget`` retries for the whole request; then the next model
        of the chain, if the error allows a fallback. Models whose circuit is
        open are skipped. For a stream the first chunk is awaited here, so that
        an upstream that fails before its first byte still falls back.
        """
        assert ctx.decision is not None and ctx.body is not None
        router = self.router
        settings = router.config.execution
        budget = settings.retry_budget
        last: ClawError | None = None
        trace = ctx.trace
        for model in ctx.decision.chain:
            breaker = router.breakers.get(model.provider, model.id)
            if not breaker.allow():
                last = last or ServiceUnavailable(f"{model.id}: circuit open", code="circuit_open")
                continue
            provider = router.providers[model.provider]
            attempt = 0
            while True:
                call = ChatCall(request, model, ctx.body)
                traced = None
                if trace is not None:
                    traced = trace.attempt(model.id, model.provider, model.upstream)
                    call.traceparent = trace.traceparent(traced.span_id)
                    call.tracestate = trace.tracestate
                started = time.perf_counter()
                try:
                    if not stream:
                        completion = await provider.chat(call)
                        if traced is not None:
                            traced.end = time.time_ns()
                        breaker.success()
                        router.stats.success(model.id, time.perf_counter() - started)
                        if call.ratelimit is not None:
                            router.stats.ratelimit(model.id, *call.ratelimit)
                        return completion, model
                    chunks = provider.stream(call).__aiter__()
                    try:
                        first: bytes | list[bytes] | None = await chunks.__anext__()
                    except StopAsyncIteration:
                        first = None
                    breaker.success()
                    ctx.ttft = time.perf_counter() - started
                    ctx.attempt_started = started
                    return (first, chunks, call), model
                except ProviderError as exc:
                    last = exc
                    if traced is not None:
                        traced.end, traced.error = time.time_ns(), exc.code or exc.type
                    self._breaker_verdict(model, exc)
                    log.info("%s: %s attempt %d failed: %s", ctx.request_id, model.id, attempt + 1, exc.message)
                    if exc.retryable and attempt < settings.max_retries and budget > 0:
                        delay = _delay(exc, attempt, settings.backoff_base, settings.backoff_max)
                        if delay <= settings.max_retry_wait and breaker.allow():
                            attempt += 1
                            budget -= 1
                            await asyncio.sleep(delay)
                            continue
                    if not exc.fallback:
                        raise
                    break
                except BaseException as exc:
                    if traced is not None:
                        traced.end, traced.error = time.time_ns(), type(exc).__name__
                    breaker.release()  # a bug or a cancellation says nothing of the upstream's health
                    raise
        assert last is not None
        raise last


def _delay(exc: ProviderError, attempt: int, base: float, cap: float) -> float:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    return random.uniform(0, min(cap, base * 2**attempt))


_FINAL_MARKERS = (b'"usage"', b'"finish_reason":"', b'"finish_reason": "')


async def _forward(send: Send, item: bytes | list[bytes], held: bytes | None) -> bytes | None:
    """Relay ``held`` (now known not to be last) and the chunks of ``item`` in one write,
    holding back the last chunk if it may close the stream; returns what is held."""
    batch = [item] if isinstance(item, bytes) else item
    if not batch:
        return held
    last = batch[-1]
    hold = any(marker in last for marker in _FINAL_MARKERS)
    frames = batch[:-1] if hold else batch
    if held is not None:
        frames = [held, *frames]
    if frames:
        body = b"".join([b"data: " + frame + b"\n\n" for frame in frames])
        await send({"type": "http.response.body", "body": body, "more_body": True})
    return last if hold else None
