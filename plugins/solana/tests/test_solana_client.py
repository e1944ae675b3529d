"""The agent-side client (:mod:`clawrouter.client`) paying Solana requirements with this package's signer.

The router's only rail is the Solana ``exact`` rail on ``solana:localnet``: LiteSVM
behind the JSON-RPC facade on 127.0.0.1, the embedded facilitator's key paying the
fees. The agent holds USDC and no SOL. Every test reads the balances back from the
chain: a refusal must leave them untouched, a retry must move money once. The
facade's ``calls`` counter shows which RPC reads the signer made and when.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from clawrouter_solana import client as client_module
from clawrouter_solana.client import RPC_URL_ENV, SolanaExactSigner
from clawrouter_solana.localnet import LocalSolana, RpcFacade
from clawrouter_solana.networks import LOCAL_USDC_MINT, LOCALNET
from clawrouter_solana.wallet import FILE_ENV, KEY_ENV, SolanaWallet
from solana_env import FUNDS, Keys, Rails, make_rail, make_router
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from clawrouter.client import AsyncClient, Client, PaymentError, Policy, PolicyError
from clawrouter.client.payer import Payer, installed_signers
from clawrouter.config import load_config
from clawrouter.receipts import verify_receipt
from clawrouter.router import Router
from clawrouter.server import BackgroundServer

URL = "/v1/chat/completions"
BASE = "http://router.test"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the agent paying in USDC on Solana."}]
#: the RPC reads of the signer (the router's rail never makes these two)
READS = ("getLatestBlockhash", "getAccountInfo")


def policy(**kwargs: Any) -> Policy:
    """A policy that allows the local USDC (the defaults allow Solana mainnet and devnet USDC only)."""
    kwargs.setdefault("networks", [LOCALNET.network])
    kwargs.setdefault("assets", {LOCAL_USDC_MINT: 6})
    return Policy(**kwargs)


def chat(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "eco", "messages": [{"role": "user", "content": text}], "max_tokens": 40, **extra}


def signer_for(keys: Keys, facade: RpcFacade) -> SolanaExactSigner:
    return SolanaExactSigner(keys.agent, rpc_urls={LOCALNET.network: facade.url})


def balances(local: LocalSolana, keys: Keys) -> tuple[int, int]:
    """(the agent's USDC, the operator's USDC)."""
    return local.token_balance(keys.agent_address), local.token_balance(keys.operator_address)


def reads(facade: RpcFacade) -> tuple[int, int]:
    return facade.calls[READS[0]], facade.calls[READS[1]]


def _paid(headers: httpx.Headers) -> bool:
    return "payment-signature" in headers or "x-payment" in headers


def sent_transaction(header: str) -> VersionedTransaction:
    payment = json.loads(base64.b64decode(header))
    return VersionedTransaction.from_bytes(base64.b64decode(payment["payload"]["transaction"]))


class Wire(httpx.AsyncBaseTransport):
    """Between client and router, in process: records each request and answer, and injects faults.

    ``faults`` is consumed one per paid request: ``"lose"`` lets the router answer
    (and settle), then raises ReadTimeout, so the answer never reaches the client;
    ``None`` passes through. ``v1_only`` removes the v2 ``PAYMENT-REQUIRED`` header from 402s.
    """

    def __init__(self, app: Any, faults: tuple[str | None, ...] = (), v1_only: bool = False) -> None:
        self.inner = httpx.ASGITransport(app)
        self.faults = list(faults)
        self.v1_only = v1_only
        self.sent: list[httpx.Headers] = []
        self.answers: list[httpx.Response] = []

    def paid(self) -> list[str]:
        return [h.get("payment-signature") or h.get("x-payment") for h in self.sent if _paid(h)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.headers.copy())
        fault = self.faults.pop(0) if _paid(request.headers) and self.faults else None
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        headers = response.headers.copy()
        if self.v1_only and response.status_code == 402:
            del headers["payment-required"]
        answer = httpx.Response(response.status_code, headers=headers, content=content)
        self.answers.append(answer)
        if fault == "lose":
            raise httpx.ReadTimeout("timed out", request=request)
        return answer


class _NoBlockingReads:
    """Stands in for the signer's blocking RPC client: an async client must never need it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("sign() read the chain itself: aprepare should have read it ahead")


@pytest.fixture
def agent_rpc(local: LocalSolana) -> Iterator[RpcFacade]:
    """The agent's own RPC endpoint on the same chain: counts the client's reads apart from the router's."""
    with RpcFacade(local) as served:
        yield served


@pytest.fixture
async def router(facade: RpcFacade, keys: Keys) -> AsyncIterator[Router]:
    router = make_router(make_rail(facade, keys), keys=keys)
    async with router.lifespan():
        yield router


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No key or wallet file of this machine's is found, and only this distribution's plugin loads."""
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "solana")
    monkeypatch.delenv("CLAWROUTER_DISABLE_PLUGINS", raising=False)
    for name in (KEY_ENV, RPC_URL_ENV, "CLAWROUTER_WALLET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(FILE_ENV, str(tmp_path / "no-solana-wallet.json"))
    monkeypatch.setenv("CLAWROUTER_WALLET_FILE", str(tmp_path / "no-wallet.key"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# -- paying ------------------------------------------------------------------------------


async def test_the_async_client_pays_with_reads_made_ahead_of_signing(
    local: LocalSolana,
    facade: RpcFacade,
    keys: Keys,
    agent_rpc: RpcFacade,
    router: Router,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "SyncSolanaRpc", _NoBlockingReads)
    signer = signer_for(keys, agent_rpc)
    wire = Wire(router.app)
    try:
        async with AsyncClient(
            signers=[signer], policy=policy(), router=keys.router.address, transport=wire, base_url=BASE
        ) as client:
            response = await client.post(URL, json=chat())
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
            [record] = client.calls
            # the mint read once, in aprepare; the blockhash is the one the router offered (extra.recentBlockhash)
            assert reads(agent_rpc) == (0, 1)

            assert record.state == "settled" and record.attempts == 1 and record.settlement is not None
            assert record.settlement.success and record.settlement.network == LOCALNET.network
            assert record.receipt is not None and record.receipt_error is None and record.verified
            assert record.receipt.transaction == record.settlement.transaction
            assert record.receipt.payer == record.payer == keys.agent_address
            verify_receipt(record.receipt, router=keys.router.address, body=response.content)
            amount = record.amount
            assert amount > 0 and balances(local, keys) == (FUNDS - amount, amount)
            assert local.sol_balance(keys.agent_address) == 0  # the agent has no SOL and needed none
            status = local.status(record.settlement.transaction)
            assert status is not None and status["err"] is None

            # what went on the wire: unpaid, then one partially signed transaction
            assert len(wire.sent) == 2 and not _paid(wire.sent[0]) and len(wire.paid()) == 1
            tx = sent_transaction(wire.paid()[0])
            assert tx.message.account_keys[0] == keys.fee_payer.pubkey()
            assert tx.signatures[0] == Signature.default()  # the fee payer's slot, left for the router
            assert record.nonce == str(tx.signatures[1])  # the payment's id: the agent's signature

            # a second call within the blockhash's TTL: no new read at all
            again = await client.post(URL, json=chat("and once more"))
            assert again.status_code == 200, again.text
            assert reads(agent_rpc) == (0, 1)
        first, second = client.calls
        assert second.state == "settled" and second.verified
        assert sent_transaction(wire.paid()[1]).message.recent_blockhash == tx.message.recent_blockhash
        assert second.nonce != first.nonce  # the memo nonce: a distinct transaction all the same
        assert balances(local, keys) == (FUNDS - first.amount - second.amount, first.amount + second.amount)
        assert client.spend.paid_calls == 2 and client.spend.charged == first.usd + second.usd
        assert client.spend.open == 0
    finally:
        signer.close()


def test_the_sync_client_pays_a_stream_over_http(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade
) -> None:
    router = make_router(make_rail(facade, keys), keys=keys)
    # no blockhash cache: each payment reads a fresh one (the mint is read once all the same)
    signer = SolanaExactSigner(keys.agent, rpc_urls={LOCALNET.network: agent_rpc.url}, blockhash_ttl=0)
    try:
        with (
            BackgroundServer(router.app) as server,
            Client(
                signers=[signer],
                policy=policy(),
                router=keys.router.address,
                require_receipt=True,
                base_url=server.url,
                timeout=30,
            ) as client,
            client.stream("POST", URL, json=chat("stream to me", stream=True)) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            text = response.read().decode()
            assert reads(agent_rpc) == (0, 1)  # the sync signer read the mint itself, in sign()
            signer.close()  # closes its connections; it stays usable
            plain = client.post(URL, json=chat("no stream this time"))
            assert plain.status_code == 200, plain.text
            assert reads(agent_rpc) == (0, 1)  # the mint is known; the blockhash is offered each time
    finally:
        signer.close()
    assert "event: payment" not in text and "event: receipt" not in text  # the trailer is taken out
    assert text.endswith("data: [DONE]\n\n") and text.count("data: {") >= 2
    record, second = client.calls
    assert record.state == "settled" and record.settlement is not None and record.settlement.success
    assert record.verified and record.receipt is not None
    body = text[: text.rindex("data: [DONE]")].encode()  # what the receipt's digest covers
    verify_receipt(record.receipt, router=keys.router.address, body=body)
    assert second.state == "settled" and second.verified
    spent = record.amount + second.amount
    assert balances(local, keys) == (FUNDS - spent, spent)


async def test_a_v1_challenge_is_paid_with_x_payment(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade, router: Router
) -> None:
    signer = signer_for(keys, agent_rpc)
    wire = Wire(router.app, v1_only=True)
    try:
        async with AsyncClient(signers=[signer], policy=policy(), transport=wire, base_url=BASE) as client:
            response = await client.post(URL, json=chat("the v1 way"))
    finally:
        signer.close()
    assert response.status_code == 200, response.text
    [record] = client.calls
    assert record.header[0] == "X-PAYMENT" and "payment-signature" not in wire.sent[1]
    sent = json.loads(base64.b64decode(wire.sent[1]["x-payment"]))
    assert sent["x402Version"] == 1 and sent["network"] == LOCALNET.network and "accepted" not in sent
    assert record.state == "settled" and balances(local, keys) == (FUNDS - record.amount, record.amount)


# -- never twice ------------------------------------------------------------------------


async def test_a_retry_after_a_lost_response_is_refused_as_already_settled(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade, router: Router
) -> None:
    signer = signer_for(keys, agent_rpc)
    wire = Wire(router.app, faults=("lose",))
    try:
        async with AsyncClient(signers=[signer], policy=policy(), transport=wire, base_url=BASE) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(URL, json=chat())  # the router answered and settled; the answer is lost
            [record] = client.calls
            assert record.state == "pending" and client.spend.open == record.usd
            assert facade.calls["sendTransaction"] == 1
            with pytest.raises(PaymentError) as caught:
                await client.post(URL, json=chat())  # the caller (or its SDK) retries
    finally:
        signer.close()
    assert caught.value.reason == "already_settled" and "not paying again" in str(caught.value)
    first, second = wire.paid()
    assert first == second  # the same transaction, not a new one
    refused = wire.answers[-1]
    assert refused.status_code == 402 and refused.json()["code"] == "duplicate_settlement"
    challenge = json.loads(base64.b64decode(refused.headers["payment-required"]))
    assert challenge["error"] == "duplicate_settlement"
    assert facade.calls["sendTransaction"] == 1  # never sent twice
    assert record.state == "settled" and record.attempts == 2
    assert client.spend.charged == record.usd and client.spend.open == 0
    assert balances(local, keys) == (FUNDS - record.amount, record.amount)  # moved once


def broken_router(facade: RpcFacade, keys: Keys) -> Router:
    """A router whose model ``simulated/broken`` always fails upstream (a 5xx), with no fallback."""
    data = {
        "ledger": {"backend": "memory"},
        "providers": {"simulated": {"kind": "simulated", "fail_models": ["simulated/broken"]}},
        "models": [{"id": "simulated/broken", "provider": "simulated", "input_price": 0.2, "output_price": 0.8}],
    }
    env = {"CLAWROUTER_KEY": keys.router.private_key.hex()}
    rails = Rails(make_rail(facade, keys))
    return Router(load_config(data=data, env={}), plugins=[rails], env=env, entry_points=False)


async def test_a_failed_call_costs_nothing_and_its_retries_reuse_the_transaction(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade
) -> None:
    router = broken_router(facade, keys)
    signer = signer_for(keys, agent_rpc)
    wire = Wire(router.app)
    request = chat("this one fails", model="simulated/broken")
    try:
        async with (
            router.lifespan(),
            AsyncClient(signers=[signer], policy=policy(), transport=wire, base_url=BASE) as client,
        ):
            for _ in range(3):
                failed = await client.post(URL, json=request)
                assert failed.status_code >= 500, failed.text
                assert "payment-response" not in failed.headers
    finally:
        signer.close()
    assert len(wire.paid()) == 3 and len(set(wire.paid())) == 1  # one transaction, carried three times
    [record] = client.calls
    assert record.attempts == 3 and record.state == "unsettled"
    assert facade.calls["sendTransaction"] == 0 and facade.calls["simulateTransaction"] == 3
    assert reads(agent_rpc) == (0, 1)
    assert balances(local, keys) == (FUNDS, 0)
    assert client.spend.charged == 0 and client.spend.open == record.usd  # settleable until it expires
    client.payer.clock = lambda: record.expires + 1
    assert client.spend.open == 0


# -- policy --------------------------------------------------------------------------------


async def test_a_per_call_cap_below_the_price_refuses_before_anything_is_signed(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade, router: Router
) -> None:
    signer = signer_for(keys, agent_rpc)
    wire = Wire(router.app)
    capped = policy(max_per_call="0.000001")
    try:
        async with AsyncClient(signers=[signer], policy=capped, transport=wire, base_url=BASE) as client:
            with pytest.raises(PolicyError) as caught:
                await client.post(URL, json=chat())
        assert caught.value.reason == "over_call_cap" and "nothing was signed" in str(caught.value)
        assert wire.paid() == [] and client.calls == [] and client.spend.refused == 1
        assert reads(agent_rpc) == (0, 0)  # aprepare reads only for the entry the policy lets pay() choose

        # nor does the sync client, given the router's 402: it reads only to sign
        challenge = wire.answers[0]
        assert challenge.status_code == 402

        def answer(request: httpx.Request) -> httpx.Response:
            assert not _paid(request.headers)
            return httpx.Response(402, headers=challenge.headers, content=challenge.content)

        fresh = signer_for(keys, agent_rpc)  # nothing cached
        try:
            with (
                Client(signers=[fresh], policy=capped, transport=httpx.MockTransport(answer)) as sync,
                pytest.raises(PolicyError) as refused,
            ):
                sync.post(BASE + URL, json=chat())
        finally:
            fresh.close()
        assert refused.value.reason == "over_call_cap" and sync.calls == []
    finally:
        signer.close()
    assert reads(agent_rpc) == (0, 0)
    assert facade.calls["simulateTransaction"] == facade.calls["sendTransaction"] == 0
    assert balances(local, keys) == (FUNDS, 0)


# -- finding the signer ---------------------------------------------------------------------


async def test_an_async_client_with_no_signers_finds_the_plugins(
    local: LocalSolana, facade: RpcFacade, keys: Keys, router: Router, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, str(keys.agent))  # base58, as Phantom and solana-keygen export it
    monkeypatch.setenv(RPC_URL_ENV, facade.url)
    client = AsyncClient(policy=policy(), router=keys.router.address, transport=httpx.ASGITransport(router.app))
    [signer] = client.payer.signers
    assert isinstance(signer, SolanaExactSigner)
    try:
        assert signer.payer == keys.agent_address and signer.url_for(LOCALNET.network) == facade.url
        async with client:
            response = await client.post(BASE + URL, json=chat())
        assert response.status_code == 200, response.text
    finally:
        signer.close()
    [record] = client.calls
    assert record.state == "settled" and record.verified
    assert balances(local, keys) == (FUNDS - record.amount, record.amount)


def test_a_sync_client_with_no_signers_finds_the_plugins(
    local: LocalSolana, facade: RpcFacade, keys: Keys, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, str(keys.agent))
    monkeypatch.setenv(RPC_URL_ENV, facade.url)
    router = make_router(make_rail(facade, keys), keys=keys)
    client = Client(policy=policy(), router=keys.router.address, require_receipt=True, timeout=30)
    [signer] = client.payer.signers
    assert isinstance(signer, SolanaExactSigner)
    try:
        with BackgroundServer(router.app) as server, client:
            response = client.post(server.url + URL, json=chat())
            assert signer._rpcs  # it read the chain over its own connection...
        assert response.status_code == 200, response.text
        assert not signer._rpcs  # ...which the client, having found the signer itself, closed
    finally:
        signer.close()
    [record] = client.calls
    assert record.state == "settled" and record.verified
    assert balances(local, keys) == (FUNDS - record.amount, record.amount)


def test_with_no_solana_key_there_is_nothing_to_pay_with(isolated: None, tmp_path: Any) -> None:
    assert installed_signers() == []
    with pytest.raises(ValueError, match="wallet or at least one signer"):
        Payer(None)
    with pytest.raises(ValueError, match="wallet or at least one signer"):
        Client()
    # a wallet file (where $CLAWROUTER_SOLANA_WALLET_FILE points) is found like the variable
    saved = SolanaWallet.generate()
    saved.save(os.environ[FILE_ENV])
    [signer] = installed_signers()
    assert isinstance(signer, SolanaExactSigner) and signer.payer == saved.address
    signer.close()


def test_the_wallet_file_round_trip(tmp_path: Any) -> None:
    wallet = SolanaWallet.generate()
    path = wallet.save(tmp_path / "keys" / "agent.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    numbers = json.loads(path.read_text())  # solana-keygen's format: a JSON array of 64 bytes
    assert isinstance(numbers, list) and len(numbers) == 64 and all(0 <= n <= 255 for n in numbers)
    assert bytes(numbers) == bytes(wallet.keypair)
    loaded = SolanaWallet.load(path)
    assert loaded.address == wallet.address and bytes(loaded.keypair) == bytes(wallet.keypair)
    assert str(wallet.keypair) not in repr(loaded)  # the key is never shown
    with pytest.raises(FileExistsError):
        SolanaWallet.generate().save(path)
    assert SolanaWallet.load(path).address == wallet.address  # not overwritten
    os.chmod(path, 0o640)  # group-readable: refused
    with pytest.raises(PermissionError, match="chmod 600"):
        SolanaWallet.load(path)
    os.chmod(path, 0o600)
    path.write_text("not a key")
    with pytest.raises(ValueError, match="base58") as bad:
        SolanaWallet.load(path)
    assert "not a key" not in str(bad.value)


def test_the_wallet_command_line(tmp_path: Any) -> None:
    env = {name: value for name, value in os.environ.items() if name not in (KEY_ENV, FILE_ENV)}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "clawrouter_solana", "wallet", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    file = tmp_path / "agent.json"
    created = run("new", "--file", str(file))
    assert created.returncode == 0, created.stderr
    address = created.stdout.split()[0]
    assert address == SolanaWallet.load(file).address and str(file) in created.stdout
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    shown = run("show", "--file", str(file))
    assert shown.returncode == 0 and shown.stdout.strip() == address
    again = run("new", "--file", str(file))  # never overwrites a key without --force
    assert again.returncode == 1 and "error:" in again.stderr
    assert run("show", "--file", str(file)).stdout.strip() == address
    missing = run("show", "--file", str(tmp_path / "none.json"))
    assert missing.returncode == 1 and "no Solana wallet" in missing.stderr


# -- the OpenAI SDK ----------------------------------------------------------------------------


async def test_the_openai_sdk_pays_on_solana(
    local: LocalSolana, facade: RpcFacade, keys: Keys, agent_rpc: RpcFacade, router: Router
) -> None:
    signer = signer_for(keys, agent_rpc)
    try:
        async with AsyncClient(
            signers=[signer],
            policy=policy(),
            router=keys.router.address,
            require_receipt=True,
            transport=httpx.ASGITransport(router.app),
        ) as http:
            llm = openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="x402", http_client=http, max_retries=0)
            completion = await llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30)
            assert completion.choices[0].message.content
            stream = await llm.chat.completions.create(model="eco", messages=MESSAGES, max_tokens=30, stream=True)
            chunks = [chunk async for chunk in stream]
    finally:
        signer.close()
    assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)  # no trailer event parsed
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    first, second = http.calls
    assert first.receipt is not None and first.receipt.model == completion.model
    assert [r.state for r in http.calls] == ["settled", "settled"] and first.verified and second.verified
    assert first.nonce != second.nonce
    spent = first.amount + second.amount
    assert balances(local, keys) == (FUNDS - spent, spent)
    assert local.sol_balance(keys.agent_address) == 0
    assert http.spend.paid_calls == 2 and http.spend.calls == 2
