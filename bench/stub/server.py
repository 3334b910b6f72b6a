"""One stub server: one event loop, one process. Routes requests; answers chat requests by their plan."""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import random
import socket
import time
import uuid
from collections import deque
from typing import Any, Callable

from bench.stub.plan import FaultSchedule, RequestPlan, StubConfig, plan_request
from bench.stub.protocol import REASONS, Conn, HttpError, abort_with_rst, error_body
from bench.stub.sse import VOCAB, Pump, StreamFormat, plain_script, split_script, stream_headers, then_close
from bench.stub.stats import Stats, metrics_text

_HTML_503 = (b"<html>\r\n<head><title>503 Service Unavailable</title></head>\r\n<body>\r\n"
             b"<center><h1>503 Service Unavailable</h1></center>\r\n"
             b"<p>The server is overloaded,\n   try again later.</p>\r\n"
             b"<hr><center>stub-proxy</center>\r\n</body>\r\n</html>\r\n")


class _Waiter:
    """A chat answer waiting for a slot; the connection cancels it if the client goes away."""

    __slots__ = ("start", "cancelled")

    def __init__(self, start: Callable[[], None]):
        self.start = start
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Slots:
    """--slots C, a queueing server: at most C answers generate at once; the others wait first
    in, first out. A freed slot passes straight to the next live waiter, which starts then."""

    __slots__ = ("free", "waiting")

    def __init__(self, count: int):
        self.free = count
        self.waiting: deque[_Waiter] = deque()

    def take(self) -> bool:
        if self.free > 0:
            self.free -= 1
            return True
        return False

    def wait(self, start: Callable[[], None]) -> _Waiter:
        waiter = _Waiter(start)
        self.waiting.append(waiter)
        return waiter

    def release(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.cancelled:
                waiter.start()
                return
        self.free += 1

    @property
    def queued(self) -> int:
        return sum(not w.cancelled for w in self.waiting)


class StubServer:
    """One asyncio server (one event loop, one process)."""

    def __init__(self, config: StubConfig):
        self.cfg = config
        self._faults = FaultSchedule(config.fault, config.fault_rate)  # refuses an unknown fault
        self.stats = Stats()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[Conn] = set()
        self._stop_event: asyncio.Event | None = None
        self._seq = 0
        self.port: int | None = None
        self._format = StreamFormat(config.model, config.reasoning_field)
        self._id_prefix = uuid.uuid4().hex[:12]
        self.slots = Slots(config.slots) if config.slots > 0 else None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        factory = lambda: Conn(self)  # noqa: E731
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
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
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
            raise HttpError(401, f"Incorrect API key provided: {presented}", "invalid_request_error")

    def _route(self, conn: Conn, method, path, headers, body, t0, keep, http11) -> bool | None:
        """Answer one request. Returns keep-alive (True/False) when answered at once, None when the
        response continues later (the connection's ``finish`` is then called)."""
        transport = conn.tr
        if path == "/health":
            if method != "GET":
                raise HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            self._send(transport, 200, b"", "application/json", keep)
            return keep
        if path == "/metrics":
            if method != "GET":
                raise HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            self._send(transport, 200, metrics_text(self.stats, self.cfg.model).encode(),
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
            except HttpError as e:
                self._send_json(transport, 401, {"error": {
                    "message": e.message, "type": "invalid_request_error", "param": None,
                    "code": "invalid_api_key"}}, keep)
                return keep
            if path == "/v1/models":
                if method != "GET":
                    raise HttpError(405, "Method Not Allowed", "MethodNotAllowed")
                self._send_json(transport, 200, {"object": "list", "data": [{
                    "id": self.cfg.model, "object": "model", "created": int(time.time()),
                    "owned_by": "stub", "root": self.cfg.model, "parent": None,
                    "max_model_len": 4096}]}, keep)
                return keep
            if method != "POST":
                raise HttpError(405, "Method Not Allowed", "MethodNotAllowed")
            return self._chat(conn, body, t0, keep, http11)
        raise HttpError(404, f"Not Found: {path}", "NotFoundError")

    # ---- chat completions --------------------------------------------------------------------
    def _chat(self, conn: Conn, raw: bytes, t0: float, keep: bool, http11: bool) -> bool | None:
        transport = conn.tr
        st = self.stats
        st.chat_requests += 1
        plan = plan_request(self.cfg, raw, self._faults)
        fault = plan.fault
        if fault is not None:
            st.fault(fault)
        if fault == "http_500":
            self._send_json(transport, 500, error_body("stub: injected internal error",
                                                       "InternalServerError", 500), keep)
            return keep
        if fault == "http_429":
            self._send_json(transport, 429, error_body("stub: injected rate limit, retry later",
                                                       "RateLimitError", 429), keep,
                            extra="retry-after: 1\r\n")
            return keep
        if fault == "http_503_html":
            self._send(transport, 503, _HTML_503, "text/html", keep)
            return keep
        if fault == "reset":
            abort_with_rst(transport)
            return False

        self._seq += 1
        cid = f"chatcmpl-{self._id_prefix}{self._seq:08x}"
        created = int(time.time())
        st.running += 1
        st.prompt_tokens += plan.prompt_tokens
        st.observe_ttft(plan.ttft_s + plan.stall_s)
        if self.slots is not None and not self.slots.take():
            # every slot busy: the answer starts when one frees (its TTFT counted from then on)
            def start() -> None:
                self._answer(conn, plan, self._loop.time(), cid, created, keep, http11)

            def gone(result: str) -> None:
                st.running -= 1
                if result == "client_gone":
                    st.client_disconnects += 1

            conn.start_deferred(self.slots.wait(start), gone)
            return None
        self._answer(conn, plan, t0, cid, created, keep, http11)
        return None

    def _answer(self, conn: Conn, plan: RequestPlan, t0: float, cid: str, created: int,
                keep: bool, http11: bool) -> None:
        if plan.streamed:
            self._stream(conn, plan, t0, cid, created, keep and http11, http11)
        else:
            self._non_stream(conn, plan, t0, cid, created, keep)

    def _slot_freed(self) -> None:
        if self.slots is not None:
            self.slots.release()

    def _non_stream(self, conn: Conn, plan: RequestPlan, t0: float, cid: str, created: int,
                    keep: bool) -> None:
        """One application/json chat.completion when the whole generation time has passed."""
        st = self.stats
        fault = plan.fault

        def done(result: str) -> None:
            st.running -= 1
            if result == "client_gone":
                st.client_disconnects += 1
            self._slot_freed()

        def respond() -> None:
            conn.task = conn.finish_cb = None
            transport = conn.tr
            st.running -= 1
            self._slot_freed()
            if transport.is_closing():
                st.client_disconnects += 1
                return
            if fault == "stream_error":
                self._send_json(transport, 500,
                                error_body("stub: engine failed", "InternalServerError", 500), keep)
                return conn.finish(keep)
            if fault == "malformed":
                self._send(transport, 200, b"{not json", "application/json", keep)
                return conn.finish(keep)
            n, r = plan.tokens, plan.reasoning_tokens
            words = [VOCAB[i % len(VOCAB)] for i in range(n)]
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(words[r:]),
                                   self.cfg.reasoning_field: "".join(words[:r]) if r else None,
                                   "tool_calls": []}
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": self.cfg.model,
                   "choices": [{"index": 0, "message": msg, "logprobs": None,
                                "finish_reason": plan.finish_reason, "stop_reason": None}],
                   "usage": plan.usage()}
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

        deadline = t0 + plan.ttft_s + (plan.tokens - 1) * plan.itl_s + plan.stall_s
        conn.start_deferred(self._loop.call_at(deadline, respond), done)

    def _stream(self, conn: Conn, plan: RequestPlan, t0: float, cid: str, created: int,
                keep: bool, chunked: bool) -> None:
        """An SSE stream written on time by a ``Pump`` (chunked on HTTP/1.1; HTTP/1.0 closes)."""
        st = self.stats
        st.streams_started += 1
        st.status[200] = st.status.get(200, 0) + 1
        headers = stream_headers(chunked, keep)
        truncated = plan.fault == "truncate"
        events = self._format.events(plan, t0, cid, created)
        if plan.fault == "split_writes":
            script = split_script(events, headers, chunked, t0, random.Random(self._seq))
        else:
            script = plain_script(events, headers, chunked)
        if not keep and not truncated:
            script = then_close(script)
        n = plan.tokens

        def done(result: str) -> None:
            st.running -= 1
            if result == "done":
                st.streams_completed += 1
                st.generation_tokens += n
            elif result == "client_gone":
                st.client_disconnects += 1
            self._slot_freed()

        def pump_done(result: str) -> None:
            conn.task = conn.finish_cb = None
            done(result)
            conn.finish(result == "done" and keep and not truncated)

        pump = Pump(self._loop, conn.tr, script, st, pump_done)
        conn.start_deferred(pump, done)
        pump.step()
