"""Exporter benchmark: /metrics latency and exporter CPU per scrape with N fake GPUs.

    python -m bench.bench_exporter [--gpus 8] [--scrapes 200]

Runs the real exporter process (``python -m exporters --fake-gpus N``) and scrapes it over one
keep-alive HTTP connection, as Prometheus does. CPU is the exporter process's own
(user+system from /proc), with the background sampling loop's share measured separately and
subtracted. Also times the in-process render and one sampling round for reference.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.netutil import free_port

REPO = Path(__file__).resolve().parents[1]


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _wait_ready(conn_factory: Any, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {proc.returncode}")
        try:
            conn = conn_factory()
            conn.request("GET", "/healthz")
            if conn.getresponse().read() and True:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("exporter did not answer /healthz in time")


def bench_http(gpus: int, scrapes: int, interval: float) -> dict[str, float]:
    """Scrape a real exporter process; latency and CPU figures."""
    port = free_port()
    cmd = [sys.executable, "-m", "exporters", "--fake-gpus", str(gpus), "--port", str(port),
           "--interval", str(interval), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        _wait_ready(connect, proc)
        ps = psutil.Process(proc.pid)
        conn = connect()

        def scrape() -> int:
            conn.request("GET", "/metrics")
            return len(conn.getresponse().read())

        for _ in range(10):  # warm-up, and a couple of sampling rounds
            scrape()
        time.sleep(max(0.0, 2 * interval - 0.1))
        # background: the sampler alone
        c0, t0 = _cpu(ps), time.monotonic()
        time.sleep(3.0)
        background_per_s = (_cpu(ps) - c0) / (time.monotonic() - t0)
        # scrapes
        latencies = []
        size = 0
        c0, t0 = _cpu(ps), time.monotonic()
        for _ in range(scrapes):
            s = time.perf_counter()
            size = scrape()
            latencies.append(time.perf_counter() - s)
        elapsed = time.monotonic() - t0
        cpu = _cpu(ps) - c0
        conn.close()
        return {
            "median_s": statistics.median(latencies),
            "p99_s": _pct(latencies, 0.99),
            "max_s": max(latencies),
            "cpu_per_scrape_s": max(0.0, cpu - background_per_s * elapsed) / scrapes,
            "cpu_per_scrape_raw_s": cpu / scrapes,
            "background_cpu_per_s": background_per_s,
            "body_bytes": float(size),
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def bench_in_process(gpus: int, renders: int) -> dict[str, float]:
    """Render and sampling-round times without HTTP (the exporter's own overhead)."""
    sys.path.insert(0, str(REPO))
    from exporters.app import Exporter, ExporterConfig
    from exporters.fake import FakeNvml

    exp = Exporter(FakeNvml(gpus), ExporterConfig())
    ticks = []
    for _ in range(20):
        s = time.perf_counter()
        exp.sampler.tick(5)
        ticks.append(time.perf_counter() - s)
    renders_s = []
    for _ in range(renders):
        s = time.perf_counter()
        exp.metrics()
        renders_s.append(time.perf_counter() - s)
    exp.stop()
    return {"render_median_s": statistics.median(renders_s),
            "tick_median_s": statistics.median(ticks[2:])}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_exporter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=8, help="fake GPUs (default 8)")
    p.add_argument("--scrapes", type=int, default=200, help="scrapes to time (default 200)")
    p.add_argument("--interval", type=float, default=1.0, help="exporter --interval (default 1)")
    args = p.parse_args(argv)
    h = bench_http(args.gpus, args.scrapes, args.interval)
    r = bench_in_process(args.gpus, args.scrapes)
    ms = 1e3
    rows = [
        ("scrape latency, median", f"{h['median_s'] * ms:.2f} ms"),
        ("scrape latency, p99", f"{h['p99_s'] * ms:.2f} ms"),
        ("scrape latency, max", f"{h['max_s'] * ms:.2f} ms"),
        ("exporter CPU per scrape", f"{h['cpu_per_scrape_s'] * ms:.2f} ms"
                                    f" (raw {h['cpu_per_scrape_raw_s'] * ms:.2f} ms)"),
        ("sampling loop CPU", f"{h['background_cpu_per_s'] * 100:.2f} % of a core"
                              f" at --interval {args.interval:g} (/proc counts in 10 ms ticks)"),
        ("render in process, median", f"{r['render_median_s'] * ms:.2f} ms"),
        ("sampling round in process, median", f"{r['tick_median_s'] * ms:.2f} ms"
                                              " (fake NVML; real calls add their own time)"),
        ("/metrics body", f"{h['body_bytes'] / 1024:.1f} KiB"),
    ]
    print(f"exporter benchmark: {args.gpus} fake GPUs, {args.scrapes} scrapes over one "
          "keep-alive connection")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
