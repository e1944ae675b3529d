"""Route stage: decode the request and pick the model chain (``ctx.decision``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..context import get_context
from ..errors import ClawError
from ..types import ASGIApp, Receive, Scope, Send

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
                ctx.decision = self.router.decide(request)
            except ClawError as exc:
                await ctx.fail(exc, send)
                return
        await self.app(scope, receive, send)
