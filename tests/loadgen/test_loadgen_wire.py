"""The client's timings against the wire (packet capture), and the send side of a request:
kernel send stamps, request ids, stale keep-alive connections, output-length draws, the
open-loop stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.wire import capture, capture_problem, compare, wire_requests
from core.config import ConfigError, Endpoint, RequestSettings, parse_config
from core.records import RequestRecord
from locustfiles import kernelstamps, pool
from locustfiles.clients import FastClient, chat_body
from support import ROOT, write_config

LOCUSTFILES = f"{ROOT / 'locustfiles' / 'users.py'},{ROOT / 'locustfiles' / 'sweep.py'}"
# Tolerances for a noisy CI machine; `make bench` (bench.bench_wire) carries the tight targets
# (1 ms p50, 2 ms p99) and prints the figures.
WIRE_P50_MS = 1.0
WIRE_P99_MS = 5.0


def _run_locust(config: Path, run_dir: Path, timeout: float = 120) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILES, "--headless",
                    "--endpoints-file", str(config), "--run-dir", str(run_dir),
                    "--stop-timeout", "30", "--only-summary", "--exit-code-on-error", "0"],
                   cwd=ROOT, check=True, capture_output=True, timeout=timeout)
    return time.monotonic() - started


def _records(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "records.csv", keep_default_na=False, na_values=["nan", ""],
                       dtype={"request_id": str})


@pytest.mark.slow
def test_client_timings_agree_with_the_wire(stub, tmp_path):
    problem = capture_problem()
    if problem:
        pytest.skip(f"packet capture unavailable: {problem}")
    url = stub(ttft_ms=30, itl_ms=5, tokens=24)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"}],
                       load={"stages": [8], "ramp_s": 0.5, "warmup_s": 1.0, "steady_s": 4.0,
                             "drain_s": 0.5}, request={"max_tokens": 24})
    with capture(port, tmp_path / "run.pcap") as packets:
        _run_locust(cfg, tmp_path / "run")
    records = _records(tmp_path / "run")
    steady = records[records["phase"] == "steady"]
    assert len(steady) >= 8 and steady["ok"].all(), steady["error_message"].unique()
    wire = wire_requests(tmp_path / "run.pcap", port)
    errors = compare(steady, wire)
    assert packets["dropped"] == 0
    assert len(errors) == len(steady), "every steady record is found on the wire by its request id"
    assert (steady["send_stamp"] == ("kernel" if kernelstamps.AVAILABLE else "client")).all()
    for column in ("send_ms", "ttft_ms", "ttfat_ms", "e2e_ms"):
        error = errors[column].abs()
        assert error.quantile(0.5) <= WIRE_P50_MS, (column, error.describe())
        assert error.quantile(0.99) <= WIRE_P99_MS, (column, error.describe())
    # the truth itself is sane: the stub's injected 30 ms first-token delay is on the wire
    assert 25 <= errors["wire_ttft_ms"].median() <= 60


def test_the_request_id_is_sent_and_the_send_is_stamped_by_the_kernel(tmp_path):
    seen: list[bytes] = []
    server = _OneShotServer(seen)
    ep = _endpoint(server.url)
    client = FastClient(ep)
    try:
        record = client.stream_chat(chat_body(ep, [{"role": "user", "content": "hi"}]),
                                    RequestRecord(request_id="abc-123"))
    finally:
        client.close()
        server.close()
    assert record.ok, record.error_message
    assert b"\r\nX-Request-Id: abc-123\r\n" in seen[0]
    if kernelstamps.AVAILABLE:
        assert record.send_stamp == "kernel"
        assert 0 <= record.presend_s < 1.0
    else:
        assert record.send_stamp == "client"


def test_a_reused_connection_the_server_closed_is_retried_once_on_a_fresh_one():
    # uvicorn closes idle keep-alive connections after 5 s; a request sent into that close
    # fails before any byte of a response. The server did nothing wrong: no failure recorded.
    seen: list[bytes] = []
    server = _OneShotServer(seen, close_second_request=True)
    ep = _endpoint(server.url)
    client = FastClient(ep)
    try:
        body = chat_body(ep, [{"role": "user", "content": "hi"}])
        first = client.stream_chat(body, RequestRecord(request_id="1"))
        second = client.stream_chat(body, RequestRecord(request_id="2"))
    finally:
        client.close()
        server.close()
    assert first.ok and second.ok, (first.error_message, second.error_message)
    assert server.connections == 2   # the retry went out on a new connection
    assert len(seen) == 3            # 1, 2 (dropped by the server), 2 again


def test_a_connection_idle_too_long_is_not_reused(monkeypatch):
    seen: list[bytes] = []
    server = _OneShotServer(seen)
    monkeypatch.setattr(pool, "MAX_IDLE_S", 0.05)
    ep = _endpoint(server.url)
    client = FastClient(ep)
    try:
        body = chat_body(ep, [{"role": "user", "content": "hi"}])
        assert client.stream_chat(body, RequestRecord()).ok
        assert client.stream_chat(body, RequestRecord()).ok
        assert server.connections == 1      # back to back: the same connection
        time.sleep(0.1)
        assert client.stream_chat(body, RequestRecord()).ok
    finally:
        client.close()
        server.close()
    assert server.connections == 2          # after the idle limit: a new one


def test_output_lengths_drawn_per_request_are_seeded_and_in_range():
    config = parse_config({"request": {"max_tokens": 40, "max_tokens_min": 10},
                           "endpoints": [{"label": "A", "base_url": "http://127.0.0.1:9/v1",
                                          "model": "m"}]})
    assert config.endpoints[0].request.max_tokens_min == 10
    with pytest.raises(ConfigError, match="max_tokens_min"):
        parse_config({"request": {"max_tokens": 40, "max_tokens_min": 41},
                      "endpoints": [{"label": "A", "base_url": "http://127.0.0.1:9/v1",
                                     "model": "m"}]})


@pytest.mark.slow
def test_open_loop_run_ends_with_its_plan_and_records_requested_lengths(stub, tmp_path):
    url = stub(ttft_ms=10, itl_ms=2)
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url, "model": "stub-model"}],
                       load={"mode": "open", "rates": [40.0], "ramp_s": 0.5, "warmup_s": 0.5,
                             "steady_s": 2.0, "drain_s": 0.5},
                       request={"max_tokens": 24, "max_tokens_min": 8})
    elapsed = _run_locust(cfg, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    records = _records(tmp_path / "run")
    assert manifest["status"] == "complete" and len(records) > 20 and records["ok"].all()
    # Locust's start-up varies with the machine, the bug did not: a generator that never ends
    # by itself made every open-loop run wait out the whole 30 s stop timeout.
    assert elapsed < manifest["planned_duration_s"] + 20, elapsed
    assert records["requested_tokens"].between(8, 24).all()
    assert records["requested_tokens"].nunique() > 3
    assert (records["output_tokens"] == records["requested_tokens"]).all()
    # the lateness is recorded for every request: open loop against the schedule
    assert records["send_lag_s"].notna().all() and (records["send_lag_s"] > -0.001).all()
    assert "0" in manifest["load_generator"]["loop_lag_by_stage"]


def _endpoint(url: str) -> Endpoint:
    return Endpoint(label="A", base_url=url, model="m",
                    request=RequestSettings(max_tokens=2, read_timeout_s=5.0, connect_timeout_s=2.0))


class _OneShotServer:
    """A tiny keep-alive SSE server in a thread; records each request's bytes."""

    EVENTS = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
              b"data: [DONE]\n\n")

    def __init__(self, seen: list[bytes], close_second_request: bool = False):
        self.seen = seen
        self.close_second = close_second_request
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, self.connections), daemon=True).start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        with conn:
            served = 0
            while True:
                request = self._read_request(conn)
                if request is None:
                    return
                self.seen.append(request)
                if self.close_second and number == 1 and served == 1:
                    return  # as a server closing an idle connection the moment it arrives
                body = self.EVENTS
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                served += 1

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(rest) < length:
            rest += conn.recv(65536)
        return head + b"\r\n\r\n" + rest

    def close(self) -> None:
        self.sock.close()
