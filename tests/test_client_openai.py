"""The OpenAI Python SDK paying clawrouter through ``clawrouter.client``, over real sockets.

``clawrouter serve`` runs in a subprocess on 127.0.0.1, settling on anvil (chain
84532, our token at Base Sepolia's USDC address, so the client's default
Base Sepolia asset entry is the real one). The SDK gets our client as
``http_client=``, sync and async, streaming and not; balances are read from
the chain.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest
from chains import anvil_chain  # noqa: F401 - a fixture
from serving import Serve, paid_config

from clawrouter.client import AsyncClient, Client, Policy, PolicyError
from clawrouter.keys import RouterKey

pytestmark = pytest.mark.slow

FUNDS = 2_000_000
MESSAGES: list = [{"role": "user", "content": "Say hello to the paying agent."}]


@pytest.fixture(scope="module")
def served(anvil_chain, tmp_path_factory):  # noqa: F811
    router_key, operator = RouterKey.generate(), RouterKey.generate()
    anvil_chain.fund(router_key.address, 0)
    serve = Serve(paid_config(tmp_path_factory.mktemp("serve"), anvil_chain, operator.address), router_key)
    try:
        yield serve, router_key
    finally:
        serve.stop()


@pytest.fixture
def agent(anvil_chain):  # noqa: F811
    key = RouterKey.generate()
    anvil_chain.fund(key.address, FUNDS)
    return key


POLICY = Policy(networks=["eip155:84532"], max_per_call="0.05", max_per_session="0.50")


def _spent(chain, agent) -> int:
    return FUNDS - chain.usdc_balance(agent.address)


def test_sync_sdk_pays_and_collects_a_verified_receipt(served, agent, anvil_chain):  # noqa: F811
    serve, router_key = served
    with Client(agent, POLICY, router=router_key.address, require_receipt=True) as http:
        llm = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="x402", http_client=http, max_retries=0)
        completion = llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30)
        assert completion.choices[0].message.content
        [record] = http.calls
    assert record.state == "settled" and record.verified
    assert record.receipt.model == completion.model and record.receipt.payer.lower() == agent.address.lower()
    assert _spent(anvil_chain, agent) == record.amount
    tx = anvil_chain.w3.eth.get_transaction_receipt(record.settlement.transaction)
    assert tx["status"] == 1
    assert http.spend.charged == Decimal(record.amount).scaleb(-6) and http.spend.paid_calls == 1


def test_sync_sdk_streams_with_no_payment_events_in_the_chunks(served, agent, anvil_chain):  # noqa: F811
    serve, router_key = served
    with Client(agent, POLICY, router=router_key.address, require_receipt=True) as http:
        llm = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="x402", http_client=http, max_retries=0)
        chunks = list(llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30, stream=True))
        [record] = http.calls
    assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert record.state == "settled" and record.verified  # checked although the SDK stops at [DONE]
    assert _spent(anvil_chain, agent) == record.amount


async def test_async_sdk_streams_and_pays_each_call_once(served, agent, anvil_chain):  # noqa: F811
    serve, router_key = served
    async with AsyncClient(agent, POLICY, router=router_key.address, require_receipt=True) as http:
        llm = openai.AsyncOpenAI(base_url=f"{serve.url}/v1", api_key="x402", http_client=http, max_retries=0)
        stream = await llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30, stream=True)
        chunks = [chunk async for chunk in stream]
        completion = await llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30)
        assert completion.choices[0].message.content
    assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert [r.state for r in http.calls] == ["settled", "settled"]
    assert all(r.verified for r in http.calls)
    assert _spent(anvil_chain, agent) == sum(r.amount for r in http.calls)
    assert http.spend.paid_calls == 2 and http.spend.calls == 2


class RefuseFirstPaid(httpx.BaseTransport):
    """A real HTTP transport whose first paid request fails to connect (the router never sees it)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paid: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("payment-signature")
        if header is not None:
            self.paid.append(header)
            if len(self.paid) == 1:
                raise httpx.ConnectError("connection reset", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_the_sdk_retry_after_a_connection_error_reuses_the_authorization(served, agent, anvil_chain):  # noqa: F811
    serve, _ = served
    wire = RefuseFirstPaid()
    with Client(agent, POLICY, transport=wire) as http:
        llm = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="x402", http_client=http, max_retries=2)
        completion = llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30)
        assert completion.choices[0].message.content
    assert len(wire.paid) == 2 and wire.paid[0] == wire.paid[1]  # the SDK's retry carried the same authorization
    [record] = http.calls
    assert record.attempts == 2 and record.state == "settled"
    assert _spent(anvil_chain, agent) == record.amount


def test_a_policy_refusal_reaches_the_sdk_caller_unwrapped(served, agent, anvil_chain):  # noqa: F811
    serve, _ = served
    with Client(agent, Policy(networks=["eip155:84532"], max_per_call="0.000001")) as http:
        llm = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="x402", http_client=http, max_retries=2)
        with pytest.raises(PolicyError) as caught:
            llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30)
    assert caught.value.reason == "over_call_cap" and http.calls == []
    assert http.spend.calls == 1  # not retried by the SDK
    assert _spent(anvil_chain, agent) == 0


def test_the_paying_agent_example_runs(served, agent, anvil_chain, capsys):  # noqa: F811
    import importlib.util
    from pathlib import Path

    from clawrouter.wallet import Wallet

    path = Path(__file__).parent.parent / "examples" / "paying_agent.py"
    spec = importlib.util.spec_from_file_location("paying_agent", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    serve, _ = served
    http = example.main(f"{serve.url}/v1", Wallet(agent.private_key))
    out = capsys.readouterr().out
    assert "answer: " in out and "refused (over_call_cap)" in out
    assert out.count("receipt: verified") == 2 and http.spend.paid_calls == 2
    assert _spent(anvil_chain, agent) == sum(r.amount for r in http.calls)
