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
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..context import RequestContext, get_context
from ..errors import ClawError, ServiceUnavailable
from ..pricing import cost_pico, usd
from ..providers.base import ChatCall, Completion, ProviderError
from ..types import Receive, Scope, Send
from ..wire import ChatCompletionRequest, Usage, encode

if TYPE_CHECKING:
    from ..catalogue import ModelInfo
    from ..router import Router

log = logging.getLogger("clawrouter.execute")

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")
_DONE = b"data: [DONE]\n\n"


def _model_headers(ctx: RequestContext, model: ModelInfo) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-clawrouter-model", model.id.encode()),
        (b"x-clawrouter-provider", model.provider.encode()),
        (b"x-request-id", ctx.request_id.encode()),
    ]


class ExecuteApp:
    """The pipeline's endpoint: an ASGI app, not a middleware."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        ctx = get_context(scope, self.router)
        try:
            request = await ctx.chat_request(scope, receive)
            if ctx.decision is None:
                ctx.decision = self.router.decide(request)
            if request.stream:
                await self._stream(ctx, request, send)
            else:
                await self._json(ctx, request, send)
        except ClawError as exc:
            await ctx.fail(exc, send)

    def _finish(self, ctx: RequestContext, model: ModelInfo, usage: Usage | None) -> None:
        ctx.model = model
        ctx.usage = usage
        if usage is not None:
            ctx.cost_pico = cost_pico(model, usage.prompt_tokens, usage.completion_tokens)

    async def _json(self, ctx: RequestContext, request: ChatCompletionRequest, send: Send) -> None:
        completion, model = await self._attempt(ctx, request, stream=False)
        assert isinstance(completion, Completion)
        self._finish(ctx, model, completion.usage)
        ctx.status, ctx.succeeded = 200, True
        body = completion.body
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *_model_headers(ctx, model)]
        if completion.usage is not None:
            headers.append((b"x-clawrouter-cost-usd", usd(ctx.cost_pico).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, ctx: RequestContext, request: ChatCompletionRequest, send: Send) -> None:
        (first, chunks, call), model = await self._attempt(ctx, request, stream=True)  # type: ignore[misc]
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
            if first is not None:
                held = await _forward(send, first, None)
            async for data in chunks:
                held = await _forward(send, data, held)
        except ProviderError as exc:
            ctx.error = exc.message
            self._breaker_verdict(model, exc)
            self._finish(ctx, model, call.usage)
            if held is not None:
                await send({"type": "http.response.body", "body": b"data: " + held + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: " + exc.body() + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._finish(ctx, model, call.usage)
        ctx.succeeded = True
        if held is not None:
            if held.endswith(b"}"):
                summary = {"model": model.id, "provider": model.provider, "request_id": ctx.request_id}
                if call.usage is not None:
                    summary["cost_usd"] = usd(ctx.cost_pico)
                held = held[:-1] + b',"clawrouter":' + encode(summary) + b"}"
            await send({"type": "http.response.body", "body": b"data: " + held + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": _DONE, "more_body": False})

    def _breaker_verdict(self, model: ModelInfo, exc: ProviderError) -> None:
        breaker = self.router.breakers.get(model.provider, model.id)
        if exc.unhealthy:
            breaker.failure()
        else:
            breaker.release()

    async def _attempt(
        self, ctx: RequestContext, request: ChatCompletionRequest, *, stream: bool
    ) -> tuple[Completion | tuple[bytes | None, AsyncIterator[bytes], ChatCall], ModelInfo]:
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
        for model in ctx.decision.chain:
            breaker = router.breakers.get(model.provider, model.id)
            if not breaker.allow():
                last = last or ServiceUnavailable(f"{model.id}: circuit open", code="circuit_open")
                continue
            provider = router.providers[model.provider]
            attempt = 0
            while True:
                call = ChatCall(request, model, ctx.body)
                try:
                    if not stream:
                        completion = await provider.chat(call)
                        breaker.success()
                        return completion, model
                    chunks = provider.stream(call).__aiter__()
                    try:
                        first: bytes | None = await chunks.__anext__()
                    except StopAsyncIteration:
                        first = None
                    breaker.success()
                    return (first, chunks, call), model
                except ProviderError as exc:
                    last = exc
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
        assert last is not None
        raise last


def _delay(exc: ProviderError, attempt: int, base: float, cap: float) -> float:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    return random.uniform(0, min(cap, base * 2**attempt))


_FINAL_MARKERS = (b'"usage"', b'"finish_reason":"', b'"finish_reason": "')


async def _forward(send: Send, data: bytes, held: bytes | None) -> bytes | None:
    """Send ``held`` (now known not to be last) and ``data``, or hold ``data`` if it may close the stream."""
    if held is not None:
        await send({"type": "http.response.body", "body": b"data: " + held + b"\n\n", "more_body": True})
    for marker in _FINAL_MARKERS:
        if marker in data:
            return data
    await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
    return None
