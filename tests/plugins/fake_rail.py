"""A payment rail for testing the verify/settle plumbing without a chain.

Payments are HMAC-signed vouchers ``{"payer", "nonce", "amount", "sig"}`` against a
secret the test controls; balances live in a dict. It exercises every path of the
stages (challenge, decode, dispatch, verify, lock, settle, release) exactly as a
chain-backed rail would; the EVM and Solana rails are tested against real chains.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from clawrouter import hookimpl
from clawrouter.payments import (
    PaymentPayload,
    PaymentRejected,
    PaymentRequirements,
    SettlementResponse,
    VerifiedPayment,
)

SECRET = b"test-secret"
NETWORK = "test:1"
PAY_TO = "0xrouter"
ASSET = "TUSD"


def sign(payer: str, nonce: str, amount: int) -> str:
    return hmac.new(SECRET, f"{payer}|{nonce}|{amount}".encode(), hashlib.sha256).hexdigest()


class FakeRail:
    scheme = "exact"
    network = NETWORK

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.settled: list[tuple[str, int]] = []
        self.fail_settle = False

    def requirements(self, amount: int, resource: str) -> PaymentRequirements:
        return PaymentRequirements(self.scheme, self.network, str(amount), ASSET, PAY_TO, 60, {"name": "Test USD"})

    async def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> VerifiedPayment:
        data = payment.payload
        try:
            payer, nonce, amount, sig = data["payer"], data["nonce"], int(data["amount"]), data["sig"]
        except (KeyError, ValueError, TypeError):
            raise PaymentRejected("payload lacks payer/nonce/amount/sig", code="invalid_payload") from None
        if not hmac.compare_digest(sig, sign(payer, nonce, amount)):
            raise PaymentRejected("bad signature", code="invalid_signature")
        if amount != int(requirements.amount):
            raise PaymentRejected("amount does not match", code="invalid_amount")
        if self.balances.get(payer, 0) < amount:
            raise PaymentRejected("insufficient funds", code="insufficient_funds")
        return VerifiedPayment(self.scheme, self.network, payer, amount, nonce, requirements, payment)

    async def settle(self, payment: VerifiedPayment, charge: int) -> SettlementResponse:
        if self.fail_settle:
            return SettlementResponse(False, self.network, "", payment.payer, "unexpected_settle_error")
        self.balances[payment.payer] -= payment.amount
        self.settled.append((payment.payment_id, charge))
        return SettlementResponse(True, self.network, f"tx-{payment.payment_id}", payment.payer)


def payment_header(requirements: dict, payer: str = "alice", nonce: str = "n1", *, version: int = 2) -> str:
    amount = int(requirements["amount"])
    body: dict = {
        "x402Version": version,
        "payload": {"payer": payer, "nonce": nonce, "amount": amount, "sig": sign(payer, nonce, amount)},
    }
    if version == 2:
        body["accepted"] = requirements
    else:
        body["scheme"], body["network"] = requirements["scheme"], requirements["network"]
    return base64.b64encode(json.dumps(body).encode()).decode()


class FakeRailPlugin:
    """Register as ``plugins=[FakeRailPlugin(rail)]``."""

    __name__ = "fake_rail"

    def __init__(self, rail: FakeRail) -> None:
        self.rail = rail

    @hookimpl
    def register_payment_rails(self, config):
        return [self.rail]
