"""A stub OpenAI-compatible streaming server with known, injected timings (standard library only).

It streams chat completions the way vLLM's OpenAI server does (``data: <json>`` SSE events over
HTTP/1.1 ``Transfer-Encoding: chunked``), with a time to first token and an inter-token gap that
are set, not measured, so a load generator's reported TTFT/ITL can be compared with the truth and
its speed (SSE chunks per client CPU-second) measured. Every failure mode the suite must classify
can be injected per request.

CLI::

    python -m bench.stub_server --host 127.0.0.1 --port 0 --ttft-ms 50 --itl-ms 20 --tokens 128 \
        [--reasoning-tokens 0] [--processes 1] [--api-key KEY] [--model stub-model] \
        [--fault NAME --fault-rate 1.0] [--stall-s 30] [--fault-after 3] \
        [--prompt-token-factor 1.0] [--slots 0]

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
``stub_reasoning_tokens``. ``plan_request`` reads them, with the server options, once per request
into a ``RequestPlan`` (timings, lengths, reasoning, fault, usage) that the writers only read.

Timing model: t0 is when the bytes completing the request arrived (stamped in
``data_received``; the request is handled on the next loop turn, so in a burst of simultaneous
requests each keeps its own arrival time). The role-only chunk goes out with the response headers
as soon as the request is handled; token chunk i (0-based) is written at the absolute deadline
t0 + ttft + i * itl (``loop.call_at``), so lateness never accumulates. The event loop wakes up to
~1 ms late (epoll's millisecond timeout); the achieved lateness is kept in
``stats['lateness_ms']`` / ``stats['first_token_lateness_ms']`` so a benchmark knows the stub's own
error. A burst of requests delays role chunks (each request costs tens of microseconds to handle),
not token deadlines, as long as the burst is handled within the TTFT.

Queueing model (``--slots C``, off by default): at most C chat answers generate at once per
process; the others wait first in, first out, and each starts (headers, role chunk, then its
tokens on the timing model above, t0 being the moment its slot freed) when one ends, so its TTFT
grows by the wait. A closed loop of U users then has a known knee: up to C users nobody waits;
with C + 1 users some request waits at least one service time / C after every period (the
service time being ttft + (tokens - 1) * itl), which a capacity search under a TTFT SLO finds.

Server: ``loop.create_server`` with a hand-written HTTP/1.1 ``asyncio.Protocol`` (no task or
future per request; keep-alive; pipelining; Content-Length or chunked request bodies), chunked
responses, one write per due instant. With ``--processes N`` the parent binds the port (without
listening) and forks N workers that each listen on it with SO_REUSEPORT; counters, /metrics and
/stub/stats are then per worker. On 2 shared cores the stub costs roughly 30-40 us of CPU per SSE
chunk (mostly the loopback send), i.e. about half a core for 256 streams x 50 chunks/s.

Modules: ``plan`` (options, ``RequestPlan``, ``plan_request``, ``FAULTS``), ``protocol`` (the HTTP/1.1
connection), ``sse`` (events, write scripts, the pump), ``stats`` (counters, /metrics), ``server``
(routes, answers), ``launch`` (in-thread and subprocess starters), ``cli`` (``main``, N processes).
``bench.stub_server`` is the command-line entry point and re-exports this package's API.
"""
from __future__ import annotations

from bench.stub.cli import main
from bench.stub.launch import StubHandle, run_stub_process, start_stub_in_thread, stop_stub_process
from bench.stub.plan import FAULTS, RequestPlan, StubConfig, plan_request
from bench.stub.server import StubServer

__all__ = [
    "FAULTS",
    "RequestPlan",
    "StubConfig",
    "StubServer",
    "StubHandle",
    "plan_request",
    "start_stub_in_thread",
    "run_stub_process",
    "stop_stub_process",
    "main",
]
