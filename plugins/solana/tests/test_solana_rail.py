"""The Solana rail in a router, on LiteSVM: paid, refused for each reason, settled once.

Payments are built by hand (``build_transfer``) so that bad ones can be made;
every test reads balances back from the chain. ``rpc`` runs the main cases
through the JSON-RPC facade on 127.0.0.1 and in process.
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import msgspec
import pytest
from clawrouter_solana import constants as c
from clawrouter_solana.exact import build_transfer, encode_transaction
from clawrouter_solana.localnet import InProcessTransport
from clawrouter_solana.networks import LOCALNET
from solana_env import FUNDS, make_rail, make_router
from solders.keypair import Keypair

from clawrouter.payments import PaymentPayload, PaymentRequired, PaymentRequirements, encode_header
from clawrouter.settlement import SETTLED, lock_key

URL = "/v1/chat/completions"


def chat(content: str = "Say hello.", model: str = "auto") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 32}


async def challenge(client: httpx.AsyncClient, body: dict[str, object]) -> PaymentRequirements:
    response = await client.post(URL, json=body)
    assert response.status_code == 402, response.text
    document = msgspec.json.decode(base64.b64decode(response.headers["payment-required"]), type=PaymentRequired)
    return next(r for r in document.accepts if r.network == LOCALNET.network)


def header(local, requirements: PaymentRequirements, owner: Keypair, **changes: object) -> str:
    """A payment answering ``requirements``; ``changes`` alter what the transaction does
    (not the ``accepted`` requirements it claims to answer)."""
    built = msgspec.structs.replace(requirements, **changes)
    tx = build_transfer(built, owner, blockhash=local.latest_blockhash(), decimals=6)
    payment = PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)
    return encode_header(payment).decode()


def reason(response: httpx.Response) -> str:
    """The error code: a 402's body is the x402 v1 document (``code`` at the top), others OpenAI's shape."""
    body = response.json()
    return str(body["code"] if response.status_code == 402 else body["error"]["code"])


@pytest.mark.parametrize("rpc", ["http", "inproc"])
async def test_a_paid_call_settles_on_chain(local, facade, keys, rpc):
    router = make_router(make_rail(facade, keys, rpc), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        assert requirements.extra["feePayer"] == str(keys.fee_payer.pubkey())
        assert requirements.asset == LOCALNET.usdc and requirements.payTo == keys.operator_address
        fee_payer_sol = local.sol_balance(str(keys.fee_payer.pubkey()))
        response = await client.post(
            URL, json=chat(), headers={"payment-signature": header(local, requirements, keys.agent)}
        )
        assert response.status_code == 200, response.text
        settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
        assert settlement["success"] is True and settlement["network"] == LOCALNET.network
        assert settlement["payer"] == keys.agent_address
        assert local.status(settlement["transaction"]) is not None
        assert local.status(settlement["transaction"])["err"] is None
    amount = int(requirements.amount)
    assert local.token_balance(keys.agent_address) == FUNDS - amount
    assert local.token_balance(keys.operator_address) == amount
    assert local.sol_balance(keys.agent_address) == 0  # the router's key paid the fee
    assert local.sol_balance(str(keys.fee_payer.pubkey())) < fee_payer_sol
    if rpc == "http":
        assert facade.calls["simulateTransaction"] >= 1 and facade.calls["sendTransaction"] == 1
    intents = await router.ledger.intents("settled")
    assert [(i.amount, i.transaction) for i in intents] == [(amount, settlement["transaction"])]
    await router.stop()


async def test_a_replay_is_refused_as_duplicate_settlement(local, facade, keys):
    rail = make_rail(facade, keys)
    router = make_router(rail, keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        paid = {"payment-signature": header(local, requirements, keys.agent)}
        assert (await client.post(URL, json=chat(), headers=paid)).status_code == 200
        again = await client.post(URL, json=chat(), headers=paid)
        assert again.status_code == 402 and reason(again) == c.ERR_DUPLICATE_SETTLEMENT
    # a router that never saw it (its state lost): the chain says it already landed
    fresh = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fresh.app), base_url="http://router") as client:
        replay = await client.post(URL, json=chat(), headers=paid)
        assert replay.status_code == 402 and reason(replay) == c.ERR_DUPLICATE_SETTLEMENT
    assert local.token_balance(keys.operator_address) == int(requirements.amount)  # paid once
    await router.stop()
    await fresh.stop()


async def test_refusals_carry_the_spec_reasons_and_move_nothing(local, facade, keys):
    router = make_router(make_rail(facade, keys), keys=keys)
    other_mint = str(Keypair().pubkey())
    stranger = Keypair()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        cases = {
            c.ERR_MINT_MISMATCH: header(local, requirements, keys.agent, asset=other_mint),
            c.ERR_RECIPIENT_MISMATCH: header(local, requirements, keys.agent, payTo=str(stranger.pubkey())),
            c.ERR_AMOUNT_MISMATCH: header(local, requirements, keys.agent, amount=str(int(requirements.amount) - 1)),
            # the fee payer signing away its own funds
            c.ERR_FEE_PAYER_TRANSFERRING: header(local, requirements, keys.fee_payer),
        }
        for expected, paid in cases.items():
            response = await client.post(URL, json=chat(), headers={"payment-signature": paid})
            assert response.status_code == 402, (expected, response.text)
            assert reason(response) == expected
            assert "payment-required" in response.headers  # a fresh challenge to answer
        # the fee payer slipped into an instruction's accounts (here, the memo's)
        sneaky = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
        abused = _with_fee_payer_in_memo(sneaky, keys)
        response = await client.post(
            URL,
            json=chat(),
            headers={
                "payment-signature": encode_header(
                    PaymentPayload(2, {"transaction": abused}, accepted=requirements)
                ).decode()
            },
        )
        assert response.status_code == 402 and reason(response) == c.ERR_FEE_PAYER_IN_ACCOUNTS
        # an expired blockhash: the chain refuses it at simulation
        stale = header(local, requirements, keys.agent)
        local.expire_blockhash()
        response = await client.post(URL, json=chat(), headers={"payment-signature": stale})
        assert response.status_code == 402 and reason(response) == c.ERR_SIMULATION_FAILED
        assert "blockhash" in response.json()["message"].lower()
    assert local.token_balance(keys.agent_address) == FUNDS
    assert local.token_balance(keys.operator_address) == 0
    await router.stop()


async def test_insufficient_balance_is_refused(local, facade, keys):
    local.fund(keys.agent_address, 10, lamports=0)  # ten units: less than any quote
    router = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        response = await client.post(
            URL, json=chat(), headers={"payment-signature": header(local, requirements, keys.agent)}
        )
        assert response.status_code == 402 and reason(response) == c.ERR_INSUFFICIENT_FUNDS
    assert local.token_balance(keys.agent_address) == 10
    await router.stop()


async def test_insufficient_balance_without_simulation_is_caught_by_the_balance_book(local, facade, keys):
    local.fund(keys.agent_address, 10, lamports=0)
    router = make_router(make_rail(facade, keys, simulate=False), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        response = await client.post(
            URL, json=chat(), headers={"payment-signature": header(local, requirements, keys.agent)}
        )
        assert response.status_code == 402 and reason(response) == c.ERR_INSUFFICIENT_FUNDS
    await router.stop()


async def test_a_failed_call_costs_nothing_and_releases_its_lock(local, facade, keys):
    rail = make_rail(facade, keys)
    router = make_router(rail, keys=keys, fail_models=("simulated/eco", "simulated/premium", "simulated/fast"))
    body = chat(model="simulated/eco")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, body)
        paid = {"payment-signature": header(local, requirements, keys.agent)}
        failed = await client.post(URL, json=body, headers=paid)
        assert failed.status_code >= 500
        assert "payment-response" not in failed.headers or not json.loads(
            base64.b64decode(failed.headers["payment-response"])
        ).get("success")
        assert await router.state.get(lock_key(LOCALNET.network, _payment_id(paid))) is None  # released
    assert local.token_balance(keys.agent_address) == FUNDS
    assert rail.embedded is not None and await rail.embedded.book.available(local.ata(keys.agent_address)) == FUNDS
    await router.stop()


async def test_the_same_payment_twice_at_once_is_served_once(local, facade, keys):
    router = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        paid = {"payment-signature": header(local, requirements, keys.agent)}
        answers = await asyncio.gather(*(client.post(URL, json=chat(), headers=paid) for _ in range(2)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200 and statuses[1] in (402, 409), [a.text for a in answers]
    assert local.token_balance(keys.operator_address) == int(requirements.amount)
    # the router's lock (its state backend, shared with the EVM rail) marks it settled
    assert await router.state.get(lock_key(LOCALNET.network, _payment_id(paid))) == SETTLED
    await router.stop()


async def test_an_unreachable_node_fails_closed(local, facade, keys):
    router = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        paid = {"payment-signature": header(local, requirements, keys.agent)}
        facade.stop()
        response = await client.post(URL, json=chat(), headers=paid)
        assert response.status_code == 503 and reason(response) == "chain_unavailable"
        assert response.headers["retry-after"] == "5"
    assert local.token_balance(keys.agent_address) == FUNDS
    await router.stop()


async def test_settle_is_idempotent_and_the_served_facilitator_settles_once(local, facade, keys):
    rail = make_rail(facade, keys)
    facilitator = rail.embedded
    assert facilitator is not None
    requirements = rail.requirements(1234, "http://router/v1/chat/completions")
    tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    payment = PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)
    verified = await rail.verify(payment, requirements)
    first, again = await rail.settle(verified, 1234), await rail.settle(verified, 1234)  # a settler's retry
    assert first.success and again.success and first.transaction == again.transaction
    assert local.token_balance(keys.operator_address) == 1234
    # the x402 facilitator API (served to other x402 servers): the spec's duplicate guard
    other = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    second = PaymentPayload(2, {"transaction": encode_transaction(other)}, accepted=requirements)
    assert (await facilitator.verify(second, requirements)).isValid
    settled = await facilitator.settle(second, requirements)
    assert settled.success
    duplicate = await facilitator.settle(second, requirements)
    assert not duplicate.success and duplicate.errorReason == c.ERR_DUPLICATE_SETTLEMENT
    assert (await facilitator.verify(second, requirements)).invalidReason == c.ERR_DUPLICATE_SETTLEMENT
    assert local.token_balance(keys.operator_address) == 2468
    supported = await facilitator.supported()
    assert supported.kinds[0].extra == {"feePayer": str(keys.fee_payer.pubkey())}
    await rail.aclose()


async def test_evm_and_solana_rails_share_one_router(local, facade, keys):
    from web3 import Web3

    from clawrouter.evm.localchain import InProcessChain
    from clawrouter.evm.networks import EvmNetwork
    from clawrouter.evm.rail import local_rail
    from clawrouter.keys import RouterKey

    chain = InProcessChain()
    operator = RouterKey.generate()
    chain.fund(keys.router.address, 0)
    evm = EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2")
    router = make_router(
        local_rail(Web3(chain.provider), evm, operator.address, keys.router), make_rail(facade, keys), keys=keys
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        response = await client.post(URL, json=chat())
        document = msgspec.json.decode(base64.b64decode(response.headers["payment-required"]), type=PaymentRequired)
        assert {r.network for r in document.accepts} == {chain.network, LOCALNET.network}
        v1 = response.json()["accepts"]  # the v1 body lists both too
        assert {a["network"] for a in v1} == {chain.network, LOCALNET.network}
        requirements = await challenge(client, chat())
        response = await client.post(
            URL, json=chat(), headers={"payment-signature": header(local, requirements, keys.agent)}
        )
        assert response.status_code == 200
        health = (await client.get("/-/health")).json()
        assert f"exact:{LOCALNET.network}" in health["payments"] and f"exact:{chain.network}" in health["payments"]
    await router.stop()


def _payment_id(headers: dict[str, str]) -> str:
    from clawrouter_solana.exact import decode_transaction

    from clawrouter.payments import decode_payment_header

    payment = decode_payment_header(headers["payment-signature"].encode())
    tx = decode_transaction(payment.payload["transaction"])
    return str(tx.signatures[1])


def _with_fee_payer_in_memo(tx, keys) -> str:
    """``tx`` rebuilt with the fee payer listed as an account of its memo instruction, re-signed by the agent."""
    from clawrouter_solana.exact import message_bytes
    from solders.instruction import AccountMeta, Instruction
    from solders.message import MessageV0
    from solders.signature import Signature
    from solders.transaction import VersionedTransaction

    message = tx.message
    keys_list = list(message.account_keys)
    rebuilt = []
    for ix in message.instructions:
        program = keys_list[ix.program_id_index]
        metas = [
            AccountMeta(keys_list[i], is_signer=message.is_signer(i), is_writable=message.is_maybe_writable(i))
            for i in bytes(ix.accounts)
        ]
        if str(program) == c.MEMO_PROGRAM:
            metas.append(AccountMeta(keys.fee_payer.pubkey(), is_signer=False, is_writable=False))
        rebuilt.append(Instruction(program, bytes(ix.data), metas))
    new = MessageV0.try_compile(keys.fee_payer.pubkey(), rebuilt, [], message.recent_blockhash)
    signature = keys.agent.sign_message(message_bytes(new))
    signed = VersionedTransaction.populate(new, [Signature.default(), signature])
    return encode_transaction(signed)


async def test_a_recovered_payment_whose_fee_payer_is_gone_fails_cleanly(local, facade, keys):
    """After a key rotation the outbox may hold a payment naming a fee payer this router no
    longer has: settling it answers a failure (not an exception retried forever), and
    releasing it is a no-op."""
    rail = make_rail(facade, keys)
    requirements = rail.requirements(1_000, "http://router/v1/chat/completions")
    tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    verified = await rail.verify(
        PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements), requirements
    )
    rotated = make_rail(facade, type(keys)(Keypair(), keys.agent, keys.operator, keys.router))
    response = await rotated.settle(verified, 1_000)
    assert not response.success and response.errorReason == c.ERR_FEE_PAYER_NOT_MANAGED
    rotated.release(verified)
    assert local.token_balance(keys.operator_address) == 0
    await rail.aclose()
    await rotated.aclose()


async def test_a_node_answering_nonsense_fails_closed(local, facade, keys):
    from clawrouter_solana.facilitator import EmbeddedSvmFacilitator
    from clawrouter_solana.rail import ExactSvmRail
    from clawrouter_solana.rpc import SolanaRpc

    garbled = _Node(default={"result": {"odd": True}})  # answers of the wrong shape, to every call
    facilitator = EmbeddedSvmFacilitator(
        LOCALNET, SolanaRpc(facade.url, transport=InProcessTransport(garbled)), [keys.fee_payer]
    )
    router = make_router(ExactSvmRail(LOCALNET, keys.operator_address, facilitator), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        response = await client.post(
            URL, json=chat(), headers={"payment-signature": header(local, requirements, keys.agent)}
        )
        assert response.status_code == 503 and reason(response) == "chain_unavailable"
    assert local.token_balance(keys.agent_address) == FUNDS
    await router.stop()


async def test_a_token_2022_mint_is_paid_end_to_end(keys):
    """The signer reads the mint's program (Token-2022 here) and the rail accepts its transfer."""
    from clawrouter_solana.client import SolanaExactSigner
    from clawrouter_solana.localnet import LocalSolana, RpcFacade

    from clawrouter.client import AsyncClient, Policy

    local = LocalSolana(token_program=c.TOKEN_2022_PROGRAM)
    local.airdrop(str(keys.fee_payer.pubkey()), 10_000_000_000)
    local.fund(keys.agent_address, FUNDS, lamports=0)
    local.create_ata(keys.operator_address)
    with RpcFacade(local) as facade:
        router = make_router(make_rail(facade, keys), keys=keys)
        signer = SolanaExactSigner(keys.agent, rpc_urls={LOCALNET.network: facade.url})
        policy = Policy(networks=[LOCALNET.network], assets={LOCALNET.usdc: 6})
        async with AsyncClient(
            signers=[signer], policy=policy, router=keys.router.address, transport=httpx.ASGITransport(router.app)
        ) as client:
            response = await client.post("http://router" + URL, json=chat())
            assert response.status_code == 200, response.text
        signer.close()
        [record] = client.calls
        assert record.state == "settled" and record.verified
        assert local.ata(keys.operator_address) != local.ata(keys.agent_address)
        assert local.token_balance(keys.operator_address) == record.amount
        await router.stop()


async def test_the_challenge_offers_a_recent_blockhash_and_a_payment_must_outlive_the_call(local, facade, keys):
    """A blockhash about to expire would let the call be served and its settlement fail: refused."""
    router = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        offered = requirements.extra
        assert offered["recentBlockhash"] == local.latest_blockhash()
        assert int(offered["lastValidBlockHeight"]) == local.last_valid_block_height
        assert isinstance(offered["blockhashProof"], str)
        stale = header(local, requirements, keys.agent)  # signed with the offered blockhash
        local.advance(51)  # 150 - 51 = 99 slots left: under the 100 the call and its settlement need
        response = await client.post(URL, json=chat(), headers={"payment-signature": stale})
        assert response.status_code == 402 and reason(response) == c.ERR_BLOCKHASH_EXPIRING
        assert "slots" in response.json()["message"]
        fresh = await challenge(client, chat())  # a new challenge offers the new blockhash
        assert fresh.extra["recentBlockhash"] == local.latest_blockhash() != offered["recentBlockhash"]
        paid = await client.post(URL, json=chat(), headers={"payment-signature": header(local, fresh, keys.agent)})
        assert paid.status_code == 200, paid.text
    assert local.token_balance(keys.operator_address) == int(fresh.amount)
    await router.stop()


async def test_an_unknown_blockhash_is_refused_unless_vouched_for_or_accepted(local, facade, keys):
    router = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        local.advance(1)
        unseen = local.latest_blockhash()  # the router never read this one
        local.advance(1)

        def signed_with(blockhash: str, accepted: PaymentRequirements = requirements) -> str:
            tx = build_transfer(requirements, keys.agent, blockhash=blockhash, decimals=6)
            return encode_header(PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=accepted)).decode()

        response = await client.post(URL, json=chat(), headers={"payment-signature": signed_with(unseen)})
        assert response.status_code == 402 and reason(response) == c.ERR_BLOCKHASH_UNKNOWN
        assert "extra.recentBlockhash" in response.json()["message"]
        # a hint the payer forged (a later expiry for the blockhash) vouches for nothing
        forged = dict(requirements.extra, recentBlockhash=unseen, lastValidBlockHeight=str(10**9))
        accepted = msgspec.structs.replace(requirements, extra=forged)
        response = await client.post(URL, json=chat(), headers={"payment-signature": signed_with(unseen, accepted)})
        assert response.status_code == 402 and reason(response) == c.ERR_BLOCKHASH_UNKNOWN
    await router.stop()
    # the router's own hint, echoed in `accepted`, is trusted by a router that never read it (another replica)
    replica = make_router(make_rail(facade, keys), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(replica.app), base_url="http://router") as client:
        tx = build_transfer(requirements, keys.agent, blockhash=requirements.extra["recentBlockhash"], decimals=6)
        hinted = encode_header(
            PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)
        ).decode()
        response = await client.post(URL, json=chat(), headers={"payment-signature": hinted})
        assert response.status_code == 200, response.text
    await replica.stop()
    # unknown_blockhash="accept": the operator's choice, the age left unchecked
    lenient = make_router(make_rail(facade, keys, unknown_blockhash="accept"), keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(lenient.app), base_url="http://router") as client:
        requirements = await challenge(client, chat())
        local.advance(1)
        unseen = local.latest_blockhash()
        local.advance(1)
        tx = build_transfer(requirements, keys.agent, blockhash=unseen, decimals=6)
        paid = encode_header(PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)).decode()
        response = await client.post(URL, json=chat(), headers={"payment-signature": paid})
        assert response.status_code == 200, response.text
    await lenient.stop()


async def test_the_served_facilitator_sponsors_only_its_asset_and_answers_its_own_retry(local, facade, keys):
    rail = make_rail(facade, keys)
    facilitator = rail.embedded
    assert facilitator is not None
    await facilitator.refresh_blockhash()
    requirements = rail.requirements(777, "https://elsewhere.example/r")
    worthless = msgspec.structs.replace(requirements, asset=str(Keypair().pubkey()))
    tx = build_transfer(worthless, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    payment = PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=worthless)
    refused = await facilitator.settle(payment, worthless)
    assert not refused.success and refused.errorReason == c.ERR_INVALID_REQUIREMENTS
    assert (await facilitator.verify(payment, worthless)).invalidReason == c.ERR_INVALID_REQUIREMENTS
    # a settle whose answer was lost (the transaction sent, the caller gone): its retry says settled
    tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    payment = PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=requirements)
    landed = await facilitator.submit(facilitator.check(payment, requirements))
    retried = await facilitator.settle(payment, requirements)
    assert retried.success and retried.transaction == landed.transaction
    again = await facilitator.settle(payment, requirements)  # now answered once: a copy is a duplicate
    assert not again.success and again.errorReason == c.ERR_DUPLICATE_SETTLEMENT
    assert local.token_balance(keys.operator_address) == 777
    await rail.aclose()


class _Node:
    """A JSON-RPC node in a test: per method, a script of answers (the last one repeats), else
    ``default``; it counts the calls. Serve it with ``InProcessTransport(node)``."""

    def __init__(self, script=None, default=None):
        self.script = {method: list(answers) for method, answers in (script or {}).items()}
        self.default = default
        self.calls: list[str] = []

    def __call__(self, body: bytes) -> bytes:
        requests = json.loads(body)
        batch = isinstance(requests, list)
        answers = []
        for request in requests if batch else [requests]:
            method = request["method"]
            self.calls.append(method)
            queue = self.script.get(method) or [self.default]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            answers.append({"jsonrpc": "2.0", "id": request["id"], **answer})
        return json.dumps(answers if batch else answers[0]).encode()


def _status(commitment):
    value = (
        None
        if commitment is None
        else {"slot": 9, "confirmations": None, "err": None, "confirmationStatus": commitment}
    )
    return {"result": {"context": {"slot": 9}, "value": [value]}}


async def _submit_against(node: _Node, local, keys):
    """Settle a payment (verified elsewhere) through ``node``."""
    from clawrouter_solana.facilitator import EmbeddedSvmFacilitator
    from clawrouter_solana.rpc import SolanaRpc

    facilitator = EmbeddedSvmFacilitator(
        LOCALNET, SolanaRpc("http://node", transport=InProcessTransport(node)), [keys.fee_payer]
    )
    extra = {"feePayer": str(keys.fee_payer.pubkey())}
    requirements = PaymentRequirements("exact", LOCALNET.network, "5", LOCALNET.usdc, keys.operator_address, 60, extra)
    tx = build_transfer(requirements, keys.agent, blockhash=local.latest_blockhash(), decimals=6)
    checked = facilitator.check(PaymentPayload(2, {"transaction": encode_transaction(tx)}), requirements)
    return await facilitator.submit(checked)


_EXPIRED = {"result": {"context": {"slot": 9}, "value": False}}
_REFUSED = {
    "error": {
        "code": -32002,
        "message": "Transaction simulation failed: Blockhash not found",
        "data": {"err": "BlockhashNotFound", "logs": []},
    }
}


async def test_a_transaction_processed_as_its_blockhash_expires_is_confirmed_not_failed(local, keys):
    """Seen at 'processed' when its blockhash has just expired: it is on chain and will confirm."""
    statuses = [_status(None), _status("processed"), _status("processed"), _status("confirmed")]
    node = _Node(
        {"getSignatureStatuses": statuses, "sendTransaction": [{"result": "sent"}], "isBlockhashValid": [_EXPIRED]}
    )
    response = await _submit_against(node, local, keys)
    assert response.success, response
    assert node.calls.count("sendTransaction") == 1 and node.calls[-1] == "getSignatureStatuses"


async def test_a_refused_send_of_an_unconfirmed_earlier_attempt_waits_for_it(local, keys):
    """A retry's send is refused (its blockhash expired) while the first attempt sits at 'processed'."""
    statuses = [_status(None), _status("processed"), _status("confirmed")]
    node = _Node({"getSignatureStatuses": statuses, "sendTransaction": [_REFUSED], "isBlockhashValid": [_EXPIRED]})
    assert (await _submit_against(node, local, keys)).success
    # with no earlier attempt anywhere, the same refusal is a failure (nothing charged)
    node = _Node(
        {"getSignatureStatuses": [_status(None)], "sendTransaction": [_REFUSED], "isBlockhashValid": [_EXPIRED]}
    )
    failed = await _submit_against(node, local, keys)
    assert not failed.success and failed.errorReason == c.ERR_SIMULATION_FAILED
