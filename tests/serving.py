"""``clawrouter serve`` in a subprocess for tests, paid on a local chain.

``Serve(paid_config(tmp_path, chain, pay_to), router_key)`` starts it on
127.0.0.1 and a free port, with the router's key in ``CLAWROUTER_KEY``; it is
stopped by its pid (``stop()``, or ``kill()`` for a SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clawrouter.keys import RouterKey

__all__ = ["Serve", "free_port", "paid_config"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def paid_config(tmp_path: Path, chain, pay_to: str, settlement: str = "before") -> Path:
    path = tmp_path / "clawrouter.toml"
    path.write_text(
        f"""
[payments]
pay_to = "{pay_to}"
networks = ["eip155:84532"]
settlement = "{settlement}"
settle_retry_seconds = 0.5

[payments.evm."eip155:84532"]
rpc_url = "{chain.rpc_url}"

[ledger]
path = "{tmp_path / "ledger.sqlite3"}"
"""
    )
    return path


class Serve:
    """``clawrouter serve`` in a subprocess on 127.0.0.1, stopped by its pid."""

    def __init__(self, config: Path, key: RouterKey) -> None:
        self.port = free_port()
        env = {**os.environ, "CLAWROUTER_KEY": key.private_key.hex()}
        command = [sys.executable, "-m", "clawrouter.cli", "serve", "--config", str(config), "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/-/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                _, err = self.proc.communicate(timeout=10)
                raise RuntimeError(f"clawrouter serve did not start: {err.decode()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
