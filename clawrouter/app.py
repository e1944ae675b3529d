"""The router's ASGI app: lifespan, dispatch to the endpoints, and the stack.

``build_stack(router)`` composes the five pipeline stages; ``build_app``
puts the small endpoints (models, health, plugins) beside it. Unexpected
exceptions become a JSON 500 with no internals (and a log line).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec

from . import __version__
from .context import SCOPE_KEY, RequestContext
from .errors import BadRequest, ClawError, MethodNotAllowed, NotFound, Unauthorized, json_response
from .events import Event
from .pricing import usd
from .stages import AuthMiddleware, ExecuteApp, RouteMiddleware, SettleMiddleware, VerifyMiddleware
from .telemetry import parse_window
from .types import ASGIApp, Message, Receive, Scope, Send
from .wire import encode

if TYPE_CHECKING:
    from .router import Router

__all__ = ["PrefixDispatcher", "RouterApp", "build_app", "build_stack"]

log = logging.getLogger("clawrouter.app")

CHAT = "/v1/chat/completions"
_NO_STORE = (b"cache-control", b"no-store")


def build_stack(router: Router, endpoint: ASGIApp | None = None) -> ASGIApp:
    """auth → verify → route → settle(execute): the chat completions pipeline.

    With no payment rail registered, the verify and settle stages are left out
    (they would only pass requests through)."""
    app: ASGIApp = endpoint or ExecuteApp(router)
    if router.rails:
        app = SettleMiddleware(app, router)
    app = RouteMiddleware(app, router)
    if router.rails:
        app = VerifyMiddleware(app, router)
    app = AuthMiddleware(app, router)
    if router.telemetry is not None:
        from .telemetry import TelemetryMiddleware

        app = TelemetryMiddleware(app, router)
    return app


def _local_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


FACILITATOR = "/-/x402/"
ADMIN_LIMITS = "/-/admin/limits"
RECEIPTS = "/-/receipts/"
OBSERVABILITY = ("/-/metrics", "/-/stats", "/-/dashboard")

#: x402 and clawrouter headers a browser client must be allowed to send and to read
_CORS_ALLOW = b"authorization, content-type, payment-signature, x-payment, x-clawrouter-max-price, x-clawrouter-profile"
_CORS_EXPOSE = (
    b"payment-required, payment-response, x-payment-response, x-clawrouter-model, x-clawrouter-provider, "
    b"x-clawrouter-cost-usd, x-clawrouter-receipt, x-request-id"
)


class RouterApp:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.chat = build_stack(router)
        self.facilitator: ASGIApp | None = None
        if router.config.payments.serve_facilitator:
            self.facilitator = _served_facilitator(router)
        #: SHA-256 digests of the admin key ([server], [limits]): /-/metrics, /-/stats, /-/dashboard
        self.admin_digests = [
            d.lower() for d in (router.config.server.admin_key_sha256, router.config.limits.admin_key_sha256) if d
        ]
        origins = router.config.server.cors_origins
        self.cors_any = "*" in origins
        self.cors_origins = {o.encode() for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.lifespan(receive, send)
            return
        if kind != "http":
            return
        router = self.router
        if not router.started:
            await router.start()
        path = _local_path(scope)
        method = scope["method"]
        if self.cors_origins:
            origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
            if origin is not None and (self.cors_any or origin in self.cors_origins):
                if method == "OPTIONS" and any(k == b"access-control-request-method" for k, _ in scope["headers"]):
                    await _preflight(send, origin)
                    return
                send = _with_cors(send, b"*" if self.cors_any else origin)
        try:
            if path == CHAT:
                if method != "POST":
                    raise MethodNotAllowed(f"{method} {CHAT} is not allowed; use POST")
                await self.chat(scope, receive, send)
                if router.events.enabled:
                    _emit_request(router, scope.get(SCOPE_KEY))
            elif path in ("/v1/models", "/models"):
                self._get(method, path)
                await json_response(send, 200, router.models_body)
            elif path == "/-/health":
                self._get(method, path)
                await json_response(send, 200, self._health())
            elif path in ("/-/plugins", "/-/plugins.json"):
                self._get(method, path)
                await json_response(send, 200, encode(router.plugins_document()))
            elif path.startswith(RECEIPTS):
                self._get(method, path)
                receipt = await router.receipts.get(path[len(RECEIPTS) :])
                if receipt is None:
                    raise NotFound(f"no receipt {path[len(RECEIPTS) :]!r}", code="receipt_not_found")
                await json_response(send, 200, encode(receipt))
            elif path == ADMIN_LIMITS:
                await self._admin_limits(scope, receive, send, method)
            elif path in OBSERVABILITY:
                await self._observability(scope, send, method, path)
            elif self.facilitator is not None and path.startswith(FACILITATOR):
                child = dict(scope)
                child["root_path"] = scope.get("root_path", "") + FACILITATOR[:-1]
                await self.facilitator(child, receive, send)
            else:
                raise NotFound(f"no route for {method} {path}", code="not_found")
        except ClawError as exc:
            await exc.send(send)
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            with contextlib.suppress(Exception):  # fails if the response had already started
                await ClawError("internal error").send(send)

    async def _admin_limits(self, scope: Scope, receive: Receive, send: Send, method: str) -> None:
        """``GET`` (``?payer=`` / ``?key=`` adds that subject's usage) or ``PUT`` the limits in
        force, with the admin key (``[limits] admin_key_sha256``, or ``[server]``'s) as bearer token."""
        limits = self.router.limits
        if limits is None or not limits.base.admin_key_sha256:
            raise NotFound("no admin endpoint: set [limits] admin_key_sha256", code="not_found")
        if not self._is_admin(scope):  # never open here: [limits] has a key
            raise Unauthorized(
                "the admin key is required (Authorization: Bearer <admin key>)", code="invalid_admin_key"
            )
        if method == "PUT":
            from .facilitator import _read_body

            current = await limits.replace(await _read_body(scope, receive, 64 * 1024))
        elif method == "GET":
            current = await limits.current()
        else:
            raise MethodNotAllowed(f"{method} {ADMIN_LIMITS} is not allowed; use GET or PUT")
        document: dict[str, Any] = {"limits": msgspec.structs.replace(current, admin_key_sha256="")}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        for kind, field in (("payer", "payer"), ("key", "key")):
            for name in query.get(field, []):
                document.setdefault("usage", {})[f"{kind}:{name}"] = await limits.usage(kind, name)
        await json_response(send, 200, encode(document))

    def _is_admin(self, scope: Scope) -> bool:
        """Whether the request carries the admin key: ``Authorization: Bearer <key>``, or HTTP
        Basic with the key as password (what a browser sends for the dashboard)."""
        if not self.admin_digests:
            return True
        for name, value in scope["headers"]:
            if name != b"authorization":
                continue
            text = value.decode("latin-1").strip()
            scheme, _, credentials = text.partition(" ")
            token = credentials.strip()
            if scheme.lower() == "basic":
                try:
                    token = base64.b64decode(token, validate=True).decode("utf-8").partition(":")[2]
                except (ValueError, UnicodeDecodeError):
                    return False
            elif scheme.lower() != "bearer":
                token = text
            digest = hashlib.sha256(token.encode()).hexdigest()
            return any(hmac.compare_digest(digest, d) for d in self.admin_digests)
        return False

    async def _observability(self, scope: Scope, send: Send, method: str, path: str) -> None:
        """``/-/metrics`` (Prometheus), ``/-/stats?window=`` (JSON) and ``/-/dashboard`` (HTML)."""
        self._get(method, path)
        telemetry = self.router.telemetry
        if telemetry is None:
            raise NotFound(f"{path}: observability is disabled ([observability] enabled = false)", code="not_found")
        if not self._is_admin(scope):
            raise Unauthorized(
                "the admin key is required (Authorization: Bearer <admin key>, or Basic with it as password)",
                code="invalid_admin_key",
                headers=[(b"www-authenticate", b'Basic realm="clawrouter", charset="UTF-8"')],
            )
        if path == "/-/metrics":
            body = await telemetry.prometheus()
            content_type = b"text/plain; version=0.0.4; charset=utf-8"
        elif path == "/-/stats":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            try:
                window = parse_window(query.get("window", [""])[0], 900, telemetry.retention)
            except ValueError as exc:
                raise BadRequest(str(exc), param="window", code="invalid_window") from None
            await json_response(send, 200, encode(await telemetry.stats(window)), [_NO_STORE])
            return
        else:
            from .telemetry.dashboard import page

            body = page()
            content_type = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    _NO_STORE,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body if method == "GET" else b""})

    @staticmethod
    def _get(method: str, path: str) -> None:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{method} {path} is not allowed; use GET")

    def _health(self) -> bytes:
        router = self.router
        return encode(
            {
                "status": "ok",
                "version": __version__,
                "providers": sorted(router.providers),
                "models": len(router.catalogue),
                "payments": sorted(f"{s}:{n}" for s, n in router.rails),
            }
        )

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.router.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.router.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _served_facilitator(router: Router) -> ASGIApp:
    """``/-/x402/{verify,settle,supported}``: the router's embedded facilitators,
    served with the x402 facilitator API (``[payments] serve_facilitator``)."""
    import os

    from .facilitator import Facilitator, facilitator_app

    facilitators: dict[tuple[str, str], Facilitator] = {}
    for pair, rail in router.rails.items():
        embedded = getattr(rail, "embedded", None)
        if embedded is not None:
            facilitators[pair] = embedded
    env = router.config.payments.facilitator_api_key_env
    api_key = os.environ.get(env) if env else None
    if api_key:
        from .telemetry.logs import register_secret

        register_secret(api_key)
    return facilitator_app(facilitators, api_key=api_key)


async def _preflight(send: Send, origin: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", _CORS_ALLOW),
                (b"access-control-expose-headers", _CORS_EXPOSE),
                (b"access-control-max-age", b"600"),
                (b"vary", b"origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: bytes) -> Send:
    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message["headers"],
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", _CORS_EXPOSE),
                (b"vary", b"origin"),
            ]
        await send(message)

    return cors_send


def _emit_request(router: Router, ctx: RequestContext | None) -> None:
    if ctx is None:
        return
    data: dict[str, object] = {
        "status": ctx.status,
        "model": ctx.model.id if ctx.model is not None else None,
        "provider": ctx.model.provider if ctx.model is not None else None,
        "actor": ctx.actor.id,
        "duration_ms": (time.perf_counter() - ctx.started) * 1000,
        "cost_usd": usd(ctx.cost_pico),
    }
    if ctx.usage is not None:
        data["prompt_tokens"] = ctx.usage.prompt_tokens
        data["completion_tokens"] = ctx.usage.completion_tokens
    if ctx.error:
        data["error"] = ctx.error
    router.events.emit(Event("request.completed" if ctx.succeeded else "request.failed", ctx.request_id, data))


def build_app(router: Router) -> ASGIApp:
    return RouterApp(router)


class PrefixDispatcher:
    """Serve ``router`` under ``prefix`` and ``app`` elsewhere; lifespan goes to both."""

    def __init__(self, router: Router, app: ASGIApp, prefix: str) -> None:
        self.router = router
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path = _local_path(scope)
        if path == self.prefix or path.startswith(self.prefix + "/"):
            child = dict(scope)
            child["root_path"] = scope.get("root_path", "") + self.prefix
            await self.router.app(child, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app's lifespan with the router chained in: the router
        starts before the app's start-up and stops after the app's shut-down.
        An app that does not speak lifespan gets the router's own."""
        seen = False

        async def chained_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen = True
            if message["type"] == "lifespan.startup":
                try:
                    await self.router.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"clawrouter: {exc}"})
                    raise
            return message

        async def chained_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.router.stop()
            await send(message)

        try:
            await self.app(scope, chained_receive, chained_send)
        except Exception:
            if seen:
                raise
        if not seen:
            await self.router.app(scope, receive, send)
