"""Errors the router answers with, in OpenAI's JSON shape.

Every error a client can see is a :class:`ClawError`; its ``status``, ``type``
and ``message`` become ``{"error": {"type": ..., "message": ..., "code": ...}}``::

    ClawError
     +-- BadRequest            400 invalid_request_error
     +-- Unauthorized          401 authentication_error
     +-- PaymentRequired       402 payment_required (carries x402 headers)
     +-- NotFound              404 not_found_error
     +-- MethodNotAllowed      405 invalid_request_error
     +-- Conflict              409 conflict_error
     +-- PayloadTooLarge       413 invalid_request_error
     +-- UnsupportedMediaType  415 invalid_request_error
     +-- ServiceUnavailable    503 service_unavailable
     +-- ProviderError         (clawrouter.providers: upstream failures, 4xx/5xx)

Stages raise these before the response starts; :meth:`ClawError.send` writes
the JSON response. Nothing else is ever turned into a traceback for the client:
unexpected exceptions become a 500 ``server_error`` with no internals.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import Send
from .wire import ErrorBody, ErrorDetail, encode

__all__ = [
    "BadRequest",
    "ClawError",
    "Conflict",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "json_response",
]

Header = tuple[bytes, bytes]
_JSON = (b"content-type", b"application/json")


class ClawError(Exception):
    status: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: Sequence[Header] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        self.headers = list(headers)

    def body(self) -> bytes:
        return encode(ErrorBody(ErrorDetail(self.message, self.type, self.code, self.param)))

    async def send(self, send: Send) -> None:
        await json_response(send, self.status, self.body(), self.headers)


class BadRequest(ClawError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ClawError):
    status = 401
    type = "authentication_error"


class PaymentRequired(ClawError):
    status = 402
    type = "payment_required"


class NotFound(ClawError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(ClawError):
    status = 405
    type = "invalid_request_error"


class Conflict(ClawError):
    status = 409
    type = "conflict_error"


class PayloadTooLarge(ClawError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(ClawError):
    status = 415
    type = "invalid_request_error"


class ServiceUnavailable(ClawError):
    status = 503
    type = "service_unavailable"


async def json_response(send: Send, status: int, body: bytes, headers: Sequence[Header] = ()) -> None:
    """Send a complete JSON response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
