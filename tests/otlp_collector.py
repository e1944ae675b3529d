"""A minimal OTLP/HTTP collector for tests: ``POST /v1/traces`` and ``POST /v1/metrics``
with protobuf bodies (gzip or deflate accepted), on 127.0.0.1 and a free port.

``with OtlpCollector() as collector:`` serves it in a thread; ``collector.url`` is the base
URL to give as ``otlp_endpoint``; ``collector.traces`` and ``collector.metrics`` hold the
decoded ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` messages received,
and ``collector.headers`` the request headers. Each request is answered 200 with an empty
response message.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["OtlpCollector"]


class OtlpCollector:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                if self.path == "/v1/traces":
                    message: Any = ExportTraceServiceRequest()
                    reply = ExportTraceServiceResponse().SerializeToString()
                    store: list[Any] = collector.traces
                elif self.path == "/v1/metrics":
                    message = ExportMetricsServiceRequest()
                    reply = ExportMetricsServiceResponse().SerializeToString()
                    store = collector.metrics
                else:
                    collector.errors.append(f"unexpected path {self.path}")
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                try:
                    message.ParseFromString(raw)
                except Exception as exc:  # a body that is not the message: report it to the test
                    collector.errors.append(f"{self.path}: {exc}")
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with collector._lock:
                    store.append(message)
                    collector.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-collector", daemon=True)

    def __enter__(self) -> OtlpCollector:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 3.0) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return True
            time.sleep(0.02)
        with self._lock:
            return condition()
