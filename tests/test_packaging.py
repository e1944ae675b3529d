"""Importing clawrouter loads no optional dependency and no plugin."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = [
    "fastapi",
    "openai",
    "web3",
    "eth_account",
    "solana",
    "solders",
    "opentelemetry",
    "redis",
    "psycopg",
    "asyncpg",
    "uvicorn",
    "aiohttp",
    "uvloop",
]


def test_import_is_light():
    code = (
        "import sys, clawrouter\n"
        f"print([m for m in {OPTIONAL!r} if m in sys.modules])\n"
        "print('clawrouter.default_providers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded, plugins = out.stdout.splitlines()
    assert loaded == "[]"
    assert plugins == "False"


def test_public_api():
    import clawrouter

    assert callable(clawrouter.hookimpl)
    from clawrouter.stages import AuthMiddleware, ExecuteApp, RouteMiddleware, SettleMiddleware, VerifyMiddleware

    assert all(callable(c) for c in (AuthMiddleware, VerifyMiddleware, RouteMiddleware, SettleMiddleware, ExecuteApp))
