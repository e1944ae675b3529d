"""x402 facilitators: who verifies a payment against the chain and settles it.

A facilitator answers the three calls of the x402 facilitator API (v2 spec §7):
``verify`` (is this payment valid for these requirements?), ``settle``
(execute it on chain) and ``supported`` (which ``(scheme, network)`` kinds it
handles). clawrouter ships three:

* **embedded** — the router's own key submits ``transferWithAuthorization``
  through web3 (:class:`clawrouter.evm.facilitator.EmbeddedEvmFacilitator`);
* **remote** — an HTTP client for any x402 facilitator's ``/verify``,
  ``/settle`` and ``/supported`` (:class:`RemoteFacilitator`);
* **served** — clawrouter exposing its embedded facilitators over that same
  HTTP API for other x402 servers (:func:`facilitator_app`).

Rails (:mod:`clawrouter.payments`) hold a facilitator and call it; the wire
structs below use the spec's exact field names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
from msgspec import Struct

from .errors import (
    BadRequest,
    ClawError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    json_response,
)
from .payments import PaymentPayload, PaymentRejected, PaymentRequirements, SettlementResponse, as_v2
from .providers.base import ProviderError
from .types import ASGIApp, Receive, Scope, Send
from .upstream import AiohttpTransport, HttpxTransport, Timeouts, UpstreamResponse, UpstreamTransport, default_transport

__all__ = [
    "Facilitator",
    "FacilitatorApp",
    "FacilitatorRequest",
    "FacilitatorUnavailable",
    "RemoteFacilitator",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
    "encode_facilitator_request",
    "facilitator_app",
    "verify_remotely",
]

log = logging.getLogger("clawrouter.facilitator")


class VerifyResponse(Struct, omit_defaults=True):
    isValid: bool
    invalidReason: str | None = None
    payer: str | None = None
    invalidMessage: str | None = None


class SupportedKind(Struct, omit_defaults=True):
    x402Version: int
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(Struct):
    kinds: list[SupportedKind]
    extensions: list[str] = []
    signers: dict[str, list[str]] = {}


class FacilitatorRequest(Struct, omit_defaults=True):
    """Body of ``POST /verify`` and ``POST /settle``."""

    paymentPayload: PaymentPayload
    paymentRequirements: PaymentRequirements
    x402Version: int = 2


@runtime_checkable
class Facilitator(Protocol):
    """Verifies and settles payments for the ``(scheme, network)`` kinds it supports.

    ``verify`` and ``settle`` never raise for an invalid payment: they answer
    ``isValid=False`` / ``success=False`` with an x402 error reason. They may
    raise for transport failures (a remote facilitator unreachable, an RPC
    error), which callers retry.
    """

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse: ...

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettlementResponse: ...

    async def supported(self) -> SupportedResponse: ...


# --------------------------------------------------------------------------- errors


class FacilitatorUnavailable(ServiceUnavailable):
    """A facilitator could not answer: unreachable, timed out, a 5xx, or a body
    that is not the expected response. The payment was neither accepted nor
    refused, so the caller may retry (a 503 ``service_unavailable`` to clients).

    After a *settle* timed out the transaction may still have been submitted: a
    retry then answers with the authorization's nonce already used."""

    retryable = True

    def __init__(self, message: str, *, code: str | None = "facilitator_unavailable", **kw: Any) -> None:
        super().__init__(message, code=code, **kw)


# --------------------------------------------------------------------------- wire encoding

_verify_decoder = msgspec.json.Decoder(VerifyResponse)
_settle_decoder = msgspec.json.Decoder(SettlementResponse)
_supported_decoder = msgspec.json.Decoder(SupportedResponse)
_request_decoder = msgspec.json.Decoder(FacilitatorRequest)
_encoder = msgspec.json.Encoder()


def encode_facilitator_request(payload: PaymentPayload, requirements: PaymentRequirements) -> bytes:
    """The JSON body of ``POST /verify`` and ``POST /settle``, as the spec writes it:
    ``x402Version`` (the payload's) at the top level (``FacilitatorRequest`` would
    omit its default)."""
    return _encoder.encode(
        {"x402Version": payload.x402Version, "paymentPayload": payload, "paymentRequirements": requirements}
    )


# --------------------------------------------------------------------------- remote


async def verify_remotely(
    facilitator: Facilitator, payment: PaymentPayload, requirements: PaymentRequirements, default_reason: str
) -> None:
    """A rail's check with a remote facilitator: its ``/verify`` (a v1 payment restated as v2);
    a refusal raises :class:`PaymentRejected` with the facilitator's reason (``default_reason``
    when it gives none)."""
    answer = await facilitator.verify(as_v2(payment, requirements), requirements)
    if not answer.isValid:
        raise PaymentRejected(
            answer.invalidMessage or f"facilitator refused the payment: {answer.invalidReason}",
            code=answer.invalidReason or default_reason,
        )


_T = TypeVar("_T", VerifyResponse, SettlementResponse)


class RemoteFacilitator:
    """A :class:`Facilitator` that calls any x402 facilitator over HTTP.

    ``POST {url}/verify`` and ``POST {url}/settle`` send a
    :class:`FacilitatorRequest`; ``GET {url}/supported`` is cached for
    ``supported_ttl`` seconds. ``headers`` (e.g. an API key) go with every call
    and are never shown. A 2xx answer, or a 4xx whose body still is a
    verify/settle response (how some facilitators refuse a payment), is
    returned; anything else raises :class:`FacilitatorUnavailable`.

    ``timeout`` bounds each call; settlement waits for the transaction to be
    mined, so it gets ``settle_timeout`` (default: ``max(timeout, 30)``).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        settle_timeout: float | None = None,
        supported_ttl: float = 300.0,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.transport: UpstreamTransport = transport or default_transport()
        self.supported_ttl = supported_ttl
        self._post_headers = {"content-type": "application/json", "accept": "application/json", **(headers or {})}
        self._get_headers = {"accept": "application/json", **(headers or {})}
        self._timeouts = Timeouts(connect=timeout, first_byte=timeout, total=timeout)
        settle = settle_timeout if settle_timeout is not None else max(timeout, 30.0)
        self._settle_timeouts = Timeouts(connect=timeout, first_byte=settle, total=settle)
        self._supported: SupportedResponse | None = None
        self._supported_at = 0.0
        self._supported_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never shows the headers (they may carry a key)
        return f"RemoteFacilitator(url={self.url!r})"

    async def start(self) -> None:
        await self.transport.start()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> RemoteFacilitator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        body = encode_facilitator_request(payload, requirements)
        return await self._exchange("verify", body, _verify_decoder, self._timeouts)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettlementResponse:
        body = encode_facilitator_request(payload, requirements)
        return await self._exchange("settle", body, _settle_decoder, self._settle_timeouts)

    async def supported(self) -> SupportedResponse:
        cached = self._supported
        if cached is not None and time.monotonic() - self._supported_at < self.supported_ttl:
            return cached
        async with self._supported_lock:  # one request however many callers wait
            cached = self._supported
            if cached is not None and time.monotonic() - self._supported_at < self.supported_ttl:
                return cached
            url = f"{self.url}/supported"
            status, data = await _transport_get(self.transport, url, self._get_headers, self._timeouts)
            if not 200 <= status < 300:
                raise FacilitatorUnavailable(f"facilitator {url} answered {status}{_excerpt(data)}")
            try:
                fresh = _supported_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise FacilitatorUnavailable(
                    f"facilitator {url} answered {status} with an invalid body: {exc}"
                ) from None
            self._supported, self._supported_at = fresh, time.monotonic()
            return fresh

    def forget_supported(self) -> None:
        """Drop the cached ``/supported`` answer (the next call fetches it)."""
        self._supported = None

    async def _exchange(self, op: str, body: bytes, decoder: msgspec.json.Decoder[_T], timeouts: Timeouts) -> _T:
        url = f"{self.url}/{op}"
        try:
            response = await self.transport.post(url, self._post_headers, body, timeouts)
            data = await response.read()
        except ProviderError as exc:  # UpstreamTimeout / UpstreamUnavailable
            raise FacilitatorUnavailable(f"facilitator {url}: {exc.message}") from exc
        status = response.status
        if 200 <= status < 300 or 400 <= status < 500:
            try:
                answer = decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if 200 <= status < 300:
                    raise FacilitatorUnavailable(
                        f"facilitator {url} answered {status} with an invalid body: {exc}"
                    ) from None
            else:
                if 200 <= status < 300 or not _is_success(answer):  # a 4xx never carries a success
                    return answer
        raise FacilitatorUnavailable(f"facilitator {url} answered {status}{_excerpt(data)}")


def _is_success(answer: VerifyResponse | SettlementResponse) -> bool:
    return answer.isValid if isinstance(answer, VerifyResponse) else answer.success


def _excerpt(data: bytes, limit: int = 160) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    if not text:
        return ""
    return f": {text[: limit - 3]}..." if len(text) > limit else f": {text}"


async def _transport_get(
    transport: UpstreamTransport, url: str, headers: Mapping[str, str], timeouts: Timeouts
) -> tuple[int, bytes]:
    """``GET url``: ``(status, body)``. :class:`UpstreamTransport` only POSTs, so this
    uses a transport's own ``get(url, headers, timeouts)`` when it has one and
    otherwise the pooled client of the two transports clawrouter ships."""
    try:
        get = getattr(transport, "get", None)
        if get is not None:
            response: UpstreamResponse = await get(url, headers, timeouts)
            return response.status, await response.read()
        await transport.start()
        if isinstance(transport, AiohttpTransport):
            return await _aiohttp_get(transport, url, headers, timeouts)
        if isinstance(transport, HttpxTransport):
            return await _httpx_get(transport, url, headers, timeouts)
    except ProviderError as exc:
        raise FacilitatorUnavailable(f"facilitator {url}: {exc.message}") from exc
    raise FacilitatorUnavailable(f"facilitator {url}: {type(transport).__name__} cannot send GET requests")


async def _aiohttp_get(
    transport: AiohttpTransport, url: str, headers: Mapping[str, str], timeouts: Timeouts
) -> tuple[int, bytes]:
    import aiohttp

    session = transport._session
    assert session is not None
    timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte)
    try:
        async with session.get(url, headers=dict(headers), timeout=timeout) as response:
            return response.status, await response.read()
    except TimeoutError as exc:
        raise FacilitatorUnavailable(f"facilitator {url} timed out") from exc
    except aiohttp.ClientError as exc:
        raise FacilitatorUnavailable(f"facilitator {url} unreachable: {type(exc).__name__}") from exc


async def _httpx_get(
    transport: HttpxTransport, url: str, headers: Mapping[str, str], timeouts: Timeouts
) -> tuple[int, bytes]:
    import httpx

    client = transport._client
    assert client is not None
    timeout = httpx.Timeout(timeouts.total, connect=timeouts.connect, read=timeouts.first_byte)
    try:
        response = await client.get(url, headers=dict(headers), timeout=timeout)
    except httpx.TimeoutException as exc:
        raise FacilitatorUnavailable(f"facilitator {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise FacilitatorUnavailable(f"facilitator {url} unreachable: {type(exc).__name__}") from exc
    return response.status_code, response.content


# --------------------------------------------------------------------------- served

MAX_BODY = 64 * 1024
X402_VERSION = 2


class _ClientGone(Exception):
    pass


def facilitator_app(
    facilitators: Mapping[tuple[str, str], Facilitator],
    *,
    api_key: str | None = None,
    max_body: int = MAX_BODY,
) -> ASGIApp:
    """An ASGI app serving the x402 facilitator API (``POST /verify``,
    ``POST /settle``, ``GET /supported``) over ``facilitators``, keyed by
    ``(scheme, network)``, for other x402 resource servers.

    A request names its kind in ``paymentRequirements``; a kind not in the
    mapping, or an ``x402Version`` other than 2, is a 400 with a verify/settle
    response (``unsupported_scheme`` / ``invalid_x402_version``). A payment whose
    ``accepted`` names another scheme or network than the requirements is
    refused (200, ``unsupported_scheme`` / ``network_mismatch``) without asking
    the facilitator. Any facilitator answer is a 200. Malformed bodies are a 400
    JSON error, bodies over ``max_body`` bytes a 413, and with ``api_key`` set
    every call needs ``Authorization: Bearer <api_key>`` (else 401).
    """
    return FacilitatorApp(facilitators, api_key=api_key, max_body=max_body)


class FacilitatorApp:
    """The app :func:`facilitator_app` returns (plain ASGI)."""

    def __init__(
        self,
        facilitators: Mapping[tuple[str, str], Facilitator],
        *,
        api_key: str | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.facilitators = dict(facilitators)
        self.max_body = max_body
        self._authorization = f"Bearer {api_key}".encode() if api_key else None

    def __repr__(self) -> str:  # never shows the key
        kinds = ", ".join(f"{s}:{n}" for s, n in self.facilitators)
        return f"FacilitatorApp([{kinds}])"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = _local_path(scope)
        method: str = scope["method"]
        try:
            self._authorize(scope)
            if path in ("/verify", "/settle"):
                if method != "POST":
                    raise MethodNotAllowed(f"{method} {path} is not allowed; use POST", headers=[(b"allow", b"POST")])
                request = _decode_request(await _read_body(scope, receive, self.max_body))
                if path == "/verify":
                    await self._verify(request, send)
                else:
                    await self._settle(request, send)
            elif path == "/supported":
                if method not in ("GET", "HEAD"):
                    raise MethodNotAllowed(f"{method} {path} is not allowed; use GET", headers=[(b"allow", b"GET")])
                await json_response(send, 200, _encoder.encode(await self.supported()))
            else:
                raise NotFound(f"no route for {method} {path}", code="not_found")
        except _ClientGone:
            return
        except ClawError as exc:
            await exc.send(send)
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            code = f"unexpected_{path.strip('/')}_error" if path in ("/verify", "/settle") else None
            with contextlib.suppress(Exception):  # fails if the response had already started
                await ClawError("internal error", code=code).send(send)

    def _authorize(self, scope: Scope) -> None:
        if self._authorization is None:
            return
        for name, value in scope["headers"]:
            if name == b"authorization" and hmac.compare_digest(value, self._authorization):
                return
        raise Unauthorized(
            "missing or invalid facilitator API key (Authorization: Bearer <key>)",
            code="invalid_api_key",
            headers=[(b"www-authenticate", b"Bearer")],
        )

    def _dispatch(self, request: FacilitatorRequest) -> tuple[Facilitator | None, int, str, str]:
        """The facilitator for ``request``, or ``(None, status, reason, message)``."""
        requirements, payload = request.paymentRequirements, request.paymentPayload
        if request.x402Version != X402_VERSION or payload.x402Version != X402_VERSION:
            version = payload.x402Version if request.x402Version == X402_VERSION else request.x402Version
            return None, 400, "invalid_x402_version", f"x402Version {version} is not supported; use 2"
        kind = (requirements.scheme, requirements.network)
        facilitator = self.facilitators.get(kind)
        if facilitator is None:
            return None, 400, "unsupported_scheme", f"no facilitator for {kind[0]} on {kind[1]}"
        accepted = payload.accepted
        if accepted is None:
            raise BadRequest("paymentPayload.accepted is required for x402Version 2", code="invalid_payload")
        if accepted.scheme != requirements.scheme:
            return None, 200, "unsupported_scheme", f"payment is for scheme {accepted.scheme}, not {kind[0]}"
        if accepted.network != requirements.network:
            return None, 200, "network_mismatch", f"payment is for network {accepted.network}, not {kind[1]}"
        return facilitator, 200, "", ""

    async def _verify(self, request: FacilitatorRequest, send: Send) -> None:
        facilitator, status, reason, message = self._dispatch(request)
        if facilitator is None:
            answer = VerifyResponse(isValid=False, invalidReason=reason, invalidMessage=message)
        else:
            answer = await facilitator.verify(request.paymentPayload, request.paymentRequirements)
        await json_response(send, status, _encoder.encode(answer))

    async def _settle(self, request: FacilitatorRequest, send: Send) -> None:
        facilitator, status, reason, _ = self._dispatch(request)
        if facilitator is None:
            answer = SettlementResponse(
                success=False, errorReason=reason, network=request.paymentRequirements.network, transaction=""
            )
        else:
            answer = await facilitator.settle(request.paymentPayload, request.paymentRequirements)
        await json_response(send, status, _encoder.encode(answer))

    async def supported(self) -> SupportedResponse:
        """The kinds (of the mapping's keys) and signers of every facilitator, merged."""
        distinct: dict[int, Facilitator] = {}
        for facilitator in self.facilitators.values():
            distinct.setdefault(id(facilitator), facilitator)
        answers = await asyncio.gather(*(f.supported() for f in distinct.values()), return_exceptions=True)
        kinds: dict[bytes, SupportedKind] = {}
        extensions: dict[str, None] = {}
        signers: dict[str, dict[str, None]] = {}
        for answer in answers:
            if isinstance(answer, ClawError):
                raise answer
            if isinstance(answer, BaseException):
                log.error("a facilitator failed to list its kinds", exc_info=answer)
                raise FacilitatorUnavailable("a facilitator could not list its supported kinds")
            for kind in answer.kinds:
                if (kind.scheme, kind.network) in self.facilitators:
                    kinds.setdefault(_encoder.encode(kind), kind)
            extensions.update(dict.fromkeys(answer.extensions))
            for family, addresses in answer.signers.items():
                signers.setdefault(family, {}).update(dict.fromkeys(addresses))
        return SupportedResponse(
            kinds=list(kinds.values()),
            extensions=list(extensions),
            signers={family: list(addresses) for family, addresses in signers.items()},
        )


def _local_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise BadRequest("invalid content-length header") from None
            if length > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes", code="body_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _decode_request(body: bytes) -> FacilitatorRequest:
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid facilitator request: {exc}", code="invalid_request") from None
    except msgspec.DecodeError:
        raise BadRequest("request body is not valid JSON", code="invalid_request") from None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
