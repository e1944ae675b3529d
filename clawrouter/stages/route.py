"""Route stage: decode the request and pick the model chain (``ctx.decision``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ..context import get_context
from ..errors import BadRequest, ClawError
from ..types import ASGIApp, Receive, Scope, Send
from ..wire import ChatCompletionRequest, RouteConstraints

if TYPE_CHECKING:
    from ..router import Router


class RouteMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope, self.router)
        if ctx.decision is None:
            try:
                request = await ctx.chat_request(scope, receive)
                ctx.decision = self.router.decide(request, header_constraints(scope))
                if ctx.trace is not None:
                    ctx.trace.route(ctx.decision)
                bound_output(request, self.router.config.routing.default_max_tokens)
            except ClawError as exc:
                await ctx.fail(exc, send)
                return
        await self.app(scope, receive, send)


def bound_output(request: ChatCompletionRequest, default: int) -> None:
    """Give a request without an output cap the configured default, so what the
    upstream may generate is what the quote assumed (adapters send it upstream)."""
    if request.output_cap() is None:
        request.max_tokens = default


_PREFIX = b"x-clawrouter-"
_LISTS = {"capabilities", "models", "deny_models", "providers", "deny_providers"}
_NUMBERS = {"max_price", "latency_slo_ms", "min_quality"}
_TEXT = {"profile", "strategy"}


def header_constraints(scope: Scope) -> RouteConstraints | None:
    """``x-clawrouter-<constraint>`` request headers (``max-price: 0.01``, ``models: a,b``...)."""
    found: dict[str, object] = {}
    for name, value in scope["headers"]:
        if not name.startswith(_PREFIX):
            continue
        key = name[len(_PREFIX) :].decode("latin-1").replace("-", "_")
        text = value.decode("latin-1").strip()
        if key in _LISTS:
            found[key] = [item.strip() for item in text.split(",") if item.strip()]
        elif key in _NUMBERS:
            try:
                found[key] = float(text)
            except ValueError:
                raise BadRequest(f"header {name.decode()}: expected a number, got {text!r}") from None
        elif key in _TEXT:
            found[key] = text
    if not found:
        return None
    try:
        return msgspec.convert(found, RouteConstraints)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"x-clawrouter-* headers: {exc}") from None
