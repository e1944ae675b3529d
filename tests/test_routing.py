"""Routing over the shipped catalogue: profiles, task fit, constraints (body and headers), strategies,
live statistics, explain output, and the property that a decision never violates a constraint."""

from __future__ import annotations

import json
import random

import httpx
import msgspec
import pytest
from helpers import chat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawrouter import Router, load_config
from clawrouter.cli import main
from clawrouter.errors import BadRequest
from clawrouter.routing import WeightedStrategy, quality
from clawrouter.wire import RouteConstraints, decode_request

PROVIDERS = {
    "openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
    "anthropic": {"kind": "anthropic", "base_url": "http://127.0.0.1:9", "prewarm": False},
    "google": {"kind": "gemini", "base_url": "http://127.0.0.1:9"},
    "deepseek": {"kind": "deepseek", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
    "mistral": {"kind": "mistral", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
    "xai": {"kind": "xai", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
    "qwen": {"kind": "qwen", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
    "together": {"kind": "together", "base_url": "http://127.0.0.1:9/v1", "prewarm": False},
}


def make_router(**extra) -> Router:
    data = {"providers": PROVIDERS, **extra}
    return Router(load_config(data=data, env={}), entry_points=False, env={})


@pytest.fixture(scope="module")
def router() -> Router:
    return make_router()


def request(content="Hello, how are you?", model="auto", **extra):
    return decode_request(json.dumps(chat(content, model=model, **extra)).encode())


CODING = (
    "Refactor this Python function to use a dict lookup instead of the if/elif chain:\n\n"
    "def f(x):\n    if x == 1:\n        return 'a'\n    elif x == 2:\n        return 'b'\n"
)
PROOF = (
    "Prove rigorously that there are infinitely many primes of the form 4k+3, "
    "then generalise the argument and discuss where it breaks for 4k+1."
)


def worst(router, req, model):
    return router.worst_case_pico(req, model)


def test_catalogue_models_are_available_when_their_provider_is_configured(router):
    providers = {m.provider for m in router.catalogue}
    assert providers == set(PROVIDERS)
    assert len(router.catalogue) >= 35
    ids = {m["id"] for m in json.loads(router.models_body)["data"]}
    assert "openai/gpt-6.2-sol" in ids or any(i.startswith("openai/") for i in ids)


def test_eco_is_cheaper_and_premium_is_better(router):
    req_eco, req_premium = request(PROOF, model="eco"), request(PROOF, model="premium")
    eco, premium = router.decide(req_eco).primary, router.decide(req_premium).primary
    assert worst(router, req_eco, eco) < worst(router, req_premium, premium)
    assert quality(premium, "math") > quality(eco, "math")
    assert quality(premium, "math") >= 0.9 * max(quality(m, "math") for m in router.catalogue)


def test_auto_adapts_to_the_task(router):
    simple = router.decide(request("What is the capital of France?"))
    hard = router.decide(request(PROOF))
    assert simple.features.tier == "eco" and hard.features.tier == "premium"
    assert quality(hard.primary, "math") > quality(simple.primary, "math")
    coding = router.decide(request(CODING, model="premium"))
    assert coding.features.task == "coding"
    assert quality(coding.primary, "coding") >= 0.9 * max(quality(m, "coding") for m in router.catalogue)


def test_chain_has_primary_and_fallbacks(router):
    decision = router.decide(request())
    assert len(decision.chain) == 3 and len({m.id for m in decision.chain}) == 3


def test_max_price_constraint(router):
    req = request(PROOF, model="premium", clawrouter={"max_price": 0.002})
    decision = router.decide(req)
    assert all(worst(router, req, m) <= 0.002 * 1e12 for m in decision.chain)
    assert any(r.startswith("max_price:") for r in decision.excluded.values())


def test_capability_provider_and_deny_constraints(router):
    req = request(
        model="auto",
        clawrouter={
            "capabilities": ["vision", "reasoning"],
            "providers": ["anthropic", "google"],
            "deny_models": [router.decide(request()).primary.id],
        },
    )
    decision = router.decide(req)
    for m in decision.chain:
        assert m.has("vision") and m.has("reasoning") and m.provider in {"anthropic", "google"}
    req = request(clawrouter={"deny_providers": ["openai", "anthropic", "google"]})
    assert all(m.provider not in {"openai", "anthropic", "google"} for m in router.decide(req).chain)


def test_quality_floor_and_profile_constraint(router):
    req = request(CODING, model="auto", clawrouter={"min_quality": 0.9, "profile": "eco"})
    decision = router.decide(req)
    assert decision.profile == "eco"
    assert all(quality(m, "coding") >= 0.9 for m in decision.chain)


def test_headers_are_equivalent_to_the_body(router):
    from clawrouter.stages.route import header_constraints

    scope = {
        "headers": [
            (b"x-clawrouter-max-price", b"0.002"),
            (b"x-clawrouter-providers", b"anthropic, google"),
            (b"x-clawrouter-profile", b"premium"),
            (b"content-type", b"application/json"),
        ]
    }
    from_headers = router.decide(request(PROOF), header_constraints(scope))
    from_body = router.decide(
        request(PROOF, clawrouter={"max_price": 0.002, "providers": ["anthropic", "google"], "profile": "premium"})
    )
    assert [m.id for m in from_headers.chain] == [m.id for m in from_body.chain]
    with pytest.raises(BadRequest, match="x-clawrouter-max-price: expected a number"):
        header_constraints({"headers": [(b"x-clawrouter-max-price", b"cheap")]})


def test_impossible_constraints_say_which_excluded_what(router):
    req = request(clawrouter={"min_quality": 0.999, "providers": ["openai"]})
    with pytest.raises(BadRequest) as caught:
        router.decide(req)
    message = caught.value.message
    assert message.startswith("no model can serve this request:")
    assert "min_quality excluded" in message and "providers excluded" in message
    with pytest.raises(BadRequest, match=r"max_price excluded \d+ models"):
        router.decide(request(clawrouter={"max_price": 0.0000001}))


def test_explicit_model_keeps_its_fallbacks_within_constraints(router):
    model = next(m for m in router.catalogue if len([f for f in m.fallbacks if f in router.catalogue]) >= 2)
    decision = router.decide(request(model=model.id))
    assert decision.primary is model and decision.strategy == "explicit"
    assert [m.id for m in decision.fallbacks] == [f for f in model.fallbacks if f in router.catalogue][:2]
    with pytest.raises(BadRequest, match="deny_models: denied"):
        router.decide(request(model=model.id, clawrouter={"deny_models": [model.id]}))


def test_strategies(router):
    req = request(clawrouter={"strategy": "cheapest"})
    chain = router.decide(req).chain
    costs = sorted(worst(router, req, m) for m in router.catalogue)
    assert worst(router, req, chain[0]) == costs[0]
    ordered = (
        router.decide(
            request(clawrouter={"strategy": "ordered", "models": ["qwen/qwen3.8-flash", "mistral/codestral"]})
        )
        if "qwen/qwen3.8-flash" in router.catalogue
        else None
    )
    if ordered is not None:
        assert ordered.primary.id == "qwen/qwen3.8-flash"
    with pytest.raises(BadRequest, match="unknown routing strategy 'best'"):
        router.decide(request(clawrouter={"strategy": "best"}))


def test_ordered_from_config_and_weighted():
    ids = sorted(m.id for m in make_router().catalogue)
    order = [ids[5], ids[2], ids[9]]
    router = make_router(routing={"strategy": "ordered", "order": order})
    assert [m.id for m in router.decide(request()).chain] == order
    weighted = WeightedStrategy({ids[0]: 3, ids[1]: 1}, rng=random.Random(7))
    router = make_router()
    picks = [weighted.rank(router.features(request()), list(router.catalogue), router.stats)[0].id for _ in range(400)]
    share = picks.count(ids[0]) / len(picks)
    assert set(picks) == {ids[0], ids[1]} and 0.65 < share < 0.85


def test_fastest_and_live_stats_steer_routing():
    router = make_router()
    ids = [m.id for m in router.catalogue]
    for i, model_id in enumerate(ids):
        router.stats.success(model_id, latency=0.5 + i * 0.01)
    router.stats.success(ids[7], latency=0.01)
    router.stats.maybe_refresh()
    assert router.decide(request(clawrouter={"strategy": "fastest"})).primary.id == ids[7]
    # a model failing most of its calls drops out of the default ranking's top spot
    best = router.decide(request(PROOF, model="premium")).primary.id
    for _ in range(20):
        router.stats.failure(best)
    router.stats._refreshed = float("-inf")
    assert router.decide(request(PROOF, model="premium")).primary.id != best
    # a latency SLO excludes measured models slower than it
    slo = router.decide(request(clawrouter={"latency_slo_ms": 100, "strategy": "cheapest"}))
    assert slo.primary.id == ids[7]


def test_rate_limited_model_loses_its_headroom():
    router = make_router()
    best = router.decide(request(PROOF, model="premium")).primary.id
    router.stats.rate_limited(best, retry_after=30)
    assert router.stats.maybe_refresh() and router.stats.snapshot(best).headroom == 0.0
    assert router.decide(request(PROOF, model="premium")).primary.id != best


def test_rankings_are_cached_until_stats_change():
    router = make_router()
    router.decide(request())
    size = len(router._rankings)
    router.decide(request("Hi there, what's up?"))
    assert len(router._rankings) == size  # same coarse features: same ranking
    router.stats.success(next(iter(router.catalogue)).id, 0.1)
    router.stats._refreshed = float("-inf")
    router.decide(request())
    assert router._rankings_generation == router.stats.generation


def test_explain_lists_components_and_exclusions(router, capsys):
    explained = router.explain(request(PROOF, clawrouter={"max_price": 0.002}))
    first = explained["candidates"][0]
    assert {"quality", "price", "latency", "error_rate", "headroom", "freshness", "score"} <= set(first)
    assert explained["features"]["task"] in ("math", "reasoning")
    assert explained["excluded"] and all(":" in r for r in explained["excluded"].values())
    assert explained["decision_us"] >= 0


def test_route_cli_explains(capsys):
    assert main(["route", "Write a haiku about routers", "--profile", "eco", "--json", "--max-price", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "eco" and out["candidates"] and out["features"]["task"] == "creative"


async def test_decision_headers_and_extension_never_forwarded(clawrouter_router, clawrouter_client):
    from clawrouter import hookimpl
    from clawrouter.providers.openai_compat import OpenAICompatibleProvider, OpenAISettings
    from clawrouter.upstream import HttpxTransport

    seen = []

    def upstream(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    class Plugin:
        __name__ = "mock"

        @hookimpl
        def register_providers(self, config):
            return [
                OpenAICompatibleProvider(
                    "mock",
                    OpenAISettings(base_url="http://u.test/v1", prewarm=False),
                    HttpxTransport(httpx.MockTransport(upstream)),
                )
            ]

        @hookimpl
        def register_models(self, config):
            return [{"id": "mock/m", "provider": "mock", "input_price": 1, "output_price": 1}]

    client = await clawrouter_client(clawrouter_router({"providers": {}}, plugins=[Plugin()]))
    response = await client.post("/v1/chat/completions", json=chat(clawrouter={"max_price": 1.0}))
    assert response.status_code == 200
    assert float(response.headers["x-clawrouter-decision-us"]) >= 0
    assert "clawrouter" not in seen[-1]
    bad = await client.post("/v1/chat/completions", json=chat(clawrouter={"max_prize": 1}))
    assert bad.status_code == 400 and "max_prize" in bad.json()["error"]["message"]


# --- the property: a decision never violates a constraint ---------------------------------------

_ROUTER = None


def _shared_router() -> Router:
    global _ROUTER
    if _ROUTER is None:
        _ROUTER = make_router()
    return _ROUTER


def _constraints():
    ids = sorted(m.id for m in _shared_router().catalogue)
    providers = sorted(PROVIDERS)
    return st.builds(
        dict,
        max_price=st.none() | st.floats(min_value=1e-6, max_value=0.5),
        capabilities=st.lists(st.sampled_from(["tools", "vision", "reasoning", "json_mode"]), max_size=2, unique=True),
        providers=st.lists(st.sampled_from(providers), max_size=3, unique=True),
        deny_providers=st.lists(st.sampled_from(providers), max_size=2, unique=True),
        deny_models=st.lists(st.sampled_from(ids), max_size=5, unique=True),
        min_quality=st.none() | st.floats(min_value=0.3, max_value=0.97),
        profile=st.none() | st.sampled_from(["eco", "auto", "premium"]),
        strategy=st.none() | st.sampled_from(["default", "cheapest", "fastest"]),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    constraints=_constraints(),
    prompt=st.sampled_from([PROOF, CODING, "hi", "Summarise this: " + "word " * 3000]),
    max_tokens=st.integers(min_value=1, max_value=20000),
    tools=st.booleans(),
)
def test_a_decision_never_violates_a_constraint(constraints, prompt, max_tokens, tools):
    router = _shared_router()
    extra = {"max_tokens": max_tokens, "clawrouter": {k: v for k, v in constraints.items() if v not in (None, [])}}
    if tools:
        extra["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = request(prompt, **extra)
    c = msgspec.convert(extra["clawrouter"], RouteConstraints)
    try:
        decision = router.decide(req)
    except BadRequest:
        # refused: then truly no model satisfies every constraint
        features = router.features(req, c)
        assert all(router.exclusion(m, features, c, req) is not None for m in router.catalogue)
        return
    task = decision.features.task
    for m in decision.chain:
        if c.max_price is not None:
            assert router.worst_case_pico(req, m) <= c.max_price * 1e12 + 1e6
        assert all(m.has(cap) for cap in c.capabilities)
        assert not c.providers or m.provider in c.providers
        assert m.provider not in c.deny_providers and m.id not in c.deny_models
        assert c.min_quality is None or quality(m, task) >= c.min_quality
        assert not tools or m.has("tools")
        assert decision.features.prompt_tokens + decision.features.output_tokens <= m.context_window


def test_default_rank_agrees_with_its_explained_components():
    """``rank`` is the fast path of ``components``: the two must order models alike."""
    from clawrouter.routing import DefaultStrategy

    router = make_router()
    strategy = DefaultStrategy()
    models = list(router.catalogue)
    router.stats.success(models[0].id, 0.05)
    router.stats.failure(models[1].id)
    router.stats._refreshed = float("-inf")
    router.stats.maybe_refresh()
    for prompt, model in ((PROOF, "premium"), (CODING, "eco"), ("hi", "auto")):
        features = router.features(request(prompt, model=model, stream=model == "eco"))
        scores = strategy.components(features, models, router.stats)
        expected = sorted(models, key=lambda m: (-scores[m.id]["score"], m.id))
        assert [m.id for m in strategy.rank(features, models, router.stats)] == [m.id for m in expected]


def test_shared_statistics_let_a_rate_limit_expire_on_every_replica():
    """Replicas exchanging statistics must not echo each other's headroom: a 429 seen by one clears."""
    from clawrouter.stats import LiveStats

    now = [0.0]
    a, b = LiveStats(clock=lambda: now[0], refresh=0), LiveStats(clock=lambda: now[0], refresh=0)
    a.rate_limited("m", 5.0)
    b.success("m", 0.2)
    for _ in range(3):
        a.absorb([b.export()])
        b.absorb([a.export()])
        a.maybe_refresh()
        b.maybe_refresh()
    assert a.snapshot("m").headroom == 0.0 and b.snapshot("m").headroom == 0.0
    now[0] = 6.0  # the rate limit is over, and the provider reports its full quota again
    a.ratelimit("m", 100, 100)
    for _ in range(3):
        a.absorb([b.export()])
        b.absorb([a.export()])
        a.maybe_refresh()
        b.maybe_refresh()
    assert a.snapshot("m").headroom == 1.0 and b.snapshot("m").headroom == 1.0
