"""Both HTTP clients against the stub server: every failure gets its stable category."""

import math
import socket
import subprocess
import sys
import time

import pytest

from core.config import Endpoint, RequestSettings
from core.records import ERROR_CATEGORIES, RequestRecord
from locustfiles.clients import FastClient, OpenAIClient, chat_body
from support import free_port

CLIENTS = [FastClient, OpenAIClient]


def endpoint(url, model="stub-model", read_timeout=5.0, key_env="", **extra):
    return Endpoint(label="A", base_url=url, model=model, api_key_env=key_env, extra_body=extra,
                    request=RequestSettings(max_tokens=12, read_timeout_s=read_timeout,
                                            connect_timeout_s=1.0))


def send(client_cls, ep):
    client = client_cls(ep)
    try:
        body = chat_body(ep, [{"role": "user", "content": "hello there"}])
        return client.stream_chat(body, RequestRecord())
    finally:
        client.close()


@pytest.fixture
def url(stub):
    return stub(ttft_ms=20, itl_ms=2, reasoning_tokens=4)


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_good_stream_with_reasoning(client_cls, url):
    r = send(client_cls, endpoint(url, chat_template_kwargs={"enable_thinking": True}))
    assert r.ok, r.error_message
    assert r.http_status == 200
    assert r.output_tokens == 12 and r.reasoning_tokens == 4 and r.answer_tokens == 8
    assert r.tokens_from_usage and r.chunks == 12
    assert 0.015 < r.ttft_s < 0.2 and r.ttfat_s > r.ttft_s and r.e2e_s > r.ttfat_s
    assert r.tpot_s > 0 and r.itl_max_s >= r.itl_p50_s > 0


@pytest.mark.parametrize("client_cls", CLIENTS)
@pytest.mark.parametrize("fault, category, text", [
    ("http_500", "http_5xx", "injected internal error"),
    ("http_429", "http_4xx", "HTTP 429"),
    ("stream_error", "stream_error", "engine failed"),
    ("malformed", "malformed_chunk", "not JSON"),
    ("reset", "connection_reset", ""),
])
def test_fault_categories(client_cls, url, fault, category, text):
    r = send(client_cls, endpoint(url, stub_fault=fault))
    assert not r.ok
    assert r.error_category == category, r.error_message
    assert text in r.error_message


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_unknown_model_keeps_the_server_message(client_cls, url):
    r = send(client_cls, endpoint(url, model="nope"))
    assert r.error_category == "http_4xx" and r.http_status == 404
    assert "does not exist" in r.error_message


def test_truncated_stream_fast_client(url):
    r = send(FastClient, endpoint(url, stub_fault="truncate"))
    assert r.error_category == "stream_truncated"
    assert r.chunks > 0 and r.ttft_s > 0


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_read_timeout(client_cls, url):
    r = send(client_cls, endpoint(url, read_timeout=0.5, stub_fault="stall", stub_stall_s=5))
    assert r.error_category == "read_timeout"
    assert 0.4 < r.e2e_s < 3


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_connection_refused(client_cls):
    r = send(client_cls, endpoint(f"http://127.0.0.1:{free_port()}/v1"))
    assert r.error_category == "connection_refused"
    assert math.isnan(r.ttft_s)


def test_connect_timeout_against_a_full_backlog():
    # a loopback listener that never accepts: once its backlog is full, SYNs are dropped
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        r = send(FastClient, endpoint(f"http://127.0.0.1:{port}/v1"))
        assert r.error_category in ("connect_timeout", "read_timeout")
        if r.error_category == "read_timeout":
            pytest.skip("this kernel completed the handshake despite the full backlog")
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_split_and_coalesced_writes_parse_the_same(url):
    r = send(FastClient, endpoint(url, stub_fault="split_writes"))
    assert r.ok and r.chunks == 12 and r.output_tokens == 12


def test_multi_token_chunks_take_tokens_from_usage(url):
    r = send(FastClient, endpoint(url, stub_fault="multi_token_chunks"))
    # 4 reasoning chunks of one token, then 8 answer tokens in 4 chunks of two
    assert r.ok and r.tokens_from_usage and r.output_tokens == 12 and r.chunks == 8


def test_no_usage_falls_back_to_chunks(url):
    r = send(FastClient, endpoint(url, stub_fault="no_usage"))
    assert r.ok and not r.tokens_from_usage and r.output_tokens == r.chunks == 12


@pytest.mark.parametrize("client_cls", CLIENTS)
def test_an_echoed_key_is_redacted(client_cls, stub, monkeypatch):
    url = stub(api_key="sk-right-key-123")
    monkeypatch.setenv("TEST_KEY", "sk-wrong-key-456")
    r = send(client_cls, endpoint(url, key_env="TEST_KEY"))
    assert r.error_category == "http_4xx" and r.http_status == 401
    assert "sk-wrong-key-456" not in r.error_message and "***" in r.error_message
    monkeypatch.setenv("TEST_KEY", "sk-right-key-123")
    assert send(client_cls, endpoint(url, key_env="TEST_KEY")).ok


def test_connection_is_reused_and_recovers_after_a_failure(url):
    ep_ok = endpoint(url)
    client = FastClient(ep_ok)
    try:
        body = chat_body(ep_ok, [{"role": "user", "content": "x"}])
        first = client.stream_chat(body, RequestRecord())
        bad = client.stream_chat({**body, "stub_fault": "truncate"}, RequestRecord())
        again = client.stream_chat(body, RequestRecord())
    finally:
        client.close()
    assert first.ok and not bad.ok and again.ok


def test_every_category_is_documented():
    for name in ("connection_refused", "connection_reset", "connect_timeout", "read_timeout",
                 "http_4xx", "http_5xx", "stream_error", "malformed_chunk", "stream_truncated",
                 "interrupted", "not_event_stream", "empty_answer"):
        assert name in ERROR_CATEGORIES


def test_the_epoll_reader_survives_locusts_monkey_patching():
    # gevent's patch_all removes select.epoll; the reactor must still find the original
    import subprocess
    import sys

    code = ("from gevent import monkey; monkey.patch_all()\n"
            "from locustfiles import reactor; print(reactor.AVAILABLE)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("read_by", ["reactor", "header read"])
def test_times_are_arrival_times_even_when_the_reader_is_late(stub, monkeypatch, read_by):
    # The whole process is blocked (as by a long GC pause or a busy pass over many streams)
    # until ~130 ms after the send; the first token arrives at ~50 ms and is read only after:
    # - "reactor": the headers were read first, the token is read by the epoll reader;
    # - "header read": the block comes right after the send, so the token comes in the same
    #   read as the headers (geventhttpclient's).
    # Either way its TTFT must be the ~50 ms at which it reached the host (the kernel's
    # stamp), not the time it was read.
    import gevent
    from gevent.monkey import get_original

    from locustfiles import kernelstamps, pool

    if not kernelstamps.AVAILABLE:
        pytest.skip("no kernel receive timestamps on this platform")
    url = stub(ttft_ms=50, itl_ms=150)
    ep = Endpoint(label="A", base_url=url, model="stub-model",
                  request=RequestSettings(max_tokens=3, read_timeout_s=5.0))
    blocking_sleep = get_original("time", "sleep")
    client = FastClient(ep)
    try:
        body = chat_body(ep, [{"role": "user", "content": "hello"}])
        assert client.stream_chat(body, RequestRecord()).ok  # connected: the next send is instant
        if read_by == "header read":
            send = pool.StampedSocket.sendall

            def send_then_block(self, data, *args):
                send(self, data, *args)
                blocking_sleep(0.130)

            monkeypatch.setattr(pool.StampedSocket, "sendall", send_then_block)
            record = client.stream_chat(body, RequestRecord())
        else:
            pending = RequestRecord()
            job = gevent.spawn(client.stream_chat, body, pending)
            # Wait until the request is sent and its headers read: the client then stamps the
            # send (presend_s) and hands the stream to the reactor.
            deadline = time.monotonic() + 5.0
            while math.isnan(pending.presend_s) and not job.dead:
                assert time.monotonic() < deadline, "the response headers were never read"
                gevent.sleep(0.001)
            blocking_sleep(0.120)
            record = job.get(timeout=5)
    finally:
        client.close()
    assert record.ok, record.error_message
    assert 0.045 <= record.ttft_s < 0.120, record.ttft_s   # read at >= 0.120 s (~0.130 s)
    assert 0.345 <= record.e2e_s < 0.45, record.e2e_s      # [DONE] at ~0.35 s, read promptly
    assert record.itl_p50_s == pytest.approx(0.150, abs=0.02)


def test_each_load_mode_has_only_its_own_task(tmp_path):
    # Locust hands a subclass its bases' tasks too: an open-loop user must never also run
    # the closed-loop task (it would send extra back-to-back requests).
    code = ("import locustfiles.users as u\n"
            "print([t.__name__ for t in u.OpenLoop_A.tasks], [t.__name__ for t in u.ChatUser.tasks])")
    cfg = tmp_path / "ep.json"
    cfg.write_text('{"endpoints": [{"label": "A", "base_url": "http://127.0.0.1:9/v1", '
                   '"model": "m"}]}')
    out = subprocess.run([sys.executable, "-c", code, "--endpoints-file", str(cfg),
                          "--mode", "open"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['generate'] ['chat']", out.stderr


def test_a_kernel_stamp_outside_the_read_window_is_not_trusted():
    # a wall-clock step between the stamp and the read would put a stamp in the future or
    # before the previous read: then the reader's own time is the better answer
    import struct

    from locustfiles.kernelstamps import SO_TIMESTAMPING, SO_TIMESTAMPNS, arrival_time

    def timestampns(wall: float) -> list:
        seconds = int(wall)
        return [(socket.SOL_SOCKET, SO_TIMESTAMPNS,
                 struct.pack("@ll", seconds, round((wall - seconds) * 1e9)))]

    def timestamping(wall: float) -> list:  # software stamp first, then two unused ones
        seconds = int(wall)
        return [(socket.SOL_SOCKET, SO_TIMESTAMPING,
                 struct.pack("@llllll", seconds, round((wall - seconds) * 1e9), 0, 0, 0, 0))]

    offset = 1_700_000_000.0          # time() - perf_counter()
    now = 500.0                       # the reader's perf_counter()
    for ancillary in (timestampns, timestamping):
        stamp = ancillary(offset + 499.990)
        assert arrival_time(stamp, now, offset, 499.0) == pytest.approx(499.990, abs=1e-6)
        assert arrival_time(ancillary(offset + 500.5), now, offset, 499.0) == now
        assert arrival_time(ancillary(offset + 498.5), now, offset, 499.0) == now
    assert arrival_time([], now, offset, 499.0) == now


_FLOOD_SERVER = r"""
import json, socket, sys, time
# Sends blocks of events as fast as the socket takes them for argv[1] seconds, then [DONE], and
# prints how many events it sent. The socket buffer stays full, so the reader is behind for the
# whole time whatever the machine's speed.
event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "tok"}}]}).encode() + b"\n\n"
per_block = 2000
block = event * per_block
chunk = b"%x\r\n" % len(block) + block + b"\r\n"
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.recv(65536)
conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
sent = 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    conn.sendall(chunk)
    sent += per_block
done = b"data: [DONE]\n\n"
conn.sendall(b"%x\r\n" % len(done) + done + b"\r\n0\r\n\r\n")
print(sent, flush=True)
conn.recv(1)
"""


def test_a_stream_that_is_always_readable_does_not_starve_other_greenlets():
    # A stream whose socket always has data (the reader is behind: a flood of small events, or
    # a load generator short of CPU) keeps epoll answering "ready". The reader must still let
    # the other greenlets of the process run: users whose streams ended, the record flusher,
    # metric capture. Otherwise they all wait for the flood to end. The flood lasts a fixed
    # time with the socket buffer kept full, so the reader is behind on any machine.
    import gevent

    flood_s = 1.0
    server = subprocess.Popen([sys.executable, "-c", _FLOOD_SERVER, str(flood_s)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        ep = endpoint(f"http://127.0.0.1:{port}/v1", read_timeout=30.0)
        ticks: list[float] = []

        def ticker() -> None:
            while True:
                ticks.append(time.perf_counter())
                gevent.sleep(0.001)

        beat = gevent.spawn(ticker)
        client = FastClient(ep)
        try:
            start = time.perf_counter()
            record = client.stream_chat(chat_body(ep, [{"role": "user", "content": "hi"}]),
                                        RequestRecord())
            end = time.perf_counter()
        finally:
            client.close()
            beat.kill()
        sent = int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    assert record.ok and record.chunks == sent, (record.error_message, record.chunks, sent)
    during = [t for t in ticks if start <= t <= end]
    longest = max(b - a for a, b in zip([start, *during], [*during, end]))
    assert end - start >= flood_s, "the read ended before the flood did"
    assert longest < 0.1, f"other greenlets waited {longest * 1e3:.0f} ms in a {end - start:.2f} s read"
