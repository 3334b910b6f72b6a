"""One reader for every open stream of a process: an epoll set watched by one greenlet.

Why: with a greenlet per stream, each chunk costs a gevent wake-up (a failed recv, a timeout
object, two greenlet switches); at hundreds of streams that overhead saturates the load
generator and inflates the very latencies it measures. Here one greenlet waits on the epoll
descriptor, and each wake-up reads every socket that has data, so chunks that arrive together
(as they do from a batching server like vLLM) cost one wake-up between them.

The request's own greenlet sends the request and reads the headers as usual, hands the socket
here, and sleeps until the stream ends.

Arrival times come from the kernel, not from the reader's clock: each socket has kernel stamps
on (``locustfiles.kernelstamps``), so every read returns the time its (last) packet reached the
host. A chunk's timestamp therefore does not depend on how long it waited for the reader: when the load
generator is busy (hundreds of streams, a garbage collection, a batch of records to send), the
reader falls behind but the times it records do not.
"""

from __future__ import annotations

import re
import select
import socket
from time import perf_counter, time
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.hub import Waiter, get_hub

from core.records import ErrorCategory
from locustfiles import compat
from locustfiles.kernelstamps import ANCILLARY_SPACE, arrival_time
from locustfiles.sse import SSEDecoder
from locustfiles.stream import REASONING_FIELDS, StreamFailure, StreamRecorder

READ_BLOCK = 65536
DEADLINE_CHECK_S = 0.1
# Longest the reader keeps the process to itself while sockets stay readable: then the other
# greenlets (users whose streams ended, the record flusher, metric capture) get a turn.
MAX_BUSY_S = 0.002
YIELD_S = 0.0001


MSG_PEEK = getattr(socket, "MSG_PEEK", 2)
_TOKEN = re.compile(rb'"(?:content|%s)":"[^"]' % "|".join(REASONING_FIELDS).encode())
_ANSWER = re.compile(rb'"content":"[^"]')


def milestone_end(queued: bytes, answer_only: bool) -> int:
    """Bytes up to the end of the first event carrying a token (or an answer token), including
    the chunked framing's CRLF after it; 0 when no such complete event is queued."""
    found = (_ANSWER if answer_only else _TOKEN).search(queued)
    if found is None:
        return 0
    end = queued.find(b"\n\n", found.end())
    if end < 0:
        return 0
    end += 2
    if queued.startswith(b"\r\n", end):
        end += 2
    return end


def _original_epoll() -> type | None:
    # Locust monkey-patches the select module, and gevent's patch removes select.epoll (it
    # has no cooperative version); the reactor only ever polls with timeout 0, so the
    # original, blocking class is what it wants.
    try:
        from gevent.monkey import get_original

        return get_original("select", "epoll")
    except (ImportError, AttributeError):
        return getattr(select, "epoll", None)


_EPOLL = _original_epoll()
AVAILABLE = _EPOLL is not None


class Stream:
    """The body of one streamed response, read by the reactor."""

    __slots__ = ("response", "body", "raw", "fd", "recorder", "decoder", "read_timeout_s", "last_read",
                 "headers_arrived", "last_arrival", "done", "result", "behind")

    def __init__(self, response: Any, recorder: StreamRecorder, read_timeout_s: float,
                 headers_arrived: float | None = None):
        self.response = response
        self.body = compat.response_body_buffer(response)  # parsed body bytes not yet taken
        # the plain non-blocking socket under gevent's wrapper
        self.raw = compat.raw_socket(compat.response_socket(response))
        self.fd = self.raw.fileno()
        self.recorder = recorder
        self.decoder = SSEDecoder()
        self.read_timeout_s = read_timeout_s
        self.last_read = perf_counter()
        if headers_arrived is not None and headers_arrived < recorder.start:
            headers_arrived = None  # the wall clock was stepped back: no usable stamp
        self.headers_arrived = headers_arrived
        self.last_arrival = headers_arrived if headers_arrived is not None else recorder.start
        self.done = False
        self.behind = False  # the last read held more than one event
        self.result: AsyncResult = AsyncResult()

    def consume_buffered(self, now: float) -> bool:
        """Parse body bytes already read with the headers; True when the stream is over.

        They arrived with the headers' last read: ``headers_arrived`` when that is known.
        """
        return self._parse(now if self.headers_arrived is None else self.headers_arrived)

    def on_readable(self, now: float, clock_offset: float) -> bool:
        """Read what the socket has; True when the stream is over (result set).

        ``now`` is the reader's perf_counter() and ``clock_offset`` is time() - perf_counter(),
        to turn the kernel's wall-clock arrival stamp into the perf_counter() scale.
        """
        try:
            size = self._read_size()
            data, ancillary, _flags, _addr = self.raw.recvmsg(size, ANCILLARY_SPACE)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(StreamFailure(ErrorCategory.STREAM_TRUNCATED,
                                     f"connection lost mid-stream ({exc})",
                                     200))
            return True
        self.last_read = now
        if ancillary:
            # bounded by the clock after the read: data can arrive after the pass began
            now = arrival_time(ancillary, perf_counter(), clock_offset, self.last_arrival)
        self.last_arrival = now
        if not data:
            return self._end(now, "the server closed the connection before data: [DONE]")
        try:
            self.response.feed(data)
        except Exception as exc:  # the HTTP framing itself is broken
            self._fail(StreamFailure(ErrorCategory.STREAM_TRUNCATED,
                                     f"invalid chunked body: {exc}", 200))
            return True
        return self._parse(now)

    def _read_size(self) -> int:
        """How much to read: everything, or only up to the end of a milestone's event.

        A read returns the arrival stamp of its last packet, so events queued together (the
        reader was late) share the latest one's time. For the first token, and the first answer
        token when the reader is behind, the socket is peeked first and read only up to the end
        of that event: its time is then its own packet's. Raises BlockingIOError / OSError.
        """
        recorder = self.recorder
        if recorder.first is None:
            answer_only = False
        elif recorder.first_answer is None and self.behind:
            answer_only = True
        else:
            return READ_BLOCK
        queued = self.raw.recv(READ_BLOCK, MSG_PEEK)
        return milestone_end(queued, answer_only) or READ_BLOCK

    def _parse(self, now: float) -> bool:
        body = self.body
        if body:
            data = bytes(body)
            del body[:]
            if not self.done:
                events = 0
                try:
                    for event in self.decoder.feed(data):
                        events += 1
                        if self.recorder.on_payload(event, now):
                            self.done = True
                            break
                except StreamFailure as failure:
                    self._fail(failure)
                    return True
                self.behind = events > 1
        if self.response.message_complete:
            return self._end(now, "the stream ended without data: [DONE]")
        return False

    def _end(self, now: float, truncated_message: str) -> bool:
        """The body is over: deliver an event that lacked its blank line, then the result."""
        if not self.done:
            last = self.decoder.close()
            try:
                if last is not None and self.recorder.on_payload(last, now):
                    self.done = True
            except StreamFailure as failure:
                self._fail(failure)
                return True
        if self.done:
            self.result.set(None)
        else:
            self._fail(StreamFailure(ErrorCategory.STREAM_TRUNCATED, truncated_message, 200))
        return True

    def _fail(self, failure: StreamFailure) -> None:
        self.result.set(failure)


class StreamReactor:
    """Reads all registered streams from one greenlet."""

    def __init__(self) -> None:
        self._epoll = _EPOLL()
        self._streams: dict[int, Stream] = {}
        self._loop: gevent.Greenlet | None = None
        self._watchdog: gevent.Greenlet | None = None
        # Started once and never stopped: starting and stopping an io watcher on every wait
        # costs epoll_ctl calls per wake-up.
        self._waiter: Waiter | None = None
        self._watcher = get_hub().loop.io(self._epoll.fileno(), 1)
        self._watcher.start(self._wake)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.switch(None)

    def __len__(self) -> int:
        return len(self._streams)

    def wait(self, stream: Stream) -> StreamFailure | None:
        """Read the stream until it ends; returns its failure or None. Blocks this greenlet."""
        if stream.consume_buffered(perf_counter()):
            return stream.result.get()
        self._streams[stream.fd] = stream
        self._epoll.register(stream.fd, select.EPOLLIN)
        self._ensure_running()
        try:
            return stream.result.get()
        finally:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self._streams.get(stream.fd) is stream:
            del self._streams[stream.fd]
            try:
                self._epoll.unregister(stream.fd)
            except (OSError, ValueError):
                pass

    def _ensure_running(self) -> None:
        if self._loop is None or self._loop.dead:
            self._loop = gevent.spawn(self._run)
        if self._watchdog is None or self._watchdog.dead:
            self._watchdog = gevent.spawn(self._check_deadlines)

    def _run(self) -> None:
        poll = self._epoll.poll
        streams = self._streams
        busy_since = perf_counter()
        while streams:
            ready = poll(0)
            if not ready:
                self._waiter = waiter = Waiter()
                waiter.get()
                busy_since = perf_counter()
                continue
            now = perf_counter()
            offset = time() - now
            ended = False
            for fd, _events in ready:
                stream = streams.get(fd)
                if stream is not None and stream.on_readable(now, offset):
                    self._forget(stream)
                    ended = True
            # While data keeps coming (a reader behind its sockets), poll(0) is never empty and
            # this loop would never yield: a user whose stream ended would wait to send its
            # next request until every other stream had ended too.
            if perf_counter() - busy_since > MAX_BUSY_S:
                # A timer, so the event loop turns: sleep(0) would only run pending callbacks,
                # not timers or other I/O (and idle() never comes while sockets are readable).
                gevent.sleep(YIELD_S)
                busy_since = perf_counter()
            elif ended:
                gevent.sleep(0)  # the users whose streams ended resume (their wake-ups are callbacks)
        self._loop = None

    def _check_deadlines(self) -> None:
        while self._streams:
            gevent.sleep(DEADLINE_CHECK_S)
            now = perf_counter()
            for stream in list(self._streams.values()):
                if now - stream.last_read > stream.read_timeout_s:
                    self._forget(stream)
                    stream._fail(StreamFailure(ErrorCategory.READ_TIMEOUT,
                                               "no data within the read timeout",
                                               200))
        self._watchdog = None


_reactor: StreamReactor | None = None


def reactor() -> StreamReactor:
    """The process's reactor (made on first use, inside the running gevent hub)."""
    global _reactor
    if _reactor is None:
        _reactor = StreamReactor()
    return _reactor
