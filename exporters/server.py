"""A small HTTP server for /metrics and /healthz (ThreadingHTTPServer, no framework)."""

from __future__ import annotations

import errno
import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .app import Exporter
from .collectors import CONTENT_TYPE

log = logging.getLogger("exporters")

_INDEX = (b"<html><head><title>llm-gpu-exporter</title></head><body><h1>llm-gpu-exporter</h1>"
          b"<p><a href='/metrics'>/metrics</a> <a href='/healthz'>/healthz</a></p></body></html>")


class PortInUseError(OSError):
    """The listen address is taken."""


class _Handler(BaseHTTPRequestHandler):
    server: "ExporterHTTPServer"
    protocol_version = "HTTP/1.1"      # keep-alive, as Prometheus scrapes
    disable_nagle_algorithm = True      # headers and body go out at once (no 40 ms ACK stall)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE, self.server.exporter.metrics())
            elif path == "/healthz":
                body = json.dumps(self.server.exporter.health()).encode()
                self._send(200, "application/json", body)
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", _INDEX)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
        except Exception:  # noqa: BLE001 - answer 500, keep serving
            log.exception("error answering %s", path)
            self._send(500, "text/plain; charset=utf-8", b"internal error, see the exporter log\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


class ExporterHTTPServer(ThreadingHTTPServer):
    """Serves one ``Exporter``; each request on its own daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, exporter: Exporter) -> None:
        self.exporter = exporter
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(exc.errno, f"{host}:{port} is already in use (another "
                                     "exporter?); pick a free one with --port") from exc
            raise
