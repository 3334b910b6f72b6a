"""HTTP/1.1 for the stub: a hand-written incremental parser on an ``asyncio.Protocol``.

No task or future per request; keep-alive; pipelining; Content-Length or chunked request bodies;
``Expect: 100-continue``. Each parsed request goes to the server's ``_route``.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import sys
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.stub.server import StubServer

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}

_MAX_BODY = 16 * 1024 * 1024
_MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """A request the stub refuses: answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type_: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_


def error_body(message: str, type_: str, code: Any, param: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def abort_with_rst(transport: asyncio.BaseTransport) -> None:
    """Close so that the peer gets a TCP RST (SO_LINGER 0), not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: a hand-written incremental parser, keep-alive, pipelining.

    Arrival is stamped in ``data_received`` and the request is handled on the next loop turn, so a
    burst of requests arriving together all get their own arrival time as t0 even though they are
    handled one after the other.
    """

    def __init__(self, server: "StubServer"):
        self.srv = server
        self.loop = server._loop
        self.tr: asyncio.Transport | None = None
        self.buf = bytearray()
        self.t_data = 0.0       # loop time of the last data_received
        self.fresh = False      # data arrived since the last request was taken
        self.busy = False       # a response is in progress
        self.scheduled = False
        self.eof = False
        self.continue_sent = False
        self.task: Any = None   # the pump or timer of the response in progress
        self.finish_cb: Any = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.tr = transport
        self.srv._conns.add(self)
        self.srv.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        self.t_data = self.loop.time()
        self.fresh = True
        self.buf += data
        if not self.busy and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._process)

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._process)
        return True  # half-close: still answer what was asked

    def connection_lost(self, exc) -> None:
        self.srv._conns.discard(self)
        self.abort_response("client_gone")

    # responses in progress
    def abort_response(self, result: str) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        cb, self.finish_cb = self.finish_cb, None
        if cb is not None:
            cb(result)

    def start_deferred(self, task, finish_cb) -> None:
        self.task = task
        self.finish_cb = finish_cb

    def finish(self, keep: bool) -> None:
        """The response in progress is complete (called by its pump/timer)."""
        self.task = None
        self.finish_cb = None
        self.busy = False
        if not keep:
            if not self.tr.is_closing():
                self.tr.close()
            return
        self._process()

    # request parsing
    def _process(self) -> None:
        self.scheduled = False
        tr = self.tr
        srv = self.srv
        while not self.busy and not tr.is_closing():
            try:
                req = self._parse()
            except HttpError as e:
                srv._send_json(tr, e.status, error_body(e.message, e.type, e.status), False)
                tr.close()
                return
            if req is None:
                if self.eof and not self.buf:
                    tr.close()
                elif self.eof:  # the peer stopped sending mid-request
                    tr.close()
                return
            method, target, headers, body, keep, http11 = req
            t0 = self.t_data if self.fresh else self.loop.time()
            self.fresh = False
            self.continue_sent = False
            srv.stats.requests += 1
            self.busy = True
            try:
                done = srv._route(self, method, target.split("?", 1)[0], headers, body, t0, keep, http11)
            except HttpError as e:
                srv._send_json(tr, e.status, error_body(e.message, e.type, e.status), keep)
                done = keep
            except Exception:  # a bug here must not kill the server
                traceback.print_exc(file=sys.stderr)
                srv._send_json(tr, 500, error_body("stub: internal bug", "InternalServerError", 500), False)
                done = False
            if done is None:  # deferred: finish() continues with the next request
                return
            self.busy = False
            if not done:
                if not tr.is_closing():
                    tr.close()
                return

    def _parse(self):
        buf = self.buf
        while buf[:2] == b"\r\n":  # stray CRLF between requests
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise HttpError(431, "request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            raise HttpError(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        http11 = version.strip() == "HTTP/1.1"
        keep = http11 and "close" not in headers.get("connection", "").lower()
        pos = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            total = 0
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return self._need_more(headers)
                try:
                    size = int(bytes(buf[pos:nl]).split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise HttpError(400, "bad chunk size")
                if size == 0:
                    tend = buf.find(b"\r\n\r\n", nl) if buf[nl + 2:nl + 4] != b"\r\n" else nl
                    if buf[nl + 2:nl + 4] == b"\r\n":
                        pos = nl + 4
                    elif tend < 0:
                        return self._need_more(headers)
                    else:
                        pos = tend + 4
                    break
                total += size
                if total > _MAX_BODY:
                    raise HttpError(413, "body too large")
                if len(buf) < nl + 2 + size + 2:
                    return self._need_more(headers)
                parts.append(bytes(buf[nl + 2:nl + 2 + size]))
                pos = nl + 2 + size + 2
            body = b"".join(parts)
        else:
            try:
                clen = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise HttpError(400, "bad content-length")
            if clen > _MAX_BODY:
                raise HttpError(413, "body too large")
            if len(buf) < pos + clen:
                return self._need_more(headers)
            body = bytes(buf[pos:pos + clen])
            pos += clen
        del buf[:pos]
        return method.upper(), target, headers, body, keep, http11

    def _need_more(self, headers):
        if not self.continue_sent and headers.get("expect", "").lower() == "100-continue":
            self.continue_sent = True
            self.tr.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None
