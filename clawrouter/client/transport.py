"""httpx transports that pay x402 challenges, and clients built on them.

:class:`X402Transport` (sync) and :class:`AsyncX402Transport` wrap another
transport. A request that comes back 402 is answered once: the challenge is
parsed, the policy consulted, the payment signed and the request sent again
with ``PAYMENT-SIGNATURE`` (``X-PAYMENT`` for a v1 server). The paid response
is handed on with its body watched (receipt, stream trailer).
:class:`Client` / :class:`AsyncClient` are httpx clients using them, ready for
``openai.OpenAI(http_client=...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from typing import Any

import httpx

from ..receipts import Receipt
from .payer import CallRecord, Payer, PayerKey, PaymentSigner, Spend, StreamTap, parse_challenge
from .policy import Budget, PaymentError, Policy

__all__ = ["AsyncClient", "AsyncX402Transport", "Client", "X402Transport"]

_PAYMENT_HEADERS = ("payment-signature", "x-payment")
_Flow = Generator[httpx.Request, httpx.Response, tuple[httpx.Response, StreamTap | None]]


def _payer(
    payer: Payer | None,
    wallet: PayerKey | None,
    policy: Policy | None,
    budget: Budget | None,
    signers: Iterable[PaymentSigner] | None,
    router: str | None,
    require_receipt: bool,
) -> Payer:
    if payer is not None:
        return payer
    return Payer(wallet, policy, budget=budget, signers=signers, router=router, require_receipt=require_receipt)


class _Flow402:
    """The request/response dance shared by both transports (a generator, like ``httpx.Auth.auth_flow``)."""

    def __init__(
        self,
        wallet: PayerKey | None = None,
        policy: Policy | None = None,
        *,
        transport: Any = None,
        budget: Budget | None = None,
        signers: Iterable[PaymentSigner] | None = None,
        router: str | None = None,
        require_receipt: bool = False,
        payer: Payer | None = None,
    ) -> None:
        self.payer = _payer(payer, wallet, policy, budget, signers, router, require_receipt)
        self.transport = transport if transport is not None else self._default_transport()

    def _default_transport(self) -> Any:
        raise NotImplementedError

    @staticmethod
    def _answer(result: tuple[httpx.Response, StreamTap | None], wrap: Any) -> httpx.Response:
        answer, tap = result
        if tap is None:
            return answer
        headers = answer.headers.copy()
        if tap.sse:
            headers.pop("content-length", None)  # the payment trailer is taken out
        return httpx.Response(
            answer.status_code, headers=headers, stream=wrap(answer.stream, tap), extensions=answer.extensions
        )

    def _flow(self, request: httpx.Request) -> _Flow:
        payer = self.payer
        payer.started()
        if any(name in request.headers for name in _PAYMENT_HEADERS):
            return (yield request), None  # the caller pays by hand
        method, url, body = request.method, str(request.url), request.content
        record = payer.reusable(method, url, body)
        if record is None:
            response = yield request
            if response.status_code != 402:
                return response, None
            if "payment-required" not in response.headers and b"x402Version" not in response.content:
                return response, None  # a 402 that is not an x402 challenge: the caller's to handle
            record = payer.pay(method, url, body, parse_challenge(response.headers, response.content))
        name, value = record.header
        request.headers[name] = value
        request.headers["accept-encoding"] = "identity"  # the receipt signs the bytes as sent
        try:
            response = yield request
        except BaseException:
            payer.lost(record)
            raise
        lost_answer = payer.answered(
            record, response.status_code, response.headers, response.content if response.status_code == 402 else b""
        )
        if lost_answer or response.status_code >= 400:
            payer.done(record)
        if lost_answer:
            raise PaymentError(
                f"this request's payment ({record.usd} USD on {record.network}) was already settled by an earlier "
                "attempt whose response was lost; not paying again",
                reason="already_settled",
            )
        if response.status_code >= 400:
            return response, None
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        return response, StreamTap(payer, record, sse)


class _TapStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, tap: StreamTap) -> None:
        self.stream = stream
        self.tap = tap

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            out = self.tap.feed(chunk)
            if out:
                yield out
        rest = self.tap.finish()
        if rest:
            yield rest

    def close(self) -> None:
        self.tap.close()
        self.stream.close()


class _AsyncTapStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, tap: StreamTap) -> None:
        self.stream = stream
        self.tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            out = self.tap.feed(chunk)
            if out:
                yield out
        rest = self.tap.finish()
        if rest:
            yield rest

    async def aclose(self) -> None:
        self.tap.close()
        await self.stream.aclose()


class X402Transport(_Flow402, httpx.BaseTransport):
    """A sync transport that pays 402s within ``policy`` (see :class:`~clawrouter.client.Policy`).

    ``transport``: the transport to send through (default ``httpx.HTTPTransport()``).
    ``router``: the address receipts must be signed by (pin it: without it a
    receipt only proves that *some* key signed it, and that it matches the
    payment and the body). ``require_receipt``: raise
    :class:`~clawrouter.receipts.ReceiptError` at the end of a paid body whose
    receipt is missing or does not verify (default: record it in
    ``CallRecord.receipt_error`` and log a warning).
    """

    transport: httpx.BaseTransport

    def _default_transport(self) -> httpx.BaseTransport:
        return httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            try:
                response = self.transport.handle_request(outgoing)
                if response.status_code == 402:
                    try:
                        response.read()
                    finally:
                        response.close()
            except BaseException as exc:
                flow.throw(exc)  # re-raises, after the flow has noted the loss
                raise
            try:
                outgoing = flow.send(response)
            except StopIteration as stop:
                return self._answer(stop.value, _TapStream)

    def close(self) -> None:
        self.transport.close()
        self.payer.close()


class AsyncX402Transport(_Flow402, httpx.AsyncBaseTransport):
    """The async twin of :class:`X402Transport` (default inner transport ``httpx.AsyncHTTPTransport()``)."""

    transport: httpx.AsyncBaseTransport

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            try:
                response = await self.transport.handle_async_request(outgoing)
                if response.status_code == 402:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                    await self.payer.aprepare(response.headers, response.content)
            except BaseException as exc:
                flow.throw(exc)
                raise
            try:
                outgoing = flow.send(response)
            except StopIteration as stop:
                return self._answer(stop.value, _AsyncTapStream)

    async def aclose(self) -> None:
        await self.transport.aclose()
        self.payer.close()


class _Session:
    """What :class:`Client` and :class:`AsyncClient` add to their httpx base: a payer and its records."""

    payer: Payer
    _transport_class: type[X402Transport] | type[AsyncX402Transport]

    def __init__(
        self,
        wallet: PayerKey | None = None,
        policy: Policy | None = None,
        *,
        budget: Budget | None = None,
        signers: Iterable[PaymentSigner] | None = None,
        router: str | None = None,
        require_receipt: bool = False,
        transport: Any = None,
        **kwargs: Any,
    ) -> None:
        self.payer = _payer(None, wallet, policy, budget, signers, router, require_receipt)
        paying = self._transport_class(payer=self.payer, transport=transport)
        super().__init__(transport=paying, **kwargs)  # type: ignore[call-arg]

    @property
    def spend(self) -> Spend:
        """This client's spending so far (USD)."""
        return self.payer.spend

    @property
    def calls(self) -> list[CallRecord]:
        """The latest authorizations this client signed, oldest first."""
        return self.payer.records()

    @property
    def receipts(self) -> list[Receipt]:
        """The router receipts collected so far (``CallRecord.verified`` says which checked out)."""
        return [r.receipt for r in self.payer.records() if r.receipt is not None]


class Client(_Session, httpx.Client):
    """An ``httpx.Client`` that pays x402 challenges with ``wallet`` within ``policy``.

    One client is one *session*: ``max_per_session`` and :attr:`spend` count
    its payments; pass the same :class:`~clawrouter.client.Budget` to several
    clients to cap their total. ``transport`` is the httpx transport to send
    through; other keyword arguments go to ``httpx.Client``.
    """

    _transport_class = X402Transport


class AsyncClient(_Session, httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that pays x402 challenges (see :class:`Client`)."""

    _transport_class = AsyncX402Transport
