"""``clawrouter serve`` in a subprocess for tests, paid on a local chain.

``Serve(paid_config(tmp_path, chain, pay_to), router_key)`` starts it on
127.0.0.1 and a free port, with the router's key in ``CLAWROUTER_KEY``; it is
stopped by its pid (``stop()``, or ``kill()`` for a SIGKILL).
"""

from __future__ import annotations

import os
from pathlib import Path

from clawrouter.keys import RouterKey
from clawrouter.pytest_plugin import ServedRouter, free_port

__all__ = ["Serve", "free_port", "paid_config"]


def paid_config(
    tmp_path: Path, chain, pay_to: str, settlement: str = "before", *, payments: str = "", rest: str = ""
) -> Path:
    """A config paying on ``chain`` (anvil, eip155:84532). ``payments``: more ``[payments]`` lines;
    ``rest``: more tables, replacing the SQLite ledger when it has a ``[ledger]``."""
    ledger = "" if "[ledger]" in rest else f'[ledger]\npath = "{tmp_path / "ledger.sqlite3"}"\n'
    path = tmp_path / "clawrouter.toml"
    path.write_text(
        f"""
[payments]
pay_to = "{pay_to}"
networks = ["eip155:84532"]
settlement = "{settlement}"
settle_retry_seconds = 0.5
{payments}

[payments.evm."eip155:84532"]
rpc_url = "{chain.rpc_url}"

{ledger}
{rest}
"""
    )
    return path


class Serve(ServedRouter):
    """``clawrouter serve`` with ``config`` and the router's key, in a subprocess, stopped by its pid."""

    def __init__(self, config: Path, key: RouterKey) -> None:
        super().__init__(config, {**os.environ, "CLAWROUTER_KEY": key.private_key.hex()})
