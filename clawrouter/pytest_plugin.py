"""pytest fixtures for plugin authors (loaded automatically when clawrouter is installed).

* ``clawrouter_router(config=None, plugins=(), entry_points=False, env=None)``:
  a factory building isolated :class:`~clawrouter.Router` objects (installed
  entry points are not loaded unless asked; ``env`` defaults to empty, so the
  machine's ``CLAWROUTER_*`` variables do not leak in).
* ``clawrouter_client(router)``: an async factory returning an
  ``httpx.AsyncClient`` that talks to the router in process, with the router
  started; client and router are closed after the test.
* ``clawrouter_serve(config_path, env=None)``: a factory starting ``clawrouter
  serve`` in a subprocess on 127.0.0.1 and a free port (:class:`ServedRouter`,
  with ``url``), stopped by its pid after the test. The environment is the
  test's minus every ``CLAWROUTER_*`` variable, plus ``env``.

And two helpers: :func:`require_service` (skip a test when a local service it
needs is not listening, fail it under ``CI=true``) and :class:`VoucherRail` (a
payment rail without a chain, for testing what a backend does with payments).

Example::

    async def test_my_provider(clawrouter_router, clawrouter_client):
        router = clawrouter_router({"providers": {"acme": {"kind": "acme"}}}, plugins=[my_plugin])
        client = await clawrouter_client(router)
        response = await client.post("/v1/chat/completions", json={...})
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .hookspecs import hookimpl

if TYPE_CHECKING:
    import httpx

    from .router import Router


__all__ = [
    "ServedRouter",
    "VoucherRail",
    "check_limit_counters",
    "clawrouter_client",
    "clawrouter_router",
    "clawrouter_serve",
    "free_port",
    "require_service",
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_service(host: str, port: int, what: str) -> None:
    """Skip the calling test when nothing listens on ``host:port`` (``what`` names the
    service); under ``CI=true`` fail it instead, so CI can never pass by skipping."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        pass
    reason = f"{what} is not running on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: every test must run)", pytrace=False)
    pytest.skip(reason)


async def check_limit_counters(state: Any) -> None:
    """The behaviour :mod:`clawrouter.limits` needs from a state backend's counters (a token
    bucket; budget reserve, all counters or none, then commit or release): call it in a
    backend's tests. Uses the keys ``k``, ``day`` and ``total``."""
    assert await state.take_token("k", 1.0, 2) == 0.0
    assert await state.take_token("k", 1.0, 2) == 0.0
    assert 0 < await state.take_token("k", 1.0, 2) <= 1.0
    counters = [("day", 10, 60.0), ("total", 15, 60.0)]
    assert await state.budget_reserve(counters, 6)
    assert not await state.budget_reserve(counters, 6)  # 12 > 10 on the day counter: nothing reserved
    assert await state.budget_read("total") == (0, 6)
    await state.budget_settle([("day", 60.0), ("total", 60.0)], 6, spent=True)
    assert await state.budget_read("day") == (6, 0)
    assert await state.budget_reserve(counters, 4)
    await state.budget_settle([("day", 60.0), ("total", 60.0)], 4, spent=False)
    assert await state.budget_read("total") == (6, 0)


class VoucherRail:
    """A payment rail without a chain, for tests of what surrounds payments (state, ledger).

    A payment's payload is ``{"nonce": ...}``: the nonce is its id; every payment
    verifies, for the quoted amount, and stays settleable for ten minutes;
    ``settle`` waits ``delay`` seconds (a chain's round trip) and appends the
    nonce to ``settled``. Register it as a plugin object: ``Router(config,
    plugins=[VoucherRail(settled)])``.
    """

    scheme = "exact"
    __name__ = "voucher_rail"

    def __init__(self, settled: list[str], *, network: str = "test:voucher", delay: float = 0.0) -> None:
        self.network = network
        self.settled = settled
        self.delay = delay

    def requirements(self, amount: int, resource: str) -> Any:
        from .payments import PaymentRequirements

        return PaymentRequirements(self.scheme, self.network, str(amount), "TUSD", "operator", 60)

    async def verify(self, payment: Any, requirements: Any) -> Any:
        from .payments import PaymentRejected, VerifiedPayment

        nonce = payment.payload.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise PaymentRejected("a voucher needs a nonce", code="invalid_payload")
        amount, expires = int(requirements.amount), int(time.time()) + 600
        return VerifiedPayment(
            self.scheme, self.network, "agent", amount, nonce, requirements, payment, expires=expires
        )

    async def settle(self, payment: Any, charge: int) -> Any:
        import asyncio

        from .payments import SettlementResponse

        if self.delay:
            await asyncio.sleep(self.delay)
        self.settled.append(payment.payment_id)
        return SettlementResponse(True, self.network, f"tx-{payment.payment_id}", payment.payer)

    @hookimpl
    def register_payment_rails(self, config: Any) -> list[Any]:
        return [self]


class ServedRouter:
    """``clawrouter serve --config CONFIG`` in a subprocess on 127.0.0.1, stopped by its pid.

    Its stderr goes to ``log`` (a file, never a pipe a chatty server could fill);
    the constructor returns once ``/-/health`` answers, or raises with the log's
    tail if the server exits or is not up within ``timeout`` seconds.
    """

    def __init__(
        self, config: str | Path, env: Mapping[str, str], *, log: Path | None = None, timeout: float = 30
    ) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_log = log is None  # a temporary file, removed by stop()
        if log is None:
            fd, name = tempfile.mkstemp(prefix="clawrouter-serve-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        command = [sys.executable, "-m", "clawrouter.cli", "serve", "--config", str(config), "--port", str(self.port)]
        with self.log.open("wb") as stderr:
            self.proc = subprocess.Popen(command, env=dict(env), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/-/health", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"clawrouter serve did not start: {tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, at once."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_log:
            self.log.unlink(missing_ok=True)


@pytest.fixture
def clawrouter_serve() -> Iterator[Callable[..., ServedRouter]]:
    started: list[ServedRouter] = []

    def factory(config: str | Path, env: Mapping[str, str] | None = None, **options: Any) -> ServedRouter:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_")}
        served = ServedRouter(config, {**clean, **(env or {})}, **options)
        started.append(served)
        return served

    yield factory
    for served in started:
        served.stop()


@pytest.fixture
def clawrouter_router() -> Callable[..., Router]:
    from .config import Config, load_config
    from .router import Router

    def factory(
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        plugins: Iterable[object] = (),
        entry_points: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Router:
        env = {} if env is None else env
        if isinstance(config, Mapping):
            config = load_config(data=config, env=env)
        router = Router(config, plugins=plugins, entry_points=entry_points, env=env)
        return router

    return factory


@pytest.fixture
async def clawrouter_client() -> AsyncIterator[Callable[[Router], Awaitable[httpx.AsyncClient]]]:
    import httpx

    opened: list[tuple[Router, httpx.AsyncClient]] = []

    async def factory(router: Router) -> httpx.AsyncClient:
        await router.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://clawrouter.test")
        opened.append((router, client))
        return client

    yield factory
    for router, client in opened:
        await client.aclose()
        await router.stop()
