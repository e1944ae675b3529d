"""The official ``x402`` SDK's Solana client pays ``clawrouter serve``.

A LiteSVM chain (:class:`~clawrouter_solana.localnet.LocalSolana`) holds its USDC at the
devnet USDC address, behind the JSON-RPC facade on 127.0.0.1: the SDK's
``ExactSvmScheme`` only knows mainnet, devnet and testnet, so the router offers
``solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1`` (devnet) with its RPC URL pointed at the
facade. The router runs as a subprocess with the Solana rail built from its
configuration (the embedded facilitator: the router's Solana key pays the fee) and no
EVM network at all. The agent holds USDC and no SOL.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from clawrouter_solana.localnet import LocalSolana, RpcFacade
from clawrouter_solana.networks import DEVNET
from solders.keypair import Keypair

from clawrouter.keys import RouterKey
from clawrouter.pytest_plugin import ServedRouter

pytestmark = [
    pytest.mark.slow,
    # the SDK's ExactSvmScheme builds solana-py's sync Client, which solana-py 0.39 deprecates (twice)
    pytest.mark.filterwarnings("ignore:Client is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning"),
]

URL = "/v1/chat/completions"
FUNDS = 2_000_000  # the agent's USDC (atomic units, 6 decimals)
FEE_PAYER_LAMPORTS = 1_000_000_000
#: where the router's Solana key is passed: the plugin's default ``[plugins.solana] key_env``
KEY_ENV = "CLAWROUTER_SOLANA_KEY"


def _require_x402() -> None:
    """Skip without the official SDK's Solana client; under CI=true fail instead."""
    for module in ("x402", "solana"):
        if importlib.util.find_spec(module) is None:
            reason = f"{module} is not installed (pip install -e 'plugins/solana[test]')"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{reason} (CI=true: every test must run)", pytrace=False)
            pytest.skip(reason)


class Recorder(httpx.AsyncBaseTransport):
    """The transport under the SDK's: keeps every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Setup:
    local: LocalSolana
    facade: RpcFacade
    serve: ServedRouter
    fee_payer: Keypair
    agent: Keypair
    operator: Keypair

    def balances(self) -> tuple[int, int]:
        """The agent's and the operator's USDC."""
        return self.local.token_balance(str(self.agent.pubkey())), self.local.token_balance(str(self.operator.pubkey()))


@pytest.fixture
def chain() -> Iterator[tuple[LocalSolana, RpcFacade]]:
    local = LocalSolana(mint=DEVNET.usdc, decimals=DEVNET.decimals)
    facade = RpcFacade(local).start()
    try:
        yield local, facade
    finally:
        facade.stop()


@pytest.fixture
def setup(chain: tuple[LocalSolana, RpcFacade], tmp_path: Path, clawrouter_serve: Any) -> Setup:
    _require_x402()
    local, facade = chain
    fee_payer, agent, operator = Keypair(), Keypair(), Keypair()
    local.airdrop(str(fee_payer.pubkey()), FEE_PAYER_LAMPORTS)
    local.fund(str(agent.pubkey()), FUNDS, lamports=0)  # USDC, no SOL
    local.create_ata(str(operator.pubkey()))
    config = tmp_path / "clawrouter.toml"
    config.write_text(
        f"""
[ledger]
path = "{tmp_path / "ledger.sqlite3"}"

[plugins.solana]
pay_to = "{operator.pubkey()}"
networks = ["{DEVNET.network}"]

[plugins.solana.rpc_urls]
"{DEVNET.network}" = "{facade.url}"
"""
    )
    # clawrouter_serve drops the test's CLAWROUTER_* variables (config overrides, plugin filters)
    env = {"CLAWROUTER_KEY": RouterKey.generate().private_key.hex(), KEY_ENV: str(fee_payer)}  # receipts; fees
    serve = clawrouter_serve(config, env, log=tmp_path / "serve.log")
    return Setup(local, facade, serve, fee_payer, agent, operator)


def _close_sdk_clients(scheme: Any) -> None:
    """The SDK keeps a solana-py ``Client`` per network and never closes it (solana-py's
    sync ``Client`` has no close): close their httpx sessions, or their sockets leak."""
    for solana_client in scheme._clients.values():
        solana_client._provider.session.close()


async def test_official_x402_svm_client_pays_clawrouter(setup: Setup) -> None:
    from x402 import x402Client
    from x402.http.clients import x402_httpx_transport
    from x402.mechanisms.svm import KeypairSigner
    from x402.mechanisms.svm.exact import ExactSvmScheme

    local, facade, serve = setup.local, setup.facade, setup.serve
    health = httpx.get(serve.url + "/-/health", timeout=5).json()
    assert health["payments"] == [f"exact:{DEVNET.network}"]  # the Solana rail alone, no EVM network

    client = x402Client()
    scheme = ExactSvmScheme(KeypairSigner(setup.agent), rpc_url=facade.url)
    client.register("solana:*", scheme)
    recorder = Recorder()
    body = {"model": "eco", "messages": [{"role": "user", "content": "pay me in USDC on Solana"}], "max_tokens": 30}
    try:
        async with httpx.AsyncClient(
            transport=x402_httpx_transport(client, recorder), base_url=serve.url, timeout=30
        ) as http:
            response = await http.post(URL, json=body)
    finally:
        _close_sdk_clients(scheme)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]

    # the SDK paid what the router asked: devnet USDC to the operator, the router's key as fee payer
    challenge, paid = recorder.requests
    assert "payment-signature" not in challenge.headers
    header = paid.headers["payment-signature"]
    payment = json.loads(base64.b64decode(header))
    accepted = payment["accepted"]
    assert payment["x402Version"] == 2
    assert accepted["scheme"] == "exact" and accepted["network"] == DEVNET.network
    assert accepted["asset"] == DEVNET.usdc and accepted["payTo"] == str(setup.operator.pubkey())
    assert accepted["extra"]["feePayer"] == str(setup.fee_payer.pubkey())
    quoted = int(accepted["amount"])
    assert quoted > 0

    settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
    assert settlement["success"] is True and settlement["network"] == DEVNET.network
    assert settlement["payer"] == str(setup.agent.pubkey())
    assert int(settlement["amount"]) == quoted
    status = local.status(settlement["transaction"])
    assert status is not None and status["err"] is None  # landed
    assert setup.balances() == (FUNDS - quoted, quoted)
    assert local.sol_balance(str(setup.agent.pubkey())) == 0
    assert local.sol_balance(str(setup.fee_payer.pubkey())) < FEE_PAYER_LAMPORTS  # the router's key paid the fee
    for method in ("getAccountInfo", "getLatestBlockhash"):  # the SDK's reads (mint, blockhash)
        assert facade.calls[method] >= 1, method
    for method in ("simulateTransaction", "sendTransaction", "getSignatureStatuses"):  # the router's
        assert facade.calls[method] >= 1, method

    # the same PAYMENT-SIGNATURE again, by hand: refused, nothing sent, nothing moves
    sent = facade.calls["sendTransaction"]
    async with httpx.AsyncClient(base_url=serve.url, timeout=30) as http:
        again = await http.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 402, again.text
    assert again.json()["code"] == "duplicate_settlement"
    assert json.loads(base64.b64decode(again.headers["payment-required"]))["error"] == "duplicate_settlement"
    assert facade.calls["sendTransaction"] == sent
    assert setup.balances() == (FUNDS - quoted, quoted)
