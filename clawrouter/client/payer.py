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
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

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
from .policy import (
    Budget,
    Exposure,
    PaymentError,
    Policy,
    PolicyError,
    State,
    Tally,
    address_key,
    process_budget,
    to_usd,
)

__all__ = [
    "CallRecord",
    "Challenge",
    "EvmExactSigner",
    "PayerKey",
    "Payer",
    "PaymentSigner",
    "Spend",
    "StreamTap",
    "installed_signers",
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
    nonce) and the unix time after which it can no longer be settled. A signer
    that reads the network to sign may also define ``async aprepare(requirements)``,
    which an async client awaits first so that ``sign`` need not block its loop.
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


def installed_signers() -> list[PaymentSigner]:
    """The signers installed plugins offer (hook ``register_payment_signers``): a
    plugin that fails is logged and skipped."""
    from ..plugins import load_plugins

    pm, _, _ = load_plugins()
    signers: list[PaymentSigner] = []
    for impl in reversed(pm.hook.register_payment_signers.get_hookimpls()):
        try:
            offered: Iterable[PaymentSigner] | None = impl.function()  # type: ignore[assignment]
            signers.extend(offered or ())
        except Exception as exc:
            log.warning("plugin %s offers no payment signer: %s: %s", impl.plugin_name, type(exc).__name__, exc)
    return signers


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
    requests that carried it; ``verified`` is true once the receipt checked
    out, and ``receipt_error`` says why it did not (``None`` when it did, or
    when the server sends none).
    """

    id: str  # the client's id for it (random)
    method: str
    url: str
    requirements: PaymentRequirements  # the accepts entry it answers
    usd: Decimal  # the authorized amount in USD
    expires: int  # validBefore
    payer: str = ""
    nonce: str = ""  # the authorization's own id (EIP-3009 nonce)
    header: tuple[str, str] = ("", "")
    state: State = "pending"
    attempts: int = 0
    status: int | None = None  # the last HTTP status answered to it
    settlement: SettlementResponse | None = None
    receipt: Receipt | None = None
    receipt_error: str | None = None
    verified: bool = False  # the receipt was checked and is good
    created: float = field(default_factory=time.time)
    key: bytes = b""
    in_flight: int = 0

    @property
    def scheme(self) -> str:
        return self.requirements.scheme

    @property
    def network(self) -> str:
        return self.requirements.network

    @property
    def asset(self) -> str:
        return self.requirements.asset

    @property
    def pay_to(self) -> str:
        return self.requirements.payTo

    @property
    def amount(self) -> int:
        """Atomic units authorized."""
        return int(self.requirements.amount)


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
        self.budget = budget if budget is not None else process_budget()
        chosen: list[PaymentSigner] = [EvmExactSigner(wallet)] if wallet is not None else []
        #: signers this payer found itself (from installed plugins), and so closes
        self._owned: list[PaymentSigner] = installed_signers() if signers is None else []
        chosen += list(signers) if signers is not None else self._owned
        if not chosen:
            raise ValueError("a payer needs a wallet or at least one signer")
        self.signers = chosen
        self.router = router
        self.require_receipt = require_receipt
        self.clock = clock
        #: the latest ``history`` authorizations (the totals in :attr:`spend` cover all of them)
        self.calls: deque[CallRecord] = deque(maxlen=history)
        self.requests = 0
        self.refused = 0
        self._tally = Tally()  # this session's exposure
        self._open: dict[str, CallRecord] = {}  # not settled, may be reused
        self._undelivered: dict[bytes, CallRecord] = {}  # settled, body not (yet) fully received
        self._authorized = Decimal(0)
        self._paid = 0
        self._lock = threading.RLock()

    # -- accounting -----------------------------------------------------------

    def records(self) -> list[CallRecord]:
        """A snapshot of :attr:`calls` (safe while other threads pay)."""
        with self._lock:
            return list(self.calls)

    @property
    def spend(self) -> Spend:
        with self._lock:
            now = self.clock()
            self._tally.prune(now)
            total = self._tally.total(now)
            return Spend(
                calls=self.requests,
                paid_calls=self._paid,
                authorized=self._authorized,
                charged=self._tally.settled + self._tally.unknown,
                open=total - self._tally.settled - self._tally.unknown,
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
        """An authorization signed for this same request that may be sent again, marked in flight.

        While an earlier attempt's authorization could still be settled, a new
        one is never signed for the same request: it is reused if it has
        :data:`REUSE_MARGIN` seconds to live, and otherwise :class:`PaymentError`
        is raised (``previous_attempt_unresolved``; or ``already_settled`` when
        it was settled and its response cut off).
        """
        key = _request_key(method, url, body)
        now = self.clock()
        with self._lock:
            for record in list(self._open.values()):
                if record.expires <= now:
                    del self._open[record.id]  # can be neither settled nor reused any more
                elif record.key == key and record.in_flight == 0:
                    if record.expires > now + REUSE_MARGIN:
                        record.in_flight += 1
                        record.attempts += 1
                        self._set_state(record, "pending")  # in the server's hands again
                        return record
                    if record.state == "pending":
                        raise PaymentError(
                            f"an earlier attempt at this request carried a payment (${record.usd} on "
                            f"{record.network}) whose outcome is unknown and which expires in "
                            f"{record.expires - now:.0f} s, too soon to send again; not paying a second time. "
                            "Retry after it expires.",
                            reason="previous_attempt_unresolved",
                        )
            for k, record in list(self._undelivered.items()):
                if record.expires <= now:
                    del self._undelivered[k]
                elif k == key and record.in_flight == 0:
                    raise PaymentError(
                        f"this request's payment (${record.usd} on {record.network}) was settled, but its "
                        "response was cut off; not paying again",
                        reason="already_settled",
                    )
        return None

    def close(self) -> None:
        """Close the signers this payer found itself (their RPC connections); signers
        passed in ``signers=`` belong to the caller."""
        for signer in self._owned:
            close = getattr(signer, "close", None)
            if close is not None:
                close()

    async def aprepare(self, headers: Mapping[str, str], body: bytes) -> None:
        """Before an async client answers a 402: let the signer of the entry :meth:`pay`
        would choose read what it needs from the network (a Solana blockhash) without
        blocking the event loop (its ``aprepare``). Nothing is read for an entry the policy
        refuses. Errors are left for :meth:`pay`, which reads again."""
        if not any(hasattr(s, "aprepare") for s in self.signers):
            return
        try:
            candidates, _ = self._candidates(parse_challenge(headers, body))
        except PaymentError:
            return
        if candidates:
            _, _, requirements, signer = candidates[0]
            prepare = getattr(signer, "aprepare", None)
            if prepare is not None:
                try:
                    await prepare([requirements])
                except Exception as exc:
                    log.debug("%r could not prepare: %s", signer, exc)

    def _candidates(
        self, challenge: Challenge
    ) -> tuple[list[tuple[int, Decimal, PaymentRequirements, PaymentSigner]], list[tuple[str, str]]]:
        """The entries a signer supports and the policy allows (per-call cap included), the
        preferred first, and why each other entry was refused."""
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
        candidates.sort(key=lambda c: (c[0], c[1]))
        return candidates, refusals

    def pay(self, method: str, url: str, body: bytes, challenge: Challenge) -> CallRecord:
        """Sign a payment for ``challenge`` within the policy.

        Raises :class:`PolicyError`, with nothing signed, when no entry fits.
        """
        policy = self.policy
        candidates, refusals = self._candidates(challenge)
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
        _, usd, requirements, signer = candidates[0]
        record = CallRecord(
            secrets.token_hex(16),
            method,
            url,
            requirements,
            usd,
            int(self.clock()) + requirements.maxTimeoutSeconds,  # until signed
            payer=signer.payer,
            key=_request_key(method, url, body),
            attempts=1,
            in_flight=1,
        )
        with self._lock:
            now = self.clock()
            self._tally.prune(now)
            session = self._tally.total(now)
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
        self.done(record)

    def done(self, record: CallRecord) -> None:
        """An attempt carrying ``record`` is over (answered and its body read or dropped, or lost)."""
        with self._lock:
            record.in_flight -= 1

    def delivered(self, record: CallRecord) -> None:
        """The paid response's body arrived whole."""
        with self._lock:
            self._undelivered.pop(record.key, None)

    def answered(self, record: CallRecord, status: int, headers: Mapping[str, str], body: bytes = b"") -> bool:
        """Observe the response to a paid request: status, headers, and the body of a 402.

        The attempt stays in flight until :meth:`done` (after the body). Returns
        whether the server refused the authorization as already used: an
        earlier attempt carrying it was settled and its answer is lost.
        """
        settlement = _settlement(headers)
        receipt: Receipt | None = None
        receipt_error: str | None = None
        value = headers.get("x-clawrouter-receipt")
        if value:
            try:
                receipt = decode_receipt_header(value)
            except ReceiptError as exc:
                receipt_error = str(exc)
        lost_answer = status == 402 and _already_used(headers, settlement, body)
        with self._lock:
            record.status = status
            if settlement is not None:
                record.settlement = settlement
            record.receipt, record.receipt_error = receipt, receipt_error
            if status < 400 and settlement is not None and settlement.success:
                self._set_state(record, "settled")
                self._undelivered[record.key] = record
            elif lost_answer:
                # a lost earlier attempt carrying this authorization was settled; the answer to it is gone
                self._set_state(record, "settled")
            elif status == 409:
                pass  # another request carrying it is still being served: it stays pending
            elif status < 400 and settlement is None:
                pass  # a stream (settled in-band) or a server that does not say: pending
            else:
                self._set_state(record, "unsettled")
        return lost_answer

    def settled_in_stream(self, record: CallRecord, settlement: SettlementResponse) -> None:
        record.settlement = settlement
        self._set_state(record, "settled" if settlement.success else "unsettled")

    def unsettled(self, record: CallRecord) -> None:
        """The server's answer is complete and settled nothing."""
        self._set_state(record, "unsettled")

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
                record.receipt_error, record.verified = None, True
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
    if address_key(receipt.payer) != address_key(record.payer):
        problems.append(f"payer {receipt.payer!r} is not this wallet {record.payer!r}")
    if receipt.network != record.network:
        problems.append(f"network {receipt.network!r} is not the payment's {record.network!r}")
    if address_key(receipt.asset) != address_key(record.asset):
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


#: the reasons that say a payment was already used: an EVM nonce, a Solana transaction
_USED = re.compile(r"nonce_already_used|duplicate_settlement")


def _already_used(headers: Mapping[str, str], settlement: SettlementResponse | None, body: bytes) -> bool:
    """Whether a 402 says the payment was already used: in the settlement, the v2 header, or a v1 body."""
    if settlement is not None and settlement.errorReason and _USED.search(settlement.errorReason):
        return True
    for raw in (headers.get("payment-required"), body):
        if not raw:
            continue
        try:
            document = msgspec.json.decode(base64.b64decode(raw) if isinstance(raw, str) else raw)
        except (ValueError, binascii.Error, msgspec.DecodeError):
            continue
        if isinstance(document, dict) and _USED.search(str(document.get("error", ""))):
            return True
    return False


_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
#: an event this long with no end is not one we need to look inside: it is passed on as it comes
_MAX_EVENT_BYTES = 1 << 20


def _sse_fields(event: bytes) -> tuple[bytes, bytes]:
    """The ``event`` name and the joined ``data`` of one SSE event (the spec's field parsing)."""
    name, data = b"", []
    for line in _LINE.split(event):
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value
        elif field == b"data":
            data.append(value)
    return name, b"\n".join(data)


class StreamTap:
    """Watches a paid response's body on its way to the caller.

    Hashes the body; for an SSE stream, removes the router's final
    ``event: payment`` and ``event: receipt`` events (an OpenAI client would
    otherwise parse them as chunks), records them, and hashes only the bytes
    before them — the digest the router signed. The receipt is checked as
    soon as it arrives (a caller may stop reading at ``data: [DONE]``), else
    at the end of the body (:meth:`finish`).
    """

    def __init__(self, payer: Payer, record: CallRecord, sse: bool) -> None:
        self.payer = payer
        self.record = record
        self.sse = sse
        self.digest = hashlib.sha256()
        self.buffer = b""
        self.trailer = False  # past the payment event
        self.checked = False
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` to hand on (may raise :class:`ReceiptError` with ``require_receipt``)."""
        if not self.sse:
            self.digest.update(chunk)
            return chunk
        self.buffer += chunk
        out = []
        while True:
            match = _BOUNDARY.search(self.buffer)
            if match is None:
                if len(self.buffer) > _MAX_EVENT_BYTES:
                    out.append(self._pass(self.buffer))
                    self.buffer = b""
                break
            event, self.buffer = self.buffer[: match.end()], self.buffer[match.end() :]
            name, data = _sse_fields(event)
            if name in (b"payment", b"receipt"):
                self._trailer_event(name, data)
            else:
                out.append(self._pass(event))
        return b"".join(out)

    def _pass(self, data: bytes) -> bytes:
        if not self.trailer:
            self.digest.update(data)
        return data

    def _trailer_event(self, name: bytes, data: bytes) -> None:
        self.trailer = True
        try:
            if name == b"payment":
                self.payer.settled_in_stream(self.record, msgspec.json.decode(data, type=SettlementResponse))
                return
            self.record.receipt = msgspec.json.decode(data, type=Receipt)
        except msgspec.DecodeError as exc:
            self.record.receipt_error = f"malformed event: {name.decode(errors='replace')}: {exc}"
            if name == b"payment":
                return
        self._check()

    def _check(self) -> None:
        if not self.checked:
            self.checked = True
            self.payer.check_receipt(self.record, self.digest.hexdigest())

    def finish(self) -> bytes:
        """The body ended: what remains to hand on; verifies the receipt if not done yet (may raise)."""
        if self.done:
            return b""
        rest, self.buffer = self.buffer, b""
        rest = self._pass(rest) if rest else b""
        if self.sse and not self.trailer and self.record.state == "pending":
            # a clawrouter stream that ends without its payment trailer was not settled (an in-band error)
            self.payer.unsettled(self.record)
        self.payer.delivered(self.record)
        self.close()
        if self.record.state == "settled" or self.record.receipt is not None:
            self._check()
        return rest

    def close(self) -> None:
        """The caller is done with the body (read or not): the attempt is over."""
        if not self.done:
            self.done = True
            self.payer.done(self.record)
