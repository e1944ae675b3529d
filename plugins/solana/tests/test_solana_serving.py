"""The Solana rail configured from TOML, as a served x402 facilitator, behind a remote one, and the demo.

* a router with ``[payments] serve_facilitator`` serves its Solana facilitator at
  ``/-/x402/{supported,verify,settle}`` (the spec's duplicate-settlement guard included);
* a second router, configured with ``[plugins.solana] facilitator = "<that URL>"``
  (loaded through the installed entry point), verifies and settles through it;
* ``clawrouter demo --network solana`` runs end to end and reconciles with the chain.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import httpx
import msgspec
import pytest
from clawrouter_solana import constants as c
from clawrouter_solana.exact import build_transfer, encode_transaction
from clawrouter_solana.networks import LOCALNET
from solana_env import FUNDS, Rails, make_rail
from solders.keypair import Keypair

from clawrouter.config import ConfigError, load_config
from clawrouter.facilitator import encode_facilitator_request
from clawrouter.payments import PaymentPayload, PaymentRequired
from clawrouter.router import Router
from clawrouter.server import BackgroundServer

URL = "/v1/chat/completions"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}


def serving_router(facade, keys) -> Router:
    data = {"ledger": {"backend": "memory"}, "payments": {"serve_facilitator": True}}
    env = {"CLAWROUTER_KEY": keys.router.private_key.hex()}
    return Router(load_config(data=data, env={}), plugins=[Rails(make_rail(facade, keys))], env=env, entry_points=False)


def test_the_served_facilitator_verifies_and_settles_once(local, facade, keys):
    with BackgroundServer(serving_router(facade, keys).app) as server, httpx.Client(base_url=server.url) as http:
        supported = http.get("/-/x402/supported").json()
        assert supported["kinds"] == [
            {
                "x402Version": 2,
                "scheme": "exact",
                "network": LOCALNET.network,
                "extra": {"feePayer": str(keys.fee_payer.pubkey())},
            }
        ]
        assert supported["signers"] == {"solana:*": [str(keys.fee_payer.pubkey())]}
        rail = make_rail(facade, keys)
        requirements = rail.requirements(2_500, "https://elsewhere.example/resource")
        tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
        body = encode_facilitator_request(
            PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements), requirements
        )
        headers = {"content-type": "application/json"}
        verified = http.post("/-/x402/verify", content=body, headers=headers).json()
        assert verified == {"isValid": True, "payer": keys.agent_address}
        settled = http.post("/-/x402/settle", content=body, headers=headers).json()
        assert settled["success"] is True and local.status(settled["transaction"])["err"] is None
        again = http.post("/-/x402/settle", content=body, headers=headers).json()
        assert again["success"] is False and again["errorReason"] == c.ERR_DUPLICATE_SETTLEMENT
    assert (local.token_balance(keys.agent_address), local.token_balance(keys.operator_address)) == (
        FUNDS - 2_500,
        2_500,
    )


async def test_a_router_behind_a_remote_facilitator(local, facade, keys, monkeypatch):
    """Router B has no Solana key and no RPC: clawrouter A's served facilitator does both."""
    monkeypatch.delenv("CLAWROUTER_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("CLAWROUTER_DISABLE_PLUGINS", "ollama_native")
    with BackgroundServer(serving_router(facade, keys).app) as server:
        data = {
            "ledger": {"backend": "memory"},
            "plugins": {
                "solana": {
                    "pay_to": keys.operator_address,
                    "networks": [LOCALNET.network],
                    "facilitator": server.url + "/-/x402",
                    "fee_payer": str(keys.fee_payer.pubkey()),
                }
            },
        }
        router = Router(load_config(data=data, env={}), env={"CLAWROUTER_KEY": keys.router.private_key.hex()})
        assert [p.distribution for p in router.plugins if p.name == "solana"] == ["clawrouter-solana"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://b") as client:
            challenge = await client.post(URL, json=CHAT)
            document = msgspec.json.decode(
                base64.b64decode(challenge.headers["payment-required"]), type=PaymentRequired
            )
            [requirements] = document.accepts
            assert requirements.extra["feePayer"] == str(keys.fee_payer.pubkey())
            tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
            payment = PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)
            header = base64.b64encode(msgspec.json.encode(payment)).decode()
            response = await client.post(URL, json=CHAT, headers={"payment-signature": header})
            assert response.status_code == 200, response.text
            settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
            assert settlement["success"] is True
        await router.stop()
    assert local.token_balance(keys.operator_address) == int(requirements.amount)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"networks": ["solana:localnet"]}, "'plugins.solana.pay_to': required"),
        (
            {"networks": ["solana:localnet"], "pay_to": "0xnot-base58"},
            "'plugins.solana.pay_to': '0xnot-base58' is not a Solana address",
        ),
        ({"networks": ["solana:somewhere"], "pay_to": "{addr}"}, "not a built-in Solana network"),
        (
            {"networks": ["solana:localnet"], "pay_to": "{addr}"},
            "'plugins.solana.rpc_urls.\"solana:localnet\"': required",
        ),
        (
            {
                "networks": ["solana:localnet"],
                "pay_to": "{addr}",
                "rpc_urls": {"solana:localnet": "http://127.0.0.1:9"},
            },
            "$CLAWROUTER_SOLANA_KEY must hold the fee payer's Solana key",
        ),
        (
            {"networks": ["solana:localnet"], "pay_to": "{addr}", "facilitator": "http://127.0.0.1:9"},
            "'plugins.solana.fee_payer': required with a remote facilitator",
        ),
        ({"networks": "solana:localnet"}, "plugins.solana.networks"),
        ({"simulate": "yes"}, "plugins.solana.simulate"),
        ({"colour": "blue"}, "plugins.solana"),
    ],
)
def test_configuration_errors_name_the_key(settings, message, monkeypatch):
    monkeypatch.delenv("CLAWROUTER_SOLANA_KEY", raising=False)
    address = str(Keypair().pubkey())
    settings = json.loads(json.dumps(settings).replace("{addr}", address))
    config = load_config(data={"plugins": {"solana": settings}}, env={})
    with pytest.raises(ConfigError) as caught:
        Router(config, env={}, plugins=[], entry_points=True)
    assert message in str(caught.value)


def test_the_demo_runs_on_solana():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "clawrouter.cli", "demo", "--network", "solana"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LiteSVM Solana chain solana:localnet" in result.stdout
    assert "ledger == chain ✓" in result.stdout
    assert result.stdout.count("verified") == 5  # five paid calls, the broken one not charged
