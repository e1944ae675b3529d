"""What an agent allows itself to pay: caps, allow-lists, and the total budget.

A :class:`Policy` is checked before anything is signed. It refuses an
``accepts`` entry whose network, asset or ``payTo`` is not allowed, and a
payment that would take the call, the session or the total over its cap; the
refusal is a :class:`PolicyError` whose ``reason`` is a stable code.

Amounts are counted in USD: every allowed asset is a USD stablecoin (USDC by
default) whose atomic units are converted with its decimals, exactly, with
:class:`~decimal.Decimal`. What counts against a cap is the agent's
*exposure*: every authorization it signed that can still move money, counted
once however often it is sent —

* ``settled``: the server reported a successful settlement (counts what it charged);
* ``pending``: sent, and no answer yet (or never: a lost response): counts in full,
  since the server may have settled it;
* ``unsettled``: the server answered without settling (a failed call, a refused
  payment): counts until the authorization's ``validBefore`` passes, after which
  it can no longer be settled by anyone.

A :class:`Budget` holds the cap across sessions; with a ``path`` it keeps its
entries in a JSON-lines file under an exclusive lock, so several processes
sharing one wallet share one total.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import msgspec

from ..evm.networks import NETWORKS

__all__ = [
    "Budget",
    "Exposure",
    "PaymentError",
    "Policy",
    "PolicyError",
    "State",
    "Tally",
    "process_budget",
    "to_usd",
]

State = Literal["pending", "settled", "unsettled"]

#: the default caps, in USD: generous for LLM calls, small enough to stop a runaway loop
DEFAULT_MAX_PER_CALL = Decimal("0.50")
DEFAULT_MAX_PER_SESSION = Decimal("5.00")


class PaymentError(Exception):
    """Base of the client's payment errors; ``reason`` is a stable machine-readable code."""

    reason = "payment_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class PolicyError(PaymentError):
    """A payment the policy does not allow. Raised before anything is signed.

    ``reason`` is one of ``over_call_cap``, ``over_session_cap``,
    ``over_total_cap``, ``pay_to_not_allowed``, ``network_not_allowed``,
    ``asset_not_allowed``, ``scheme_not_supported`` (the first refusal of the
    preferred entry when several were offered; ``refusals`` lists one message
    per ``accepts`` entry).
    """

    reason = "policy"

    def __init__(self, message: str, *, reason: str, refusals: Iterable[str] = ()) -> None:
        super().__init__(message, reason=reason)
        self.refusals = list(refusals)


def _usd(value: str | Decimal | int | float | None, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = repr(value)  # 0.1 -> Decimal("0.1"), not its binary expansion
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{name} must be a USD amount like '0.50', got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a non-negative USD amount, got {value!r}")
    return amount


def to_usd(amount: int, decimals: int) -> Decimal:
    """``amount`` atomic units of a ``decimals``-decimal USD stablecoin, in USD (exact)."""
    return Decimal(amount).scaleb(-decimals)


#: USDC where the client can pay by default: Base and Base Sepolia (built in), then Solana
#: mainnet and devnet (paid once clawrouter-solana is installed; plain strings, no Solana import)
KNOWN_USDC: dict[str, tuple[str, int]] = {
    **{n.network: (n.asset, n.decimals) for n in NETWORKS.values()},
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp": ("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
    "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1": ("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 6),
}


def address_key(address: str) -> str:
    """How addresses compare: EVM hex case-insensitively; base58 (Solana) exactly, as it is case-sensitive."""
    return address.lower() if address.startswith(("0x", "0X")) else address


def _default_assets(networks: Iterable[str]) -> dict[tuple[str, str] | str, int]:
    return {(n, address_key(KNOWN_USDC[n][0])): KNOWN_USDC[n][1] for n in networks if n in KNOWN_USDC}


@dataclass(frozen=True, init=False)
class Policy:
    """Caps (USD; ``None`` for no cap) and allow-lists for automatic payments.

    ``networks``: CAIP-2 ids in order of preference (default: Base, Base
    Sepolia, Solana, Solana devnet — a network no signer supports is simply
    never chosen). ``assets``: allowed assets with their decimals, as ``{address:
    decimals}`` or ``{(network, address): decimals}`` (default: the USDC of each
    allowed network). ``pay_to``: allowed recipients (default: any — the agent
    trusts the endpoint it calls). EVM addresses compare case-insensitively,
    base58 ones exactly.
    """

    max_per_call: Decimal | None
    max_per_session: Decimal | None
    max_total: Decimal | None
    networks: tuple[str, ...]
    pay_to: frozenset[str] | None
    assets: Mapping[tuple[str, str] | str, int]

    def __init__(
        self,
        *,
        max_per_call: str | Decimal | int | float | None = DEFAULT_MAX_PER_CALL,
        max_per_session: str | Decimal | int | float | None = DEFAULT_MAX_PER_SESSION,
        max_total: str | Decimal | int | float | None = None,
        networks: Iterable[str] | None = None,
        pay_to: Iterable[str] | None = None,
        assets: Mapping[tuple[str, str] | str, int] | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "max_per_call", _usd(max_per_call, "max_per_call"))
        set_(self, "max_per_session", _usd(max_per_session, "max_per_session"))
        set_(self, "max_total", _usd(max_total, "max_total"))
        if isinstance(networks, str):
            raise TypeError("networks is a list of CAIP-2 ids, e.g. ['eip155:8453']")
        nets = tuple(networks) if networks is not None else tuple(KNOWN_USDC)
        set_(self, "networks", nets)
        if isinstance(pay_to, str):
            raise TypeError("pay_to is a list of addresses")
        set_(self, "pay_to", None if pay_to is None else frozenset(address_key(a) for a in pay_to))
        if assets is None:
            table = _default_assets(nets)
        else:
            table = {}
            for key, decimals in assets.items():
                if not isinstance(decimals, int) or decimals < 0:
                    raise ValueError(f"assets[{key!r}]: decimals must be a non-negative int")
                table[(key[0], address_key(key[1])) if isinstance(key, tuple) else address_key(key)] = decimals
        set_(self, "assets", table)

    def decimals(self, network: str, asset: str) -> int | None:
        """The decimals of an allowed asset on ``network``, or ``None`` when it is not allowed."""
        found = self.assets.get((network, address_key(asset)))
        return found if found is not None else self.assets.get(address_key(asset))

    def refusal(self, network: str, asset: str, pay_to: str) -> tuple[str, str] | None:
        """Why an entry is not allowed, as ``(reason, message)``, or ``None``; caps aside."""
        if network not in self.networks:
            return "network_not_allowed", f"network {network!r} is not in the policy's networks {list(self.networks)}"
        if self.decimals(network, asset) is None:
            return "asset_not_allowed", f"asset {asset!r} on {network} is not an allowed asset"
        if self.pay_to is not None and address_key(pay_to) not in self.pay_to:
            return "pay_to_not_allowed", f"payTo {pay_to!r} is not in the policy's pay_to allow-list"
        return None


@dataclass
class Exposure:
    """One signed authorization as a cap sees it (see the module docstring)."""

    id: str
    usd: Decimal  # the authorized amount
    expires: int  # unix time after which it cannot be settled
    state: State = "pending"


class Tally:
    """Exposures summed as they change: settled amounts in a running total, the rest kept open.

    An entry's state moves ``pending`` ⇄ ``unsettled`` → ``settled`` (final);
    :meth:`apply` takes each new state of an entry once. :meth:`prune` folds
    entries whose authorization has expired — an unsettled one into nothing,
    a pending one (its outcome never learned) into ``unknown``, counted in
    full — so totals cost the number of authorizations still live.
    """

    def __init__(self) -> None:
        self.settled = Decimal(0)
        self.unknown = Decimal(0)  # expired with no answer: may have been settled
        self.open: dict[str, Exposure] = {}

    def apply(self, entry: Exposure) -> None:
        if entry.state == "settled":  # final: a writer records it once per entry
            self.open.pop(entry.id, None)
            self.settled += entry.usd  # exact: a settlement moves the whole authorization
        else:
            self.open[entry.id] = Exposure(entry.id, entry.usd, entry.expires, entry.state)

    def prune(self, now: float) -> None:
        for key in [k for k, e in self.open.items() if now >= e.expires]:
            entry = self.open.pop(key)
            if entry.state == "pending":
                self.unknown += entry.usd

    def total(self, now: float | None = None) -> Decimal:
        """What counts against a cap at ``now`` (a pure read)."""
        at = time.time() if now is None else now
        live = (e.usd for e in self.open.values() if e.state == "pending" or at < e.expires)
        return self.settled + self.unknown + sum(live, Decimal(0))


class _Line(msgspec.Struct):
    id: str
    usd: str
    expires: int
    state: State


class Budget:
    """The total cap, shared by every session (client) given the same object.

    A client given no budget uses the process's default one (:func:`process_budget`),
    so ``Policy.max_total`` caps what all such clients in the process spend.

    With ``path`` the entries are appended to a JSON-lines file (created 0600)
    and re-read under ``fcntl.flock`` before each reservation, so the total
    holds across runs and across processes sharing the file. Without it, the
    total lives as long as the object.
    """

    def __init__(self, max_total: str | Decimal | int | float | None = None, *, path: str | Path | None = None) -> None:
        self.max_total = _usd(max_total, "max_total")
        self.path = Path(path).expanduser() if path is not None else None
        self._tally = Tally()
        self._offset = 0
        self._lock = threading.Lock()

    def spent(self, now: float | None = None) -> Decimal:
        """The total exposure now (settled, pending and not-yet-expired unsettled authorizations)."""
        with self._lock, self._file() as fd:
            self._read(fd)
            self._tally.prune(time.time())
            return self._tally.total(now)

    def reserve(self, entry: Exposure, cap: Decimal | None = None) -> None:
        """Count ``entry``, or raise :class:`PolicyError` if it would take the total over
        ``max_total`` or over ``cap`` (a policy's ``max_total``), whichever is lower."""
        caps = [c for c in (self.max_total, cap) if c is not None]
        with self._lock, self._file() as fd:
            self._read(fd)
            if caps:
                limit = min(caps)
                self._tally.prune(time.time())
                spent = self._tally.total()
                if spent + entry.usd > limit:
                    raise PolicyError(
                        f"paying ${entry.usd} would take the total spent to ${spent + entry.usd}, over the "
                        f"total cap of ${limit} (${spent} already spent or at risk)",
                        reason="over_total_cap",
                    )
            self._write(fd, entry)

    def update(self, entry: Exposure) -> None:
        """Record a change of ``entry``'s state."""
        with self._lock, self._file() as fd:
            self._read(fd)
            self._write(fd, entry)

    # -- the file -----------------------------------------------------------

    class _Locked:
        def __init__(self, path: Path) -> None:
            self.path = path
            self.fd = -1

        def __enter__(self) -> int:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return self.fd

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)

    def _file(self) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext() if self.path is None else Budget._Locked(self.path)

    def _read(self, fd: int | None) -> None:
        if fd is None:
            return
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1  # a line still being written by another process waits
        for raw in data[:end].splitlines():
            try:
                line = msgspec.json.decode(raw, type=_Line)
                entry = Exposure(line.id, Decimal(line.usd), line.expires, line.state)
            except (msgspec.DecodeError, InvalidOperation, ValueError):
                continue  # a damaged line is skipped, not fatal
            self._tally.apply(entry)
        self._offset += end

    def _write(self, fd: int | None, entry: Exposure) -> None:
        self._tally.apply(entry)
        if fd is None:
            return
        line = _Line(entry.id, str(entry.usd), entry.expires, entry.state)
        data = msgspec.json.encode(line) + b"\n"
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line (a crash mid-write) must not swallow this one
        os.write(fd, data)
        self._offset = os.fstat(fd).st_size


_PROCESS_BUDGET = Budget()


def process_budget() -> Budget:
    """The in-memory budget shared by every client created without one."""
    return _PROCESS_BUDGET
