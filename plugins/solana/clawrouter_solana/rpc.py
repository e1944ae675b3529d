"""A small Solana JSON-RPC client: the calls the rail and the signer make, nothing more.

:class:`SolanaRpc` (async, for the router) sends through clawrouter's pooled
upstream transport (aiohttp by default), so a paid request's RPC round trip
costs what a provider call does; several calls can go in one HTTP request as a
JSON-RPC batch (:meth:`SolanaRpc.batch`). :class:`SyncSolanaRpc` is the same
over ``httpx.Client``, for the agent-side signer.

Two kinds of failure: :class:`RpcUnavailable` when the node could not answer
(unreachable, timed out, a 5xx, a body that is not JSON-RPC) — the payment is
neither accepted nor refused, callers fail closed and retry; and
:class:`RpcError` when the node answered with a JSON-RPC error (a preflight
failure of ``sendTransaction`` carries the transaction error in ``data``).
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from clawrouter.providers.base import ProviderError
from clawrouter.upstream import Timeouts, UpstreamTransport, default_transport

__all__ = [
    "JSON_HEADERS",
    "AccountInfo",
    "Calls",
    "RpcError",
    "RpcUnavailable",
    "SolanaRpc",
    "SyncSolanaRpc",
    "account_from",
    "decode_batch",
    "encode_batch",
    "raise_for_error",
    "shown_url",
]

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_encoder = msgspec.json.Encoder()


def shown_url(url: str) -> str:
    """``url`` as messages show it: scheme and host, the path and query (where RPC providers
    put API keys, e.g. ``?api-key=``) replaced by ``/…``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # no user:password either
    return f"{parts.scheme}://{host}" + ("/…" if parts.path.strip("/") or parts.query else "")


class RpcUnavailable(Exception):
    """The node did not answer (transport failure, 5xx, not JSON-RPC): retry later."""


class RpcError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} ({code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    @property
    def transaction_error(self) -> Any:
        """The transaction error of a failed preflight (``data.err``), if any."""
        return self.data.get("err") if isinstance(self.data, dict) else None

    @property
    def logs(self) -> list[str]:
        logs = self.data.get("logs") if isinstance(self.data, dict) else None
        return [str(line) for line in logs] if isinstance(logs, list) else []


class AccountInfo(msgspec.Struct, frozen=True):
    lamports: int
    owner: str
    data: bytes
    executable: bool = False


Call = tuple[str, list[Any]]


def encode_batch(calls: Sequence[Call], ids: itertools.count[int]) -> tuple[bytes, list[int]]:
    """The JSON-RPC body for ``calls`` (a batch when more than one) and the ids it used."""
    numbers = [next(ids) for _ in calls]
    body = [{"jsonrpc": "2.0", "id": n, "method": m, "params": p} for n, (m, p) in zip(numbers, calls, strict=True)]
    return _encoder.encode(body if len(body) > 1 else body[0]), numbers


def decode_batch(calls: Sequence[Call], numbers: list[int], status: int, data: bytes, url: str) -> list[Any]:
    """The results in call order; an error answer becomes an :class:`RpcError` in its place."""
    url = shown_url(url)
    if not 200 <= status < 300:
        raise RpcUnavailable(f"Solana RPC {url} answered HTTP {status}")
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise RpcUnavailable(f"Solana RPC {url} answered a body that is not JSON") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    by_id = {item.get("id"): item for item in items if isinstance(item, dict)}
    out: list[Any] = []
    for number, (method, _) in zip(numbers, calls, strict=True):
        item = by_id.get(number)
        if item is None:
            raise RpcUnavailable(f"Solana RPC {url} gave no answer to {method}")
        error = item.get("error")
        if isinstance(error, dict):
            out.append(RpcError(method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")))
        elif "result" in item:
            out.append(item["result"])
        else:
            raise RpcUnavailable(f"Solana RPC {url} answered {method} with neither result nor error")
    return out


def _value(result: Any) -> Any:
    """The ``value`` of a ``{"context": ..., "value": ...}`` result."""
    return result["value"] if isinstance(result, dict) and "context" in result else result


def account_from(result: Any) -> AccountInfo | None:
    """The account in a ``getAccountInfo`` result (``None``: no such account)."""
    try:
        value = _value(result)
        if value is None:
            return None
        data = value["data"]
        raw = base64.b64decode(data[0]) if isinstance(data, list) else b""
        return AccountInfo(int(value["lamports"]), str(value["owner"]), raw, bool(value.get("executable", False)))
    except (KeyError, TypeError, ValueError, IndexError):
        raise RpcUnavailable("getAccountInfo answered a result of an unexpected shape") from None


def raise_for_error(result: Any) -> Any:
    if isinstance(result, RpcError):
        raise result
    return result


class Calls:
    """The typed calls, over ``_call`` (one method) that the two clients implement."""

    commitment = "confirmed"

    @staticmethod
    def blockhash_call() -> Call:
        return "getLatestBlockhash", [{"commitment": "confirmed"}]

    @staticmethod
    def blockhash_result(result: Any) -> tuple[str, int]:
        try:
            value = _value(result)
            return str(value["blockhash"]), int(value["lastValidBlockHeight"])
        except (KeyError, TypeError, ValueError):
            raise RpcUnavailable("getLatestBlockhash answered a result of an unexpected shape") from None

    @staticmethod
    def account_call(address: str) -> Call:
        return "getAccountInfo", [address, {"encoding": "base64", "commitment": "confirmed"}]

    @staticmethod
    def simulate_call(transaction: str) -> Call:
        options = {"encoding": "base64", "sigVerify": True, "replaceRecentBlockhash": False, "commitment": "confirmed"}
        return "simulateTransaction", [transaction, options]

    @staticmethod
    def statuses_call(signatures: Sequence[str], history: bool = False) -> Call:
        return "getSignatureStatuses", [list(signatures), {"searchTransactionHistory": history}]

    @staticmethod
    def send_call(transaction: str) -> Call:
        options = {"encoding": "base64", "skipPreflight": False, "preflightCommitment": "confirmed", "maxRetries": 0}
        return "sendTransaction", [transaction, options]

    @staticmethod
    def token_balance_call(account: str) -> Call:
        return "getTokenAccountBalance", [account, {"commitment": "confirmed"}]

    @staticmethod
    def token_balance_result(result: Any) -> int:
        """The token account's balance; a missing account (an RPC error) holds 0."""
        if isinstance(result, RpcError):
            if result.code == -32602 or "could not find account" in result.message.lower():
                return 0
            raise result
        try:
            return int(_value(result)["amount"])
        except (KeyError, TypeError, ValueError):
            raise RpcUnavailable("getTokenAccountBalance answered a result of an unexpected shape") from None


class SolanaRpc(Calls):
    """An async Solana JSON-RPC client (see the module docstring)."""

    def __init__(self, url: str, *, transport: UpstreamTransport | None = None, timeout: float = 10.0) -> None:
        self.url = url
        self.transport = transport or default_transport()
        self._timeouts = Timeouts(connect=timeout, first_byte=timeout, total=timeout)
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"SolanaRpc({shown_url(self.url)!r})"

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Send ``calls`` in one HTTP request; each answer is a result or an :class:`RpcError`."""
        body, numbers = encode_batch(calls, self._ids)
        try:
            response = await self.transport.post(self.url, JSON_HEADERS, body, self._timeouts)
            data = await response.read()
        except ProviderError as exc:  # UpstreamTimeout / UpstreamUnavailable
            raise RpcUnavailable(f"Solana RPC {shown_url(self.url)}: {exc.message}") from exc
        return decode_batch(calls, numbers, response.status, data, self.url)

    async def call(self, method: str, params: list[Any]) -> Any:
        return raise_for_error((await self.batch([(method, params)]))[0])

    async def latest_blockhash(self) -> tuple[str, int]:
        return self.blockhash_result(await self.call(*self.blockhash_call()))

    async def account(self, address: str) -> AccountInfo | None:
        return account_from(await self.call(*self.account_call(address)))

    async def token_balance(self, account: str) -> int:
        return self.token_balance_result((await self.batch([self.token_balance_call(account)]))[0])

    async def is_blockhash_valid(self, blockhash: str) -> bool:
        return bool(_value(await self.call("isBlockhashValid", [blockhash, {"commitment": "confirmed"}])))

    async def send(self, transaction: str) -> str:
        return str(await self.call(*self.send_call(transaction)))

    async def statuses(self, signatures: Sequence[str], *, history: bool = False) -> list[dict[str, Any] | None]:
        return list(_value(await self.call(*self.statuses_call(signatures, history))))


class SyncSolanaRpc(Calls):
    """A blocking Solana JSON-RPC client over ``httpx.Client`` (the agent-side signer's)."""

    def __init__(self, url: str, *, client: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.url = url
        self.client = client or httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"SyncSolanaRpc({shown_url(self.url)!r})"

    def close(self) -> None:
        self.client.close()

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        body, numbers = encode_batch(calls, self._ids)
        try:
            response = self.client.post(self.url, content=body, headers=JSON_HEADERS)
        except httpx.HTTPError as exc:
            raise RpcUnavailable(f"Solana RPC {shown_url(self.url)}: {type(exc).__name__}: {exc}") from exc
        return decode_batch(calls, numbers, response.status_code, response.content, self.url)

    def call(self, method: str, params: list[Any]) -> Any:
        return raise_for_error(self.batch([(method, params)])[0])

    def latest_blockhash(self) -> tuple[str, int]:
        return self.blockhash_result(self.call(*self.blockhash_call()))

    def account(self, address: str) -> AccountInfo | None:
        return account_from(self.call(*self.account_call(address)))

    def token_balance(self, account: str) -> int:
        return self.token_balance_result(self.batch([self.token_balance_call(account)])[0])
