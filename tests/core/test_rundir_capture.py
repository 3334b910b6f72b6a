"""Metric capture: the Prometheus text parser, and MetricsCapture against a local server that
goes away and comes back (the gap stays visible); also under gevent, as in the Locust master."""

from __future__ import annotations

import http.server
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd

from core.rundir.capture import (MetricsCapture, ScrapeTarget, format_labels, keep_metric,
                                 parse_prometheus_text, samples_to_rows)
from support import wait_until

REPO = Path(__file__).resolve().parents[2]

EXPOSITION = textwrap.dedent("""\
    # HELP nvml_gpu_utilization_ratio GPU utilization
    # TYPE nvml_gpu_utilization_ratio gauge
    nvml_gpu_utilization_ratio{gpu="0",UUID="GPU-a"} 0.5
    nvml_gpu_energy_joules_total{gpu="0",UUID="GPU-a"} 1234.5
    vllm:num_requests_running{model_name="m \\"q\\", x",engine="0"} 3
    vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.1"} 4
    vllm:time_to_first_token_seconds_bucket{model_name="m",le="+Inf"} 9
    vllm:time_to_first_token_seconds_sum{model_name="m"} 1.5
    vllm:time_to_first_token_seconds_count{model_name="m"} 9
    vllm:kv_cache_usage_perc NaN
    go_gc_duration_seconds{quantile="0.5"} 0.001
    python_info{version="3.11"} 1
    server_process_cpu_seconds_total{selector="vllm"} 12.25 1700000000000
    malformed{ 1
    """)


def test_parser():
    samples = list(parse_prometheus_text(EXPOSITION))
    names = [s[0] for s in samples]
    assert "malformed" not in names
    run = [s for s in samples if s[0] == "vllm:num_requests_running"][0]
    assert run[1] == [("model_name", 'm "q", x'), ("engine", "0")] and run[2] == 3.0
    inf = [s for s in samples if 'le' in dict(s[1]) and dict(s[1])["le"] == "+Inf"][0]
    assert inf[2] == 9.0
    cpu = [s for s in samples if s[0] == "server_process_cpu_seconds_total"][0]
    assert cpu[2] == 12.25                                  # the timestamp is ignored
    assert format_labels(run[1]) == 'model_name="m \\"q\\", x",engine="0"'


def test_allowlist_and_rows():
    assert keep_metric("nvml_gpu_sm_active_ratio") and keep_metric("server_process_x")
    assert keep_metric("vllm:e2e_request_latency_seconds_bucket")
    assert not keep_metric("go_gc_duration_seconds") and not keep_metric("vllm:unused_thing")
    rows = samples_to_rows(EXPOSITION, 10.0, "A", "server")
    metrics = {r["metric"] for r in rows}
    assert "go_gc_duration_seconds" not in metrics and "python_info" not in metrics
    assert "vllm:kv_cache_usage_perc" not in metrics        # NaN samples are not written
    assert all(r["endpoint"] == "A" and r["ts_unix"] == 10.0 for r in rows)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = EXPOSITION.encode()

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


class _Server:
    def __init__(self, port: int = 0):
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_capture_gap_when_target_goes_away(tmp_path):
    server = _Server()
    port = server.port
    out = tmp_path / "metrics.csv"
    cap = MetricsCapture([ScrapeTarget("A", "exporter", f"http://127.0.0.1:{port}/metrics")],
                         out, interval_s=0.1)
    cap.start()
    wait_until(lambda: cap.scrapes - cap.failures >= 3, 30, "3 good scrapes", interval=0.01)
    server.close()
    down_from = time.time()
    # 5 failed scrapes at 0.1 s: the target is away for >= 0.4 s, several sampling intervals
    wait_until(lambda: cap.failures >= 5, 30, "5 failed scrapes", interval=0.01)
    down_to = time.time()
    good_before = cap.scrapes - cap.failures
    server = _Server(port)
    wait_until(lambda: cap.scrapes - cap.failures >= good_before + 3, 30, "3 good scrapes again",
               interval=0.01)
    t0 = time.monotonic()
    cap.stop()
    assert time.monotonic() - t0 < 2.0
    server.close()
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["ts_unix", "endpoint", "source", "metric", "labels", "value"]
    up = df[df["metric"] == "scrape_up"]
    assert (up["value"] == 1).sum() >= 6
    failed = up[up["value"] == 0]
    assert len(failed) >= 3
    assert failed["labels"].str.startswith('error="').all()
    assert (failed["labels"] == 'error="connection refused"').any()
    # The gap is a gap: only failed scrape_up rows while the target was away, never zeros.
    inside = df[(df["ts_unix"] > down_from + 0.05) & (df["ts_unix"] < down_to - 0.05)]
    assert len(inside) and (inside["metric"] == "scrape_up").all()
    util = df[df["metric"] == "nvml_gpu_utilization_ratio"]
    assert (util["value"] == 0.5).all()
    ts = util["ts_unix"].to_numpy()
    # the gap shows in the series: it spans the time the target was away (a sample that was
    # in flight when the server closed may land a few ms after down_from)
    assert (ts[1:] - ts[:-1]).max() > down_to - down_from - 0.05
    assert ts.max() > down_to                               # and the series came back
    assert "go_gc_duration_seconds" not in set(df["metric"])


def test_stop_is_bounded_with_a_hanging_target(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)                      # accepts connections, never answers
    try:
        port = sock.getsockname()[1]
        cap = MetricsCapture([ScrapeTarget("A", "server", f"http://127.0.0.1:{port}/metrics")],
                             tmp_path / "m.csv", interval_s=1.0, timeout_s=0.3)
        cap.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        cap.stop()
        assert time.monotonic() - t0 < 2.0
    finally:
        sock.close()
    df = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert (df["value"] == 0).all() and (df["labels"] == 'error="timeout"').all()


def test_capture_under_gevent(tmp_path):
    """In the Locust master the process is monkey-patched: the loop runs as a greenlet."""
    server = _Server()
    try:
        code = textwrap.dedent(f"""
            from gevent import monkey; monkey.patch_all()
            import time, gevent
            from core.rundir.capture import MetricsCapture, ScrapeTarget
            cap = MetricsCapture([ScrapeTarget("A", "exporter",
                                  "http://127.0.0.1:{server.port}/metrics")],
                                 {str(tmp_path / 'g.csv')!r}, interval_s=0.1)
            cap.start()
            deadline = time.monotonic() + 30
            while cap.scrapes - cap.failures < 3:
                assert time.monotonic() < deadline, "timed out waiting for 3 good scrapes"
                gevent.sleep(0.01)
            cap.stop()
        """)
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.close()
    df = pd.read_csv(tmp_path / "g.csv", keep_default_na=False)
    assert (df[df["metric"] == "scrape_up"]["value"] == 1).sum() >= 3
    assert not math.isnan(df[df["metric"] == "nvml_gpu_utilization_ratio"]["value"].iloc[0])
