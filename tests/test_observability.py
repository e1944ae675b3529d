"""Metrics (GET /-/metrics), statistics (GET /-/stats), their admin key, and the collector's
bounds: the figures are checked against what the requests did, and /-/metrics is parsed as
Prometheus parses it."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import httpx
import paid_router
import pytest
from paid_router import make_router
from prometheus_client.parser import text_string_to_metric_families

from clawrouter.client import AsyncClient, Policy
from clawrouter.config import ConfigError, load_config
from clawrouter.context import RequestContext
from clawrouter.router import Router
from clawrouter.telemetry import TelemetryMiddleware, parse_window

URL = "/v1/chat/completions"
ADMIN = "admin-key-for-tests-0123456789"
DIGEST = hashlib.sha256(ADMIN.encode()).hexdigest()

chain = paid_router.chain
wallets = paid_router.wallets


def router_with(**sections) -> Router:
    data = {"providers": {"simulated": {"kind": "simulated", "latency_ms": 0, "ttft_ms": 0}}, **sections}
    return Router(load_config(data=data, env={}), entry_points=False)


def chat(model="eco", text="hello", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 30, **extra}


def families(text: str) -> dict[str, list]:
    """Prometheus families by name, as ``[(sample name, labels, value)]``."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def value(samples, name, **labels) -> float:
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert found, f"no sample {name} {labels} in {samples}"
    return sum(found)


@pytest.fixture
async def served():
    routers = []

    async def make(**sections):
        router = router_with(**sections)
        await router.start()
        routers.append(router)
        return router, httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r")

    yield make
    for router in routers:
        await router.stop()


async def test_metrics_count_what_the_requests_did(served):
    router, client = await served(
        providers={"simulated": {"kind": "simulated", "latency_ms": 0, "fail_models": ["simulated/eco"]}}
    )
    async with client:
        # the profile: eco fails, the next model answers (first, while routing still ranks eco first)
        fell_back = await client.post(URL, json=chat("eco"))
        assert fell_back.status_code == 200 and fell_back.headers["x-clawrouter-model"] != "simulated/eco"
        for _ in range(3):
            assert (await client.post(URL, json=chat("simulated/standard"))).status_code == 200
        streamed = await client.post(URL, json=chat("simulated/standard", stream=True))
        assert streamed.status_code == 200
        failed = await client.post(URL, json=chat("simulated/eco"))
        assert failed.status_code >= 500
        assert (await client.post(URL, json={"model": "eco"})).status_code == 400
        text = (await client.get("/-/metrics")).text
    samples = families(text)
    requests = samples["clawrouter_requests"]
    assert value(requests, "clawrouter_requests_total", model="simulated/standard", status="200") >= 4
    assert value(requests, "clawrouter_requests_total", model="simulated/eco", status=str(failed.status_code)) == 1
    assert value(requests, "clawrouter_requests_total", model="", status="400") == 1
    total = sum(v for n, _, v in requests if n == "clawrouter_requests_total")
    assert total == 7
    duration = samples["clawrouter_request_duration_seconds"]
    assert value(duration, "clawrouter_request_duration_seconds_count") == 7
    inf = value(duration, "clawrouter_request_duration_seconds_bucket", model="simulated/standard", le="+Inf")
    assert inf == value(duration, "clawrouter_request_duration_seconds_count", model="simulated/standard")
    ttft = samples["clawrouter_time_to_first_token_seconds"]
    assert value(ttft, "clawrouter_time_to_first_token_seconds_count", model="simulated/standard") == 1
    tokens = samples["clawrouter_tokens"]
    assert value(tokens, "clawrouter_tokens_total", type="output") > 0
    assert value(tokens, "clawrouter_tokens_total", type="input") > 0
    fallbacks = samples["clawrouter_fallbacks"]
    served_by = fell_back.headers["x-clawrouter-model"]
    assert value(fallbacks, "clawrouter_fallbacks_total", model="simulated/eco", served_by=served_by) == 1
    decisions = samples["clawrouter_routing_decisions"]
    assert value(decisions, "clawrouter_routing_decisions_total", model="simulated/eco", profile="eco") == 1
    assert value(decisions, "clawrouter_routing_decisions_total", strategy="explicit") == 5
    breakers = samples["clawrouter_circuit_breaker_state"]
    assert {s[1]["model"] for s in breakers} >= {"simulated/eco", "simulated/standard"}
    assert samples["clawrouter_settlement_outbox_depth"][0][2] == 0


async def test_breaker_state_gauge_shows_an_open_circuit(served, caplog):
    caplog.set_level("INFO", logger="clawrouter.events")
    router, client = await served(
        providers={"simulated": {"kind": "simulated", "latency_ms": 0, "fail_models": ["simulated/eco"]}},
        execution={"breaker_failures": 2, "max_retries": 0},
    )
    async with client:
        for _ in range(2):
            await client.post(URL, json=chat("simulated/eco"))
        refused = await client.post(URL, json=chat("simulated/eco"))  # the circuit is open: no model is chosen
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
        samples = families((await client.get("/-/metrics")).text)
        stats = (await client.get("/-/stats")).json()
    # a request that failed before any model was chosen is a request and an error everywhere
    assert stats["totals"]["requests"] == 3 and stats["totals"]["errors"] == 3
    assert sum(stats["series"]["requests"]) == 3 and sum(stats["series"]["errors"]) == 3
    assert stats["totals"]["error_rate"] == 1.0
    assert [row["requests"] for row in stats["models"]] == [2] and stats["models"][0]["share"] == 1.0
    gauge = samples["clawrouter_circuit_breaker_state"]
    assert value(gauge, "clawrouter_circuit_breaker_state", model="simulated/eco") == 2
    assert {"provider": "simulated", "model": "simulated/eco", "state": "open"} in stats["breakers"]
    events = [r for r in caplog.records if r.name == "clawrouter.events" and r.fields["event"] == "circuit"]
    assert [(r.levelname, r.fields["state"], r.fields["model"]) for r in events] == [
        ("WARNING", "open", "simulated/eco")
    ]  # logged once, when it opened (not for the refused third request)


async def test_stats_document_aggregates_the_window(served):
    router, client = await served(
        providers={"simulated": {"kind": "simulated", "latency_ms": 0, "fail_models": ["simulated/eco"]}}
    )
    async with client:
        for i in range(4):
            assert (await client.post(URL, json=chat("simulated/standard", text=f"q{i}"))).status_code == 200
        assert (await client.post(URL, json=chat("simulated/standard", stream=True))).status_code == 200
        assert (await client.post(URL, json=chat("eco"))).status_code == 200  # a fallback
        assert (await client.post(URL, json=chat("simulated/eco"))).status_code >= 500
        assert (await client.post(URL, json={"model": 1})).status_code == 400
        response = await client.get("/-/stats?window=5m")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    stats = response.json()
    assert stats["window_seconds"] == 300 and stats["replica"] == router.replica
    totals = stats["totals"]
    assert totals["requests"] == 7 and totals["errors"] == 1 and totals["fallbacks"] == 1
    assert totals["rejected"] == 1
    assert totals["error_rate"] == round(1 / 7, 4) and totals["fallback_rate"] == round(1 / 7, 4)
    assert totals["cost_usd"] > 0 and totals["completion_tokens"] > 0
    series = stats["series"]
    n = len(series["t"])
    assert 1 < n <= 121 and all(len(series[k]) == n for k in ("requests", "errors", "fallbacks", "p50_ms", "p95_ms"))
    assert sum(series["requests"]) == 7 and sum(series["errors"]) == 1
    assert series["t"] == sorted(series["t"]) and series["t"][1] - series["t"][0] == stats["step_seconds"]
    assert series["p95_ms"][-1] is not None or series["p95_ms"][-2] is not None
    rows = {row["model"]: row for row in stats["models"]}
    standard = rows["simulated/standard"]
    assert standard["requests"] >= 5 and standard["errors"] == 0
    assert standard["latency_ms"]["p50"] <= standard["latency_ms"]["p95"] <= standard["latency_ms"]["p99"]
    assert standard["ttft_ms"] is not None and standard["ttft_ms"]["p50"] > 0
    assert rows["simulated/eco"]["errors"] == 1
    assert abs(sum(r["share"] for r in stats["models"]) - 1) < 0.01
    assert stats["models"] == sorted(stats["models"], key=lambda r: -r["requests"])
    recent = stats["routing"]["recent"]
    assert recent[0]["model"] == "simulated/eco" and recent[0]["status"] >= 500
    fallback = next(r for r in recent if r["served_by"] and r["served_by"] != r["model"])
    assert fallback["profile"] == "eco" and "answered by fallback" in fallback["explanation"]
    assert fallback["decision_us"] > 0 and fallback["fallbacks"]
    assert sum(stats["routing"]["decisions"].values()) == 7
    assert stats["events"] == {"queued": 0, "dropped": 0}


@pytest.mark.parametrize("window", ["0", "5", "2d", "abc", "nan", "-5m", "1e9"])
async def test_a_bad_window_is_a_400_naming_it(served, window):
    _, client = await served()
    async with client:
        response = await client.get(f"/-/stats?window={window}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "window"


def test_parse_window():
    assert parse_window(None, 900, 86400) == 900
    assert parse_window("300", 900, 86400) == 300
    assert parse_window("90s", 900, 86400) == 90
    assert parse_window("15m", 900, 86400) == 900
    assert parse_window("2h", 900, 86400) == 7200
    assert parse_window("1d", 900, 86400) == 86400


async def test_paid_calls_show_spend_settlements_and_links(chain, wallets):
    router = make_router(
        chain, wallets, sections={"observability": {"explorers": {chain.network: "https://explorer.test/tx/{tx}"}}}
    )
    _, agent, _ = wallets
    policy = Policy(networks=[chain.network], assets={chain.token: 6})
    async with router.lifespan():
        transport = httpx.ASGITransport(router.app)
        async with AsyncClient(agent, policy, transport=transport, base_url="http://r") as client:
            for i in range(2):
                answer = await client.post(URL, json=chat(text=f"pay {i}"))
                assert answer.status_code == 200, answer.text
        await router.settler.idle()
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as plain:
            stats = (await plain.get("/-/stats")).json()
            samples = families((await plain.get("/-/metrics")).text)
        settled = [i for i in await router.ledger.intents() if i.status == "settled"]
    assert len(settled) == 2
    charged = sum(i.amount for i in settled) / 1e6  # exact settles the signed amount
    assert stats["totals"]["settlements"] == {"settled": 2, "failed": 0}
    assert stats["totals"]["spend_usd"] == pytest.approx(charged)
    assert stats["spend"]["by_network"] == {chain.network: pytest.approx(charged)}
    assert stats["spend"]["by_payer"] == {agent.address.lower(): pytest.approx(charged)}
    recent = stats["settlements"]["recent"]
    assert {r["transaction"] for r in recent} == {i.transaction for i in settled}
    assert all(r["explorer_url"] == f"https://explorer.test/tx/{r['transaction']}" for r in recent)
    assert stats["totals"]["rejected"] == 2  # the two 402 challenges the client answered
    spend = value(samples["clawrouter_spend_usd"], "clawrouter_spend_usd_total", network=chain.network)
    assert spend == pytest.approx(charged)
    outcomes = samples["clawrouter_settlements"]
    assert value(outcomes, "clawrouter_settlements_total", network=chain.network, outcome="settled") == 2
    assert value(samples["clawrouter_requests"], "clawrouter_requests_total", status="402") == 2


@pytest.mark.parametrize("where", ["server", "limits"])
async def test_the_admin_key_protects_the_observability_endpoints(served, where):
    _, client = await served(**{where: {"admin_key_sha256": DIGEST}})
    basic = "Basic " + base64.b64encode(f"anyone:{ADMIN}".encode()).decode()
    async with client:
        for path in ("/-/metrics", "/-/stats", "/-/dashboard"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic ")
            assert refused.json()["error"]["code"] == "invalid_admin_key"
            wrong = await client.get(path, headers={"authorization": "Bearer not-the-key"})
            assert wrong.status_code == 401
            assert (await client.get(path, headers={"authorization": "Basic %%%"})).status_code == 401
            assert (await client.get(path, headers={"authorization": f"Bearer {ADMIN}"})).status_code == 200
            assert (await client.get(path, headers={"authorization": basic})).status_code == 200
        assert (await client.post("/-/stats")).status_code == 405


async def test_without_an_admin_key_the_endpoints_are_open_and_typed(served):
    _, client = await served()
    async with client:
        metrics = await client.get("/-/metrics")
        page = await client.get("/-/dashboard")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"stats?window=" in page.content  # the page fetches its data beside itself


async def test_disabled_observability_has_no_stage_and_no_endpoints(served):
    router, client = await served(observability={"enabled": False})
    assert router.telemetry is None
    assert not isinstance(router.app.chat, TelemetryMiddleware)  # type: ignore[attr-defined]
    async with client:
        assert (await client.post(URL, json=chat())).status_code == 200
        for path in ("/-/metrics", "/-/stats", "/-/dashboard"):
            response = await client.get(path)
            assert response.status_code == 404 and "disabled" in response.json()["error"]["message"]


async def test_the_queue_is_bounded_and_counts_what_it_drops():
    router = router_with(observability={"queue_size": 3})
    telemetry = router.telemetry
    assert telemetry is not None  # not started: nothing drains the queue
    for _ in range(10):
        ctx = RequestContext(router)
        ctx.status = 200
        telemetry.request(ctx)
    assert len(telemetry.queue) == 3 and telemetry.dropped == 7
    telemetry.flush()
    samples = families(telemetry.registry.prometheus().decode())
    assert samples["clawrouter_telemetry_dropped_total"][0][2] == 7
    assert value(samples["clawrouter_requests"], "clawrouter_requests_total") == 3


async def test_a_record_the_collector_cannot_read_is_logged_and_skipped(caplog):
    router = router_with()
    telemetry = router.telemetry
    assert telemetry is not None
    telemetry.queue.append((0, "not a time"))
    ctx = RequestContext(router)
    ctx.status = 200
    telemetry.request(ctx)
    telemetry.flush()
    assert "telemetry: could not record" in caplog.text
    assert value(families(telemetry.registry.prometheus().decode())["clawrouter_requests"], "clawrouter_requests_total")


async def test_stats_keep_only_the_retention():
    router = router_with(observability={"stats_step_seconds": 10, "stats_retention_seconds": 60})
    telemetry = router.telemetry
    assert telemetry is not None
    for when in range(0, 600, 10):
        telemetry._step_of(1_000_000 + when)
    assert len(telemetry.steps) <= 7


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"traces": "zipkin"}, "observability.traces"),
        ({"metrics": "statsd"}, "observability.metrics"),
        ({"log_format": "xml"}, "observability.log_format"),
        ({"sample_ratio": 1.5}, "observability.sample_ratio"),
        ({"stats_step_seconds": 0}, "observability.stats_step_seconds"),
        ({"queue_size": 0}, "observability.queue_size"),
        ({"export_interval_seconds": 0}, "observability.export_interval_seconds"),
        ({"explorers": {"eip155:1": "https://etherscan.io/tx/"}}, "observability.explorers.eip155:1"),
        ({"enabled": False, "traces": "memory"}, "observability.enabled"),
        ({"bogus": 1}, "observability.bogus"),
    ],
)
def test_config_errors_name_the_key(section, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        router_with(observability=section)


async def test_traced_spans_are_counted_and_the_collector_drains_in_slices(served):
    router, client = await served(observability={"traces": "memory"})
    async with client:
        assert (await client.post(URL, json=chat("simulated/standard"))).status_code == 200
        samples = families((await client.get("/-/metrics")).text)
    exported = router.telemetry.tracing.exporter.get_finished_spans()  # type: ignore[union-attr]
    assert samples["clawrouter_trace_spans_total"][0][2] == len(exported) >= 4
    telemetry = router.telemetry
    for _ in range(5):
        ctx = RequestContext(router)
        ctx.status = 200
        telemetry.request(ctx)
    telemetry.flush(2)
    assert len(telemetry.queue) == 3
    telemetry.flush()
    assert not telemetry.queue


async def test_without_traces_there_is_no_span_counter(served):
    _, client = await served()
    async with client:
        assert "clawrouter_trace_spans_total" not in (await client.get("/-/metrics")).text


async def test_stop_right_after_the_collector_was_woken_does_not_hang():
    for _ in range(20):  # asyncio.wait_for on 3.11 could swallow the cancellation: stop() never returned
        router = router_with()
        await router.start()
        telemetry = router.telemetry
        for _ in range(70):  # past the batch that wakes the collector
            ctx = RequestContext(router)
            ctx.status = 200
            telemetry.request(ctx)
        await asyncio.sleep(0)
        await asyncio.wait_for(router.stop(), 5)
        assert not telemetry.queue
