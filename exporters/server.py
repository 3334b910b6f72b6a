"""A small HTTP server for /metrics and /healthz (ThreadingHTTPServer, no framework)."""

from __future__ import annotations

import errno
import json
import logging
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .app import Exporter
from .collectors import CONTENT_TYPE

log = logging.getLogger("exporters")

_INDEX = (b"<html><head><title>llm-gpu-exporter</title></head><body><h1>llm-gpu-exporter</h1>"
          b"<p><a href='/metrics'>/metrics</a> <a href='/healthz'>/healthz</a></p></body></html>")


# A scraper that times out, or a client that closes mid-answer: normal, not an exporter error.
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class PortInUseError(OSError):
    """The listen address is taken."""


def _client_gone(client_address: object, what: str, exc: BaseException) -> None:
    """One short line for a client that went away; no traceback (nothing is wrong here)."""
    try:
        host, port = client_address[:2]  # type: ignore[index]
        who = f"{host}:{port}"
    except (TypeError, ValueError):
        who = str(client_address)
    log.info("client %s went away %s (%s)", who, what, type(exc).__name__)


class _Handler(BaseHTTPRequestHandler):
    server: "ExporterHTTPServer"
    protocol_version = "HTTP/1.1"      # keep-alive, as Prometheus scrapes
    disable_nagle_algorithm = True      # headers and body go out at once (no 40 ms ACK stall)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            answer = self._answer(path)
        except Exception:  # noqa: BLE001 - answer 500, keep serving
            log.exception("error answering %s", path)
            answer = (500, "text/plain; charset=utf-8", b"internal error, see the exporter log\n")
        try:
            self._send(*answer)
        except CLIENT_GONE as exc:
            self.close_connection = True
            _client_gone(self.client_address, f"before its {path} answer was sent", exc)

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.server.exporter.metrics()
        if path == "/healthz":
            return 200, "application/json", json.dumps(self.server.exporter.health()).encode()
        if path == "/":
            return 200, "text/html; charset=utf-8", _INDEX
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics\n"

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

    def handle_error(self, request: object, client_address: object) -> None:
        """An error outside do_GET (reading a request): a client gone is one short line, anything
        else is logged with its traceback (socketserver would print it to stderr)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            _client_gone(client_address, "while its request was read", exc)
            return
        log.error("error handling a request from %s", client_address, exc_info=True)
