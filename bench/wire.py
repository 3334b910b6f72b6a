"""Wire truth: capture a run's loopback traffic and time every request from its packets.

The packet capture is the reference the load generator's records are checked against:
- ``capture(port, path)`` runs Debian's ``tcpdump`` on the loopback interface (root needed) for
  one server port, with nanosecond stamps;
- ``wire_requests(path, port)`` reads the capture (``dpkt``) and returns, per request, when its
  ``POST`` left the client, when the first packet carrying a token came back, the first answer
  token, and ``data: [DONE]``. Requests are keyed by the ``X-Request-Id`` header the suite sends
  (the record's ``request_id``), so records and packets join exactly;
- ``compare(records, wire)`` gives the per-request error of each timing (record minus wire).

A token packet is a server packet whose payload matches ``"(content|reasoning|reasoning_content)":"``
followed by a non-quote character: the role-only first chunk (``"content":""``) does not count,
as in the records' definition of TTFT.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

# The wire's own definition of a token packet, kept apart from the client's reader on purpose:
# the truth must not share the code it checks.
TOKEN = re.compile(rb'"(?:content|reasoning|reasoning_content)":"[^"]')
ANSWER = re.compile(rb'"content":"[^"]')
DONE = b"data: [DONE]"
REQUEST_ID = re.compile(rb"\r\nx-request-id: *([^\r\n]+)", re.IGNORECASE)


class CaptureUnavailable(RuntimeError):
    """Packet capture cannot run here (no tcpdump, not root, no capture permission)."""


def capture_problem() -> str | None:
    """Why capture cannot run here, or None when it can."""
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed (make system-deps installs it)"
    if os.geteuid() != 0:
        return "capturing packets needs root"
    try:
        import dpkt  # noqa: F401
    except ImportError:
        return "the pcap reader dpkt is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def capture(port: int, path: Path, snaplen: int = 2048) -> Iterator[dict[str, int]]:
    """Capture loopback TCP traffic to or from ``port`` into ``path`` while the block runs.

    Yields a dict that holds, after the block, the packets tcpdump ``captured`` and ``dropped``.
    """
    problem = capture_problem()
    if problem:
        raise CaptureUnavailable(problem)
    stats: dict[str, int] = {}
    err_path = Path(f"{path}.stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", str(snaplen), "-B", "65536",
             "--time-stamp-precision=nano", "-w", str(path), f"tcp port {port}"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while b"listening on" not in err_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise CaptureUnavailable("tcpdump did not start: "
                                         + err_path.read_text(errors="replace").strip())
            time.sleep(0.05)
        yield stats
        time.sleep(0.2)  # the last packets reach the capture buffer
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = err_path.read_text(errors="replace")
    for key, pattern in (("captured", r"(\d+) packets captured"),
                         ("dropped", r"(\d+) packets dropped by kernel")):
        found = re.search(pattern, text)
        stats[key] = int(found.group(1)) if found else -1


@dataclass
class WireRequest:
    """One request as the packets show it (Unix seconds, from the capture's clock)."""

    request_id: str
    client_port: int
    sent: float
    first_token: float = float("nan")
    first_answer: float = float("nan")
    done: float = float("nan")


def wire_requests(path: Path, server_port: int) -> pd.DataFrame:
    """Every request in the capture, one row each (columns of ``WireRequest``)."""
    import dpkt

    rows: list[WireRequest] = []
    current: dict[int, WireRequest] = {}  # client port -> its request in flight
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        nano = reader.nano if hasattr(reader, "nano") else False
        for ts, buf in reader:
            stamp = float(ts)
            if not nano and stamp > 1e12:  # some dpkt versions give integer nanoseconds
                stamp /= 1e9
            ip = _ip_of(buf, reader.datalink())
            if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            payload = bytes(tcp.data)
            if not payload:
                continue
            if tcp.dport == server_port:
                if payload.startswith(b"POST "):
                    found = REQUEST_ID.search(payload)
                    request = WireRequest(found.group(1).decode() if found else "",
                                          tcp.sport, stamp)
                    current[tcp.sport] = request
                    rows.append(request)
            elif tcp.sport == server_port:
                request = current.get(tcp.dport)
                if request is None:
                    continue
                if request.first_token != request.first_token and TOKEN.search(payload):
                    request.first_token = stamp
                if request.first_answer != request.first_answer and ANSWER.search(payload):
                    request.first_answer = stamp
                if DONE in payload and request.done != request.done:
                    request.done = stamp
                    del current[tcp.dport]
    return pd.DataFrame([vars(r) for r in rows],
                        columns=["request_id", "client_port", "sent", "first_token",
                                 "first_answer", "done"])


def _ip_of(buf: bytes, datalink: int):  # type: ignore[no-untyped-def]
    import dpkt

    if datalink == dpkt.pcap.DLT_EN10MB:
        frame = dpkt.ethernet.Ethernet(buf)
        return frame.data if isinstance(frame.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
    if datalink == dpkt.pcap.DLT_NULL or datalink == dpkt.pcap.DLT_LOOP:
        return dpkt.loopback.Loopback(buf).data
    if datalink == getattr(dpkt.pcap, "DLT_LINUX_SLL", 113):
        return dpkt.sll.SLL(buf).data
    return None


def compare(records: pd.DataFrame, wire: pd.DataFrame) -> pd.DataFrame:
    """Per successful request found in both: record minus wire, in ms, for each timing.

    Columns: ``send_ms`` (the record's send time against the POST packet), ``ttft_ms``,
    ``ttfat_ms``, ``e2e_ms`` (each interval as recorded against the same interval on the wire),
    plus the wire's own TTFT (``wire_ttft_ms``) for context.
    """
    ok = records[records["ok"].astype(str) == "True"]
    joined = ok.merge(wire, on="request_id", how="inner")
    sent = joined["sent"]
    return pd.DataFrame({
        "request_id": joined["request_id"],
        "send_ms": (joined["start_unix"] - sent) * 1e3,
        "ttft_ms": (joined["ttft_s"] - (joined["first_token"] - sent)) * 1e3,
        "ttfat_ms": (joined["ttfat_s"] - (joined["first_answer"] - sent)) * 1e3,
        "e2e_ms": (joined["e2e_s"] - (joined["done"] - sent)) * 1e3,
        "wire_ttft_ms": (joined["first_token"] - sent) * 1e3,
        "record_ttft_ms": joined["ttft_s"] * 1e3,
    })
