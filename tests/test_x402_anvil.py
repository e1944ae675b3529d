"""The x402 EVM path over real JSON-RPC: anvil at chain 84532 with the project's token
at Base Sepolia's USDC address, the rail built from configuration (embedded
facilitator, the router's key from the environment), and real clients: the
official ``x402`` SDK's, and ours across a router killed mid-settlement."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from chains import anvil_chain  # noqa: F401 - a fixture

from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.keys import RouterKey

pytestmark = pytest.mark.slow

URL = "/v1/chat/completions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, chain, pay_to: str, settlement: str = "before") -> Path:
    path = tmp_path / "clawrouter.toml"
    path.write_text(
        f"""
[payments]
pay_to = "{pay_to}"
networks = ["eip155:84532"]
settlement = "{settlement}"
settle_retry_seconds = 0.5

[payments.evm."eip155:84532"]
rpc_url = "{chain.rpc_url}"

[ledger]
path = "{tmp_path / "ledger.sqlite3"}"
"""
    )
    return path


class Serve:
    """``clawrouter serve`` in a subprocess on 127.0.0.1, stopped by its pid."""

    def __init__(self, config: Path, key: RouterKey) -> None:
        self.port = _free_port()
        env = {**os.environ, "CLAWROUTER_KEY": key.private_key.hex()}
        command = [sys.executable, "-m", "clawrouter.cli", "serve", "--config", str(config), "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/-/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                _, err = self.proc.communicate(timeout=10)
                raise RuntimeError(f"clawrouter serve did not start: {err.decode()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def wallets(anvil_chain):  # noqa: F811
    router_key, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
    anvil_chain.fund(router_key.address, 0)
    anvil_chain.fund(agent.address, 2_000_000)
    return router_key, agent, operator


def _transfers_to(chain, address: str) -> list:
    return chain.token_contract.events.Transfer.get_logs(from_block=0, argument_filters={"to": address})


async def test_official_x402_client_pays_clawrouter_on_anvil(anvil_chain, wallets, tmp_path):  # noqa: F811
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme

    router_key, agent, operator = wallets
    serve = Serve(_config(tmp_path, anvil_chain, operator.address), router_key)
    try:
        client = x402Client()
        client.register("eip155:*", ExactEvmScheme(signer=Account.from_key(agent.private_key)))
        body = {"model": "eco", "messages": [{"role": "user", "content": "pay me"}], "max_tokens": 30}
        async with x402HttpxClient(client, base_url=serve.url, timeout=30) as http:
            response = await http.post(URL, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
        assert settlement["success"] is True and settlement["network"] == "eip155:84532"
        assert settlement["payer"].lower() == agent.address.lower()
        charged = int(settlement["amount"])
        assert charged > 0
        assert anvil_chain.usdc_balance(operator.address) == charged
        assert anvil_chain.usdc_balance(agent.address) == 2_000_000 - charged
        receipt = anvil_chain.w3.eth.get_transaction_receipt(settlement["transaction"])
        assert receipt["status"] == 1 and receipt["from"].lower() == router_key.address.lower()
    finally:
        serve.stop()


def test_router_killed_between_response_and_settlement_settles_exactly_once(anvil_chain, wallets, tmp_path):  # noqa: F811
    """Deferred settlement; the chain stops mining so the settlement transaction is sent but
    not mined; the router is SIGKILLed; mining resumes; a restarted router finds the
    transaction on chain and records it — one transfer, never two."""
    router_key, agent, operator = wallets
    config = _config(tmp_path, anvil_chain, operator.address, settlement="deferred")
    w3 = anvil_chain.w3
    serve = Serve(config, router_key)
    try:
        body = {"model": "eco", "messages": [{"role": "user", "content": "crash"}], "max_tokens": 30}
        challenge = httpx.post(serve.url + URL, json=body, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        assert accepts["asset"] == "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
        w3.provider.make_request("evm_setAutomine", [False])
        w3.provider.make_request("evm_setIntervalMining", [0])
        headers = {"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
        response = httpx.post(serve.url + URL, json=body, headers=headers, timeout=10)
        assert response.status_code == 200
        assert json.loads(base64.b64decode(response.headers["payment-response"]))["transaction"] == ""
        deadline = time.monotonic() + 10
        while not w3.eth.get_block("pending")["transactions"]:  # the settlement was sent
            assert time.monotonic() < deadline, "settlement never reached the node"
            time.sleep(0.05)
        serve.kill()
    finally:
        serve.stop()
    assert anvil_chain.usdc_balance(operator.address) == 0  # not mined yet
    w3.provider.make_request("evm_setAutomine", [True])
    w3.provider.make_request("evm_mine", [])
    amount = int(accepts["amount"])
    assert anvil_chain.usdc_balance(operator.address) == amount
    for _ in range(2):  # restart, then restart again: nothing more happens
        serve = Serve(config, router_key)
        try:
            deadline = time.monotonic() + 15
            while True:
                state = _outbox(tmp_path)
                if state and state[0][0] == "settled":
                    break
                assert time.monotonic() < deadline, f"pending settlement not completed: {state}"
                time.sleep(0.1)
            # the replayed payment is refused after the restart too
            again = httpx.post(serve.url + URL, json=body, headers=headers, timeout=10)
            assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
        finally:
            serve.stop()
    [(status, transaction)] = _outbox(tmp_path)
    assert len(_transfers_to(anvil_chain, operator.address)) == 1
    assert anvil_chain.usdc_balance(operator.address) == amount
    assert w3.eth.get_transaction_receipt(transaction)["status"] == 1


def _outbox(tmp_path: Path) -> list[tuple[str, str]]:
    import sqlite3

    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        return db.execute("SELECT status, transaction_hash FROM outbox").fetchall()
    finally:
        db.close()
