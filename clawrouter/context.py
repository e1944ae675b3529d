"""The per-request context every stage reads and writes.

One :class:`RequestContext` lives in ``scope["clawrouter"]``; the first stage
that runs creates it (:func:`get_context`), so each stage also works alone.
The request body is read and decoded once, by whichever stage first needs it.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import BadRequest, ClawError, PayloadTooLarge
from .types import Receive, Scope, Send
from .wire import ChatCompletionRequest, Usage, decode_request

if TYPE_CHECKING:
    from .payments import SettlementResponse, VerifiedPayment
    from .router import Router
    from .routing import RouteDecision
    from .telemetry.tracing import Trace

__all__ = ["SCOPE_KEY", "Actor", "RequestContext", "get_context"]

SCOPE_KEY = "clawrouter"


class Actor(msgspec.Struct, frozen=True):
    """Who is calling: ``kind`` is ``"api_key"``, ``"anonymous"`` or ``"payer"``."""

    id: str
    kind: str = "anonymous"
    data: dict[str, Any] = {}


ANONYMOUS = Actor("anonymous")


_PROCESS = os.urandom(6).hex()
_counter = itertools.count(1)


def _reseed() -> None:
    global _PROCESS, _counter
    _PROCESS, _counter = os.urandom(6).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def _request_id() -> str:
    """Unique across processes (random per-process prefix) and cheap (a counter)."""
    return f"req_{_PROCESS}{next(_counter):010x}"


class RequestContext:
    __slots__ = (
        "actor",
        "attempt_started",
        "body",
        "budget",
        "cost_pico",
        "decision",
        "error",
        "model",
        "payment",
        "request",
        "request_id",
        "router",
        "settlement",
        "started",
        "status",
        "succeeded",
        "trace",
        "ttft",
        "usage",
    )

    def __init__(self, router: Router) -> None:
        self.router = router
        self.request_id = _request_id()
        self.started = time.perf_counter()
        self.actor: Actor = ANONYMOUS
        self.body: bytes | None = None
        self.request: ChatCompletionRequest | None = None
        self.decision: RouteDecision | None = None
        self.payment: VerifiedPayment | None = None
        self.settlement: SettlementResponse | None = None
        self.budget: Any = None  # a limits.Reservation held against budgets
        # outcome, written by the execute stage
        self.model: Any = None  # ModelInfo that answered
        self.usage: Usage | None = None
        self.cost_pico = 0
        self.status = 0
        self.succeeded = False
        self.error: str | None = None
        self.ttft: float | None = None  # seconds to the first streamed chunk
        self.attempt_started = 0.0
        #: a :class:`clawrouter.telemetry.tracing.Trace` when traces are on, else ``None``
        self.trace: Trace | None = None

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        if self.body is not None:
            return self.body
        limit = self.router.config.server.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise BadRequest("Content-Length is not a number") from None
                if declared > limit:
                    raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self.body

    async def chat_request(self, scope: Scope, receive: Receive) -> ChatCompletionRequest:
        """The decoded, validated chat completion request (read once)."""
        if self.request is not None:
            return self.request
        body = await self.read_body(scope, receive)
        if not body.strip():
            raise BadRequest("request body is empty; expected a JSON object with 'model' and 'messages'")
        try:
            request = decode_request(body)
        except msgspec.ValidationError as exc:
            text = str(exc)
            param = text.rsplit("`$.", 1)[1].rstrip("`") if "`$." in text else None
            raise BadRequest(f"invalid request: {text}", param=param, code="invalid_request") from None
        except msgspec.DecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        if not request.messages:
            raise BadRequest("'messages' must contain at least one message", param="messages")
        self.request = request
        return request

    async def fail(self, error: ClawError, send: Send) -> None:
        """Answer with ``error`` and record it as this request's outcome."""
        self.status, self.error = error.status, error.message
        await error.send(send)


def get_context(scope: Scope, router: Router) -> RequestContext:
    ctx: RequestContext | None = scope.get(SCOPE_KEY)
    if ctx is None:
        ctx = scope[SCOPE_KEY] = RequestContext(router)
    return ctx
