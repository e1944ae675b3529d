"""Installing the core without clawrouter-solana leaves no Solana import anywhere.

Solana is a separate distribution (``plugins/solana``, entry point ``solana`` in the
group ``clawrouter``). The core must not import ``solana``, ``solders`` or
``clawrouter_solana`` — not at module level, not inside a function — and a router,
its 402 challenge, the agent-side client and the demo's network list must work with
the plugin absent (``CLAWROUTER_DISABLE_PLUGINS=solana`` stands for "not installed").
With the plugin installed and enabled, the router lists it and its rail.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from chains import missing

from clawrouter import Router
from clawrouter.config import load_config
from clawrouter.keys import RouterKey

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clawrouter"
SOLANA = frozenset({"solana", "solders", "clawrouter_solana"})
IMPORTERS = frozenset({"import_module", "__import__", "find_spec"})


def _solana_imports(path: Path) -> list[tuple[int, str]]:
    """Every import of a Solana module in ``path`` (line, module): statements at any depth,
    and ``importlib.import_module`` / ``__import__`` / ``find_spec`` of a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in IMPORTERS and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, name) for name in names if name.split(".")[0] in SOLANA]
    return sorted(found)


def test_no_solana_import_in_the_core_source() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30  # the package is where we think it is
    offending = [f"{path.relative_to(ROOT)}:{line}: {name}" for path in sources for line, name in _solana_imports(path)]
    assert offending == []


def test_the_detector_sees_nested_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import json, solders.keypair
            from .solana import nothing  # relative: a module of the package itself
            def pay():
                class Inner:
                    def run(self):
                        from solana.rpc.api import Client
                        import clawrouter_solana as cs
                        return importlib.import_module("solders.pubkey"), __import__("solana")
            """
        )
    )
    assert _solana_imports(sample) == [
        (2, "solders.keypair"),
        (7, "solana.rpc.api"),
        (8, "clawrouter_solana"),
        (9, "solana"),
        (9, "solders.pubkey"),
    ]


# Run in a fresh interpreter: the pytest process may already hold clawrouter_solana.
WITHOUT_PLUGIN = """
import asyncio, base64, json, sys

import httpx

import clawrouter
import clawrouter.client
import clawrouter.demo
from clawrouter.config import load_config
from clawrouter.wallet import Wallet

OPERATOR = "0x000000000000000000000000000000000000dEaD"
config = load_config(
    data={
        "ledger": {"backend": "memory"},
        "payments": {
            "pay_to": OPERATOR,
            "networks": ["eip155:84532"],
            "evm": {"eip155:84532": {"rpc_url": "http://127.0.0.1:9"}},  # nothing listens; nothing connects
        },
    },
    env={},
)
router = clawrouter.Router(config)
body = {"model": "eco", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


async def main():
    transport = httpx.ASGITransport(app=router.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
            plugins = (await http.get("/-/plugins")).json()
            health = (await http.get("/-/health")).json()
            challenge = await http.post("/v1/chat/completions", json=body)
    finally:
        await router.stop()
    required = json.loads(base64.b64decode(challenge.headers["payment-required"]))
    return plugins, health, challenge.status_code, required


plugins, health, status, required = asyncio.run(main())
with clawrouter.client.Client(Wallet.generate()) as client:
    signers = [type(s).__name__ for s in client.payer.signers]
demos = sorted(clawrouter.demo.demo_networks())
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"solana", "solders", "clawrouter_solana"})
print(json.dumps({
    "plugins": [p["name"] for p in plugins["plugins"]],
    "errors": plugins["errors"],
    "payments": health["payments"],
    "status": status,
    "accepts": [(a["scheme"], a["network"], a["payTo"]) for a in required["accepts"]],
    "signers": signers,
    "demos": demos,
    "loaded": loaded,
}))
"""


def test_the_core_runs_without_the_plugin_and_imports_no_solana() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_")}
    env["CLAWROUTER_DISABLE_PLUGINS"] = "solana"
    env["CLAWROUTER_KEY"] = RouterKey.generate().private_key.hex()  # the embedded EVM facilitator's key
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", WITHOUT_PLUGIN],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "solana" not in report["plugins"] and report["errors"] == []
    assert report["payments"] == ["exact:eip155:84532"]
    assert report["status"] == 402
    assert report["accepts"] == [["exact", "eip155:84532", "0x000000000000000000000000000000000000dEaD"]]
    assert report["signers"] == ["EvmExactSigner"]
    assert "solana" not in report["demos"] and "base" in report["demos"]
    assert report["loaded"] == []


async def test_the_installed_plugin_is_listed_with_its_rail(monkeypatch) -> None:
    if importlib.util.find_spec("clawrouter_solana") is None:
        missing("clawrouter-solana is not installed (pip install -e plugins/solana)")
    from solders.keypair import Keypair

    monkeypatch.setenv("TEST_SOLANA_FEE_PAYER_KEY", str(Keypair()))  # read by the plugin, from os.environ
    config = load_config(
        data={
            "ledger": {"backend": "memory"},
            "plugins": {
                "solana": {
                    "pay_to": str(Keypair().pubkey()),
                    "networks": ["solana:localnet"],
                    "rpc_urls": {"solana:localnet": "http://127.0.0.1:9"},  # nothing listens; nothing connects
                    "key_env": "TEST_SOLANA_FEE_PAYER_KEY",
                }
            },
        },
        env={},
    )
    router = Router(config, env={"CLAWROUTER_KEY": RouterKey.generate().private_key.hex()})
    transport = httpx.ASGITransport(app=router.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
            plugins = (await http.get("/-/plugins")).json()
            health = (await http.get("/-/health")).json()
    finally:
        await router.stop()
    [solana] = [p for p in plugins["plugins"] if p["name"] == "solana"]
    assert solana["source"] == "entry_point" and solana["distribution"] == "clawrouter-solana"
    assert {"register_payment_rails", "register_payment_signers", "register_demo_networks"} <= set(solana["hooks"])
    assert solana["registered"]["payment_rails"] == ["exact:solana:localnet"]
    assert not [e for e in plugins["errors"] if e["name"] == "solana"]
    assert health["payments"] == ["exact:solana:localnet"]
