"""Execute stage: call the provider along the route's chain and answer.

Errors that allow it (``ProviderError.fallback``) move on to the next model of
the chain, but only before the first byte reached the client. Once a stream has
started, an upstream failure ends it with an in-band SSE error event
(``data: {"error": {...}}``) and a clean close, and the request counts as failed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..context import RequestContext, get_context
from ..errors import ClawError
from ..pricing import cost_pico, usd
from ..providers.base import ChatCall, Completion, ProviderError
from ..types import Receive, Scope, Send
from ..wire import ChatCompletionRequest, Usage

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
        if first is not None:
            await send({"type": "http.response.body", "body": b"data: " + first + b"\n\n", "more_body": True})
        try:
            async for data in chunks:
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
        except ProviderError as exc:
            ctx.error = exc.message
            self._finish(ctx, model, call.usage)
            await send({"type": "http.response.body", "body": b"data: " + exc.body() + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._finish(ctx, model, call.usage)
        ctx.succeeded = True
        await send({"type": "http.response.body", "body": _DONE, "more_body": False})

    async def _attempt(
        self, ctx: RequestContext, request: ChatCompletionRequest, *, stream: bool
    ) -> tuple[Completion | tuple[bytes | None, AsyncIterator[bytes], ChatCall], ModelInfo]:
        """Try the chain in order until one model starts answering.

        For a stream, the first chunk is awaited here, so that an upstream that
        fails before its first byte still falls back.
        """
        assert ctx.decision is not None and ctx.body is not None
        providers = self.router.providers
        last: ProviderError | None = None
        for model in ctx.decision.chain:
            call = ChatCall(request, model, ctx.body)
            provider = providers[model.provider]
            try:
                if not stream:
                    return await provider.chat(call), model
                chunks = provider.stream(call).__aiter__()
                try:
                    first: bytes | None = await chunks.__anext__()
                except StopAsyncIteration:
                    first = None
                return (first, chunks, call), model
            except ProviderError as exc:
                last = exc
                log.info("%s on %s failed: %s", ctx.request_id, model.id, exc.message)
                if not exc.fallback:
                    raise
        assert last is not None
        raise last
