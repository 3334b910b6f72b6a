"""The fast client's connection pool: kernel-stamped sockets, connect failures told apart, and
keep-alive connections never reused once a server may have dropped them.

geventhttpclient's pools are subclassed here; ``locustfiles.compat`` names the private hooks
they override or call (``_create_socket``, ``_create_tcp_socket``, ``_semaphore``).
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any

import gevent.socket
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool

from locustfiles import compat, kernelstamps
from locustfiles.reactor import MSG_PEEK

# A pooled connection idle longer than this is closed instead of reused: servers drop idle
# keep-alive connections (uvicorn, vLLM's server, after 5 s), and a request sent as they do
# fails without the server having done anything wrong.
MAX_IDLE_S = 4.0


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
        kernelstamps.take_sent_stamps(compat.raw_socket(self))
        self.sent = 0.0
        self.headers_due = True

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        super().sendall(data, flags)
        self._take_sent()

    def _take_sent(self) -> None:
        stamps = kernelstamps.take_sent_stamps(compat.raw_socket(self))
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
                return compat.raw_socket(self).recv(bufsize, MSG_PEEK)
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
                sock = compat.create_pool_socket(self)
            except BaseException:
                compat.release_pool_slot(self)
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


class StampedPool(_KeepAlive, _ConnectPhase, ConnectionPool):
    def _create_tcp_socket(self, family: int, socktype: int, protocol: int):  # type: ignore[no-untyped-def]
        if not kernelstamps.AVAILABLE:
            return super()._create_tcp_socket(family, socktype, protocol)
        sock = StampedSocket(family, socktype, protocol)
        kernelstamps.enable(sock)
        return sock


class KeepAliveSSLPool(_KeepAlive, _ConnectPhase, SSLConnectionPool):
    pass


def pool_class_for(pool: Any) -> type:
    """This module's class for one of geventhttpclient's pools (TLS or plain)."""
    return KeepAliveSSLPool if isinstance(pool, SSLConnectionPool) else StampedPool
