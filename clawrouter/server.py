"""Run a router with uvicorn in a background thread on 127.0.0.1 (demo, tests, benchmarks)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from .types import ASGIApp

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """``with BackgroundServer(app) as server: server.url`` — bound to 127.0.0.1 on a free port."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> None:
        import uvicorn

        self._config = uvicorn.Config(
            app, host=host, port=port, lifespan="on", access_log=False, log_level="warning", server_header=False
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._server.run, name="clawrouter-server", daemon=True)
        self._timeout = timeout
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(self._timeout)
