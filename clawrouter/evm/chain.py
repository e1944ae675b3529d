"""Chain access for the ``exact`` EVM rail: reads, simulation and settlement.

One :class:`EvmChain` talks to one network's token through web3 — JSON-RPC to
a node, or an in-process chain for the demo and fast tests. web3 is
synchronous here and every call runs on one dedicated worker thread, so the
event loop never blocks on the chain and the settling account's transactions
are built one at a time (its account nonce never races within a process; give
each replica its own settlement key, or use a remote facilitator).

Nothing here is on a request's hot path by default: balances are read once per
payer and cached by the rail; settlement runs after the response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.logs import DISCARD

from ..keys import RouterKey
from .eip3009 import Authorization

__all__ = ["EIP3009_ABI", "ChainError", "EvmChain", "SettleOutcome", "revert_reason"]

T = TypeVar("T")

_ADDRESS = {"name": "", "type": "address"}
_AUTH_INPUTS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]

#: The fragments of an EIP-3009 token (USDC v2.2) the rail uses.
EIP3009_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "authorizationState",
        "stateMutability": "view",
        "inputs": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "transferWithAuthorization",
        "stateMutability": "nonpayable",
        "inputs": [*_AUTH_INPUTS, {"name": "signature", "type": "bytes"}],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "transferWithAuthorization",
        "stateMutability": "nonpayable",
        "inputs": [
            *_AUTH_INPUTS,
            {"name": "v", "type": "uint8"},
            {"name": "r", "type": "bytes32"},
            {"name": "s", "type": "bytes32"},
        ],
        "outputs": [],
    },
    {
        "type": "event",
        "name": "AuthorizationUsed",
        "anonymous": False,
        "inputs": [
            {"name": "authorizer", "type": "address", "indexed": True},
            {"name": "nonce", "type": "bytes32", "indexed": True},
        ],
    },
    {
        "type": "event",
        "name": "Transfer",
        "anonymous": False,
        "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "to", "type": "address", "indexed": True},
            {"name": "value", "type": "uint256", "indexed": False},
        ],
    },
]


class ChainError(Exception):
    """The node could not be reached or answered with an error; retry later."""


class SettleOutcome:
    """What happened to a ``transferWithAuthorization``: ``transaction`` is its hash
    (``""`` if none was mined), ``error`` an x402 error reason or ``None``."""

    __slots__ = ("error", "transaction")

    def __init__(self, transaction: str, error: str | None = None) -> None:
        self.transaction = transaction
        self.error = error

    @property
    def success(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        return f"SettleOutcome({self.transaction!r}, error={self.error!r})"


def _vrs(signature: bytes) -> tuple[int, bytes, bytes]:
    return signature[64], signature[:32], signature[32:64]


class EvmChain:
    """One token on one EVM network.

    :param w3: a synchronous :class:`web3.Web3` (HTTP provider or in-process).
    :param token: the token contract address.
    :param key: the account that pays gas and submits settlements (``None``:
        read-only, e.g. when a remote facilitator settles).
    :param receipt_timeout: seconds to wait for a settlement to be mined.
    :param log_lookback: blocks searched for an earlier settlement of a nonce.
    """

    def __init__(
        self,
        w3: Web3,
        token: str,
        *,
        key: RouterKey | None = None,
        receipt_timeout: float = 60.0,
        log_lookback: int = 50_000,
    ) -> None:
        self.w3 = w3
        self.token = Web3.to_checksum_address(token)
        self.contract = w3.eth.contract(address=self.token, abi=EIP3009_ABI)
        self.key = key
        self.receipt_timeout = receipt_timeout
        self.log_lookback = log_lookback
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clawrouter-evm")
        self._chain_id: int | None = None
        #: the RPC endpoint's path and query, where node providers put API keys: never in an error
        self._hidden = _url_secrets(getattr(w3.provider, "endpoint_uri", None))

    @classmethod
    def from_url(cls, url: str, token: str, **kwargs: Any) -> EvmChain:
        from web3 import HTTPProvider

        return cls(Web3(HTTPProvider(url, request_kwargs={"timeout": 10})), token, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (ContractLogicError, ChainError):
            raise
        except Exception as exc:  # connection refused, timeouts, node errors
            message = f"{type(exc).__name__}: {exc}"
            for secret in self._hidden:  # requests names the URL it failed to reach
                message = message.replace(secret, "/…")
            raise ChainError(message) from exc

    # --- reads ----------------------------------------------------------------------

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self._run(lambda: int(self.w3.eth.chain_id))
        return self._chain_id

    async def balance_of(self, account: str) -> int:
        address = Web3.to_checksum_address(account)
        return await self._run(lambda: int(self.contract.functions.balanceOf(address).call()))

    async def authorization_used(self, authorizer: str, nonce: bytes) -> bool:
        address = Web3.to_checksum_address(authorizer)
        return await self._run(lambda: bool(self.contract.functions.authorizationState(address, nonce).call()))

    async def timestamp(self) -> int:
        return await self._run(lambda: int(self.w3.eth.get_block("latest")["timestamp"]))

    # --- simulation and settlement ------------------------------------------------------

    def _call(self, auth: Authorization, signature: bytes) -> Any:
        v, r, s = _vrs(signature)
        return self.contract.functions.transferWithAuthorization(
            Web3.to_checksum_address(auth.from_),
            Web3.to_checksum_address(auth.to),
            int(auth.value),
            int(auth.validAfter),
            int(auth.validBefore),
            bytes.fromhex(auth.nonce[2:]),
            v,
            r,
            s,
        )

    async def simulate(self, auth: Authorization, signature: bytes) -> str | None:
        """Run the transfer as an ``eth_call``; the revert reason, or ``None`` if it would succeed."""
        sender = self.key.address if self.key is not None else auth.to

        def run() -> str | None:
            try:
                self._call(auth, signature).call({"from": Web3.to_checksum_address(sender)})
            except ContractLogicError as exc:
                return str(exc.message or exc)
            return None

        return await self._run(run)

    async def find_settlement(self, auth: Authorization) -> str | None:
        """The hash of an already mined transaction that used ``auth`` (same payer,
        nonce, recipient and value), or ``None``."""

        def run() -> str | None:
            latest = int(self.w3.eth.block_number)
            logs = self.contract.events.AuthorizationUsed.get_logs(
                from_block=max(0, latest - self.log_lookback),
                to_block=latest,
                argument_filters={
                    "authorizer": Web3.to_checksum_address(auth.from_),
                    "nonce": bytes.fromhex(auth.nonce[2:]),
                },
            )
            for log in logs:
                receipt = self.w3.eth.get_transaction_receipt(log["transactionHash"])
                for transfer in self.contract.events.Transfer().process_receipt(receipt, errors=DISCARD):
                    args = transfer["args"]
                    if (
                        args["from"].lower() == auth.from_.lower()
                        and args["to"].lower() == auth.to.lower()
                        and int(args["value"]) == int(auth.value)
                    ):
                        return "0x" + bytes(log["transactionHash"]).hex().removeprefix("0x")
            return None

        return await self._run(run)

    async def settle(self, auth: Authorization, signature: bytes) -> SettleOutcome:
        """Submit ``transferWithAuthorization`` and wait for it to be mined.

        Idempotent: an authorization already used by a transfer matching it is
        reported as settled by that transaction, never submitted again.
        """
        key = self.key
        if key is None:
            raise ChainError("this chain client has no settlement key")
        nonce = bytes.fromhex(auth.nonce[2:])
        if await self.authorization_used(auth.from_, nonce):
            earlier = await self.find_settlement(auth)
            if earlier is not None:
                return SettleOutcome(earlier)
            return SettleOutcome("", "invalid_exact_evm_nonce_already_used")

        def submit() -> tuple[str, int]:
            sender = Web3.to_checksum_address(key.address)
            call = self._call(auth, signature)
            try:
                gas = int(call.estimate_gas({"from": sender}))
            except ContractLogicError as exc:
                raise _Reverted(str(exc.message or exc)) from None
            tx = call.build_transaction(
                {
                    "from": sender,
                    "nonce": self.w3.eth.get_transaction_count(sender, "pending"),
                    "gas": gas + gas // 5,
                    "chainId": self._chain_id or int(self.w3.eth.chain_id),
                }
            )
            signed = self.w3.eth.account.sign_transaction(tx, key.private_key)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
            except TimeExhausted:
                raise ChainError(f"{tx_hash.to_0x_hex()} not mined within {self.receipt_timeout} s") from None
            return tx_hash.to_0x_hex(), int(receipt["status"])

        try:
            tx_hash, status = await self._run(submit)
        except _Reverted as exc:
            reason = revert_reason(str(exc))
            if reason == "invalid_exact_evm_nonce_already_used":
                return await self._earlier(auth, "", reason)
            return SettleOutcome("", reason)
        if status != 1:
            return await self._earlier(auth, tx_hash, "invalid_transaction_state")
        return SettleOutcome(tx_hash)

    async def _earlier(self, auth: Authorization, tx_hash: str, error: str) -> SettleOutcome:
        """Lost a race to another submission of the same authorization (sent before a
        crash and mined since, or by another process): if that one paid exactly this
        transfer, it is the settlement."""
        earlier = await self.find_settlement(auth)
        return SettleOutcome(earlier) if earlier is not None else SettleOutcome(tx_hash, error)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _url_secrets(url: object) -> list[str]:
    """The parts of an RPC URL that may hold an API key (path and query), longest first;
    registered with the logs' redaction too."""
    if not isinstance(url, str) or not url:
        return []
    parts = urlsplit(url)
    full = parts.path + (f"?{parts.query}" if parts.query else "")
    found = [p for p in dict.fromkeys((full, parts.path, parts.query)) if len(p) >= 8]
    if found:
        from ..telemetry.logs import register_secret

        for part in found:
            register_secret(part)
    return found


class _Reverted(Exception):
    pass


def revert_reason(message: str) -> str:
    """Map a token's revert message to an x402 error reason."""
    text = message.lower()
    if "authorization is used" in text or ("nonce" in text and "used" in text):
        return "invalid_exact_evm_nonce_already_used"
    if "not yet valid" in text:
        return "invalid_exact_evm_payload_authorization_valid_after"
    if "expired" in text:
        return "invalid_exact_evm_payload_authorization_valid_before"
    if "balance" in text:
        return "insufficient_funds"
    if "signature" in text:
        return "invalid_exact_evm_payload_signature"
    return "invalid_exact_evm_transaction_simulation_failed"
