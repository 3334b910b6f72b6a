"""Clients that go away mid-answer are normal: one short log line each, no traceback."""

from __future__ import annotations

import signal
import socket
import struct
import time

from exporter_testlib import exporter_process, http_get

RESETS = 3
# Many pipelined requests: the exporter is still answering them when the reset arrives, so the
# reset always meets a write (a single request could be answered before the reset got there).
PIPELINED = 100


def _reset_mid_answer(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED)
    s.recv(1)  # the exporter is answering: reset now (close with linger 0 sends RST)
    s.close()


def _reset_mid_request(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost:")  # the exporter waits for the rest
    time.sleep(0.1)
    s.close()


def test_a_client_reset_logs_one_short_line_and_no_traceback(tmp_path) -> None:
    with exporter_process(tmp_path, "--fake-gpus", "1", "--interval", "0.2",
                          "--log-level", "info") as (proc, port):
        for _ in range(RESETS):
            _reset_mid_answer(port)
        _reset_mid_request(port)
        time.sleep(0.5)  # the handler threads log the reset
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"nvml_up 1" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    log = next(tmp_path.glob("exporter-*.log")).read_text()
    assert "Traceback" not in log, log
    gone = [line for line in log.splitlines() if "went away" in line]
    assert len(gone) == RESETS + 1, log
    assert sum("while its request was read" in line for line in gone) == 1, gone
    assert all(" INFO " in line and len(line) < 250 for line in gone), gone
    assert len(log.splitlines()) <= RESETS + 6, log   # start-up, resets, shutdown
