"""Auth stage: who is calling (``ctx.actor``), or 401."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..context import get_context
from ..errors import ClawError
from ..limits import key_name
from ..types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from ..router import Router


class AuthMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope, self.router)
        trace = ctx.trace
        started = time.time_ns() if trace is not None else 0
        try:
            ctx.actor = actor = await self.router.authenticate(scope)
            limits = self.router.limits
            if limits is not None and actor.kind == "api_key":
                await limits.rate("key", key_name(actor))
        except ClawError as exc:
            if trace is not None:
                trace.stage("auth", started, {"error.type": exc.code or str(exc.status)})
            await ctx.fail(exc, send)
            return
        if trace is not None:
            trace.stage("auth", started, {"clawrouter.actor.kind": actor.kind})
        await self.app(scope, receive, send)
