"""The HTTP endpoint at --metrics-address: /metrics, /healthz and /readyz."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, or the reason it is not."""


class _HTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6  # "[::]" also takes IPv4 where the host allows it (net.ipv6.bindv6only=0)


class HealthServer:
    def __init__(self, address: str, registry: CollectorRegistry, ready: ReadinessCheck) -> None:
        host, _, port = address.rpartition(":")
        registry_ = registry
        ready_ = ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    reason = ready_()
                    if reason is None:
                        self._send(200, b"ready\n")
                    else:
                        self._send(503, f"not ready: {reason}\n".encode())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        bind = host.strip("[]") or "0.0.0.0"
        server = _HTTPServerV6 if ":" in bind else ThreadingHTTPServer
        self._httpd = server((bind, int(port)), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on port %d", self.port)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
