"""The kernel's own clock for a socket's traffic: when a request left the host, when data arrived.

Why: a load generator's clock readings are late whenever its process is busy (hundreds of
streams, a garbage collection, a CPU shared with the server under test). The kernel stamps each
packet as it passes, independent of when the process gets to it. Linux's ``SO_TIMESTAMPING``
(software stamps) gives both directions on one socket:
- receive: every ``recvmsg`` carries the arrival time of the data it returns (``SCM_TIMESTAMPING``);
- transmit: every write queues the time its last byte was handed to the network device on the
  socket's error queue, read with ``MSG_ERRQUEUE``.

Stamps are wall-clock (``CLOCK_REALTIME``) times; callers convert them to the ``perf_counter()``
scale with ``time() - perf_counter()`` taken at the moment of reading. Elsewhere than Linux
``AVAILABLE`` is False and callers use their own clock.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

_ON_LINUX = sys.platform.startswith("linux")
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37) if _ON_LINUX else 0  # 37 on every Linux arch
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35) if _ON_LINUX else 0    # the older, receive-only option
_TX_SOFTWARE = 1 << 1
_RX_SOFTWARE = 1 << 3
_SOFTWARE = 1 << 4      # report software stamps
_OPT_TSONLY = 1 << 11   # transmit stamps without a copy of the packet
FLAGS = _TX_SOFTWARE | _RX_SOFTWARE | _SOFTWARE | _OPT_TSONLY
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

_TIMESPECS = struct.Struct("@llllll")  # SCM_TIMESTAMPING: software, (deprecated), hardware
_TIMESPEC = struct.Struct("@ll")       # SCM_TIMESTAMPNS
ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPECS.size) if hasattr(socket, "CMSG_SPACE") else 0
# a transmit stamp comes with an IP_RECVERR / IPV6_RECVERR message beside it
ERRQUEUE_SPACE = ANCILLARY_SPACE + (socket.CMSG_SPACE(64) if ANCILLARY_SPACE else 0)
AVAILABLE = bool(SO_TIMESTAMPING and ANCILLARY_SPACE)


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` sends and receives; False if it can't."""
    if not AVAILABLE:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, FLAGS)
    except OSError:
        return False
    return True


def wall_stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The software stamp in a recvmsg's ancillary data (Unix seconds), or None."""
    for level, kind, value in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SO_TIMESTAMPING and len(value) >= _TIMESPECS.size:
            seconds, nanoseconds = _TIMESPECS.unpack_from(value)[:2]
        elif kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(value)
        else:
            continue
        if seconds or nanoseconds:
            return seconds + nanoseconds * 1e-9
    return None


def arrival_time(ancillary: list[tuple[int, int, bytes]], now: float, clock_offset: float,
                 not_before: float) -> float:
    """When a read's data reached the host, on the perf_counter() scale; ``now`` if unknown.

    ``ancillary`` is what recvmsg returned, ``clock_offset`` is time() - perf_counter(). A
    stamp after ``now`` or before ``not_before`` (the previous read) means the wall clock was
    stepped in between, and the reader's own time is kept.
    """
    wall = wall_stamp(ancillary)
    if wall is not None:
        arrived = wall - clock_offset
        if not_before <= arrived <= now:
            return arrived
    return now


def take_sent_stamps(raw: Any) -> list[float]:
    """Drain the transmit stamps queued on a plain non-blocking socket (Unix seconds, in order).

    The queue must be drained: while it holds anything, the socket polls as ready (POLLERR),
    which would wake its readers for nothing.
    """
    stamps: list[float] = []
    while True:
        try:
            _data, ancillary, _flags, _addr = raw.recvmsg(1, ERRQUEUE_SPACE, MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: none left
            return stamps
        wall = wall_stamp(ancillary)
        if wall is not None:
            stamps.append(wall)
