"""One test per hook (a meta-test below enforces it) and the docs meta-test."""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import msgspec
import pytest
from helpers import chat, sse_events
from plugins.fake_rail import FakeRail, FakeRailPlugin
from plugins.recorder import Recorder

from clawrouter import hookimpl, hookspecs
from clawrouter.catalogue import CatalogueError
from clawrouter.ledger import MemoryLedger
from clawrouter.routing import DefaultStrategy
from clawrouter.state import MemoryState
from plugins import echo_provider

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if inspect.isfunction(obj) and hasattr(obj, "clawrouter_spec")
)


def test_every_hook_has_a_test():
    missing = [h for h in HOOKS if f"test_hook_{h}" not in vars(sys.modules[__name__])]
    assert HOOKS and not missing, f"hooks without a test_hook_<name>: {missing}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_signature_is_documented(hook):
    docs = (ROOT / "docs" / "plugin_hooks.md").read_text()
    signature = f"{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    assert signature in docs, f"docs/plugin_hooks.md lacks the signature {signature}"


async def test_hook_register_providers(clawrouter_router, clawrouter_client):
    router = clawrouter_router({"providers": {"echoer": {"kind": "echo"}}}, plugins=[echo_provider])
    assert list(router.providers) == ["echoer"]
    client = await clawrouter_client(router)
    response = await client.post("/v1/chat/completions", json=chat("ping pong", model="echoer/model"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "ping pong"
    assert response.headers["x-clawrouter-provider"] == "echoer"


def test_hook_register_providers_unknown_kind_names_the_key(clawrouter_router):
    with pytest.raises(Exception, match=r"providers\.mystery.*kind 'nope'"):
        clawrouter_router({"providers": {"mystery": {"kind": "nope"}}})


def test_hook_register_models(clawrouter_router):
    class Extra:
        __name__ = "extra-models"

        @hookimpl
        def register_models(self, config):
            return [
                {
                    "id": "sim-extra",
                    "provider": "simulated",
                    "input_price": 0.01,
                    "output_price": 0.02,
                    "aliases": ["extra"],
                }
            ]

    router = clawrouter_router(plugins=[Extra()])
    assert router.catalogue.get("extra").id == "sim-extra"
    assert "sim-extra" in json.loads(router.models_body)["data"][3]["id"] or any(
        m["id"] == "sim-extra" for m in json.loads(router.models_body)["data"]
    )


def test_hook_register_models_invalid_entry_names_model_and_field(clawrouter_router):
    class Bad:
        __name__ = "bad-models"

        @hookimpl
        def register_models(self, config):
            return [{"id": "broken", "provider": "simulated", "input_price": "cheap", "output_price": 1}]

    with pytest.raises(CatalogueError, match=r"broken.*input_price"):
        clawrouter_router(plugins=[Bad()])


async def test_hook_register_routing_strategies(clawrouter_router, clawrouter_client):
    class Priciest:
        name = "priciest"

        def cache_key(self, features):
            return None

        def rank(self, features, candidates, stats):
            return sorted(candidates, key=lambda m: -m.output_price)

    class Plugin:
        __name__ = "priciest-plugin"

        @hookimpl
        def register_routing_strategies(self, config):
            return [Priciest()]

    router = clawrouter_router({"routing": {"strategy": "priciest"}}, plugins=[Plugin()])
    client = await clawrouter_client(router)
    response = await client.post("/v1/chat/completions", json=chat(model="eco"))
    assert response.headers["x-clawrouter-model"] == "simulated/premium"
    with pytest.raises(Exception, match=r"routing\.strategy.*'missing'"):
        clawrouter_router({"routing": {"strategy": "missing"}})
    assert isinstance(DefaultStrategy(), object)


async def test_hook_register_payment_rails(clawrouter_router, clawrouter_client):
    rail = FakeRail()
    router = clawrouter_router(plugins=[FakeRailPlugin(rail)])
    assert router.rails == {("exact", "test:1"): rail}
    client = await clawrouter_client(router)
    response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 402
    assert response.json()["accepts"][0]["network"] == "test:1"


async def test_hook_register_state_backends(clawrouter_router):
    class Counting(MemoryState):
        acquired = 0

        async def acquire(self, key, ttl):
            Counting.acquired += 1
            return await super().acquire(key, ttl)

    class Factory:
        name = "counting"

        def create(self, settings):
            assert settings["backend"] == "counting"
            return Counting()

    class Plugin:
        __name__ = "counting-state"

        @hookimpl
        def register_state_backends(self, config):
            return [Factory()]

    router = clawrouter_router({"state": {"backend": "counting"}}, plugins=[Plugin()])
    assert isinstance(router.state, Counting)
    assert await router.state.acquire("k", 1) and not await router.state.acquire("k", 1)
    with pytest.raises(Exception, match=r"state\.backend.*'nowhere'"):
        clawrouter_router({"state": {"backend": "nowhere"}})


async def test_hook_register_ledgers(clawrouter_router, tmp_path):
    made = []

    class Factory:
        name = "mine"

        def create(self, settings):
            made.append(settings)
            return MemoryLedger()

    class Plugin:
        __name__ = "my-ledger"

        @hookimpl
        def register_ledgers(self, config):
            return [Factory()]

    router = clawrouter_router({"ledger": {"backend": "mine", "path": str(tmp_path / "x")}}, plugins=[Plugin()])
    assert made == []  # created on first use only
    assert isinstance(router.ledger, MemoryLedger)
    assert made[0]["path"] == str(tmp_path / "x")


async def test_hook_actor_from_request(clawrouter_router, clawrouter_client):
    recorder = Recorder()
    router = clawrouter_router(plugins=[recorder])
    client = await clawrouter_client(router)
    ok = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer let-me-in"})
    assert ok.status_code == 200
    banned = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer go-away"})
    assert banned.status_code == 401
    assert banned.json()["error"] == {
        "message": "this robot is banned",
        "type": "authentication_error",
        "code": "banned",
    }
    await router.events.stop()
    actors = [e.data["actor"] for e in recorder.events]
    assert actors == ["robot:1", "anonymous"]
    assert [e.data["status"] for e in recorder.events] == [200, 401]


async def test_hook_startup(clawrouter_router):
    recorder = Recorder()
    router = clawrouter_router(plugins=[recorder])
    async with router.lifespan():
        assert recorder.calls == ["startup"]
    assert recorder.calls == ["startup", "shutdown"]


async def test_hook_shutdown(clawrouter_router):
    recorder = Recorder()
    router = clawrouter_router(plugins=[recorder])
    await router.start()
    await router.start()  # idempotent
    await router.stop()
    await router.stop()
    assert recorder.calls == ["startup", "shutdown"]


async def test_hook_handle_event(clawrouter_router, clawrouter_client):
    recorder = Recorder()
    router = clawrouter_router(plugins=[recorder])
    client = await clawrouter_client(router)
    await client.post("/v1/chat/completions", json=chat(model="eco"))
    streamed = await client.post("/v1/chat/completions", json=chat(model="eco", stream=True))
    assert sse_events(streamed.text)[-1] == "[DONE]"
    await client.post("/v1/chat/completions", json=chat(model="nope"))
    await router.events.stop()
    kinds = [(e.type, e.data["model"]) for e in recorder.events]
    assert kinds == [
        ("request.completed", "simulated/eco"),
        ("request.completed", "simulated/eco"),
        ("request.failed", None),
    ]
    assert recorder.events[0].data["prompt_tokens"] > 0
    assert msgspec.json.encode(recorder.events[0])


def test_no_event_delivery_without_implementations(clawrouter_router):
    router = clawrouter_router()
    assert router.events.enabled is False


def test_hookspecs_have_reference_docstrings():
    for hook in HOOKS:
        spec = getattr(hookspecs, hook)
        doc = spec.__doc__ or ""
        assert ":returns:" in doc or ":param" in doc, hook
        if inspect.signature(spec).parameters:
            assert ":param" in doc, hook
        assert "versionadded" in doc, hook
        assert re.search(r"\S", doc.split(":param")[0].split(":returns:")[0]), hook


SIGNER_PLUGIN = """
from clawrouter import hookimpl


class Signer:
    scheme = "exact"
    payer = "agent-on-fakechain"

    def supports(self, requirements):
        return requirements.network == "fake:1"

    def sign(self, requirements, resource, version):
        raise NotImplementedError


@hookimpl
def register_payment_signers():
    return [Signer()]
"""

BROKEN_SIGNER_PLUGIN = """
from clawrouter import hookimpl


@hookimpl
def register_payment_signers():
    raise RuntimeError("no key for this chain")
"""


def test_hook_register_payment_signers(tmp_path, monkeypatch, caplog):
    from test_plugin_loading import install

    from clawrouter.client import EvmExactSigner, Payer
    from clawrouter.keys import RouterKey

    monkeypatch.syspath_prepend(str(tmp_path))
    install(tmp_path, "clawrouter-fakechain", "fakechain", "fakechain_plugin", SIGNER_PLUGIN)
    install(tmp_path, "clawrouter-nokey", "nokey", "nokey_plugin", BROKEN_SIGNER_PLUGIN)
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "fakechain,nokey")
    with caplog.at_level("WARNING", logger="clawrouter.client"):
        payer = Payer(RouterKey.generate())  # no signers=: the wallet's, then the installed ones
    assert [type(s).__name__ for s in payer.signers] == ["EvmExactSigner", "Signer"]
    assert "nokey offers no payment signer: RuntimeError: no key for this chain" in caplog.text
    assert [s.payer for s in Payer(None).signers] == ["agent-on-fakechain"]  # a plugin's signer alone will do
    explicit = Payer(RouterKey.generate(), signers=[])  # signers= given: nothing is looked up
    assert [type(s) for s in explicit.signers] == [EvmExactSigner]
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "")
    with pytest.raises(ValueError, match="needs a wallet or at least one signer"):
        Payer(None)


DEMO_PLUGIN = """
from clawrouter import hookimpl


class Network:
    name = "fakechain"
    description = "a chain this machine lacks"

    def start(self, funds):
        raise RuntimeError("fakechain needs: pip install fakechain-node")


@hookimpl
def register_demo_networks():
    return [Network()]
"""


def test_hook_register_demo_networks(tmp_path, monkeypatch, capsys):
    from test_plugin_loading import install

    from clawrouter.demo import demo_networks, run_demo

    monkeypatch.syspath_prepend(str(tmp_path))
    install(tmp_path, "clawrouter-fakedemo", "fakedemo", "fakedemo_plugin", DEMO_PLUGIN)
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "fakedemo")
    assert sorted(demo_networks()) == ["base", "fakechain"]
    assert run_demo(network="fakechain") == 2
    assert "fakechain needs: pip install fakechain-node" in capsys.readouterr().out
    assert run_demo(network="nowhere") == 2
    assert "no demo network 'nowhere'; installed: base, fakechain" in capsys.readouterr().out


def test_the_serve_fixture_runs_the_real_command(clawrouter_serve, tmp_path):
    import httpx

    config = tmp_path / "clawrouter.toml"
    config.write_text('[server]\nmax_body_bytes = 65536\n')
    served = clawrouter_serve(config, {"CLAWROUTER_ROUTING__DEFAULT_PROFILE": "eco"})
    assert httpx.get(served.url + "/-/health", timeout=5).json()["status"] == "ok"
    served.stop()
    assert served.proc.returncode is not None and not served.log.exists()  # its own log file, removed
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nport = 'eighty'\n")
    with pytest.raises(RuntimeError, match=r"did not start: .*server\.port"):
        clawrouter_serve(broken)
