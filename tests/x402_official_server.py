"""An x402-protected HTTP server built only from the official ``x402`` SDK, for interop tests.

The other direction of ``test_x402_anvil.py``: there the SDK's *client* pays our
router; here a server made of nothing but SDK parts charges whatever client the
test brings (the SDK's own, or ours). The pieces:

* ``x402Facilitator`` with the SDK's exact-EVM facilitator scheme
  (``ExactEvmFacilitatorScheme``) and its web3/eth-account signer
  (``FacilitatorWeb3Signer``), settling on the given chain's JSON-RPC;
* ``x402ResourceServer`` with the exact-EVM server scheme, whose facilitator
  client is that ``x402Facilitator`` object itself: it already has the
  ``FacilitatorClient`` shape (async ``verify``/``settle``, ``get_supported``), so
  verification and settlement are in-process calls — no facilitator URL, nothing
  on the network but the chain's RPC;
* FastAPI with the SDK's function middleware (``x402.http.middleware.fastapi``)
  protecting ``GET /paid``; ``GET /free`` is unprotected (used as the health probe);
* uvicorn on 127.0.0.1 at a free port, in a background thread.

Usage::

    from x402_official_server import official_server

    with official_server(anvil_chain, pay_to) as url:
        ...  # GET {url}/paid costs $0.001 on eip155:84532

The chain is one of ``clawrouter.evm.localchain``'s (``rpc_url``, ``network``,
``token``, ``w3``, ``token_contract``, ``fund``), in practice the ``anvil_chain``
fixture: a money price such as ``"$0.001"`` resolves through the SDK's default
asset table, whose eip155:84532 entry is the Base Sepolia USDC address where
AnvilChain puts TestUSDC. The EIP-712 domain (``extra.name``/``extra.version``)
is read from the token contract and set on the route, so signatures always match
the deployed token (for TestUSDC it is ``USDC``/``2``, as in the SDK's table).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request

__all__ = ["PAID_PATH", "build_app", "official_server"]

PAID_PATH = "/paid"
FREE_PATH = "/free"


def build_app(chain: Any, pay_to: str, price: Any = "$0.001", *, facilitator_key: str) -> Any:
    """The FastAPI app: ``GET /paid`` behind the SDK's payment middleware, settled in-process.

    ``price`` is any SDK ``Price`` (a money string like ``"$0.001"``, or an
    AssetAmount dict). ``facilitator_key`` is the hex key of the account that
    sends the settlement transactions (it needs ETH for gas on ``chain``).

    Route and capability checks run here, so a misconfiguration raises
    (``RouteConfigurationError``/``FacilitatorCapabilityError``) instead of
    reaching the SDK middleware's start-up check, which calls ``os._exit(1)``.
    """
    from x402 import x402Facilitator, x402ResourceServer
    from x402.http import PaymentOption, RouteConfig, x402HTTPResourceServer
    from x402.http.middleware.fastapi import payment_middleware
    from x402.mechanisms.evm import FacilitatorWeb3Signer
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme

    network = chain.network
    signer = FacilitatorWeb3Signer(private_key=facilitator_key, rpc_url=chain.rpc_url, confirmation_timeout_seconds=30)
    facilitator = x402Facilitator().register([network], ExactEvmFacilitatorScheme(signer))
    server = x402ResourceServer(facilitator).register(network, ExactEvmServerScheme())

    token = chain.token_contract.functions
    routes = {
        f"GET {PAID_PATH}": RouteConfig(
            accepts=PaymentOption(
                scheme="exact",
                pay_to=pay_to,
                price=price,
                network=network,
                extra={"name": token.name().call(), "version": token.version().call()},
            ),
            description="a paid test resource",
            mime_type="application/json",
        )
    }
    x402HTTPResourceServer(server, routes).initialize()  # raises on misconfiguration

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.middleware("http")(payment_middleware(routes, server))

    @app.get(PAID_PATH)
    async def paid(request: Request) -> dict[str, Any]:
        payload = request.state.payment_payload
        return {"paid": True, "network": payload.accepted.network}

    @app.get(FREE_PATH)
    async def free() -> dict[str, Any]:
        return {"paid": False}

    return app


@contextlib.contextmanager
def official_server(
    chain: Any,
    pay_to: str,
    price: Any = "$0.001",
    *,
    facilitator_key: str | None = None,
    startup_timeout: float = 15.0,
) -> Iterator[str]:
    """Serve :func:`build_app` with uvicorn on 127.0.0.1 (a free port); yield the base URL.

    Without ``facilitator_key`` a fresh facilitator account is created and given
    1 ETH on ``chain``, so its transaction nonces are its own. The server runs in
    a daemon thread and is stopped (and the thread joined) when the block exits;
    start-up and shutdown are each bounded by ``startup_timeout`` seconds.
    """
    import httpx
    import uvicorn

    if facilitator_key is None:
        from eth_account import Account

        account = Account.create()
        chain.fund(account.address, 0, eth_wei=10**18)
        facilitator_key = account.key.to_0x_hex()

    app = build_app(chain, pay_to, price, facilitator_key=facilitator_key)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        loop="asyncio",
        http="h11",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as error:  # reported by the waiting side
            failure.append(error)

    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # bound before the thread starts: no probe-then-bind race
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        thread = threading.Thread(target=run, name=f"x402-official-server {url}", daemon=True)
        thread.start()
        try:
            _wait_until_up(url + FREE_PATH, server, thread, failure, startup_timeout, httpx)
            yield url
        finally:
            server.should_exit = True
            thread.join(startup_timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(5)
                if thread.is_alive():
                    raise RuntimeError(f"the official x402 server at {url} did not stop")
    finally:
        sock.close()


def _wait_until_up(
    probe: str, server: Any, thread: threading.Thread, failure: list[BaseException], timeout: float, httpx: Any
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if failure or not thread.is_alive():
            raise RuntimeError(f"the official x402 server failed to start: {failure[0] if failure else 'exited'!r}")
        if server.started:
            try:
                if httpx.get(probe, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the official x402 server did not answer {probe} within {timeout:g} s")
        time.sleep(0.02)
