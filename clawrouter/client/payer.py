"""The client's payment logic, free of I/O: read a 402, choose, sign, account, verify.

The transports in :mod:`clawrouter.client.transport` drive one :class:`Payer`:

1. a request goes out unpaid — unless an earlier attempt at the *same* request
   (method, URL and body) signed an authorization that can still be used and
   got no settlement: a retry after a timeout, a dropped connection or a 5xx
   then carries that authorization again (:meth:`Payer.reusable`) instead of a
   new one, so a request is never paid twice;
2. a 402 is parsed (:func:`parse_challenge`: the v2 ``PAYMENT-REQUIRED``
   header, else the v1 JSON body); :meth:`Payer.pay` picks the entry the
   policy allows and prefers, checks the caps, signs, and counts the
   authorization once;
3. the paid response is observed (:meth:`Payer.answered`): the settlement
   header and the router's signed receipt; a stream's ``event: payment`` and
   ``event: receipt`` are taken out of the stream by :class:`StreamTap` and
   checked against the bytes that preceded them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import msgspec

from ..payments import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettlementResponse,
    encode_header,
    network_caip2,
    network_v1,
)
from ..receipts import Receipt, ReceiptError, decode_receipt_header, verify_receipt
from .policy import Budget, Exposure, PaymentError, Policy, PolicyError, State, Tally, to_usd

__all__ = [
    "CallRecord",
    "Challenge",
    "EvmExactSigner",
    "PayerKey",
    "Payer",
    "PaymentSigner",
    "Spend",
    "StreamTap",
    "parse_challenge",
]

log = logging.getLogger("clawrouter.client")

#: an authorization is reused only while it has this long to live: the server wants validBefore >= now + 6 s
REUSE_MARGIN = 10
_MAX_CHALLENGE_BYTES = 64 * 1024


class PayerKey(Protocol):
    """A secp256k1 key to sign with: a :class:`clawrouter.wallet.Wallet` or a :class:`~clawrouter.keys.RouterKey`."""

    @property
    def address(self) -> str: ...

    @property
    def private_key(self) -> bytes: ...


@runtime_checkable
class PaymentSigner(Protocol):
    """Signs payments for one family of ``accepts`` entries (a payment rail's client half).

    ``sign`` returns the x402 payload, an id unique to the authorization (its
    nonce) and the unix time after which it can no longer be settled.
    """

    scheme: str

    @property
    def payer(self) -> str:
        """The paying address."""
        ...

    def supports(self, requirements: PaymentRequirements) -> bool: ...

    def sign(
        self, requirements: PaymentRequirements, resource: ResourceInfo | None, version: int
    ) -> tuple[PaymentPayload, str, int]: ...


class EvmExactSigner:
    """The ``exact`` scheme on EVM networks: an EIP-3009 ``transferWithAuthorization``."""

    scheme = "exact"

    def __init__(self, key: PayerKey) -> None:
        self.key = key

    @property
    def payer(self) -> str:
        return self.key.address

    def supports(self, requirements: PaymentRequirements) -> bool:
        return requirements.scheme == "exact" and requirements.network.startswith("eip155:")

    def sign(
        self, requirements: PaymentRequirements, resource: ResourceInfo | None, version: int
    ) -> tuple[PaymentPayload, str, int]:
        from ..evm.pay import pay_exact

        try:
            payment = pay_exact(requirements, self.key.private_key, resource=resource.url if resource else None)
        except ValueError as exc:
            raise PaymentError(f"cannot sign for {requirements.network}: {exc}", reason="unsignable") from None
        payment.resource = resource
        authorization = payment.payload["authorization"]
        if version == 1:
            payment = PaymentPayload(
                1, payment.payload, scheme=requirements.scheme, network=network_v1(requirements.network)
            )
        return payment, authorization["nonce"], int(authorization["validBefore"])


class Challenge(msgspec.Struct):
    """A parsed 402: the entries offered, in the v2 shape (v1 entries converted)."""

    version: int
    accepts: list[PaymentRequirements]
    resource: ResourceInfo | None = None
    error: str | None = None


class _ChallengeV1(msgspec.Struct):
    x402Version: int
    accepts: list[PaymentRequirementsV1]
    error: str | None = None


def _decode_v1(body: bytes) -> Challenge:
    document = msgspec.json.decode(body, type=_ChallengeV1)
    accepts = [
        PaymentRequirements(
            a.scheme, network_caip2(a.network), a.maxAmountRequired, a.asset, a.payTo, a.maxTimeoutSeconds, a.extra
        )
        for a in document.accepts
    ]
    resource = ResourceInfo(document.accepts[0].resource) if document.accepts else None
    return Challenge(1, accepts, resource, document.error)


def parse_challenge(headers: Mapping[str, str], body: bytes) -> Challenge:
    """The payment a 402 asks for: the v2 ``PAYMENT-REQUIRED`` header, else a v1 JSON body.

    ``headers`` must be case-insensitive (an httpx ``Headers``). A 402 that is
    neither raises :class:`PaymentError` (reason ``invalid_challenge``).
    """
    value = headers.get("payment-required")
    try:
        if value:
            if len(value) > _MAX_CHALLENGE_BYTES:
                raise ValueError("the PAYMENT-REQUIRED header is too long")
            document = msgspec.json.decode(base64.b64decode(value, validate=True), type=PaymentRequired)
            return Challenge(document.x402Version, document.accepts, document.resource, document.error)
        if len(body) > _MAX_CHALLENGE_BYTES:
            raise ValueError("the 402 body is too long")
        return _decode_v1(body)
    except (ValueError, binascii.Error, msgspec.DecodeError) as exc:
        where = "PAYMENT-REQUIRED header" if value else "body (no PAYMENT-REQUIRED header)"
        raise PaymentError(
            f"the server's 402 is not an x402 challenge: {where}: {exc}", reason="invalid_challenge"
        ) from None


@dataclass
class CallRecord:
    """One authorization the client signed, and what became of it.

    ``state``: ``pending`` (sent; no answer yet, or the answer was lost),
    ``settled`` (the server reported settlement), ``unsettled`` (the server
    answered without settling: nothing was charged). ``attempts`` counts the
    requests that carried it; ``receipt_error`` says why a receipt did not
    verify (``None`` when it did, or when the server sends none).
    """

    id: str  # the client's id for it (random)
    method: str
    url: str
    scheme: str
    network: str
    asset: str
    pay_to: str
    amount: int  # atomic units authorized
    usd: Decimal
    expires: int  # validBefore
    requirements: PaymentRequirements
    payer: str = ""
    nonce: str = ""  # the authorization's own id (EIP-3009 nonce)
    header: tuple[str, str] = ("", "")
    state: State = "pending"
    attempts: int = 0
    status: int | None = None  # the last HTTP status answered to it
    settlement: SettlementResponse | None = None
    receipt: Receipt | None = None
    receipt_error: str | None = None
    created: float = field(default_factory=time.time)
    key: bytes = b""
    in_flight: int = 0

    @property
    def charged(self) -> Decimal:
        """USD moved by this authorization (0 unless settled)."""
        return self.usd if self.state == "settled" else Decimal(0)


class Spend(msgspec.Struct, frozen=True):
    """A session's spending, in USD.

    ``authorized``: every authorization signed, each counted once. ``charged``:
    settled. ``open``: signed, not settled, and still settleable (pending, or
    unsettled before its expiry) — at risk until it expires. The caps count
    ``charged + open``.
    """

    calls: int  # requests sent through the client (paid or not)
    paid_calls: int  # requests that settled a payment
    authorized: Decimal
    charged: Decimal
    open: Decimal
    refused: int  # payments the policy refused (nothing signed)


def _request_key(method: str, url: str, body: bytes) -> bytes:
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), url.encode(), body)).digest()


class Payer:
    """The payment state of one session (one client): policy, signers, records, receipts.

    Thread-safe: a sync client may be shared by threads, and the async client's
    callbacks never block on I/O except a :class:`Budget` file.
    """

    def __init__(
        self,
        wallet: PayerKey | None,
        policy: Policy | None = None,
        *,
        budget: Budget | None = None,
        signers: Iterable[PaymentSigner] | None = None,
        router: str | None = None,
        require_receipt: bool = False,
        history: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self.budget = budget if budget is not None else Budget()
        chosen = list(signers) if signers is not None else []
        if wallet is not None:
            chosen.append(EvmExactSigner(wallet))
        if not chosen:
            raise ValueError("a payer needs a wallet or at least one signer")
        self.signers = chosen
        self.wallet = wallet
        self.router = router
        self.require_receipt = require_receipt
        self.clock = clock
        #: the latest ``history`` authorizations (the totals in :attr:`spend` cover all of them)
        self.calls: deque[CallRecord] = deque(maxlen=history)
        self.requests = 0
        self.refused = 0
        self._tally = Tally()  # this session's exposure
        self._open: dict[str, CallRecord] = {}  # not settled, may be reused
        self._authorized = Decimal(0)
        self._paid = 0
        self._lock = threading.RLock()

    # -- accounting -----------------------------------------------------------

    @property
    def spend(self) -> Spend:
        with self._lock:
            total = self._tally.total(self.clock())
            return Spend(
                calls=self.requests,
                paid_calls=self._paid,
                authorized=self._authorized,
                charged=self._tally.settled,
                open=total - self._tally.settled,
                refused=self.refused,
            )

    @staticmethod
    def _exposure(record: CallRecord) -> Exposure:
        return Exposure(record.id, record.usd, record.expires, record.state)

    def _set_state(self, record: CallRecord, state: State) -> None:
        with self._lock:
            if record.state == state or record.state == "settled":
                return  # settled is final
            record.state = state
            entry = self._exposure(record)
            self._tally.apply(entry)
            if state == "settled":
                self._open.pop(record.id, None)
                self._paid += 1
            self.budget.update(entry)

    # -- the flow -------------------------------------------------------------

    def started(self) -> None:
        with self._lock:
            self.requests += 1

    def reusable(self, method: str, url: str, body: bytes) -> CallRecord | None:
        """An authorization signed for this same request that may be sent again, marked in flight."""
        key = _request_key(method, url, body)
        deadline = self.clock() + REUSE_MARGIN
        with self._lock:
            for record in list(self._open.values()):
                if record.expires <= self.clock() and record.state == "unsettled":
                    del self._open[record.id]  # void: can be neither settled nor reused
                elif record.key == key and record.in_flight == 0 and record.expires > deadline:
                    record.in_flight += 1
                    record.attempts += 1
                    self._set_state(record, "pending")  # in the server's hands again
                    return record
        return None

    def pay(self, method: str, url: str, body: bytes, challenge: Challenge) -> CallRecord:
        """Sign a payment for ``challenge`` within the policy.

        Raises :class:`PolicyError`, with nothing signed, when no entry fits.
        """
        policy = self.policy
        candidates: list[tuple[int, Decimal, PaymentRequirements, PaymentSigner]] = []
        refusals: list[tuple[str, str]] = []
        for requirements in challenge.accepts:
            signer = next((s for s in self.signers if s.supports(requirements)), None)
            if signer is None:
                refusals.append(
                    ("scheme_not_supported", f"no signer for scheme {requirements.scheme!r} on {requirements.network}")
                )
                continue
            refusal = policy.refusal(requirements.network, requirements.asset, requirements.payTo)
            if refusal is not None:
                refusals.append(refusal)
                continue
            try:
                amount = int(requirements.amount)
            except ValueError:
                refusals.append(("invalid_challenge", f"amount {requirements.amount!r} is not an integer"))
                continue
            if amount < 0:
                refusals.append(("invalid_challenge", f"amount {amount} is negative"))
                continue
            decimals = policy.decimals(requirements.network, requirements.asset)
            assert decimals is not None  # refusal() checked the asset
            usd = to_usd(amount, decimals)
            if policy.max_per_call is not None and usd > policy.max_per_call:
                refusals.append(
                    (
                        "over_call_cap",
                        f"${usd} on {requirements.network} is over the per-call cap of ${policy.max_per_call}",
                    )
                )
                continue
            candidates.append((policy.networks.index(requirements.network), usd, requirements, signer))
        if not candidates:
            with self._lock:
                self.refused += 1
            if not refusals:
                raise PolicyError("the server's 402 offers no way to pay (empty accepts)", reason="invalid_challenge")
            reason = refusals[0][0]
            detail = "; ".join(message for _, message in refusals)
            raise PolicyError(
                f"payment refused by policy, nothing was signed: {detail}",
                reason=reason,
                refusals=[m for _, m in refusals],
            )
        candidates.sort(key=lambda c: (c[0], c[1]))
        _, usd, requirements, signer = candidates[0]
        record = CallRecord(
            secrets.token_hex(16),
            method,
            url,
            requirements.scheme,
            requirements.network,
            requirements.asset,
            requirements.payTo,
            int(requirements.amount),
            usd,
            int(self.clock()) + requirements.maxTimeoutSeconds,  # until signed
            requirements,
            payer=signer.payer,
            key=_request_key(method, url, body),
            attempts=1,
            in_flight=1,
        )
        with self._lock:
            session = self._tally.total(self.clock())
            if policy.max_per_session is not None and session + usd > policy.max_per_session:
                self.refused += 1
                raise PolicyError(
                    f"payment refused by policy, nothing was signed: paying ${usd} would take this session to "
                    f"${session + usd}, over its cap of ${policy.max_per_session} (${session} spent or at risk)",
                    reason="over_session_cap",
                )
            try:
                self.budget.reserve(self._exposure(record), policy.max_total)
            except PolicyError as exc:
                self.refused += 1
                raise PolicyError(f"payment refused by policy, nothing was signed: {exc}", reason=exc.reason) from None
            try:
                payment, record.nonce, record.expires = signer.sign(requirements, challenge.resource, challenge.version)
            except BaseException:
                record.state, record.expires = "unsettled", 0  # never signed: counts nothing
                self.budget.update(self._exposure(record))
                raise
            self.budget.update(self._exposure(record))
            self._tally.apply(self._exposure(record))
            self._authorized += usd
            self._open[record.id] = record
            record.header = (
                "X-PAYMENT" if challenge.version == 1 else "PAYMENT-SIGNATURE",
                encode_header(payment).decode(),
            )
            self.calls.append(record)
        return record

    def lost(self, record: CallRecord) -> None:
        """The request carrying ``record`` failed without an answer: it may have been settled; keep it reusable."""
        with self._lock:
            record.in_flight -= 1

    def answered(self, record: CallRecord, status: int, headers: Mapping[str, str]) -> bool:
        """Observe the response to a paid request (status and headers; the body goes through a :class:`StreamTap`).

        Returns whether the server refused the authorization as already used:
        an earlier attempt carrying it was settled and its answer is lost.
        """
        lost_answer = False
        with self._lock:
            record.in_flight -= 1
            record.status = status
        settlement = _settlement(headers)
        if settlement is not None:
            record.settlement = settlement
        if status < 400 and settlement is not None and settlement.success:
            self._set_state(record, "settled")
        elif status == 402 and _already_used(headers, settlement):
            # a lost earlier attempt carrying this authorization was settled; the answer to it is gone
            self._set_state(record, "settled")
            lost_answer = True
        elif status == 409:
            pass  # another request carrying it is still being served: it stays pending
        elif status < 400 and settlement is None:
            # a 2xx without a settlement header: a stream (settled in-band) or a server that does not say
            pass
        else:
            self._set_state(record, "unsettled")
        value = headers.get("x-clawrouter-receipt")
        if value:
            try:
                record.receipt = decode_receipt_header(value)
            except ReceiptError as exc:
                record.receipt_error = str(exc)
        return lost_answer

    def settled_in_stream(self, record: CallRecord, settlement: SettlementResponse) -> None:
        record.settlement = settlement
        self._set_state(record, "settled" if settlement.success else "unsettled")

    def check_receipt(self, record: CallRecord, body_digest: str) -> None:
        """Verify ``record.receipt`` against the router key, the payment and the body's SHA-256.

        Sets ``record.receipt_error``; raises :class:`ReceiptError` when
        ``require_receipt`` is on and the receipt is missing or wrong.
        """
        receipt = record.receipt
        if receipt is None:
            if record.receipt_error is None and record.state == "settled" and self.require_receipt:
                record.receipt_error = "the server sent no receipt"
        else:
            try:
                verify_receipt(receipt, router=self.router)
                _check_matches(record, receipt, body_digest)
                record.receipt_error = None
            except ReceiptError as exc:
                record.receipt_error = str(exc)
        if record.receipt_error is not None:
            log.warning("receipt for payment %s: %s", record.id, record.receipt_error)
            if self.require_receipt:
                raise ReceiptError(f"payment {record.id}: {record.receipt_error}")


def _check_matches(record: CallRecord, receipt: Receipt, body_digest: str) -> None:
    problems = []
    if receipt.response_sha256.lower() != body_digest:
        problems.append("the response body does not match its response_sha256")
    if receipt.payer.lower() != record.payer.lower():
        problems.append(f"payer {receipt.payer!r} is not this wallet {record.payer!r}")
    if receipt.network != record.network:
        problems.append(f"network {receipt.network!r} is not the payment's {record.network!r}")
    if receipt.asset.lower() != record.asset.lower():
        problems.append(f"asset {receipt.asset!r} is not the payment's")
    if receipt.quote != str(record.amount):
        problems.append(f"quote {receipt.quote} is not the authorized {record.amount}")
    if not receipt.charged.isdigit() or int(receipt.charged) > record.amount:
        problems.append(f"charged {receipt.charged!r} exceeds the authorized {record.amount}")
    if record.settlement is not None and receipt.transaction != record.settlement.transaction:
        problems.append("transaction differs from the settlement's")
    if problems:
        raise ReceiptError("receipt does not match the payment: " + "; ".join(problems))


def _settlement(headers: Mapping[str, str]) -> SettlementResponse | None:
    value = headers.get("payment-response") or headers.get("x-payment-response")
    if not value:
        return None
    try:
        return msgspec.json.decode(base64.b64decode(value, validate=True), type=SettlementResponse)
    except (ValueError, binascii.Error, msgspec.DecodeError):
        log.warning("ignoring a malformed PAYMENT-RESPONSE header")
        return None


def _already_used(headers: Mapping[str, str], settlement: SettlementResponse | None) -> bool:
    if settlement is not None and settlement.errorReason and "nonce_already_used" in settlement.errorReason:
        return True
    value = headers.get("payment-required")
    if not value:
        return False
    try:
        document: dict[str, Any] = msgspec.json.decode(base64.b64decode(value))
    except (ValueError, binascii.Error, msgspec.DecodeError):
        return False
    return "nonce_already_used" in str(document.get("error", ""))


class StreamTap:
    """Watches a paid response's body on its way to the caller.

    Hashes the body; for an SSE stream, removes the router's final
    ``event: payment`` and ``event: receipt`` events (an OpenAI client would
    otherwise parse them as chunks), records them, and hashes only the bytes
    before them — the digest the router signed. :meth:`finish` verifies.
    """

    def __init__(self, payer: Payer, record: CallRecord, sse: bool) -> None:
        self.payer = payer
        self.record = record
        self.sse = sse
        self.digest = hashlib.sha256()
        self.buffer = b""
        self.trailer = False  # past the payment event
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` to hand on."""
        if not self.sse:
            self.digest.update(chunk)
            return chunk
        self.buffer += chunk
        out = []
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                break
            event, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
            if event.startswith(b"event: payment\n") or event.startswith(b"event: receipt\n"):
                self._trailer_event(event)
                continue
            if not self.trailer:
                self.digest.update(event)
            out.append(event)
        return b"".join(out)

    def _trailer_event(self, event: bytes) -> None:
        self.trailer = True
        name, _, rest = event.partition(b"\n")
        data = b"".join(line[6:] for line in rest.split(b"\n") if line.startswith(b"data: "))
        try:
            if name == b"event: payment":
                self.payer.settled_in_stream(self.record, msgspec.json.decode(data, type=SettlementResponse))
            else:
                self.record.receipt = msgspec.json.decode(data, type=Receipt)
        except msgspec.DecodeError as exc:
            self.record.receipt_error = f"malformed {name.decode()} event: {exc}"

    def finish(self) -> bytes:
        """The end of the body: what remains to hand on; verifies the receipt (may raise :class:`ReceiptError`)."""
        if self.done:
            return b""
        self.done = True
        rest, self.buffer = self.buffer, b""
        if self.sse and not self.trailer:
            self.digest.update(rest)
        if self.record.state == "settled" or self.record.receipt is not None:
            self.payer.check_receipt(self.record, self.digest.hexdigest())
        return rest
