"""The fast streaming client: geventhttpclient + orjson, reading whole socket blocks.

It costs 1/10 to 1/60 of the openai SDK's CPU per chunk, and a saturated client inflates every
latency it reports. Plain-HTTP streams are read by the process's reactor (``reactor.py``);
connections come from the kernel-stamped keep-alive pool (``pool.py``).
"""

from __future__ import annotations

import socket
import time
from time import perf_counter
from typing import Any

import orjson
from gevent import GreenletExit
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError
from geventhttpclient.url import URL

from core import secrets
from core.config import Endpoint
from core.records import ErrorCategory, RequestRecord
from locustfiles import compat, reactor
from locustfiles.pool import ConnectFailed, pool_class_for
from locustfiles.sse import SSEDecoder
from locustfiles.stream import (NOT_SSE_BODY, StreamFailure, StreamRecorder, error_text,
                                expects_tokens, is_event_stream, make_recorder,
                                not_event_stream)

READ_BLOCK = 65536
MAX_ERROR_BODY = 8192


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
        compat.swap_pool_class(http, pool_class_for)
        return http

    def close(self) -> None:
        self.http.close()

    def _reset(self, response: Any = None) -> None:
        """Drop the connection after a failure: it may hold half a response."""
        sock = compat.response_socket(response) if response is not None else None
        try:
            if sock is not None:
                sock.close()
            self.http.close()
        finally:
            self.http = self._new_http()

    def stream_chat(self, body: dict[str, Any], record: RequestRecord,
                    answer: list[str] | None = None) -> RequestRecord:
        """Stream one chat completion into ``record``; with ``answer`` (a list), the answer's
        content text is appended to it in pieces (a conversation's history needs it)."""
        payload = orjson.dumps(body)
        headers = {"X-Request-Id": record.request_id}
        begin = perf_counter()
        record.start_unix = time.time()
        recorder = make_recorder(record, begin, answer)
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
            sock = compat.response_socket(response)
            if self._use_reactor and sock is not None:
                stream = reactor.Stream(response, recorder, self.endpoint.request.read_timeout_s,
                                        getattr(sock, "arrived", None) or None)
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
        record.error_message = secrets.scrub(record.error_message, self._secrets)
        return record

    def _send(self, payload: bytes, headers: dict[str, str]) -> Any:
        """Send the request and read the response headers.

        A keep-alive connection that the server closed while it sat idle fails before any byte
        of a response: that is no failure of the server, so the request is sent once more on a
        fresh connection (nothing of it was processed: no response had begun).
        """
        pool = compat.connection_pool(self.http)
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
        sent = (getattr(compat.response_socket(response), "sent", 0.0) if response is not None
                else 0.0)
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
        body = compat.response_body_buffer(response)
        sock = compat.response_socket(response)
        stamped = compat.connection_pool(self.http).current  # the socket, even once released
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
            sock = compat.response_socket(response)
            if (not compat.response_body_buffer(response) and not response.message_complete
                    and sock is not None):
                response.feed(sock.recv(NOT_SSE_BODY))
        except Exception:  # the Content-Type is the failure; the body only illustrates it
            pass
        return bytes(compat.response_body_buffer(response)[:NOT_SSE_BODY])

    def _http_failure(self, response: Any, status: int) -> StreamFailure:
        try:
            text = response.read()[:MAX_ERROR_BODY]
        except Exception:  # the body is a courtesy; the status is the failure
            text = b""
        finally:
            response.release()
        return StreamFailure(ErrorCategory.for_http_status(status),
                             f"HTTP {status}: {error_text(text)}",
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
