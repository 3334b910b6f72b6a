"""The stub streaming server: routes, vLLM-like stream format, injected timings, every fault."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import threading
import time

import pytest

from bench.stub_server import (FAULTS, run_stub_process, start_stub_in_thread,
                               stop_stub_process)
from support import wait_until

MSG = [{"role": "user", "content": "Say something long, please."}]


# ---- helpers -----------------------------------------------------------------------------------
def _conn(handle_or_port, timeout=5.0) -> http.client.HTTPConnection:
    port = handle_or_port if isinstance(handle_or_port, int) else handle_or_port.port
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.connect()
    return c


def _post(conn, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=h)
    return conn.getresponse()


def _read_sse(resp):
    """[(perf_counter time, data string)] for every `data:` line until the body ends."""
    out = []
    while True:
        line = resp.readline()
        if not line:
            return out
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            out.append((time.perf_counter(), line[6:].decode()))


def _is_token(ev: str) -> bool:
    if ev == "[DONE]" or not ev.startswith("{"):
        return False
    try:
        obj = json.loads(ev)
    except ValueError:
        return False
    for ch in obj.get("choices") or []:
        d = ch.get("delta") or {}
        if d.get("content") or d.get("reasoning"):
            return True
    return False


def _stream_body(**extra):
    b = {"model": "stub-model", "messages": MSG, "stream": True,
         "stream_options": {"include_usage": True}}
    b.update(extra)
    return b


def _raw_request(port, body: dict, timeout=5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    return s


def _recv_all(s: socket.socket) -> tuple[bytes, list[bytes]]:
    reads = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        reads.append(b)
    return b"".join(reads), reads


@pytest.fixture(scope="module")
def stub():
    h = start_stub_in_thread(ttft_ms=20, itl_ms=2, tokens=8)
    yield h
    h.stop()


# ---- routes --------------------------------------------------------------------------------------
def test_models_health_and_unknown_path(stub):
    c = _conn(stub)
    c.request("GET", "/v1/models")
    r = c.getresponse()
    assert r.status == 200
    body = json.loads(r.read())
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["stub-model"]
    c.request("GET", "/health")
    r = c.getresponse()
    assert r.status == 200
    r.read()
    c.request("GET", "/nope")
    r = c.getresponse()
    assert r.status == 404
    assert "error" in json.loads(r.read())
    assert stub.url == f"http://127.0.0.1:{stub.port}/v1"


def test_wrong_model_is_404_like_vllm(stub):
    c = _conn(stub)
    r = _post(c, {"model": "x", "messages": MSG, "stream": True})
    assert r.status == 404
    err = json.loads(r.read())["error"]
    assert err["message"] == "The model `x` does not exist."
    assert err["type"] == "NotFoundError" and err["code"] == 404


def test_api_key_401_echoes_presented_key():
    with start_stub_in_thread(api_key="right-key", ttft_ms=1, itl_ms=1, tokens=2) as h:
        c = _conn(h)
        r = _post(c, _stream_body(), {"Authorization": "Bearer sk-wrong-123"})
        assert r.status == 401
        assert json.loads(r.read())["error"]["message"] == "Incorrect API key provided: sk-wrong-123"
        c.request("GET", "/v1/models")
        r = c.getresponse()
        assert r.status == 401
        r.read()
        r = _post(c, _stream_body(), {"Authorization": "Bearer right-key"})
        assert r.status == 200
        assert _read_sse(r)[-1][1] == "[DONE]"
        c.request("GET", "/health")  # health and metrics stay open, as in vLLM
        assert c.getresponse().status == 200


# ---- stream format -------------------------------------------------------------------------------
def test_stream_chunk_sequence_with_reasoning():
    with start_stub_in_thread(ttft_ms=5, itl_ms=1, tokens=10, reasoning_tokens=3) as h:
        c = _conn(h)
        r = _post(c, _stream_body())
        assert r.status == 200
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert r.getheader("Content-Type").startswith("text/event-stream")
        evs = [e for _, e in _read_sse(r)]
        assert evs[-1] == "[DONE]"
        objs = [json.loads(e) for e in evs[:-1]]
        assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert not _is_token(evs[0])
        toks = objs[1:-1]
        assert len(toks) == 10
        assert all(set(o["choices"][0]["delta"]) == {"reasoning"} for o in toks[:3])
        assert all(set(o["choices"][0]["delta"]) == {"content"} for o in toks[3:])
        assert all(o["choices"][0]["finish_reason"] is None for o in toks[:-1])
        assert toks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
        usage = objs[-1]
        assert usage["choices"] == []
        u = usage["usage"]
        assert u["completion_tokens"] == 10
        assert u["completion_tokens_details"]["reasoning_tokens"] == 3
        assert u["total_tokens"] == u["prompt_tokens"] + 10
        assert len({o["id"] for o in objs}) == 1
        # the same connection is kept alive; enable_thinking false turns reasoning off
        r = _post(c, _stream_body(max_tokens=4, chat_template_kwargs={"enable_thinking": False}))
        objs = [json.loads(e) for _, e in _read_sse(r)[:-1]]
        assert [set(o["choices"][0]["delta"]) for o in objs[1:-1]] == [{"content"}] * 4
        assert objs[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
        # the server thread updates its counters just after its last write: poll briefly
        wait_until(lambda: h.stats["streams_completed"] == 2, 2.0, "2 streams completed", interval=0.005)
        assert h.stats["connections"] == 1


def test_max_tokens_thinking_and_no_usage_by_default(stub):
    c = _conn(stub)
    body = _stream_body(max_tokens=12, ignore_eos=True, chat_template_kwargs={"enable_thinking": True})
    del body["stream_options"]
    evs = [e for _, e in _read_sse(_post(c, body))]
    objs = [json.loads(e) for e in evs[:-1]]
    deltas = [o["choices"][0]["delta"] for o in objs[1:]]
    assert len(deltas) == 12 and all("usage" not in o for o in objs)
    assert sum("reasoning" in d for d in deltas) == 3  # server default 0 -> N // 4 when asked
    assert objs[-1]["choices"][0]["finish_reason"] == "length"


def test_non_stream_completion(stub):
    c = _conn(stub)
    r = _post(c, {"messages": MSG, "max_tokens": 5})
    assert r.status == 200
    body = json.loads(r.read())
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 5


# ---- timings -------------------------------------------------------------------------------------
# Timing checks on a shared 2-core machine: each check gets up to 3 attempts; if all miss while the
# machine is overloaded (load average above the core count) the test is skipped with the figures
# rather than failed, since the stub cannot be judged on a starved CPU.
def _timing_check(attempt, tries=3):
    notes = []
    for _ in range(tries):
        ok, note = attempt()
        print("\n" + note)
        notes.append(note)
        if ok:
            return
    load = os.getloadavg()[0]
    if load > len(os.sched_getaffinity(0)):
        pytest.skip(f"machine overloaded (load {load:.1f}); timings: {notes}")
    pytest.fail("timing out of bounds: " + "; ".join(notes))


def test_ttft_and_itl_match_injected_at_one_stream():
    with start_stub_in_thread(ttft_ms=50, itl_ms=10, tokens=6) as h:
        def attempt():
            errs, gaps = [], []
            for _ in range(3):
                c = _conn(h)
                t0 = time.perf_counter()
                evs = _read_sse(_post(c, _stream_body()))
                tok_t = [t for t, e in evs if _is_token(e)]
                errs.append((tok_t[0] - t0) * 1e3 - 50.0)
                gaps += [(b - a) * 1e3 for a, b in zip(tok_t, tok_t[1:])]
                c.close()
            err, gap = statistics.median(errs), statistics.mean(gaps)
            return (-0.5 <= err <= 5.0 and 9.0 <= gap <= 11.0,
                    f"1 stream: TTFT error median {err:+.2f} ms (runs {[round(e, 2) for e in errs]}), "
                    f"ITL mean {gap:.2f} ms (injected 10); stub's own first-token lateness "
                    f"{h.stats['first_token_lateness_ms']}")

        _timing_check(attempt)
        # the role chunk goes out at once, not at TTFT
        c = _conn(h)
        t0 = time.perf_counter()
        evs = _read_sse(_post(c, _stream_body(stub_ttft_ms=300, stub_itl_ms=1)))
        assert (evs[0][0] - t0) < 0.2 and (evs[1][0] - t0) >= 0.3


def test_64_concurrent_streams_keep_ttft():
    """64 open streams at once (threads, arrivals 5 ms apart, each stream ~0.7 s long). The server
    runs in its own process: in-process it would share the GIL with the 64 client threads."""
    n, ttft, stagger = 64, 50.0, 0.005
    proc, url = run_stub_process(ttft_ms=ttft, itl_ms=20, tokens=32)
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    def attempt():
        conns = [_conn(port, timeout=10) for _ in range(n)]
        start = time.perf_counter() + 0.05
        res: list = [None] * n

        def worker(i):
            c = conns[i]
            time.sleep(max(0.0, start + i * stagger - time.perf_counter()))
            t0 = time.perf_counter()
            evs = _read_sse(_post(c, _stream_body()))
            tok_t = [t for t, e in evs if _is_token(e)]
            res[i] = ((tok_t[0] - t0) * 1e3, len(tok_t), evs[-1][1], t0, evs[-1][0])
            c.close()

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert all(r is not None for r in res)
        assert all(r[1] == 32 and r[2] == "[DONE]" for r in res)
        # most streams open at once (all of them unless the client threads were starved)
        marks = sorted([(r[3], 1) for r in res] + [(r[4], -1) for r in res])
        open_now = peak = 0
        for _, step in marks:
            open_now += step
            peak = max(peak, open_now)
        errs = sorted(r[0] - ttft for r in res)
        p50 = statistics.median(errs)
        p90 = errs[int(0.9 * (n - 1))]
        return (abs(p50) <= 10.0 and peak >= 0.9 * n,
                f"64 streams (peak {peak} open at once): client-measured TTFT error p50 {p50:+.2f} ms, "
                f"p90 {p90:+.2f} ms, max {errs[-1]:+.2f} ms")

    try:
        _timing_check(attempt)
        c = _conn(port)
        c.request("GET", "/stub/stats")
        server = json.loads(c.getresponse().read())
        print(f"stub's own lateness over all attempts: first token {server['first_token_lateness_ms']}, "
              f"all writes {server['lateness_ms']}")
        assert server["streams_completed"] % n == 0 and server["client_disconnects"] == 0
    finally:
        stop_stub_process(proc)


# ---- faults --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault,status", [("http_500", 500), ("http_429", 429)])
def test_http_error_faults(stub, fault, status):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault=fault))
    assert r.status == status
    err = json.loads(r.read())["error"]
    assert err["message"]
    if fault == "http_500":
        assert err["message"] == "stub: injected internal error"
    # the connection survives
    r = _post(c, _stream_body())
    assert r.status == 200 and _read_sse(r)[-1][1] == "[DONE]"


def test_stream_error_fault(stub):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault="stream_error"))
    assert r.status == 200
    evs = [e for _, e in _read_sse(r)]
    assert evs[-1] == "[DONE]"
    err = json.loads(evs[-2])
    assert err == {"error": {"message": "stub: engine failed", "type": "InternalServerError", "code": 500}}
    assert sum(_is_token(e) for e in evs) == 3


def test_malformed_fault(stub):
    c = _conn(stub)
    evs = [e for _, e in _read_sse(_post(c, _stream_body(stub_fault="malformed")))]
    assert "{not json" in evs
    assert evs[-1] == "[DONE]"
    assert sum(_is_token(e) for e in evs) == 8


def test_truncate_fault(stub):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault="truncate"))
    assert r.status == 200
    with pytest.raises(http.client.IncompleteRead):  # (readline() would hide it: peek swallows it)
        r.read()
    s = _raw_request(stub.port, _stream_body(stub_fault="truncate"))
    raw, _ = _recv_all(s)
    s.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"[DONE]" not in raw and not raw.endswith(b"0\r\n\r\n")
    assert raw.count(b'"content"') == 1 + 3  # role chunk + 3 tokens


def test_reset_fault(stub):
    s = _raw_request(stub.port, _stream_body(stub_fault="reset"))
    try:
        got = s.recv(65536)
        assert got == b""  # closed without a byte (RST can also read as EOF)
    except ConnectionResetError:
        pass
    finally:
        s.close()
    c = _conn(stub)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        _post(c, _stream_body(stub_fault="reset"))


def test_stall_fault_triggers_client_timeout():
    with start_stub_in_thread(ttft_ms=1, itl_ms=1, tokens=4) as h:
        c = _conn(h, timeout=0.3)
        r = _post(c, _stream_body(stub_fault="stall", stub_stall_s=5))
        assert r.status == 200
        first = r.readline()
        assert b'"role":"assistant"' in first
        t0 = time.perf_counter()
        with pytest.raises((TimeoutError, socket.timeout)):
            while True:
                line = r.readline()
                assert b'"content":" ' not in line
        assert time.perf_counter() - t0 >= 0.25
        c.close()
    # a short stall is just a long first-token delay, then a normal stream
    with start_stub_in_thread(ttft_ms=1, itl_ms=1, tokens=4) as h:
        c = _conn(h)
        t0 = time.perf_counter()
        evs = _read_sse(_post(c, _stream_body(stub_fault="stall", stub_stall_s=0.2)))
        assert evs[-1][1] == "[DONE]" and evs[1][0] - t0 >= 0.2


def test_no_usage_fault(stub):
    c = _conn(stub)
    evs = [e for _, e in _read_sse(_post(c, _stream_body(stub_fault="no_usage")))]
    assert evs[-1] == "[DONE]"
    assert not any('"usage"' in e for e in evs)
    assert sum(_is_token(e) for e in evs) == 8


def test_multi_token_chunks_fault(stub):
    c = _conn(stub)
    evs = [e for _, e in _read_sse(_post(c, _stream_body(stub_fault="multi_token_chunks", max_tokens=7)))]
    objs = [json.loads(e) for e in evs[:-1]]
    contents = [o["choices"][0]["delta"]["content"] for o in objs[1:-1]]
    assert len(contents) == 4  # 2 + 2 + 2 + 1 tokens
    assert [c.count(" ") for c in contents] == [2, 2, 2, 1]
    assert objs[-1]["usage"]["completion_tokens"] == 7


def test_split_writes_fault():
    with start_stub_in_thread(ttft_ms=2, itl_ms=4, tokens=20) as h:
        s = _raw_request(h.port, _stream_body(stub_fault="split_writes"))
        raw, reads = _recv_all_until_done(s)
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = _dechunk(body)
    sse = b"".join(chunks).decode()
    evs = [e[6:] for e in sse.split("\n\n") if e]
    assert evs[-1] == "[DONE]"
    objs = [json.loads(e) for e in evs[:-1]]
    assert len(objs) == 1 + 20 + 1
    assert objs[-1]["usage"]["completion_tokens"] == 20
    # events were split across HTTP chunks and reads, and some chunks carry two events
    assert len(chunks) > len(evs)
    assert any(c.count(b"data: ") >= 2 for c in chunks)
    assert any(not r.endswith(b"\n\n\r\n") for r in reads[1:-1])


def _recv_all_until_done(s):
    reads = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        reads.append(b)
        if b"".join(reads[-3:]).endswith(b"0\r\n\r\n"):
            break
    return b"".join(reads), reads


def _dechunk(body: bytes) -> list[bytes]:
    out, i = [], 0
    while True:
        j = body.index(b"\r\n", i)
        size = int(body[i:j], 16)
        if size == 0:
            return out
        out.append(body[j + 2:j + 2 + size])
        i = j + 2 + size + 2


def test_unknown_fault_is_400(stub):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault="nope"))
    assert r.status == 400
    r.read()
    assert set(FAULTS) >= {"reset", "truncate", "stall", "split_writes"}


def test_server_wide_fault_rate():
    with start_stub_in_thread(ttft_ms=1, itl_ms=1, tokens=2, fault="http_500", fault_rate=0.5) as h:
        c = _conn(h)
        codes = []
        for _ in range(4):
            r = _post(c, _stream_body())
            codes.append(r.status)
            r.read()
        assert sorted(codes) == [200, 200, 500, 500]
        assert h.stats["faults"] == {"http_500": 2}


def test_pipelining_http10_and_client_disconnect():
    with start_stub_in_thread(ttft_ms=1, itl_ms=1, tokens=3) as h:
        # three pipelined streams and a health check in one write, answered in order
        s = socket.create_connection(("127.0.0.1", h.port), timeout=5)
        body = json.dumps(_stream_body()).encode()
        req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        s.sendall(req * 3 + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw, _ = _recv_all(s)
        s.close()
        assert raw.count(b"HTTP/1.1 200 OK") == 4 and raw.count(b"data: [DONE]") == 3
        assert raw.index(b"content-length: 0") > raw.rindex(b"data: [DONE]")
        # HTTP/1.0: no chunked framing, the stream ends with the connection
        s = socket.create_connection(("127.0.0.1", h.port), timeout=5)
        s.sendall(req.replace(b"HTTP/1.1", b"HTTP/1.0"))
        raw, _ = _recv_all(s)
        s.close()
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower() and rest.endswith(b"data: [DONE]\n\n")
    with start_stub_in_thread(ttft_ms=1, itl_ms=5, tokens=1000) as h:
        s = _raw_request(h.port, _stream_body())
        s.recv(65536)
        wait_until(lambda: h.stats["running"] == 1, 2.0, "1 running", interval=0.005)
        s.close()
        wait_until(lambda: h.stats["client_disconnects"] == 1 and h.stats["running"] == 0, 2.0,
                   "the disconnect counted", interval=0.005)


def test_fault_after_zero_and_non_stream_faults(stub):
    c = _conn(stub)
    evs = [e for _, e in _read_sse(_post(c, _stream_body(stub_fault="stream_error", stub_fault_after=0)))]
    assert len(evs) == 3 and json.loads(evs[1])["error"]["code"] == 500 and evs[2] == "[DONE]"
    r = _post(c, {"messages": MSG, "stub_fault": "stream_error"})
    assert r.status == 500
    r.read()
    r = _post(c, {"messages": MSG, "stub_fault": "malformed"})
    assert r.status == 200 and r.read() == b"{not json"
    r = _post(c, {"messages": MSG, "stub_fault": "truncate"})
    with pytest.raises(http.client.IncompleteRead):
        r.read()


# ---- metrics and stats ---------------------------------------------------------------------------
def test_metrics_and_stats():
    with start_stub_in_thread(ttft_ms=30, itl_ms=1, tokens=3) as h:
        c = _conn(h)
        for f in (None, "stream_error", "http_500"):
            r = _post(c, _stream_body(**({"stub_fault": f} if f else {})))
            r.read()
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200
        text = r.read().decode()
        wait_until(lambda: h.stats["streams_completed"] == 2, 2.0, "2 streams completed", interval=0.005)
        st = h.stats
    assert st["chat_requests"] == 3 and st["requests"] == 4
    assert st["streams_completed"] == 2 and st["faults_served"] == 2
    assert st["faults"] == {"stream_error": 1, "http_500": 1}
    parser = pytest.importorskip("prometheus_client.parser")
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert fams["vllm:num_requests_running"].type == "gauge"
    assert fams["vllm:num_requests_waiting"].type == "gauge"
    hist = fams["vllm:time_to_first_token_seconds"]
    assert hist.type == "histogram"
    count = [s.value for s in hist.samples if s.name.endswith("_count")][0]
    le = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert count == 2 and le["0.02"] == 0 and le["0.04"] == 2


# ---- subprocess / CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("processes", [1, 2])
def test_subprocess_listening_and_sigterm(processes):
    proc, url = run_stub_process(ttft_ms=5, itl_ms=1, tokens=3, processes=processes)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        for _ in range(2 * processes):
            c = _conn(port)
            evs = _read_sse(_post(c, _stream_body()))
            assert evs[-1][1] == "[DONE]"
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert proc.stdout.read() == b""  # exactly one line was printed
    finally:
        stop_stub_process(proc)


# ---- answers that are not (proper) streams ---------------------------------------------------------
def test_json_answer_fault_ignores_stream_true(stub):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault="json_answer"))
    assert r.status == 200 and r.getheader("content-type") == "application/json"
    obj = json.loads(r.read())
    assert obj["object"] == "chat.completion" and obj["choices"][0]["message"]["content"]
    assert obj["usage"]["completion_tokens"] == 8
    r = _post(c, _stream_body())  # the connection survives
    assert r.status == 200 and _read_sse(r)[-1][1] == "[DONE]"


@pytest.mark.parametrize("include_usage", [True, False])
def test_empty_stream_fault_has_no_token(stub, include_usage):
    c = _conn(stub)
    body = _stream_body(stub_fault="empty_stream",
                        stream_options={"include_usage": include_usage})
    r = _post(c, body)
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    evs = [e for _, e in _read_sse(r)]
    assert evs[-1] == "[DONE]"
    assert not any(_is_token(e) for e in evs)
    objs = [json.loads(e) for e in evs[:-1]]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert objs[1]["choices"][0]["finish_reason"] == "stop"
    usage = [o["usage"] for o in objs if o.get("usage")]
    assert usage == ([{"prompt_tokens": usage[0]["prompt_tokens"], "total_tokens":
                       usage[0]["prompt_tokens"], "completion_tokens": 0,
                       "prompt_tokens_details": None,
                       "completion_tokens_details": {"reasoning_tokens": 0}}]
                     if include_usage else [])


def test_http_503_html_fault(stub):
    c = _conn(stub)
    r = _post(c, _stream_body(stub_fault="http_503_html"))
    assert r.status == 503 and r.getheader("content-type") == "text/html"
    assert b"<title>503 Service Unavailable</title>" in r.read()
    r = _post(c, _stream_body())
    assert r.status == 200 and _read_sse(r)[-1][1] == "[DONE]"


# ---- the request plan ------------------------------------------------------------------------------
def _plan(cfg=None, schedule=None, **body):
    from bench.stub.plan import FaultSchedule, StubConfig, plan_request

    cfg = cfg or StubConfig(tokens=8)
    return plan_request(cfg, json.dumps({"messages": MSG, **body}).encode(),
                        schedule or FaultSchedule(cfg.fault, cfg.fault_rate))


def test_the_plan_holds_every_decision_about_one_request():
    from dataclasses import FrozenInstanceError

    p = _plan(stream=True, stream_options={"include_usage": True}, max_tokens=5,
              stub_ttft_ms=30, stub_itl_ms=4, stub_reasoning_tokens=2)
    assert (p.stream, p.streamed, p.include_usage, p.fault) == (True, True, True, None)
    assert (p.ttft_s, p.itl_s, p.stall_s) == (0.03, 0.004, 0.0)
    assert (p.tokens, p.reasoning_tokens, p.finish_reason) == (5, 2, "length")
    assert p.prompt_tokens == len(MSG[0]["content"]) // 4 + 1
    assert p.usage()["completion_tokens_details"] == {"reasoning_tokens": 2}
    with pytest.raises(FrozenInstanceError):
        p.tokens = 6  # type: ignore[misc]
    # the stall counts only with the stall fault; empty_stream has no token; json_answer no SSE
    assert _plan(stub_stall_s=2).stall_s == 0.0
    assert _plan(stub_fault="stall", stub_stall_s=2).stall_s == 2.0
    empty = _plan(stub_fault="empty_stream", max_tokens=5)
    assert (empty.tokens, empty.reasoning_tokens, empty.finish_reason) == (0, 0, "stop")
    assert not _plan(stream=True, stub_fault="json_answer").streamed


def test_the_plan_refuses_what_the_server_answers_with_400():
    from bench.stub.protocol import HttpError

    for body in ({"stub_fault": "nope"}, {"stub_ttft_ms": -1}, {"max_tokens": 0}):
        with pytest.raises(HttpError) as err:
            _plan(**body)
        assert err.value.status == 400


def test_the_server_fault_is_spread_evenly_over_requests_naming_none():
    from bench.stub.plan import FaultSchedule, StubConfig

    cfg = StubConfig(fault="http_500", fault_rate=0.5)
    schedule = FaultSchedule(cfg.fault, cfg.fault_rate)
    faults = [_plan(cfg, schedule).fault for _ in range(4)]
    assert faults == [None, "http_500", None, "http_500"]
    assert _plan(cfg, schedule, stub_fault="truncate").fault == "truncate"


# ---- queueing model (--slots) ----------------------------------------------------------------------
def test_slots_queue_answers_first_in_first_out_and_ttft_grows_by_the_wait():
    """--slots 2 and 4 streams at once: two start now, two wait one service time (ttft + 9 gaps
    = 250 ms) for a slot. The wait can only make the clock later, so the queued pair's lower
    bound is exact; the pair served at once must come well before a service time."""
    ttft_ms, itl_ms, tokens = 50.0, 20.0, 10
    service_s = (ttft_ms + (tokens - 1) * itl_ms) / 1e3
    with start_stub_in_thread(ttft_ms=ttft_ms, itl_ms=itl_ms, tokens=tokens, slots=2) as h:
        conns = [_conn(h) for _ in range(4)]
        ttfts: list = [None] * 4
        go = threading.Barrier(4)

        def worker(i):
            go.wait()
            t0 = time.perf_counter()
            evs = _read_sse(_post(conns[i], _stream_body()))
            tok_t = [t for t, e in evs if _is_token(e)]
            ttfts[i] = (tok_t[0] - t0, len(tok_t), evs[-1][1])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert all(r is not None and r[1] == tokens and r[2] == "[DONE]" for r in ttfts)
        firsts = sorted(r[0] for r in ttfts)
        assert firsts[2] >= service_s + ttft_ms / 1e3 - 0.002, firsts   # waited a whole answer
        assert firsts[1] < service_s, firsts                            # two served at once
        # a waiting client that leaves gives its place up; the server keeps serving
        holder = _conn(h)
        holder.request("POST", "/v1/chat/completions", body=json.dumps(_stream_body()),
                       headers={"Content-Type": "application/json"})
        second = _conn(h)
        second.request("POST", "/v1/chat/completions", body=json.dumps(_stream_body()),
                       headers={"Content-Type": "application/json"})
        leaver = _raw_request(h.port, _stream_body())
        time.sleep(0.05)
        leaver.close()
        evs = _read_sse(holder.getresponse()) + _read_sse(second.getresponse())
        assert sum(_is_token(e) for _, e in evs) == 2 * tokens
        wait_until(lambda: h.stats["running"] == 0, timeout=5)
        assert h.stats["client_disconnects"] >= 1


def test_slots_off_by_default_and_refused_below_zero():
    from bench.stub.cli import _parse_args
    from bench.stub.plan import StubConfig

    assert StubConfig().slots == 0
    assert _parse_args(["--slots", "3"]).slots == 3
    with pytest.raises(SystemExit):
        _parse_args(["--slots", "-1"])
