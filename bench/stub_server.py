"""A stub OpenAI-compatible streaming server with known, injected timings (standard library only).

It streams chat completions the way vLLM's OpenAI server does (``data: <json>`` SSE events over
HTTP/1.1 ``Transfer-Encoding: chunked``), with a time to first token and an inter-token gap that
are set, not measured, so a load generator's reported TTFT/ITL can be compared with the truth and
its speed (SSE chunks per client CPU-second) measured. Every failure mode the suite must classify
can be injected per request.

CLI::

    python -m bench.stub_server --host 127.0.0.1 --port 0 --ttft-ms 50 --itl-ms 20 --tokens 128 \
        [--reasoning-tokens 0] [--processes 1] [--api-key KEY] [--model stub-model] \
        [--fault NAME --fault-rate 1.0] [--stall-s 30] [--fault-after 3]

prints exactly one line ``LISTENING <host>:<port>`` (flushed) once ready and serves until
SIGTERM/SIGINT, then exits 0.

Python API (tests, benchmarks)::

    h = start_stub_in_thread(ttft_ms=50, itl_ms=20, tokens=128)   # h.url, h.port, h.stats, h.stop()
    proc, base_url = run_stub_process(ttft_ms=50, processes=2)     # CLI in a subprocess
    stop_stub_process(proc)

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (stream or not), ``GET /metrics``
(vLLM-like Prometheus text), ``GET /health``, ``GET /stub/stats`` (the counters below as JSON, for
the process that answers). Anything else: 404 JSON error.

Per-request extra body fields: ``stub_ttft_ms``, ``stub_itl_ms``, ``stub_fault`` (one of
``FAULTS``), ``stub_stall_s``, ``stub_fault_after`` (tokens sent before a mid-stream fault),
``stub_reasoning_tokens``.

Timing model: t0 is when the bytes completing the request arrived (stamped in
``data_received``; the request is handled on the next loop turn, so in a burst of simultaneous
requests each keeps its own arrival time). The role-only chunk goes out with the response headers
as soon as the request is handled; token chunk i (0-based) is written at the absolute deadline
t0 + ttft + i * itl (``loop.call_at``), so lateness never accumulates. The event loop wakes up to
~1 ms late (epoll's millisecond timeout); the achieved lateness is kept in
``stats['lateness_ms']`` / ``stats['first_token_lateness_ms']`` so a benchmark knows the stub's own
error. A burst of requests delays role chunks (each request costs tens of microseconds to handle),
not token deadlines, as long as the burst is handled within the TTFT.

Server: ``loop.create_server`` with a hand-written HTTP/1.1 ``asyncio.Protocol`` (no task or
future per request; keep-alive; pipelining; Content-Length or chunked request bodies), chunked
responses, one write per due instant. With ``--processes N`` the parent binds the port (without
listening) and forks N workers that each listen on it with SO_REUSEPORT; counters, /metrics and
/stub/stats are then per worker. On 2 shared cores the stub costs roughly 30-40 us of CPU per SSE
chunk (mostly the loopback send), i.e. about half a core for 256 streams x 50 chunks/s.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import ctypes
import hmac
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "FAULTS",
    "StubConfig",
    "StubServer",
    "StubHandle",
    "start_stub_in_thread",
    "run_stub_process",
    "stop_stub_process",
    "main",
]

FAULTS = (
    "http_500",
    "http_429",
    "stream_error",
    "malformed",
    "truncate",
    "reset",
    "stall",
    "no_usage",
    "multi_token_chunks",
    "split_writes",
    "json_answer",      # stream=true answered as one application/json chat.completion (no SSE)
    "empty_stream",     # a normal SSE stream with no token: role chunk, finish chunk, usage 0, [DONE]
    "http_503_html",    # HTTP 503 with an HTML body, as a proxy or load balancer sends it
)

# vLLM's bucket edges for time_to_first_token_seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}

_VOCAB = [" " + w for w in (
    "the quick brown fox jumps over a lazy dog while seven tired engineers measure every "
    "token that streams from one small server under heavy load and count each chunk twice"
).split()]
_VOCAB_JSON = [json.dumps(w).encode() for w in _VOCAB]

_HTML_503 = (b"<html>\r\n<head><title>503 Service Unavailable</title></head>\r\n<body>\r\n"
             b"<center><h1>503 Service Unavailable</h1></center>\r\n"
             b"<p>The server is overloaded,\n   try again later.</p>\r\n"
             b"<hr><center>stub-proxy</center>\r\n</body>\r\n</html>\r\n")

_MAX_BODY = 16 * 1024 * 1024
_MAX_HEAD = 64 * 1024
_WRITE, _CLOSE = 0, 1


@dataclass
class StubConfig:
    host: str = "127.0.0.1"
    port: int = 0
    ttft_ms: float = 50.0
    itl_ms: float = 20.0
    tokens: int = 128
    reasoning_tokens: int = 0
    model: str = "stub-model"
    api_key: str | None = None
    processes: int = 1
    reasoning_field: str = "reasoning"   # vLLM >= 0.11 says "reasoning"; older "reasoning_content"
    fault: str | None = None             # server-wide default fault for requests naming none
    fault_rate: float = 1.0              # fraction of requests given --fault (evenly spread)
    stall_s: float = 30.0                # default stall length for the "stall" fault
    fault_after: int = 3                 # tokens sent before a mid-stream fault


class _Stats:
    """Counters kept by one server (one process). Read through ``snapshot()``."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0             # every HTTP request read, any route
        self.chat_requests = 0
        self.streams_started = 0
        self.streams_completed = 0    # whole planned script delivered (fault scripts included)
        self.nonstream_completed = 0
        self.client_disconnects = 0   # stream or wait cut short by the client going away
        self.faults_served = 0
        self.faults: dict[str, int] = {}
        self.status: dict[int, int] = {}
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.writes = 0
        self.events_sent = 0
        self.late_sum = 0.0
        self.late_max = 0.0
        self.late_over_1ms = 0
        self.late_over_5ms = 0
        self.first_late_sum = 0.0
        self.first_late_max = 0.0
        self.first_late_n = 0
        self.first_late_samples: list[float] = []   # seconds, in order (bounded)
        self.ttft_bucket_counts = [0] * len(TTFT_BUCKETS)
        self.ttft_count = 0
        self.ttft_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_count += 1
        self.ttft_sum += seconds
        i = bisect.bisect_left(TTFT_BUCKETS, seconds)
        if i < len(TTFT_BUCKETS):
            self.ttft_bucket_counts[i] += 1

    def fault(self, name: str) -> None:
        self.faults_served += 1
        self.faults[name] = self.faults.get(name, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        w = self.writes
        return {
            "pid": os.getpid(),
            "connections": self.connections,
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "nonstream_completed": self.nonstream_completed,
            "client_disconnects": self.client_disconnects,
            "faults_served": self.faults_served,
            "faults": dict(self.faults),
            "status": dict(self.status),
            "running": self.running,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "writes": w,
            "events_sent": self.events_sent,
            "lateness_ms": {
                "mean": (self.late_sum / w * 1e3) if w else 0.0,
                "max": self.late_max * 1e3,
                "over_1ms": self.late_over_1ms,
                "over_5ms": self.late_over_5ms,
            },
            "first_token_lateness_ms": {
                "n": self.first_late_n,
                "mean": (self.first_late_sum / self.first_late_n * 1e3) if self.first_late_n else 0.0,
                "max": self.first_late_max * 1e3,
            },
        }


def _abort_with_rst(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Pump:
    """Writes a lazily generated script of actions on time.

    The script yields ``(deadline, kind, payload, n_events, is_first_token)``; payloads are built only
    when due, so a burst of arriving requests costs little, and each write is one ``call_at``.
    """

    __slots__ = ("loop", "transport", "script", "pending", "on_done", "stats", "timer")

    def __init__(self, loop, transport, script, stats, on_done):
        self.loop = loop
        self.transport = transport
        self.script = script
        self.stats = stats
        self.pending = None
        self.timer = None
        self.on_done = on_done

    def step(self) -> None:
        self.timer = None
        loop = self.loop
        tr = self.transport
        st = self.stats
        act = self.pending
        nxt = self.script.__next__
        while True:
            if act is None:
                try:
                    act = nxt()
                except StopIteration:
                    self.pending = None
                    self._finish("done")
                    return
            deadline, kind, payload, nev, first = act
            now = loop.time()
            if deadline > now:
                self.pending = act
                self.timer = loop.call_at(deadline, self.step)
                return
            if tr.is_closing():
                self.pending = None
                self._finish("client_gone")
                return
            if kind == _WRITE:
                tr.write(payload)
                late = now - deadline
                st.writes += 1
                st.events_sent += nev
                st.late_sum += late
                if late > st.late_max:
                    st.late_max = late
                if late > 0.001:
                    st.late_over_1ms += 1
                    if late > 0.005:
                        st.late_over_5ms += 1
                if first:
                    st.first_late_n += 1
                    st.first_late_sum += late
                    if len(st.first_late_samples) < 1_000_000:
                        st.first_late_samples.append(late)
                    if late > st.first_late_max:
                        st.first_late_max = late
            else:
                tr.close()
            act = None

    def _finish(self, result: str) -> None:
        cb, self.on_done = self.on_done, None
        if cb is not None:
            cb(result)

    def cancel(self) -> None:
        """Stop writing; does not call on_done (the connection does the bookkeeping)."""
        self.on_done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
_LAST_TAILS = {f: b'},"logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n' % f.encode()
               for f in ("length", "stop")}
_DONE_EVENT = b"data: [DONE]\n\n"
_MALFORMED_EVENT = b"data: {not json\n\n"
_ENGINE_ERROR_EVENT = (b"data: " + json.dumps({"error": {
    "message": "stub: engine failed", "type": "InternalServerError", "code": 500}}).encode() + b"\n\n")
_CONTENT_DELTAS = [b'"content":' + w for w in _VOCAB_JSON]
_REASONING_DELTAS: dict[str, list[bytes]] = {}


def _reasoning_deltas(field: str) -> list[bytes]:
    d = _REASONING_DELTAS.get(field)
    if d is None:
        d = _REASONING_DELTAS[field] = [json.dumps(field).encode() + b":" + w for w in _VOCAB_JSON]
    return d


def _frame(ev: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(ev), ev)


_ENDING_FAULTS = ("stream_error", "truncate")   # mid-stream faults after which nothing follows


def _fault_events(fault: str, d: float):
    """The events a mid-stream fault injects at deadline d (None: close without [DONE])."""
    if fault == "stream_error":
        yield d, _ENGINE_ERROR_EVENT, False
        yield d, _DONE_EVENT, False
    elif fault == "truncate":
        yield d, None, False
    else:
        yield d, _MALFORMED_EVENT, False


def _plain_script(events, headers: bytes, chunked: bool):
    """Actions for a normal stream: events due at the same instant go out in one write (headers
    with the role chunk; last token, usage, [DONE] and the terminating chunk together)."""
    buf = [headers]
    first = False
    cur = None
    for d, ev, is_first in events:
        if ev is None:  # truncate: flush what is due, then close without the terminating chunk
            if len(buf) > 1:
                yield cur, _WRITE, b"".join(buf), len(buf) - 1, first
            yield d, _CLOSE, b"", 0, False
            return
        if cur is not None and d != cur:
            yield cur, _WRITE, b"".join(buf), len(buf) - 1, first
            buf = [b""]
            first = False
        cur = d
        buf.append(b"%x\r\n%b\r\n" % (len(ev), ev) if chunked else ev)
        first = first or is_first
    nev = len(buf) - 1
    if chunked:
        buf.append(b"0\r\n\r\n")
    yield cur, _WRITE, b"".join(buf), nev, first


def _split_script(events, headers: bytes, chunked: bool, t0: float, rng: random.Random):
    """split_writes: each event in 2-3 writes (separate HTTP chunks, 1.5 ms apart); now and then two
    events coalesced into one HTTP chunk (never the role chunk or the first token)."""
    frame = _frame if chunked else (lambda b: b)
    yield t0, _WRITE, headers, 0, False
    it = iter(events)
    ev_t = next(it, None)
    seen_first = False
    last_d = t0
    while ev_t is not None:
        d, ev, is_first = ev_t
        if ev is None:
            yield d, _CLOSE, b"", 0, False
            return
        nxt = next(it, None)
        if seen_first and not is_first and nxt is not None and nxt[1] is not None and rng.random() < 0.3:
            d2 = max(d, nxt[0])
            yield d2, _WRITE, frame(ev + nxt[1]), 2, False
            last_d = d2
            ev_t = next(it, None)
            continue
        seen_first = seen_first or is_first
        pieces = rng.choice((2, 3))
        cuts = sorted(rng.sample(range(1, len(ev)), pieces - 1))
        bounds = [0] + cuts + [len(ev)]
        for p in range(pieces):
            last_d = d + 0.0015 * p
            yield (last_d, _WRITE, frame(ev[bounds[p]:bounds[p + 1]]),
                   1 if p == pieces - 1 else 0, is_first and p == pieces - 1)
        ev_t = nxt
    if chunked:
        yield last_d + 0.001, _WRITE, b"0\r\n\r\n", 0, False


def _then_close(script):
    d = None
    for act in script:
        d = act[0]
        yield act
    yield d, _CLOSE, b"", 0, False


class _HttpError(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_


def _error_body(message: str, type_: str, code: Any, param: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _text_of_messages(messages: list) -> str:
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    parts.append(p["text"])
    return "".join(parts)


def _num(body: dict, key: str, default: float, lo: float = 0.0) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
        raise _HttpError(400, f"{key} must be a number >= {lo}")
    return float(v)


class _Conn(asyncio.Protocol):
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
            except _HttpError as e:
                srv._send_json(tr, e.status, _error_body(e.message, e.type, e.status), False)
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
            except _HttpError as e:
                srv._send_json(tr, e.status, _error_body(e.message, e.type, e.status), keep)
                done = keep
            except Exception:  # a bug here must not kill the server
                traceback.print_exc(file=sys.stderr)
                srv._send_json(tr, 500, _error_body("stub: internal bug", "InternalServerError", 500), False)
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
                raise _HttpError(431, "request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            raise _HttpError(400, "malformed request line")
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
                    raise _HttpError(400, "bad chunk size")
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
                    raise _HttpError(413, "body too large")
                if len(buf) < nl + 2 + size + 2:
                    return self._need_more(headers)
                parts.append(bytes(buf[nl + 2:nl + 2 + size]))
                pos = nl + 2 + size + 2
            body = b"".join(parts)
        else:
            try:
                clen = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise _HttpError(400, "bad content-length")
            if clen > _MAX_BODY:
                raise _HttpError(413, "body too large")
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


class StubServer:
    """One asyncio server (one event loop, one process)."""

    def __init__(self, config: StubConfig):
        if config.fault is not None and config.fault not in FAULTS:
            raise ValueError(f"unknown fault {config.fault!r}; choose from {', '.join(FAULTS)}")
        self.cfg = config
        self.stats = _Stats()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Conn] = set()
        self._stop_event: asyncio.Event | None = None
        self._seq = 0
        self._fault_acc = 0.0
        self.port: int | None = None
        self._model_json = json.dumps(config.model).encode()
        self._id_prefix = uuid.uuid4().hex[:12]

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        factory = lambda: _Conn(self)  # noqa: E731
        if sock is not None:
            self._server = await loop.create_server(factory, sock=sock, backlog=4096)
        else:
            self._server = await loop.create_server(factory, self.cfg.host, self.cfg.port,
                                                    backlog=4096, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def wait_stopped(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.abort_response("cancelled")
            if c.tr is not None:
                c.tr.abort()
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass

    # ---- responses ---------------------------------------------------------------------------
    def _send(self, transport, status: int, body: bytes, content_type: str, keep: bool,
              extra: str = "") -> None:
        self.stats.status[status] = self.stats.status.get(status, 0) + 1
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"server: stub\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\n{extra}"
                f"{'' if keep else 'connection: close' + chr(13) + chr(10)}\r\n")
        transport.write(head.encode("latin-1") + body)

    def _send_json(self, transport, status: int, obj: Any, keep: bool, extra: str = "") -> None:
        self._send(transport, status, json.dumps(obj).encode(), "application/json", keep, extra)

    def _check_auth(self, headers: dict[str, str]) -> None:
        key = self.cfg.api_key
        if key is None:
            return
        auth = headers.get("authorization", "")
        presented = auth[7:].strip() if auth[:7].lower() == "bearer " else auth.strip()
        if not hmac.compare_digest(presented.encode(), key.encode()):
            raise _HttpError(401, f"Incorrect API key provided: {presented}", "invalid_request_error")

    def _route(self, conn: _Conn, method, path, headers, body, t0, keep, http11) -> bool | None:
        """Answer one request. Returns keep-alive (True/False) when answered at once, None when the
        response continues later (the connection's ``finish`` is then called)."""
        transport = conn.tr
        if path == "/health":
            if method != "GET":
                raise _HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            self._send(transport, 200, b"", "application/json", keep)
            return keep
        if path == "/metrics":
            if method != "GET":
                raise _HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            self._send(transport, 200, self._metrics_text().encode(),
                       "text/plain; version=0.0.4; charset=utf-8", keep)
            return keep
        if path.startswith("/stub/first_token_lateness"):  # /N: samples N.. of this process
            tail = path.rsplit("/", 1)[1]
            start = int(tail) if tail.isdigit() else 0
            samples = self.stats.first_late_samples
            self._send_json(transport, 200, {"pid": os.getpid(), "n": len(samples),
                                             "samples_ms": [x * 1e3 for x in samples[start:]]},
                            keep)
            return keep
        if path == "/stub/stats":  # this process's counters as JSON (per process with --processes)
            self._send_json(transport, 200, dict(self.stats.snapshot(), pid=os.getpid()), keep)
            return keep
        if path in ("/v1/models", "/v1/chat/completions"):
            try:
                self._check_auth(headers)
            except _HttpError as e:
                self._send_json(transport, 401, {"error": {
                    "message": e.message, "type": "invalid_request_error", "param": None,
                    "code": "invalid_api_key"}}, keep)
                return keep
            if path == "/v1/models":
                if method != "GET":
                    raise _HttpError(405, "Method Not Allowed", "MethodNotAllowed")
                self._send_json(transport, 200, {"object": "list", "data": [{
                    "id": self.cfg.model, "object": "model", "created": int(time.time()),
                    "owned_by": "stub", "root": self.cfg.model, "parent": None,
                    "max_model_len": 4096}]}, keep)
                return keep
            if method != "POST":
                raise _HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            return self._chat(conn, body, t0, keep, http11)
        raise _HttpError(404, f"Not Found: {path}", "NotFoundError")

    def _metrics_text(self) -> str:
        st = self.stats
        lbl = 'engine="0",model_name=%s' % json.dumps(self.cfg.model)
        out = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lbl}}} {float(st.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lbl}}} 0.0",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lbl}}} {min(1.0, st.running / 256.0)}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{lbl}}} {float(st.prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lbl}}} {float(st.generation_tokens)}",
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ]
        cum = 0
        for edge, c in zip(TTFT_BUCKETS, st.ttft_bucket_counts):
            cum += c
            out.append(f'vllm:time_to_first_token_seconds_bucket{{{lbl},le="{edge}"}} {float(cum)}')
        out.append(f'vllm:time_to_first_token_seconds_bucket{{{lbl},le="+Inf"}} {float(st.ttft_count)}')
        out.append(f"vllm:time_to_first_token_seconds_count{{{lbl}}} {float(st.ttft_count)}")
        out.append(f"vllm:time_to_first_token_seconds_sum{{{lbl}}} {st.ttft_sum}")
        return "\n".join(out) + "\n"

    # ---- chat completions --------------------------------------------------------------------
    def _pick_fault(self, body: dict) -> str | None:
        f = body.get("stub_fault")
        if f is not None:
            if f not in FAULTS:
                raise _HttpError(400, f"unknown stub_fault {f!r}; choose from {', '.join(FAULTS)}")
            return f
        if self.cfg.fault is None:
            return None
        self._fault_acc += self.cfg.fault_rate
        if self._fault_acc >= 1.0 - 1e-9:
            self._fault_acc -= 1.0
            return self.cfg.fault
        return None

    def _chat(self, conn: _Conn, raw: bytes, t0: float, keep: bool, http11: bool) -> bool | None:
        transport = conn.tr
        cfg = self.cfg
        st = self.stats
        st.chat_requests += 1
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise _HttpError(400, f"request body is not valid JSON: {e}")
        if not isinstance(body, dict):
            raise _HttpError(400, "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != cfg.model:
            raise _HttpError(404, f"The model `{model}` does not exist.", "NotFoundError")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HttpError(400, "messages must be a non-empty list")
        fault = self._pick_fault(body)
        ttft = _num(body, "stub_ttft_ms", cfg.ttft_ms) / 1e3
        itl = _num(body, "stub_itl_ms", cfg.itl_ms) / 1e3
        stall_s = _num(body, "stub_stall_s", cfg.stall_s)
        fault_after = int(_num(body, "stub_fault_after", cfg.fault_after))

        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise _HttpError(400, "max_tokens must be an integer >= 1")
        ignore_eos = body.get("ignore_eos")
        if mt is None:
            n = cfg.tokens
            finish = "length" if ignore_eos else "stop"
        elif ignore_eos is None or ignore_eos:
            n = mt
            finish = "length"
        else:
            n = min(mt, cfg.tokens)
            finish = "length" if mt <= cfg.tokens else "stop"
        n = max(1, n)

        ctk = body.get("chat_template_kwargs")
        thinking = ctk.get("enable_thinking") if isinstance(ctk, dict) else None
        req_r = body.get("stub_reasoning_tokens")
        if thinking is False:
            r = 0
        elif req_r is not None:
            r = int(_num(body, "stub_reasoning_tokens", 0))
        elif cfg.reasoning_tokens > 0:
            r = cfg.reasoning_tokens
        elif thinking is True:
            r = max(1, n // 4)
        else:
            r = 0
        r = min(r, n)

        prompt_tokens = len(_text_of_messages(messages)) // 4 + 1
        stream = bool(body.get("stream"))
        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and bool(so.get("include_usage"))

        if fault is not None:
            st.fault(fault)
        if fault == "http_500":
            self._send_json(transport, 500, _error_body("stub: injected internal error",
                                                        "InternalServerError", 500), keep)
            return keep
        if fault == "http_429":
            self._send_json(transport, 429, _error_body("stub: injected rate limit, retry later",
                                                        "RateLimitError", 429), keep,
                            extra="retry-after: 1\r\n")
            return keep
        if fault == "http_503_html":
            self._send(transport, 503, _HTML_503, "text/html", keep)
            return keep
        if fault == "reset":
            _abort_with_rst(transport)
            return False
        if fault == "empty_stream":
            n = r = 0
            finish = "stop"

        self._seq += 1
        cid = f"chatcmpl-{self._id_prefix}{self._seq:08x}"
        created = int(time.time())
        st.running += 1
        st.prompt_tokens += prompt_tokens
        st.observe_ttft(ttft + (stall_s if fault == "stall" else 0.0))
        if stream and fault != "json_answer":
            self._stream(conn, keep, http11, t0, cid, created, n, r, finish, ttft, itl, fault,
                         stall_s, fault_after, include_usage, prompt_tokens)
        else:
            self._non_stream(conn, keep, t0, cid, created, n, r, finish, ttft, itl, fault, stall_s,
                             prompt_tokens)
        return None

    def _usage(self, prompt_tokens: int, n: int, r: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n,
                "completion_tokens": n, "prompt_tokens_details": None,
                "completion_tokens_details": {"reasoning_tokens": r}}

    def _non_stream(self, conn, keep, t0, cid, created, n, r, finish, ttft, itl, fault, stall_s,
                    prompt_tokens) -> None:
        st = self.stats

        def done(result: str) -> None:
            st.running -= 1
            if result == "client_gone":
                st.client_disconnects += 1

        def respond() -> None:
            conn.task = conn.finish_cb = None
            transport = conn.tr
            st.running -= 1
            if transport.is_closing():
                st.client_disconnects += 1
                return
            if fault == "stream_error":
                self._send_json(transport, 500, _error_body("stub: engine failed", "InternalServerError", 500), keep)
                return conn.finish(keep)
            if fault == "malformed":
                self._send(transport, 200, b"{not json", "application/json", keep)
                return conn.finish(keep)
            words = [_VOCAB[i % len(_VOCAB)] for i in range(n)]
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(words[r:]),
                                   self.cfg.reasoning_field: "".join(words[:r]) if r else None,
                                   "tool_calls": []}
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": self.cfg.model,
                   "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish,
                                "stop_reason": None}],
                   "usage": self._usage(prompt_tokens, n, r)}
            body = json.dumps(obj).encode()
            if fault == "truncate":
                head = (f"HTTP/1.1 200 OK\r\nserver: stub\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode()
                st.status[200] = st.status.get(200, 0) + 1
                transport.write(head + body[: len(body) // 2])
                return conn.finish(False)
            self._send(transport, 200, body, "application/json", keep)
            st.nonstream_completed += 1
            st.generation_tokens += n
            conn.finish(keep)

        deadline = t0 + ttft + (n - 1) * itl + (stall_s if fault == "stall" else 0.0)
        conn.start_deferred(self._loop.call_at(deadline, respond), done)

    def _stream(self, conn, keep, http11, t0, cid, created, n, r, finish, ttft, itl, fault, stall_s,
                fault_after, include_usage, prompt_tokens) -> None:
        st = self.stats
        st.streams_started += 1
        st.status[200] = st.status.get(200, 0) + 1
        chunked = http11
        if not chunked:
            keep = False
        headers = (b"HTTP/1.1 200 OK\r\nserver: stub\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                   b"cache-control: no-cache\r\n"
                   + (b"transfer-encoding: chunked\r\n" if chunked else b"")
                   + (b"" if keep else b"connection: close\r\n") + b"\r\n")
        truncated = fault == "truncate"
        events = self._events(t0, cid, created, n, r, finish, ttft, itl, fault, stall_s, fault_after,
                              include_usage, prompt_tokens)
        if fault == "split_writes":
            script = _split_script(events, headers, chunked, t0, random.Random(self._seq))
        else:
            script = _plain_script(events, headers, chunked)
        if not keep and not truncated:
            script = _then_close(script)

        def done(result: str) -> None:
            st.running -= 1
            if result == "done":
                st.streams_completed += 1
                st.generation_tokens += n
            elif result == "client_gone":
                st.client_disconnects += 1

        def pump_done(result: str) -> None:
            conn.task = conn.finish_cb = None
            done(result)
            conn.finish(result == "done" and keep and not truncated)

        pump = _Pump(self._loop, conn.tr, script, st, pump_done)
        conn.start_deferred(pump, done)
        pump.step()

    def _events(self, t0, cid, created, n, r, finish, ttft, itl, fault, stall_s, fault_after,
                include_usage, prompt_tokens):
        """Yields the SSE events ``(deadline, event_bytes, is_first_token)``; ``event_bytes`` None
        means: close the connection here (truncate)."""
        head = (b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
                + str(created).encode() + b',"model":' + self._model_json
                + b',"choices":[{"index":0,"delta":{')
        tail = _TAIL
        last_tail = _LAST_TAILS[finish]
        yield t0, head + b'"role":"assistant","content":""' + tail, False
        if fault == "empty_stream":  # the model answered nothing (e.g. EOS at once)
            d = t0 + ttft
            yield d, head + b'"content":""' + last_tail, False
            if include_usage:
                yield d, self._usage_event(cid, created, prompt_tokens, 0, 0), False
            yield d, _DONE_EVENT, False
            return

        multi = fault == "multi_token_chunks"
        nch = r + ((n - r + 1) // 2 if multi else n - r)
        k = max(0, min(fault_after, nch)) if fault in ("stream_error", "malformed", "truncate") else -1
        base = t0 + ttft + (stall_s if fault == "stall" else 0.0)
        rdelta = _reasoning_deltas(self.cfg.reasoning_field)
        V = len(_VOCAB)
        first = True
        last_d = t0
        idx = 0
        i = 0
        while i < n:
            if i < r:
                delta = rdelta[i % V]
                j = i + 1
            elif multi and i + 1 < n:
                delta = b'"content":' + json.dumps(_VOCAB[i % V] + _VOCAB[(i + 1) % V]).encode()
                j = i + 2
            else:
                delta = _CONTENT_DELTAS[i % V]
                j = i + 1
            d = base + i * itl
            if idx == k:
                yield from _fault_events(fault, d)
                if fault in _ENDING_FAULTS:
                    return
            yield d, head + delta + (last_tail if idx == nch - 1 else tail), first
            first = False
            last_d = d
            idx += 1
            i = j
        if k == nch:  # the fault comes after every token (fault_after >= tokens)
            d = base + n * itl
            yield from _fault_events(fault, d)
            if fault in _ENDING_FAULTS:
                return
            last_d = d
        if include_usage and fault != "no_usage":
            yield last_d, self._usage_event(cid, created, prompt_tokens, n, r), False
        yield last_d, _DONE_EVENT, False

    def _usage_event(self, cid, created, prompt_tokens, n, r) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": self.cfg.model, "choices": [], "usage": self._usage(prompt_tokens, n, r)}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


# ---- Python API: in-thread server ------------------------------------------------------------
class StubHandle:
    """A stub server running on its own event loop in a daemon thread."""

    def __init__(self, server: StubServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 host: str, port: int):
        self._server = server
        self._loop = loop
        self._thread = thread
        self.host = host
        self.port = port
        h = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{h}:{port}"
        self.url = self.base_url + "/v1"
        self.config = server.cfg

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the server's counters (see ``_Stats.snapshot``)."""
        return self._server.stats.snapshot()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._server.request_stop)
            except RuntimeError:
                pass
            self._thread.join(timeout)

    def __enter__(self) -> "StubHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_config(options: dict[str, Any]) -> StubConfig:
    names = {f.name for f in fields(StubConfig)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"unknown stub option(s): {', '.join(sorted(unknown))}")
    return StubConfig(**options)


def start_stub_in_thread(**options: Any) -> StubHandle:
    """Start a stub server (options: the ``StubConfig`` fields) in a thread; returns when listening."""
    cfg = _make_config(options)
    if cfg.processes != 1:
        raise ValueError("start_stub_in_thread runs one event loop; use run_stub_process for processes > 1")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = StubServer(cfg)
        try:
            loop.run_until_complete(server.start())
            holder["server"], holder["loop"] = server, loop
            ready.set()
            loop.run_until_complete(server.wait_stopped())
        except BaseException as e:  # surfaced to the caller
            holder["error"] = e
        finally:
            try:
                loop.run_until_complete(server.close())
            finally:
                loop.close()
                ready.set()

    t = threading.Thread(target=run, name=f"stub-server-{cfg.port}", daemon=True)
    t.start()
    if not ready.wait(10.0):
        raise RuntimeError("stub server did not start within 10 s")
    if "error" in holder:
        raise RuntimeError(f"stub server failed to start: {holder['error']!r}") from holder["error"]
    return StubHandle(holder["server"], holder["loop"], t, cfg.host, holder["server"].port)


# ---- Python API: subprocess -----------------------------------------------------------------
_REPO_ROOT = Path(__file__).resolve().parent.parent


def run_stub_process(*, timeout: float = 10.0, python: str | None = None,
                     env: dict[str, str] | None = None, **options: Any) -> tuple[subprocess.Popen, str]:
    """Launch the CLI in a subprocess; wait (at most ``timeout`` s) for its LISTENING line.

    Options are the CLI flags with underscores (``ttft_ms=50``, ``processes=2``, ``api_key="k"``).
    Returns ``(proc, base_url)`` with base_url like ``http://127.0.0.1:PORT/v1``. Stop it with
    ``stop_stub_process(proc)`` (SIGTERM, then SIGKILL).
    """
    _make_config(options)  # validate names early
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    args = [python or sys.executable, "-m", "bench.stub_server"]
    for k, v in options.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        args += [flag] if v is True else [flag, str(v)]
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + child_env["PYTHONPATH"]
                                                 if child_env.get("PYTHONPATH") else "")
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=str(_REPO_ROOT), env=child_env)
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:  # stdout closed: it is exiting
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not line.startswith("LISTENING "):
        exited = proc.poll()
        stop_stub_process(proc, timeout=2.0)
        why = (f"exited with code {exited} (see its stderr)" if exited is not None
               else f"did not report LISTENING within {timeout} s")
        raise RuntimeError(f"stub server {why}; stdout={buf!r}")
    return proc, f"http://{line.split()[1]}/v1"


def stop_stub_process(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM the stub process, wait, SIGKILL if needed; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


# ---- CLI ------------------------------------------------------------------------------------
def _listen_line(host: str, port: int) -> str:
    return f"LISTENING {f'[{host}]' if ':' in host else host}:{port}"


async def _serve_single(cfg: StubConfig, sock: socket.socket | None = None,
                        ready_fd: int | None = None, sigmask_blocked: bool = False) -> int:
    loop = asyncio.get_running_loop()
    server = StubServer(cfg)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, server.request_stop)
    if sigmask_blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    port = await server.start(sock)
    if ready_fd is None:
        sys.stdout.write(_listen_line(cfg.host, port) + "\n")
        sys.stdout.flush()
    else:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    await server.wait_stopped()
    await server.close()
    return 0


def _set_pdeathsig() -> None:
    try:  # Linux: die with the parent even if it is SIGKILLed
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _serve_multi(cfg: StubConfig) -> int:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    if cfg.port:
        # A plain bind fails if anything else holds the port, even a SO_REUSEPORT listener that
        # the workers would otherwise silently share it with (a stub left over from another run).
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((cfg.host, cfg.port))
    # Bound but never listening: reserves the port (port 0 -> a free one) without taking connections.
    reserve = socket.socket(family, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind((cfg.host, cfg.port))
    port = reserve.getsockname()[1]
    parent = os.getpid()
    sigs = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    r, w = os.pipe()
    children: list[int] = []
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(cfg.processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                reserve.close()
                _set_pdeathsig()
                if os.getppid() != parent:
                    os._exit(0)
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((cfg.host, port))
                sock.listen(4096)
                sock.setblocking(False)
                code = asyncio.run(_serve_single(cfg, sock, w, sigmask_blocked=True))
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    os.close(w)
    alive = set(children)
    state = {"stopping": False}

    def stop_children(*_a) -> None:
        state["stopping"] = True
        for pid in list(alive):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)

    ready = 0
    deadline = time.monotonic() + 10.0
    with selectors.DefaultSelector() as sel:
        sel.register(r, selectors.EVENT_READ)
        while ready < cfg.processes and not state["stopping"]:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            got = os.read(r, 64)
            if not got:
                break
            ready += len(got)
    os.close(r)
    code = 0
    if ready < cfg.processes and not state["stopping"]:
        print(f"stub_server: only {ready}/{cfg.processes} processes started", file=sys.stderr)
        code = 1
        stop_children()
    elif not state["stopping"]:
        sys.stdout.write(_listen_line(cfg.host, port) + "\n")
        sys.stdout.flush()
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        if not state["stopping"]:  # a worker died on its own: take the rest down, fail
            code = 1
            stop_children()
        elif os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM):
            code = code or 1
    reserve.close()
    return code


def _parse_args(argv: list[str] | None) -> StubConfig:
    d = StubConfig()
    p = argparse.ArgumentParser(prog="python -m bench.stub_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 = pick a free port")
    p.add_argument("--ttft-ms", type=float, default=d.ttft_ms)
    p.add_argument("--itl-ms", type=float, default=d.itl_ms)
    p.add_argument("--tokens", type=int, default=d.tokens, help="tokens per reply without max_tokens")
    p.add_argument("--reasoning-tokens", type=int, default=d.reasoning_tokens)
    p.add_argument("--model", default=d.model)
    p.add_argument("--api-key", default=None)
    p.add_argument("--processes", type=int, default=d.processes, help="server processes (SO_REUSEPORT)")
    p.add_argument("--reasoning-field", default=d.reasoning_field, choices=("reasoning", "reasoning_content"))
    p.add_argument("--fault", default=None, choices=FAULTS, help="default fault for requests naming none")
    p.add_argument("--fault-rate", type=float, default=d.fault_rate)
    p.add_argument("--stall-s", type=float, default=d.stall_s)
    p.add_argument("--fault-after", type=int, default=d.fault_after)
    a = p.parse_args(argv)
    if a.processes < 1:
        p.error("--processes must be >= 1")
    return StubConfig(**{f.name: getattr(a, f.name) for f in fields(StubConfig)})


def main(argv: list[str] | None = None) -> int:
    cfg = _parse_args(argv)
    try:
        if cfg.processes > 1:
            return _serve_multi(cfg)
        return asyncio.run(_serve_single(cfg))
    except OSError as e:
        print(f"stub_server: cannot serve on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
