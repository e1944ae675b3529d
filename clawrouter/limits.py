"""Budgets and rate limits per API key and per payer wallet, held in the state backend.

Configured in ``[limits]`` (``default``, ``keys.<api key name>``, ``payers.<address>``)
and changeable at run time through ``PUT /-/admin/limits`` (the admin key): the
override is kept in the state backend, so every replica sharing it (Redis) applies
it within a couple of seconds. Each subject — an API key, a payer — may have:

* ``requests_per_minute``: a token bucket (burst = the per-minute figure); over it,
  **429** ``rate_limited`` with ``Retry-After``;
* ``max_per_request_usd``, ``max_per_day_usd`` (UTC day), ``max_total_usd``: a paid
  request's authorized amount is *reserved* against the day and total budgets
  atomically, then *committed* when it settles or *released* when the request
  fails unsettled; over a budget, **402** ``budget_exceeded`` (``Retry-After``
  until midnight UTC for the day budget).

Amounts are the payments' atomic units of a 6-decimal USD stablecoin (USDC), so
budgets are counted in micro-dollars, exactly. The backend's operations are
atomic (MemoryState in one process; one Lua script each in Redis): no replica
ever reads, decides and writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ClawError

if TYPE_CHECKING:
    from .context import Actor
    from .state import StateBackend

__all__ = ["BudgetExceeded", "Limit", "Limits", "LimitsConfig", "RateLimited", "Reservation"]

log = logging.getLogger("clawrouter.limits")

#: the state key holding the limits set through the admin endpoint (JSON)
OVERRIDE_KEY = "limits:override"
_OVERRIDE_TTL = 10 * 365 * 86400.0
_CACHE_SECONDS = 2.0
_DAY = 86400


class RateLimited(ClawError):
    status = 429
    type = "rate_limit_error"


class BudgetExceeded(ClawError):
    status = 402
    type = "budget_exceeded"


class Limit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    requests_per_minute: int = 0  # 0: no limit
    max_per_request_usd: str = ""  # "": no cap
    max_per_day_usd: str = ""
    max_total_usd: str = ""

    def __post_init__(self) -> None:
        if self.requests_per_minute < 0:
            raise ValueError("requests_per_minute must be 0 (no limit) or positive")
        for name in ("max_per_request_usd", "max_per_day_usd", "max_total_usd"):
            _micro(getattr(self, name), name)

    def cap(self, name: str) -> int | None:
        """A budget in atomic units (micro-USD), ``None`` for none."""
        return _micro(getattr(self, name), name)


_MAX_USD = Decimal(10) ** 12


@lru_cache(maxsize=1024)
def _micro(value: str, name: str) -> int | None:
    """A USD amount in micro-dollars: at most 6 decimals, 0 to 10^12 (parsed once per value:
    :meth:`Limit.cap` is on every paid request's path)."""
    if value == "":
        return None
    try:
        amount = Decimal(value) if value.strip() == value else Decimal("NaN")
        if not amount.is_finite() or amount < 0 or amount > _MAX_USD or amount != amount.quantize(Decimal("1e-6")):
            raise ValueError
    except (ArithmeticError, ValueError):  # InvalidOperation, Overflow: both ArithmeticError
        raise ValueError(
            f"{name} must be a USD amount from 0 to 10^12 with at most 6 decimals, like '1.50', not {value!r}"
        ) from None
    return int(amount.scaleb(6))


class LimitsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    #: SHA-256 of the admin key (``clawrouter hash-key KEY``); empty: no admin endpoint
    admin_key_sha256: str = ""
    default: Limit = Limit()
    keys: dict[str, Limit] = {}
    payers: dict[str, Limit] = {}

    def __post_init__(self) -> None:
        # payers named as counters name them (EVM addresses in lower case): one lookup per request
        payers = {subject("payer", name): limit for name, limit in self.payers.items()}
        msgspec.structs.force_setattr(self, "payers", payers)

    def active(self) -> bool:
        return bool(self.admin_key_sha256) or any(
            limit != Limit() for limit in (self.default, *self.keys.values(), *self.payers.values())
        )

    def limit_for(self, kind: str, name: str) -> Limit:
        """``name``'s limit (a payer named as :func:`subject` names it), else the default."""
        found = (self.keys if kind == "key" else self.payers).get(name)
        return found if found is not None else self.default


@dataclass
class Reservation:
    """What a paid request holds against budgets: released or committed exactly once."""

    counters: list[tuple[str, float]]  # (state key, ttl)
    amount: int
    done: bool = False


_decode = msgspec.json.Decoder(LimitsConfig).decode
_encode = msgspec.json.Encoder().encode


class Limits:
    """The limits in force (config, or the admin's override from the state backend) and their checks."""

    def __init__(self, config: LimitsConfig, state: StateBackend, *, clock: Any = time.time) -> None:
        self.base = config
        self.state = state
        self.clock = clock
        self._current = config
        self._read_at = float("-inf")
        for op in ("take_token", "budget_reserve", "budget_settle", "budget_read"):
            if not callable(getattr(state, op, None)):
                raise TypeError(f"the state backend {type(state).__name__} cannot hold limits (no {op})")

    async def current(self) -> LimitsConfig:
        """The limits in force: the admin's override when one is set, else the config (cached 2 s)."""
        now = time.monotonic()
        if now - self._read_at < _CACHE_SECONDS:
            return self._current
        raw = await self.state.get(OVERRIDE_KEY)
        try:
            self._current = _decode(raw) if raw else self.base
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:  # e.g. written by another version
            log.error("ignoring the limits set through the admin endpoint: %s; the config's apply", exc)
            self._current = self.base
        self._read_at = now
        return self._current

    async def replace(self, data: bytes) -> LimitsConfig:
        """Set the limits (the admin endpoint); the admin key itself is kept from the config."""
        try:
            fresh = _decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            from .errors import BadRequest

            raise BadRequest(f"limits: {exc}", code="invalid_limits") from None
        fresh = msgspec.structs.replace(fresh, admin_key_sha256=self.base.admin_key_sha256)
        await self.state.set(OVERRIDE_KEY, _encode(fresh).decode(), _OVERRIDE_TTL)
        self._current, self._read_at = fresh, time.monotonic()
        return fresh

    async def rate(self, kind: str, name: str) -> None:
        """Take one request from ``kind`` ``name``'s bucket; raise 429 when it is empty."""
        name = subject(kind, name)
        limit = (await self.current()).limit_for(kind, name)
        if not limit.requests_per_minute:
            return
        per_minute = limit.requests_per_minute
        wait = await self.state.take_token(  # type: ignore[attr-defined]
            f"rate:{kind}:{name}", per_minute / 60.0, per_minute
        )
        if wait > 0:
            raise RateLimited(
                f"{kind} {name} is over its {per_minute} requests per minute; retry in {wait:.1f} s",
                code="rate_limited",
                headers=[(b"retry-after", str(max(1, round(wait))).encode())],
            )

    async def reserve(self, subjects: list[tuple[str, str]], amount: int) -> Reservation | None:
        """Hold ``amount`` against each subject's day and total budgets, all or nothing;
        raise 402 ``budget_exceeded`` when one would be passed."""
        limits = await self.current()
        now = int(self.clock())
        day = now // _DAY
        counters: list[tuple[str, int, float]] = []
        subjects = [(kind, subject(kind, name)) for kind, name in subjects]
        for kind, name in subjects:
            limit = limits.limit_for(kind, name)
            per_request = limit.cap("max_per_request_usd")
            if per_request is not None and amount > per_request:
                raise BudgetExceeded(
                    f"{kind} {name}: this request's {_usd(amount)} USD is over its cap of {_usd(per_request)} USD "
                    "per request",
                    code="budget_exceeded",
                )
            for cap_name, key, ttl in (
                ("max_per_day_usd", f"budget:{kind}:{name}:day:{day}", 2.0 * _DAY),
                ("max_total_usd", f"budget:{kind}:{name}:total", _OVERRIDE_TTL),
            ):
                cap = limit.cap(cap_name)
                if cap is not None:
                    counters.append((key, cap, ttl))
        if not counters:
            return None
        if not await self.state.budget_reserve(counters, amount):  # type: ignore[attr-defined]
            daily = any(":day:" in k for k, _, _ in counters)
            return_after = [(b"retry-after", str(_DAY - now % _DAY).encode())] if daily else []  # midnight UTC
            raise BudgetExceeded(
                f"{' and '.join(f'{k} {n}' for k, n in subjects)}: {_usd(amount)} USD more would pass a budget "
                "(per day or in total)",
                code="budget_exceeded",
                headers=return_after,
            )
        return Reservation([(key, ttl) for key, _, ttl in counters], amount)

    async def admit(self, payer: str, subjects: list[tuple[str, str]], amount: int) -> Reservation | None:
        """A verified payment's checks: ``payer``'s rate limit and the ``subjects``' budgets,
        at once (two round trips in parallel with Redis, not one after the other). A
        reservation made while the rate limit refused is released before the 429 is raised."""
        rated, reserved = await asyncio.gather(
            self.rate("payer", payer), self.reserve(subjects, amount), return_exceptions=True
        )
        if isinstance(rated, BaseException):
            if isinstance(reserved, Reservation):
                await self.settle(reserved, spent=False)
            raise rated
        if isinstance(reserved, BaseException):
            raise reserved
        return reserved

    async def settle(self, reservation: Reservation | None, *, spent: bool) -> None:
        """Commit (``spent``) or release a reservation, once."""
        if reservation is None or reservation.done:
            return
        reservation.done = True
        await self.state.budget_settle(reservation.counters, reservation.amount, spent)  # type: ignore[attr-defined]

    async def usage(self, kind: str, name: str) -> dict[str, Any]:
        """What a subject has spent and holds reserved (for the admin endpoint)."""
        name = subject(kind, name)
        day = int(self.clock()) // _DAY
        read = self.state.budget_read  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for label, key in (("day", f"budget:{kind}:{name}:day:{day}"), ("total", f"budget:{kind}:{name}:total")):
            spent, reserved = await read(key)
            out[label] = {"spent_usd": _usd(spent), "reserved_usd": _usd(reserved)}
        return out


def key_name(actor: Actor) -> str:
    """The name an API-key caller is limited under: its ``[auth] api_keys`` name."""
    return str(actor.data.get("name", actor.id))


def subject(kind: str, name: str) -> str:
    """How a subject is named in counters: an EVM payer address in lower case (base58 as is)."""
    return name.lower() if kind == "payer" and name[:2].lower() == "0x" else name


def _usd(units: int) -> str:
    return str(Decimal(units).scaleb(-6).normalize()) if units else "0"
