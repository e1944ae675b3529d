"""The x402 facilitator API: the served app (:func:`facilitator_app`), the HTTP
client (:class:`RemoteFacilitator`) against it, and the official ``x402``
package's facilitator client against it over a real server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import msgspec
import pytest

from clawrouter.facilitator import (
    Facilitator,
    FacilitatorRequest,
    FacilitatorUnavailable,
    RemoteFacilitator,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    encode_facilitator_request,
    facilitator_app,
)
from clawrouter.payments import PaymentPayload, PaymentRequirements, ResourceInfo, SettlementResponse
from clawrouter.server import BackgroundServer
from clawrouter.upstream import AiohttpTransport, HttpxTransport

BASE = ("exact", "eip155:8453")
SEPOLIA = ("exact", "eip155:84532")
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"
TX = "0x" + "ab" * 32
KEY = "fac-secret-key"


def requirements(network: str = BASE[1], scheme: str = "exact", amount: str = "10000") -> PaymentRequirements:
    return PaymentRequirements(
        scheme=scheme,
        network=network,
        amount=amount,
        asset=USDC,
        payTo=PAY_TO,
        maxTimeoutSeconds=60,
        extra={"name": "USD Coin", "version": "2"},
    )


def payment(accepted: PaymentRequirements | None = None) -> PaymentPayload:
    return PaymentPayload(
        x402Version=2,
        accepted=accepted or requirements(),
        resource=ResourceInfo(url="https://api.example.com/v1/chat/completions", description="chat"),
        payload={
            "signature": "0x" + "11" * 65,
            "authorization": {
                "from": PAYER,
                "to": PAY_TO,
                "value": "10000",
                "validAfter": "1740672089",
                "validBefore": "1740672154",
                "nonce": "0x" + "22" * 32,
            },
        },
    )


def body(payload: PaymentPayload | None = None, reqs: PaymentRequirements | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode_facilitator_request(payload or payment(), reqs or requirements()))
    return data


class FakeFacilitator:
    """Records its calls and answers with canned responses."""

    def __init__(
        self,
        kinds: list[tuple[str, str]],
        *,
        verify: VerifyResponse | None = None,
        settle: SettlementResponse | None = None,
        signers: dict[str, list[str]] | None = None,
        extensions: list[str] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.kinds = kinds
        self.verify_answer = verify or VerifyResponse(isValid=True, payer=PAYER)
        self.settle_answer = settle or SettlementResponse(
            success=True, network=kinds[0][1], transaction=TX, payer=PAYER, amount="10000"
        )
        self.signers = signers if signers is not None else {"eip155:*": ["0xF00"]}
        self.extensions = extensions or []
        self.error = error
        self.calls: list[tuple[str, PaymentPayload | None, PaymentRequirements | None]] = []

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        self.calls.append(("verify", payload, requirements))
        if self.error is not None:
            raise self.error
        return self.verify_answer

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettlementResponse:
        self.calls.append(("settle", payload, requirements))
        if self.error is not None:
            raise self.error
        return self.settle_answer

    async def supported(self) -> SupportedResponse:
        self.calls.append(("supported", None, None))
        if self.error is not None:
            raise self.error
        return SupportedResponse(
            kinds=[SupportedKind(x402Version=2, scheme=s, network=n) for s, n in self.kinds],
            extensions=self.extensions,
            signers=self.signers,
        )


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://facilitator", headers=headers)


def remote(app: Any, **kw: Any) -> RemoteFacilitator:
    return RemoteFacilitator("http://facilitator/", transport=HttpxTransport(httpx.ASGITransport(app)), **kw)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_fake_is_a_facilitator() -> None:
    assert isinstance(FakeFacilitator([BASE]), Facilitator)


# --------------------------------------------------------------------------- served app


async def test_served_verify_and_settle_dispatch_to_the_kind() -> None:
    base, sepolia = FakeFacilitator([BASE]), FakeFacilitator([SEPOLIA])
    app = facilitator_app({BASE: base, SEPOLIA: sepolia})
    async with client(app) as http:
        response = await http.post("/verify", json=body())
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"isValid": True, "payer": PAYER}

        response = await http.post("/settle", json=body())
        assert response.status_code == 200
        assert response.json() == {
            "success": True,
            "network": BASE[1],
            "transaction": TX,
            "payer": PAYER,
            "amount": "10000",
        }
        sepolia_reqs = requirements(SEPOLIA[1])
        response = await http.post("/verify", json=body(payment(sepolia_reqs), sepolia_reqs))
        assert response.json()["isValid"] is True
    assert [(op, p, r) for op, p, r in base.calls] == [
        ("verify", payment(), requirements()),
        ("settle", payment(), requirements()),
    ]
    assert sepolia.calls == [("verify", payment(sepolia_reqs), sepolia_reqs)]


async def test_served_passes_invalid_answers_through_as_200() -> None:
    refused = VerifyResponse(isValid=False, invalidReason="insufficient_funds", payer=PAYER, invalidMessage="broke")
    failed = SettlementResponse(success=False, network=BASE[1], transaction="", errorReason="invalid_transaction_state")
    app = facilitator_app({BASE: FakeFacilitator([BASE], verify=refused, settle=failed)})
    async with client(app) as http:
        response = await http.post("/verify", json=body())
        assert (response.status_code, response.json()) == (
            200,
            {"isValid": False, "invalidReason": "insufficient_funds", "payer": PAYER, "invalidMessage": "broke"},
        )
        response = await http.post("/settle", json=body())
        assert (response.status_code, response.json()) == (
            200,
            {"success": False, "network": BASE[1], "transaction": "", "errorReason": "invalid_transaction_state"},
        )


async def test_served_supported_merges_and_dedupes() -> None:
    both = FakeFacilitator([BASE, SEPOLIA], signers={"eip155:*": ["0xA", "0xB"]}, extensions=["bazaar"])
    again = FakeFacilitator([SEPOLIA, ("exact", "eip155:1")], signers={"eip155:*": ["0xB", "0xC"], "solana:*": ["S"]})
    # ``both`` is mapped twice and asked once; eip155:1 is not mapped, so not offered
    app = facilitator_app({BASE: both, SEPOLIA: both, ("upto", "eip155:84532"): again})
    async with client(app) as http:
        response = await http.get("/supported")
    assert response.status_code == 200
    assert response.json() == {
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"},
            {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
        ],
        "extensions": ["bazaar"],
        "signers": {"eip155:*": ["0xA", "0xB", "0xC"], "solana:*": ["S"]},
    }
    assert [op for op, _, _ in both.calls] == ["supported"]


async def test_served_supported_failure_is_503_json() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE], error=RuntimeError("rpc down at http://secret"))})
    async with client(app) as http:
        response = await http.get("/supported")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"
    assert "secret" not in response.text


async def test_served_api_key() -> None:
    fake = FakeFacilitator([BASE])
    app = facilitator_app({BASE: fake}, api_key=KEY)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}, {"x-api-key": KEY}):
        async with client(app, **headers) as http:
            for response in (await http.post("/verify", json=body()), await http.get("/supported")):
                assert response.status_code == 401, headers
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["type"] == "authentication_error"
                assert KEY not in response.text
    assert fake.calls == []
    async with client(app, authorization=f"Bearer {KEY}") as http:
        assert (await http.post("/verify", json=body())).status_code == 200
        assert (await http.post("/settle", json=body())).status_code == 200
        assert (await http.get("/supported")).status_code == 200
    assert KEY not in repr(app)


async def test_served_unknown_kind_is_400_with_a_response_body() -> None:
    fake = FakeFacilitator([BASE])
    app = facilitator_app({BASE: fake})
    other = requirements("eip155:1")
    async with client(app) as http:
        response = await http.post("/verify", json=body(payment(other), other))
        assert response.status_code == 400
        assert response.json() == {
            "isValid": False,
            "invalidReason": "unsupported_scheme",
            "invalidMessage": "no facilitator for exact on eip155:1",
        }
        response = await http.post("/settle", json=body(payment(other), other))
        assert response.status_code == 400
        assert response.json() == {
            "success": False,
            "network": "eip155:1",
            "transaction": "",
            "errorReason": "unsupported_scheme",
        }
        upto = requirements(scheme="upto")
        response = await http.post("/verify", json=body(payment(upto), upto))
        assert (response.status_code, response.json()["invalidReason"]) == (400, "unsupported_scheme")
    assert fake.calls == []


async def test_served_accepted_must_match_the_requirements() -> None:
    fake = FakeFacilitator([BASE, SEPOLIA])
    app = facilitator_app({BASE: fake, SEPOLIA: fake, ("upto", BASE[1]): fake})
    async with client(app) as http:
        response = await http.post("/verify", json=body(payment(requirements(SEPOLIA[1])), requirements()))
        assert response.status_code == 200
        assert response.json()["isValid"] is False
        assert response.json()["invalidReason"] == "network_mismatch"
        response = await http.post("/verify", json=body(payment(requirements(scheme="upto")), requirements()))
        assert response.json()["invalidReason"] == "unsupported_scheme"
        response = await http.post("/settle", json=body(payment(requirements(SEPOLIA[1])), requirements()))
        assert response.json() == {
            "success": False,
            "network": BASE[1],
            "transaction": "",
            "errorReason": "network_mismatch",
        }
    assert fake.calls == []


async def test_served_rejects_other_x402_versions() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE])})
    async with client(app) as http:
        data = body()
        data["x402Version"] = 1
        response = await http.post("/verify", json=data)
        assert (response.status_code, response.json()["invalidReason"]) == (400, "invalid_x402_version")
        data = body()
        data["paymentPayload"]["x402Version"] = 3
        response = await http.post("/settle", json=data)
        assert (response.status_code, response.json()["errorReason"]) == (400, "invalid_x402_version")


def _without(path: str) -> dict[str, Any]:
    data = body()
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    del target[last]
    return data


def _with(path: str, value: Any) -> dict[str, Any]:
    data = body()
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b"{}", "paymentPayload"),
        (json.dumps(_without("paymentRequirements")).encode(), "paymentRequirements"),
        (json.dumps(_without("paymentRequirements.payTo")).encode(), "payTo"),
        (json.dumps(_with("paymentRequirements.amount", 10000)).encode(), "$.paymentRequirements.amount"),
        (json.dumps(_with("paymentPayload.payload", "0xsig")).encode(), "$.paymentPayload.payload"),
        (json.dumps(_without("paymentPayload.accepted")).encode(), "paymentPayload.accepted"),
        (json.dumps(_with("x402Version", "2")).encode(), "$.x402Version"),
    ],
)
async def test_served_malformed_bodies_are_400_json(content: bytes, needle: str) -> None:
    fake = FakeFacilitator([BASE])
    app = facilitator_app({BASE: fake})
    async with client(app) as http:
        for path in ("/verify", "/settle"):
            response = await http.post(path, content=content, headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert needle in error["message"]
            assert "Traceback" not in response.text
    assert fake.calls == []


async def test_served_body_size_limit() -> None:
    fake = FakeFacilitator([BASE])
    app = facilitator_app({BASE: fake}, max_body=2048)
    big = body()
    big["paymentPayload"]["payload"]["padding"] = "x" * 4096
    async with client(app) as http:
        response = await http.post("/verify", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"

        async def chunks() -> Any:  # no content-length: counted while reading
            data = json.dumps(big).encode()
            for i in range(0, len(data), 512):
                yield data[i : i + 512]

        response = await http.post("/settle", content=chunks())
        assert response.status_code == 413
        assert (await http.post("/verify", json=body())).status_code == 200
    assert [op for op, _, _ in fake.calls] == ["verify"]


async def test_served_default_limit_is_64_kib() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE])})
    big = body()
    big["paymentPayload"]["payload"]["padding"] = "x" * (64 * 1024)
    async with client(app) as http:
        assert (await http.post("/verify", json=big)).status_code == 413


async def test_served_routes_and_methods() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE])})
    async with client(app) as http:
        response = await http.get("/verify")
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        response = await http.post("/supported", json={})
        assert (response.status_code, response.headers["allow"]) == (405, "GET")
        response = await http.get("/nope")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"


async def test_served_under_a_root_path() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE])})
    transport = httpx.ASGITransport(app, root_path="/-/x402")
    async with httpx.AsyncClient(transport=transport, base_url="http://facilitator") as http:
        response = await http.post("/-/x402/verify", json=body())
    assert response.json() == {"isValid": True, "payer": PAYER}


async def test_served_facilitator_errors() -> None:
    boom = facilitator_app({BASE: FakeFacilitator([BASE], error=RuntimeError("boom: key=abc"))})
    down = facilitator_app({BASE: FakeFacilitator([BASE], error=FacilitatorUnavailable("rpc unreachable"))})
    async with client(boom) as http:
        response = await http.post("/settle", json=body())
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "internal error",
            "type": "server_error",
            "code": "unexpected_settle_error",
        }
    async with client(down) as http:
        response = await http.post("/verify", json=body())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "facilitator_unavailable"


async def test_served_lifespan() -> None:
    app = facilitator_app({})
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --------------------------------------------------------------------------- remote client


def test_request_body_is_spec_shaped() -> None:
    data = body()
    # x402Version at the top, and maxTimeoutSeconds present even at its default
    assert data["x402Version"] == 2
    assert data["paymentRequirements"]["maxTimeoutSeconds"] == 60
    assert data["paymentPayload"]["accepted"]["maxTimeoutSeconds"] == 60
    decoded = msgspec.json.decode(json.dumps(data), type=FacilitatorRequest)
    assert (decoded.paymentPayload, decoded.paymentRequirements) == (payment(), requirements())


async def test_remote_round_trips_through_the_served_app() -> None:
    refused = VerifyResponse(isValid=False, invalidReason="insufficient_funds", payer=PAYER, invalidMessage="broke")
    base = FakeFacilitator([BASE], signers={"eip155:*": ["0xA"]}, extensions=["bazaar"])
    sepolia = FakeFacilitator(
        [SEPOLIA],
        verify=refused,
        settle=SettlementResponse(success=False, network=SEPOLIA[1], transaction="", errorReason="insufficient_funds"),
    )
    app = facilitator_app({BASE: base, SEPOLIA: sepolia}, api_key=KEY)
    async with remote(app, headers={"Authorization": f"Bearer {KEY}"}) as facilitator:
        assert isinstance(facilitator, Facilitator)
        assert await facilitator.verify(payment(), requirements()) == base.verify_answer
        assert await facilitator.settle(payment(), requirements()) == base.settle_answer
        sepolia_reqs = requirements(SEPOLIA[1])
        assert await facilitator.verify(payment(sepolia_reqs), sepolia_reqs) == refused
        assert await facilitator.settle(payment(sepolia_reqs), sepolia_reqs) == sepolia.settle_answer
        supported = await facilitator.supported()
        assert supported == SupportedResponse(
            kinds=[SupportedKind(2, *BASE), SupportedKind(2, *SEPOLIA)],
            extensions=["bazaar"],
            signers={"eip155:*": ["0xA", "0xF00"]},
        )
        # cached: the facilitators are not asked again
        assert await facilitator.supported() is supported
    assert base.calls == [
        ("verify", payment(), requirements()),
        ("settle", payment(), requirements()),
        ("supported", None, None),
    ]
    assert [op for op, _, _ in sepolia.calls] == ["verify", "settle", "supported"]
    assert KEY not in repr(facilitator)


async def test_remote_supported_cache_expires() -> None:
    fake = FakeFacilitator([BASE])
    async with remote(facilitator_app({BASE: fake}), supported_ttl=0) as facilitator:
        await facilitator.supported()
        await facilitator.supported()
    assert [op for op, _, _ in fake.calls] == ["supported", "supported"]
    fake.calls.clear()
    async with remote(facilitator_app({BASE: fake})) as facilitator:
        await facilitator.supported()
        facilitator.forget_supported()
        await facilitator.supported()
    assert len(fake.calls) == 2


async def test_remote_returns_the_answer_of_a_4xx() -> None:
    app = facilitator_app({BASE: FakeFacilitator([BASE])})
    other = requirements("eip155:1")
    async with remote(app) as facilitator:
        assert await facilitator.verify(payment(other), other) == VerifyResponse(
            isValid=False, invalidReason="unsupported_scheme", invalidMessage="no facilitator for exact on eip155:1"
        )
        assert await facilitator.settle(payment(other), other) == SettlementResponse(
            success=False, network="eip155:1", transaction="", errorReason="unsupported_scheme"
        )


def mock(status: int, content: bytes, seen: list[httpx.Request] | None = None) -> RemoteFacilitator:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return RemoteFacilitator(
        "https://x402.example/facilitator",
        headers={"x-api-key": "k"},
        transport=HttpxTransport(httpx.MockTransport(handler)),
    )


async def test_remote_sends_spec_requests() -> None:
    seen: list[httpx.Request] = []
    answer = b'{"isValid":true,"payer":"0xP","extensions":{"x":1},"extra":null}'
    async with mock(200, answer, seen) as facilitator:
        assert await facilitator.verify(payment(), requirements()) == VerifyResponse(isValid=True, payer="0xP")
    request = seen[0]
    assert (request.method, str(request.url)) == ("POST", "https://x402.example/facilitator/verify")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k"
    assert json.loads(request.content) == body()

    seen.clear()
    supported = b'{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:8453"}],"extensions":[],"signers":{}}'
    async with mock(200, supported, seen) as facilitator:
        assert (await facilitator.supported()).kinds == [SupportedKind(2, *BASE)]
    assert (seen[0].method, seen[0].url.path, seen[0].headers["x-api-key"]) == ("GET", "/facilitator/supported", "k")


@pytest.mark.parametrize(
    ("status", "content", "needle"),
    [
        (500, b'{"error": "boom"}', 'answered 500: {"error": "boom"}'),
        (503, b"<html>overloaded</html>", "answered 503"),
        (502, b'{"isValid": false, "invalidReason": "x"}', "answered 502"),  # a 5xx is never an answer
        (200, b"<html>ok</html>", "invalid body"),
        (200, b'{"ok": true}', "invalid body"),
        (200, b"", "invalid body"),
        (401, b'{"error": {"message": "bad key"}}', "answered 401"),
        (429, b"slow down", "answered 429"),
        (400, b'{"isValid": true, "success": true, "network": "n", "transaction": "t"}', "answered 400"),
        (302, b"", "answered 302"),
    ],
)
async def test_remote_unavailable_on_bad_answers(status: int, content: bytes, needle: str) -> None:
    async with mock(status, content) as facilitator:
        with pytest.raises(FacilitatorUnavailable) as exc:
            await facilitator.verify(payment(), requirements())
        assert exc.value.message.startswith("facilitator https://x402.example/facilitator/verify answered")
        assert needle in exc.value.message
        with pytest.raises(FacilitatorUnavailable):
            await facilitator.settle(payment(), requirements())
        if status != 200 or content == b"":
            with pytest.raises(FacilitatorUnavailable):
                await facilitator.supported()
    assert exc.value.status == 503
    assert json.loads(exc.value.body())["error"]["type"] == "service_unavailable"


async def test_remote_unavailable_on_timeouts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with RemoteFacilitator("http://f", transport=HttpxTransport(httpx.MockTransport(handler))) as facilitator:
        with pytest.raises(FacilitatorUnavailable, match="timed out"):
            await facilitator.verify(payment(), requirements())
        with pytest.raises(FacilitatorUnavailable, match="timed out"):
            await facilitator.supported()


async def test_remote_unavailable_when_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with RemoteFacilitator(url, transport=AiohttpTransport(), timeout=2.0) as facilitator:
        with pytest.raises(FacilitatorUnavailable, match="unreachable"):
            await facilitator.verify(payment(), requirements())
        with pytest.raises(FacilitatorUnavailable, match="unreachable"):
            await facilitator.settle(payment(), requirements())
        with pytest.raises(FacilitatorUnavailable, match="unreachable"):
            await facilitator.supported()


def test_remote_default_transport_is_aiohttp() -> None:
    assert isinstance(RemoteFacilitator("http://f").transport, AiohttpTransport)


@pytest.mark.slow
async def test_remote_over_a_real_server_with_aiohttp() -> None:
    fake = FakeFacilitator([BASE])
    app = facilitator_app({BASE: fake}, api_key=KEY)
    with BackgroundServer(app) as server:
        async with RemoteFacilitator(server.url, headers={"authorization": f"Bearer {KEY}"}) as facilitator:
            assert await facilitator.verify(payment(), requirements()) == fake.verify_answer
            assert await facilitator.settle(payment(), requirements()) == fake.settle_answer
            assert (await facilitator.supported()).kinds == [SupportedKind(2, *BASE)]
        async with RemoteFacilitator(server.url) as unauthorized:
            with pytest.raises(FacilitatorUnavailable, match="answered 401"):
                await unauthorized.verify(payment(), requirements())
            with pytest.raises(FacilitatorUnavailable, match="answered 401"):
                await unauthorized.supported()


# --------------------------------------------------------------------------- the official x402 client


@pytest.mark.slow
async def test_official_x402_client_interop() -> None:
    from x402.http.facilitator_client import FacilitatorConfig, HTTPFacilitatorClient
    from x402.schemas import PaymentPayload as X402Payload
    from x402.schemas import PaymentRequirements as X402Requirements
    from x402.schemas import ResourceInfo as X402Resource

    refused = VerifyResponse(isValid=False, invalidReason="insufficient_funds", payer=PAYER, invalidMessage="broke")
    base = FakeFacilitator([BASE], signers={"eip155:*": ["0xA"]})
    sepolia = FakeFacilitator(
        [SEPOLIA],
        verify=refused,
        settle=SettlementResponse(success=False, network=SEPOLIA[1], transaction="", errorReason="insufficient_funds"),
    )
    app = facilitator_app({BASE: base, SEPOLIA: sepolia}, api_key=KEY)

    def official(reqs: PaymentRequirements) -> tuple[X402Payload, X402Requirements]:
        x_reqs = X402Requirements.model_validate(msgspec.to_builtins(reqs) | {"maxTimeoutSeconds": 60})
        ours = payment(reqs)
        x_payload = X402Payload(
            x402_version=2,
            payload=ours.payload,
            accepted=x_reqs,
            resource=X402Resource(url="https://api.example.com/v1/chat/completions", description="chat"),
        )
        return x_payload, x_reqs

    auth = {"Authorization": f"Bearer {KEY}"}
    config = {"url": "", "create_headers": lambda: {"verify": auth, "settle": auth, "supported": auth}}
    with BackgroundServer(app) as server:
        config["url"] = server.url + "/"
        async with HTTPFacilitatorClient(config) as x402_client:
            x_payload, x_reqs = official(requirements())
            verified = await x402_client.verify(x_payload, x_reqs)
            assert (verified.is_valid, verified.payer, verified.invalid_reason) == (True, PAYER, None)
            settled = await x402_client.settle(x_payload, x_reqs)
            assert (settled.success, settled.transaction, settled.network, settled.payer, settled.amount) == (
                True,
                TX,
                BASE[1],
                PAYER,
                "10000",
            )

            x_payload, x_reqs = official(requirements(SEPOLIA[1]))
            verified = await x402_client.verify(x_payload, x_reqs)
            assert (verified.is_valid, verified.invalid_reason, verified.invalid_message, verified.payer) == (
                False,
                "insufficient_funds",
                "broke",
                PAYER,
            )
            settled = await x402_client.settle(x_payload, x_reqs)
            assert (settled.success, settled.error_reason, settled.transaction) == (False, "insufficient_funds", "")

            supported = x402_client.get_supported()  # sync: the official client calls it at start-up
            assert [(k.x402_version, k.scheme, k.network) for k in supported.kinds] == [(2, *BASE), (2, *SEPOLIA)]
            assert supported.signers == {"eip155:*": ["0xA", "0xF00"]}
            assert supported.extensions == []

            # the official client treats any non-200 as an error, so an unknown kind raises there
            x_payload, x_reqs = official(requirements("eip155:1"))
            with pytest.raises(ValueError, match="unsupported_scheme"):
                await x402_client.verify(x_payload, x_reqs)

        async with HTTPFacilitatorClient(FacilitatorConfig(url=server.url)) as keyless:
            with pytest.raises(ValueError, match="401"):
                await keyless.verify(*official(requirements()))

    # what the official client sent decodes to the same payment our own client sends
    assert base.calls[0] == ("verify", payment(), requirements())
    assert base.calls[1] == ("settle", payment(), requirements())
    assert sepolia.calls[0] == ("verify", payment(requirements(SEPOLIA[1])), requirements(SEPOLIA[1]))
