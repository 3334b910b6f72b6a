"""HTTP clients that stream one chat completion and return its RequestRecord.

``FastClient`` (geventhttpclient + orjson, reading whole socket blocks) is the default: it
costs 1/10 to 1/60 of the openai SDK's CPU per chunk, and a saturated client inflates every
latency it reports. ``OpenAIClient`` (the openai SDK) is kept for compatibility checks.
Both feed the same ``StreamRecorder``, so a record means the same whatever the client.
"""

from __future__ import annotations

import socket
import time
from time import perf_counter
from typing import Any, Protocol

import gevent.socket
import orjson
from gevent import GreenletExit
from geventhttpclient import HTTPClient
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError
from geventhttpclient.url import URL

from core.config import Endpoint, redact
from core.records import ErrorCategory, RequestRecord
from locustfiles import kernelstamps, reactor
from locustfiles.sse import SSEDecoder
from locustfiles.stream import (StreamFailure, StreamRecorder, body_excerpt, error_message,
                                expects_tokens, is_event_stream, not_event_stream)

READ_BLOCK = 65536
MAX_ERROR_BODY = 8192
# Body bytes kept to describe an HTTP 200 that is not an event stream
NOT_SSE_BODY = 512
# A pooled connection idle longer than this is closed instead of reused: servers drop idle
# keep-alive connections (uvicorn, vLLM's server, after 5 s), and a request sent as they do
# fails without the server having done anything wrong.
MAX_IDLE_S = 4.0


def chat_body(endpoint: Endpoint, messages: list[dict[str, Any]],
              max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body of a streamed chat completion for this endpoint."""
    settings = endpoint.request
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": settings.max_tokens if max_tokens is None else max_tokens,
        "temperature": settings.temperature,
    }
    if settings.ignore_eos:
        body["ignore_eos"] = True
    body.update(endpoint.extra_body)
    return body


class ChatClient(Protocol):
    name: str

    def stream_chat(self, body: dict[str, Any], record: RequestRecord) -> RequestRecord: ...

    def close(self) -> None: ...


class ConnectFailed(Exception):
    """Raised while the TCP connection was being made (to tell connect from read timeouts)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class _ConnectPhase:
    def _create_socket(self):  # type: ignore[no-untyped-def]
        try:
            return super()._create_socket()  # type: ignore[misc]
        except (OSError, RuntimeError) as exc:
            raise ConnectFailed(exc) from exc


class StampedSocket(gevent.socket.socket):
    """A gevent socket that remembers, from the kernel, when its data left and arrived.

    geventhttpclient sends the request and reads the response headers (and whatever body came
    with them) through ``sendall`` and ``recv``. ``sent`` is when the request left the host (the
    kernel's transmit stamp of the first write since ``expect_send``), so a request's clock starts
    when its bytes left, not when the process got round to them. ``arrived`` is when the last
    read's data reached the host: when the process was busy, the first token may already be in
    the headers' read, and its time must be the kernel's, not the moment the greenlet got to it.
    Both are on the ``perf_counter()`` scale; 0.0 means unknown.
    """

    arrived = 0.0
    sent = 0.0
    idle_since = 0.0   # perf_counter() when the pool got it back (0.0: never used)
    headers_due = False

    def expect_send(self) -> None:
        """Forget any earlier stamp: the next write is a new request's."""
        kernelstamps.take_sent_stamps(self._sock)
        self.sent = 0.0
        self.headers_due = True

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        super().sendall(data, flags)
        self._take_sent()

    def _take_sent(self) -> None:
        stamps = kernelstamps.take_sent_stamps(self._sock)
        if stamps and not self.sent:
            now = perf_counter()
            sent = stamps[0] - (time.time() - now)
            self.sent = sent if sent <= now else now

    def _peek(self, bufsize: int) -> bytes:
        """What the socket holds, left in place; waits cooperatively until something is there.

        A transmit stamp the device queued after ``sendall`` returned makes the socket poll
        ready (POLLERR) with nothing to read: it is taken here, so the wait does not spin.
        """
        while True:
            try:
                return self._sock.recv(bufsize, reactor.MSG_PEEK)
            except BlockingIOError:
                pass
            if not self.sent:
                self._take_sent()
            gevent.socket.wait_read(self.fileno(), timeout=self.timeout)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        if self.headers_due and not flags:
            # Read no further than the headers: body events queued behind them (the process
            # was late) are left for the stream reader, which times each from its own packet.
            queued = self._peek(bufsize)
            end = queued.find(b"\r\n\r\n")
            if end >= 0:
                bufsize = end + 4
                self.headers_due = False
        data, ancillary, _flags, _addr = self.recvmsg(bufsize, kernelstamps.ANCILLARY_SPACE, flags)
        now = perf_counter()
        self.arrived = kernelstamps.arrival_time(ancillary, now, time.time() - now, 0.0)
        return data


class _KeepAlive:
    """One keep-alive connection, never reused once idle long enough for a server to drop it."""

    reused = False  # whether the last get_socket() returned a connection used before
    current: Any = None  # the socket the last get_socket() returned

    def get_socket(self):  # type: ignore[no-untyped-def]
        sock = super().get_socket()  # type: ignore[misc]
        idle_since = getattr(sock, "idle_since", 0.0)
        if idle_since and perf_counter() - idle_since > MAX_IDLE_S:
            # the server may be closing it right now (uvicorn: after 5 s idle); a request
            # sent into that race fails for nothing
            sock.close()
            try:
                sock = self._create_socket()  # type: ignore[attr-defined]
            except BaseException:
                self._semaphore.release()  # type: ignore[attr-defined]
                raise
            idle_since = 0.0
        self.reused = bool(idle_since)
        self.current = sock
        if isinstance(sock, StampedSocket):
            sock.expect_send()
        return sock

    def return_socket(self, sock):  # type: ignore[no-untyped-def]
        sock.idle_since = perf_counter()
        super().return_socket(sock)  # type: ignore[misc]


class _Pool(_KeepAlive, _ConnectPhase, ConnectionPool):
    def _create_tcp_socket(self, family: int, socktype: int, protocol: int):  # type: ignore[no-untyped-def]
        if not kernelstamps.AVAILABLE:
            return super()._create_tcp_socket(family, socktype, protocol)
        sock = StampedSocket(family, socktype, protocol)
        kernelstamps.enable(sock)
        return sock


class _SSLPool(_KeepAlive, _ConnectPhase, SSLConnectionPool):
    pass


def _connect_failure(exc: BaseException) -> StreamFailure:
    if isinstance(exc, ConnectionRefusedError):
        return StreamFailure(ErrorCategory.CONNECTION_REFUSED, f"connection refused ({exc})")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return StreamFailure(ErrorCategory.CONNECT_TIMEOUT,
                             "no connection within the connect timeout")
    return StreamFailure(ErrorCategory.CONNECT_FAILED, f"cannot connect: {exc!r}")


class FastClient:
    """geventhttpclient with one keep-alive connection per Locust user."""

    name = "fast"

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        url = URL(endpoint.chat_url)
        self._url = url
        self.path = url.request_uri
        key = endpoint.api_key()
        self._secrets = [key] if key else []
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.http = self._new_http()
        # TLS streams are decrypted by the ssl module, so only plain sockets go to the reactor
        self._use_reactor = reactor.AVAILABLE and url.scheme != "https"

    def _new_http(self) -> HTTPClient:
        settings = self.endpoint.request
        http = HTTPClient(self._url.host, self._url.port, ssl=self._url.scheme == "https",
                          connection_timeout=settings.connect_timeout_s,
                          network_timeout=settings.read_timeout_s, concurrency=1,
                          headers=self._headers)
        pool = http._connection_pool
        pool.__class__ = _SSLPool if isinstance(pool, SSLConnectionPool) else _Pool
        return http

    def close(self) -> None:
        self.http.close()

    def _reset(self, response: Any = None) -> None:
        """Drop the connection after a failure: it may hold half a response."""
        sock = getattr(response, "_sock", None)
        try:
            if sock is not None:
                sock.close()
            self.http.close()
        finally:
            self.http = self._new_http()

    def stream_chat(self, body: dict[str, Any], record: RequestRecord) -> RequestRecord:
        payload = orjson.dumps(body)
        headers = {"X-Request-Id": record.request_id}
        begin = perf_counter()
        record.start_unix = time.time()
        recorder = StreamRecorder(record, begin)
        recorder.expect_tokens = expects_tokens(body)
        status = 0
        response = None
        try:
            response = self._send(payload, headers)
            self._stamp_send(response, record, recorder, begin)
            status = response.status_code
            if status != 200:
                raise self._http_failure(response, status)
            content_type = response.get("content-type")
            if not is_event_stream(content_type):
                raise not_event_stream(content_type, self._body_start(response), status)
            if self._use_reactor and response._sock is not None:
                stream = reactor.Stream(response, recorder, self.endpoint.request.read_timeout_s,
                                        getattr(response._sock, "arrived", None) or None)
                failure = reactor.reactor().wait(stream)
                if failure is not None:
                    raise failure
                response.release()
            else:
                self._read_stream(response, recorder)
        except StreamFailure as failure:
            self._reset(response)
            recorder.finish(perf_counter(), failure, status)
        except ConnectFailed as exc:
            self._reset(response)
            recorder.finish(perf_counter(), _connect_failure(exc.cause), 0)
        except GreenletExit:
            end = perf_counter()
            self._reset(response)
            recorder.finish(end, StreamFailure(ErrorCategory.INTERRUPTED,
                                               "stopped while streaming", status),
                            status)
            raise
        except BaseException as exc:  # every other way a request can end is still a record
            end = perf_counter()
            self._reset(response)
            recorder.finish(end, self._classify(exc, status), status)
            if not isinstance(exc, Exception):
                raise
        else:
            recorder.finish(perf_counter(), None, status)
        record.error_message = redact(record.error_message, self._secrets)
        return record

    def _send(self, payload: bytes, headers: dict[str, str]) -> Any:
        """Send the request and read the response headers.

        A keep-alive connection that the server closed while it sat idle fails before any byte
        of a response: that is no failure of the server, so the request is sent once more on a
        fresh connection (nothing of it was processed: no response had begun).
        """
        pool = self.http._connection_pool
        try:
            return self.http.request("POST", self.path, body=payload, headers=headers)
        except (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError):
            if not pool.reused:
                raise
        self._reset()
        return self.http.request("POST", self.path, body=payload, headers=headers)

    @staticmethod
    def _stamp_send(response: Any, record: RequestRecord, recorder: StreamRecorder,
                    begin: float) -> None:
        """Start the request's clock when its bytes left the host (the kernel's stamp)."""
        sent = getattr(response._sock, "sent", 0.0) if response is not None else 0.0
        if sent:
            sent = max(sent, begin)  # (the two clocks are read microseconds apart)
            record.start_unix += sent - begin
            record.presend_s = sent - begin
            record.send_stamp = "kernel"
            recorder.start = sent
        else:
            record.send_stamp = "client"

    def _read_stream(self, response: Any, recorder: StreamRecorder) -> None:
        # Without epoll (or when the whole response came with the headers): read whole socket
        # blocks from this greenlet and split events ourselves.
        decoder = SSEDecoder()
        body = response._body_buffer
        sock = response._sock
        stamped = self.http._connection_pool.current  # the socket, even once released
        done = False
        while True:
            if body:
                data = bytes(body)
                del body[:]
                # when the last read's data reached the host (the kernel's stamp), if known
                now = getattr(stamped, "arrived", 0.0) or perf_counter()
                if not done:
                    for event in decoder.feed(data):
                        if recorder.on_payload(event, now):
                            done = True
                            break
            if response.message_complete or sock is None:
                break
            chunk = sock.recv(READ_BLOCK)
            if not chunk:
                if done:
                    break  # [DONE] seen; the server closed instead of ending the chunked body
                now = perf_counter()
                last = decoder.close()
                if last is not None and recorder.on_payload(last, now):
                    break
                raise StreamFailure(ErrorCategory.STREAM_TRUNCATED,
                                    "the server closed the connection before data: [DONE]", 200)
            response.feed(chunk)
        if not done:
            last = decoder.close()
            if last is not None:
                recorder.on_payload(last, perf_counter())
        response.release()

    def _body_start(self, response: Any) -> bytes:
        """What the body of a response that is no event stream starts with (a courtesy for the
        message): what came with the headers, or else one read (within the read timeout)."""
        try:
            if (not response._body_buffer and not response.message_complete
                    and response._sock is not None):
                response.feed(response._sock.recv(NOT_SSE_BODY))
        except Exception:  # the Content-Type is the failure; the body only illustrates it
            pass
        return bytes(response._body_buffer[:NOT_SSE_BODY])

    def _http_failure(self, response: Any, status: int) -> StreamFailure:
        try:
            text = response.read()[:MAX_ERROR_BODY]
        except Exception:  # the body is a courtesy; the status is the failure
            text = b""
        finally:
            response.release()
        return StreamFailure(ErrorCategory.for_http_status(status),
                             f"HTTP {status}: {_error_text(text)}",
                             status)

    @staticmethod
    def _classify(exc: BaseException, status: int) -> StreamFailure:
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return StreamFailure(ErrorCategory.READ_TIMEOUT,
                                 "no data within the read timeout", status)
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, HTTPConnectionClosed)):
            if status:
                return StreamFailure(ErrorCategory.STREAM_TRUNCATED,
                                     f"connection lost mid-stream ({exc})",
                                     status)
            return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                 f"connection closed before a response "
                                 f"({exc.__class__.__name__}: {exc})")
        if isinstance(exc, HTTPParseError):
            return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                 f"invalid HTTP response: {exc}", status)
        if isinstance(exc, OSError):
            return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                 f"{exc.__class__.__name__}: {exc}", status)
        return StreamFailure(ErrorCategory.CLIENT_ERROR, f"{exc.__class__.__name__}: {exc}", status)


def _error_text(body: bytes | str | None) -> str:
    """The message of an error body: an OpenAI-style JSON error's message, else a short excerpt
    of the text (an HTML error page loses its tags)."""
    if body is None or body == b"" or body == "":
        return "(empty body)"
    try:
        return error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body_excerpt(body, 300)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


class OpenAIClient:
    """The openai SDK's streaming client, for compatibility (about 10x the CPU per chunk).

    The SDK swallows ``data: [DONE]`` and ends the iteration the same way whether it came or
    not, so a stream cut cleanly at an event boundary is only detected by the fast client.
    """

    name = "openai"

    def __init__(self, endpoint: Endpoint):
        import openai

        self._openai = openai
        settings = endpoint.request
        self.endpoint = endpoint
        key = endpoint.api_key()
        self._secrets = [key] if key else []
        self.client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=key or "EMPTY", max_retries=0,
            timeout=openai.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s))

    def close(self) -> None:
        self.client.close()

    def stream_chat(self, body: dict[str, Any], record: RequestRecord) -> RequestRecord:
        known = ("model", "messages", "stream", "stream_options", "max_tokens", "temperature")
        kwargs = {k: body[k] for k in known if k in body}
        kwargs["extra_body"] = {k: v for k, v in body.items() if k not in known}
        kwargs["extra_headers"] = {"X-Request-Id": record.request_id}
        record.start_unix = time.time()
        start = perf_counter()
        recorder = StreamRecorder(record, start)
        recorder.expect_tokens = expects_tokens(body)
        status = 0
        try:
            stream = self.client.chat.completions.create(**kwargs)
            response = stream.response
            status = response.status_code
            content_type = response.headers.get("content-type")
            if not is_event_stream(content_type):
                raise not_event_stream(content_type, sdk_body_start(response), status)
            for chunk in stream:
                recorder.on_chunk(_chunk_dict(chunk), perf_counter())
            recorder.done = True
        except StreamFailure as failure:
            recorder.finish(perf_counter(), failure, status)
        except GreenletExit:
            recorder.finish(perf_counter(),
                            StreamFailure(ErrorCategory.INTERRUPTED,
                                          "stopped while streaming", status), status)
            raise
        except Exception as exc:
            recorder.finish(perf_counter(), self._classify(exc, status), status)
        else:
            recorder.finish(perf_counter(), None, status)
        record.error_message = redact(record.error_message, self._secrets)
        return record

    def _classify(self, exc: Exception, status: int = 0) -> StreamFailure:
        """``status`` is the status of the response whose stream was being read (0: none)."""
        openai = self._openai
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            return StreamFailure(ErrorCategory.for_http_status(status),
                                 f"HTTP {status}: {sdk_error_text(exc)}",
                                 status)
        chain = _cause_chain(exc)
        names = " ".join(type(e).__name__ for e in chain)
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return StreamFailure(ErrorCategory.CONNECTION_REFUSED, "connection refused")
        if "ConnectTimeout" in names:
            return StreamFailure(ErrorCategory.CONNECT_TIMEOUT,
                                 "no connection within the connect timeout")
        if isinstance(exc, openai.APITimeoutError) or "ReadTimeout" in names:
            return StreamFailure(ErrorCategory.READ_TIMEOUT,
                                 "no data within the read timeout", status)
        if "RemoteProtocolError" in names or "IncompleteRead" in names:
            if not status:  # closed before a response: what the fast client calls it too
                return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                     f"connection closed before a response "
                                     f"({type(chain[-1]).__name__}: {chain[-1]})")
            return StreamFailure(ErrorCategory.STREAM_TRUNCATED, f"stream cut: {exc}", status)
        if isinstance(exc, openai.APIConnectionError):
            return StreamFailure(ErrorCategory.CONNECTION_RESET,
                                 f"{type(chain[-1]).__name__}: {chain[-1]}",
                                 status)
        if isinstance(exc, openai.APIError):
            return StreamFailure(ErrorCategory.STREAM_ERROR, str(exc.message), status or 200)
        if "JSONDecodeError" in names:
            return StreamFailure(ErrorCategory.MALFORMED_CHUNK,
                                 f"event is not JSON: {exc}", status or 200)
        return StreamFailure(ErrorCategory.CLIENT_ERROR, f"{type(exc).__name__}: {exc}", status)


def sdk_error_text(exc: Any) -> str:
    """The server's message of an SDK status error: the JSON error's message, or an excerpt of
    a body that is not JSON (the SDK's own message then holds only "Error code: 503")."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return error_message(body)
    if isinstance(body, str):
        return _error_text(body)
    return str(exc.message)


def sdk_body_start(response: Any) -> bytes:
    """The first bytes of an SDK (httpx) response's body; closes the response."""
    data = b""
    try:
        for part in response.iter_bytes():
            data += part
            if len(data) >= NOT_SSE_BODY:
                break
    except Exception:  # the Content-Type is the failure; the body only illustrates it
        pass
    finally:
        response.close()
    return data[:NOT_SSE_BODY]


def _chunk_dict(chunk: Any) -> dict[str, Any]:
    """The parts of an SDK ChatCompletionChunk the recorder reads, as plain data."""
    out: dict[str, Any] = {"choices": []}
    if chunk.choices:
        delta = chunk.choices[0].delta
        out["choices"] = [{"delta": {
            "content": delta.content,
            "reasoning": getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content",
                                                                       None),
        }}]
    if chunk.usage is not None:
        out["usage"] = chunk.usage.model_dump()
    return out


def make_client(kind: str, endpoint: Endpoint) -> ChatClient:
    if kind == "fast":
        return FastClient(endpoint)
    if kind == "openai":
        return OpenAIClient(endpoint)
    raise ValueError(f"unknown client {kind!r}: use 'fast' or 'openai'")
