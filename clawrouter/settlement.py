"""Settlement: exactly once, after success, through a durable outbox.

For each paid request that succeeded, :class:`Settler`:

1. writes a :class:`~clawrouter.ledger.SettlementIntent` (``pending``) to the
   ledger's outbox — before the chain is touched;
2. calls the rail's ``settle``, retrying transport failures (node or
   facilitator unreachable) with exponential backoff and jitter;
3. marks the intent ``settled`` or ``failed``, records a ``settlement`` ledger
   entry, and keeps a ``settled`` marker on the payment in the state backend
   until its authorization expires, so a replay is refused.

Mode ``before`` (the x402 default for JSON responses) waits for the chain before
the response is released, up to ``settle_attempts``; if the chain stays
unreachable the response goes out anyway, reported as pending, and the intent
is settled later. Mode ``deferred`` takes the chain off the latency path
entirely. Intents left pending — by an outage or a crash — are settled by a
background loop and on start-up, by any replica; a rail's settle is idempotent
(EIP-3009 ``authorizationState``), so a settlement interrupted after its
transaction was sent is found on chain, never sent twice. With a ledger shared
by replicas that can lease intents (PostgreSQL's ``claim_pending``), each
intent is held by the replica settling it (``[payments] settle_lease_seconds``,
renewed by each failed attempt): another one takes it over only when the lease
runs out (its holder died). Once the chain has answered, a failure to record the
outcome is logged, never reported to the payer as a failed payment.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .ledger import LedgerEntry, SettlementIntent
from .payments import PaymentPayload, PaymentRequirements, SettlementResponse, VerifiedPayment
from .pricing import usd
from .receipts import Receipt, sign_receipt

if TYPE_CHECKING:
    from .context import RequestContext
    from .keys import RouterKey
    from .router import Router

__all__ = ["SETTLED", "Receipts", "Settler", "lock_key"]

log = logging.getLogger("clawrouter.settlement")

_encode = msgspec.json.Encoder().encode
_payload = msgspec.json.Decoder(PaymentPayload).decode
_requirements = msgspec.json.Decoder(PaymentRequirements).decode

#: the state value marking a payment as settled (its lock is never released)
SETTLED = "settled"


def lock_key(network: str, payment_id: str) -> str:
    return f"payment:{network}:{payment_id}"


class _Transient(Exception):
    pass


class Settler:
    def __init__(self, router: Router) -> None:
        self.router = router
        payments = router.config.payments
        self.mode = payments.settlement
        self.attempts = payments.settle_attempts
        self.retry_interval = payments.settle_retry_seconds
        #: the holder of the intents this process settles in a ledger shared by replicas
        self.owner = router.replica
        self.lease = payments.settle_lease_seconds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._busy: set[str] = set()  # payment ids being settled by this process

    # --- the request path --------------------------------------------------------------

    async def settle(self, payment: VerifiedPayment, charge: int, request_id: str) -> SettlementResponse:
        """Write the intent, then settle (mode ``before``) or schedule it (``deferred``)."""
        intent = SettlementIntent(
            payment_id=payment.payment_id,
            request_id=request_id,
            scheme=payment.scheme,
            network=payment.network,
            payer=payment.payer,
            amount=payment.amount,
            charge=charge,
            expires=payment.expires,
            payment=_encode(payment.payload),
            requirements=_encode(payment.requirements),
        )
        ledger = self.router.ledger
        claims = callable(getattr(ledger, "claim_pending", None))  # a ledger shared by replicas
        added = await (
            ledger.add_intent(intent, owner=self.owner, lease=self.lease)  # type: ignore[call-arg]
            if claims
            else ledger.add_intent(intent)
        )
        if not added:
            # the same payment settled (or being settled) already: never twice
            rail = self.router.rails.get((payment.scheme, payment.network))
            reason = getattr(rail, "replay_reason", "invalid_exact_evm_nonce_already_used")
            return SettlementResponse(False, payment.network, "", payment.payer, reason)
        if self.mode == "deferred":
            self._spawn(self._settle_intent(intent, payment, attempts=None))
            return self._pending(payment)
        result = await self._settle_intent(intent, payment, attempts=self.attempts)
        if result is None:  # the chain stayed unreachable: settle later, serve now
            self._spawn(self._settle_intent(intent, payment, attempts=None))
            return self._pending(payment)
        return result

    def _pending(self, payment: VerifiedPayment) -> SettlementResponse:
        return SettlementResponse(
            True,
            payment.network,
            "",
            payment.payer,
            amount=str(payment.amount),
            extensions={"clawrouter": {"settlement": "pending"}},
        )

    # --- attempts --------------------------------------------------------------------------

    async def _settle_intent(
        self, intent: SettlementIntent, payment: VerifiedPayment, *, attempts: int | None
    ) -> SettlementResponse | None:
        """Try until done; ``None`` if ``attempts`` ran out on transient failures."""
        if intent.payment_id in self._busy:
            return None
        self._busy.add(intent.payment_id)
        try:
            delay = 0.2
            tried = 0
            while True:
                tried += 1
                try:
                    response = await self._attempt(payment, intent.charge)
                except _Transient as exc:
                    await self.router.ledger.update_intent(intent.payment_id, status="pending", error=str(exc))
                    if attempts is not None and tried >= attempts:
                        log.warning("settlement of %s pending after %d attempts: %s", intent.payment_id, tried, exc)
                        return None
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
                await self._finish(intent, payment, response)
                return response
        finally:
            self._busy.discard(intent.payment_id)

    async def _attempt(self, payment: VerifiedPayment, charge: int) -> SettlementResponse:
        rail = self.router.rails.get((payment.scheme, payment.network))
        if rail is None:
            raise _Transient(f"no rail for {payment.scheme}/{payment.network} in this process")
        try:
            return await rail.settle(payment, charge)
        except Exception as exc:  # node, RPC or facilitator trouble: retry
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    async def _finish(self, intent: SettlementIntent, payment: VerifiedPayment, response: SettlementResponse) -> None:
        """Record the outcome. The chain has spoken: a bookkeeping failure here (the ledger or
        the state backend unreachable) is logged, never raised, so the caller still learns
        that it was charged; the intent stays pending and a later recovery, finding the
        transaction on chain, records it."""
        router = self.router
        status = "settled" if response.success else "failed"
        if router.telemetry is not None:
            router.telemetry.settlement(intent, response)
        entry = LedgerEntry(
            intent.request_id,
            "settlement",
            {
                "success": response.success,
                "transaction": response.transaction,
                "network": response.network,
                "payer": response.payer,
                "amount": intent.amount,
                "charge": intent.charge,
                "error": response.errorReason,
            },
        )
        key = lock_key(payment.network, payment.payment_id)
        steps: list[tuple[str, Any]] = [
            (
                "the ledger's intent",
                router.ledger.update_intent(
                    intent.payment_id, status=status, transaction=response.transaction, error=response.errorReason
                ),
            ),
            ("the ledger's entry", router.ledger.record(entry)),
        ]
        if response.success:
            steps.append(
                ("the settled marker", router.state.set(key, SETTLED, max(60.0, payment.expires - time.time() + 60)))
            )
            steps.append(("the receipt", router.receipts.finalize(intent.request_id, response)))
        else:
            steps.append(("the lock's release", router.state.release(key)))
        for what, step in steps:
            try:
                await step
            except Exception as exc:
                log.error("payment %s %s: could not record %s: %s", intent.payment_id, status, what, exc)
        if not response.success:
            release = getattr(router.rails.get((payment.scheme, payment.network)), "release", None)
            if release is not None:
                release(payment)

    # --- recovery ------------------------------------------------------------------------

    @staticmethod
    def payment_of(intent: SettlementIntent) -> VerifiedPayment:
        return VerifiedPayment(
            intent.scheme,
            intent.network,
            intent.payer,
            intent.amount,
            intent.payment_id,
            _requirements(intent.requirements),
            _payload(intent.payment),
            expires=intent.expires,
        )

    async def recover(self) -> int:
        """Mark every unexpired settled or pending payment as used, and settle the pending
        ones; returns how many were pending."""
        now = int(time.time())
        state = self.router.state
        pending = 0
        for intent in await self.router.ledger.intents(since_expires=now):
            if intent.status == "failed":
                continue
            await state.set(lock_key(intent.network, intent.payment_id), SETTLED, intent.expires - now + 60)
        ledger = self.router.ledger
        claim = getattr(ledger, "claim_pending", None)
        # with a shared ledger, only the intents this replica could lease (none another one holds)
        todo = await claim(self.owner, self.lease) if callable(claim) else await ledger.intents("pending")
        for intent in todo:
            pending += 1
            await self._settle_intent(intent, self.payment_of(intent), attempts=1)
        return pending

    async def _retry_loop(self) -> None:
        while True:
            try:
                await self.recover()
            except Exception:
                log.exception("settlement recovery failed; retrying in %s s", self.retry_interval)
            await asyncio.sleep(self.retry_interval)

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._retry_loop(), name="clawrouter-settle")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for settlements in progress, then stop the retry loop."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:  # left pending in the outbox: the next start settles them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every settlement this process started has finished (tests, demo)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Receipts:
    """Signed receipts: issued with each paid response, kept in the ledger (kind
    ``receipt``, the latest per request wins) and served by ``GET /-/receipts/{id}``.
    A receipt issued before its deferred settlement finished is re-signed with
    the transaction once it has one."""

    def __init__(self, router: Router, key: RouterKey) -> None:
        self.router = router
        self.key = key
        self._convert = msgspec.convert

    async def issue(self, ctx: RequestContext, settlement: SettlementResponse, response_sha256: str) -> Receipt:
        payment = ctx.payment
        assert payment is not None
        usage = ctx.usage
        receipt = sign_receipt(
            Receipt(
                id=ctx.request_id,
                request_id=ctx.request_id,
                issued_at=int(time.time()),
                model=ctx.model.id if ctx.model is not None else "",
                provider=ctx.model.provider if ctx.model is not None else "",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                quote=str(payment.amount),
                charged=str(payment.amount) if settlement.success else "0",
                cost_usd=usd(ctx.cost_pico),
                asset=payment.requirements.asset,
                payer=payment.payer,
                network=payment.network,
                transaction=settlement.transaction,
                response_sha256=response_sha256,
                router=self.key.address,
            ),
            self.key,
        )
        await self.router.ledger.record(LedgerEntry(ctx.request_id, "receipt", msgspec.to_builtins(receipt)))
        return receipt

    async def get(self, receipt_id: str) -> Receipt | None:
        found = [e for e in await self.router.ledger.entries(receipt_id) if e.kind == "receipt"]
        return self._convert(found[-1].data, Receipt) if found else None

    async def finalize(self, request_id: str, settlement: SettlementResponse) -> None:
        receipt = await self.get(request_id)
        if receipt is None or receipt.transaction == settlement.transaction:
            return
        updated = sign_receipt(msgspec.structs.replace(receipt, transaction=settlement.transaction), self.key)
        await self.router.ledger.record(LedgerEntry(request_id, "receipt", msgspec.to_builtins(updated)))
