"""The floor under any Python streaming client: epoll + recv and nothing else.

It opens N keep-alive connections to the stub, sends the same streamed chat request on each
(staggered over one request's duration, as the client benchmark does), and only reads: no HTTP
or SSE parsing, no JSON, no records. Its reads per CPU-second are the most any Python client
can reach when each chunk arrives on its own (the kernel's TCP receive path, and on loopback the
server's ACK handling, are charged to the reader). Prints one JSON line.

    python -m bench.bare_reader URL STREAMS SECONDS [--itl-ms 20 --ttft-ms 50 --tokens 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import sys
import time
from urllib.parse import urlsplit


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the stub's base URL, like http://127.0.0.1:PORT/v1")
    p.add_argument("streams", type=int)
    p.add_argument("seconds", type=float, help="measured time, after one request's warm-up")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=128)
    args = p.parse_args(argv)
    parts = urlsplit(args.url)
    body = json.dumps({"model": "stub-model", "stream": True, "max_tokens": args.tokens,
                       "messages": [{"role": "user", "content": "hello"}],
                       "stream_options": {"include_usage": True}}).encode()
    request = (f"POST {parts.path.rstrip('/')}/chat/completions HTTP/1.1\r\n"
               f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    duration_s = (args.ttft_ms + args.tokens * args.itl_ms) / 1000.0
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    send_at: dict[int, float] = {}
    begin = time.monotonic()
    for i in range(args.streams):
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.setblocking(False)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
        send_at[sock.fileno()] = begin + i * duration_s / args.streams
    measure_from = begin + duration_s + 1.0
    end = measure_from + args.seconds
    reads = 0
    cpu0 = None
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if cpu0 is None and now >= measure_from:
                cpu0, reads = cpu_seconds(), 0
            for fd, due in list(send_at.items()):
                if due <= now:
                    sockets[fd].send(request)
                    del send_at[fd]
            for fd, _events in poller.poll(0.001):
                data = sockets[fd].recv(65536)
                reads += 1
                if not data:
                    raise SystemExit(f"the server closed connection {fd}")
                if data.endswith(b"0\r\n\r\n"):  # the chunked body ended: next request
                    send_at[fd] = time.monotonic()
        cpu = cpu_seconds() - (cpu0 or 0.0)
    finally:
        for sock in sockets.values():
            sock.close()
    print(json.dumps({"streams": args.streams, "reads": reads, "cpu_s": cpu,
                      "reads_per_cpu_s": reads / cpu if cpu else float("nan")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
