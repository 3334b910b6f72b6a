"""Distributed scaling: what 1 and 2 Locust worker processes deliver against the stub, and the
master's own cost.

For each worker count it runs a Locust master (headless, the suite's locustfile) with that many
local worker processes, a fixed number of users streaming as fast as the stub answers (no
injected delays: the load generator is the limit), and prints from the run directory:
- requests/s and chunks/s delivered (records of the middle of the run);
- each process's CPU (the master's own included, from the manifest);
- the master's CPU per 1,000 records (it decodes every batch, appends records.csv, keeps the
  live metrics), and the records/s at which the master would use a whole core: beyond it the
  master, not the workers, is the limit.
The ratio of the two rows is the scaling. On a machine with fewer cores than processes (master,
workers, stub) the ratio says more about the cores than about the suite: the header prints the
core count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.netutil import free_port
from bench.stub_server import run_stub_process, stop_stub_process

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = str(ROOT / "locustfiles" / "users.py")


def run_distributed(url: str, workers: int, users: int, seconds: float, tokens: int,
                    workdir: Path) -> dict:
    """One headless master + ``workers`` local workers for ``seconds``; its figures."""
    run_dir = workdir / f"w{workers}"
    config = workdir / f"w{workers}.json"
    config.write_text(json.dumps({
        "request": {"max_tokens": tokens, "read_timeout_s": 60.0},
        "endpoints": [{"label": "stub", "base_url": url, "model": "stub-model"}]}))
    port = free_port()
    base = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--endpoints-file", str(config)]
    master = subprocess.Popen(
        base + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                "--expect-workers", str(workers), "--headless", "--run-dir", str(run_dir),
                "-u", str(users), "-r", str(users), "-t", f"{math.ceil(seconds)}s",
                "--stop-timeout", "30", "--only-summary", "--loglevel", "WARNING",
                "--llm-metrics-port", str(free_port()), "--exit-code-on-error", "0",
                "Chat_stub"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen(base + ["--worker", "--master-host", "127.0.0.1", "--master-port",
                                      str(port), "Chat_stub"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        master.wait(timeout=seconds + 120)
    finally:
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = pd.read_csv(run_dir / "records.csv")
    ends = records["start_unix"] + records["e2e_s"]
    # the middle of the run: after the users started, before the stop
    t0, t1 = records["start_unix"].min() + 2.0, ends.max() - 1.0
    window = records[(ends >= t0) & (ends <= t1)]
    span = max(t1 - t0, 1e-9)
    processes = manifest["load_generator"]["processes"]
    master_cpu = sum(p.get("cpu_seconds", 0.0) for name, p in processes.items()
                     if name.endswith("(master)"))
    worker_cpu = sum(p.get("cpu_seconds", 0.0) for name, p in processes.items()
                     if not name.endswith("(master)"))
    run_s = manifest["end_unix"] - manifest["start_unix"]
    records_per_s = len(records) / run_s if run_s > 0 else float("nan")
    master_share = master_cpu / run_s if run_s > 0 else float("nan")
    return {
        "workers": workers, "users": users, "requests": len(records),
        "failed": int((~records["ok"]).sum()),
        "req_per_s": len(window) / span, "chunks_per_s": window["chunks"].sum() / span,
        "master_cpu_percent": 100 * master_share,
        "worker_cpu_percent": 100 * worker_cpu / run_s if run_s > 0 else float("nan"),
        "master_ms_per_1000_records": 1e6 * master_cpu / max(len(records), 1),
        "master_limit_records_per_s": records_per_s / master_share if master_share > 0 else
        float("nan"),
        "complete": manifest["status"] == "complete"
        and manifest["records_written"] == manifest["locust_requests"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--stub-processes", type=int, default=1)
    args = p.parse_args(argv)
    proc, url = run_stub_process(ttft_ms=0, itl_ms=0, tokens=args.tokens,
                                 processes=args.stub_processes)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for workers in (1, 2):
                started = time.time()
                rows.append(run_distributed(url, workers, args.users, args.seconds, args.tokens,
                                            Path(tmp)))
                print(f"  {workers} worker(s): {time.time() - started:.0f}s", file=sys.stderr,
                      flush=True)
    finally:
        stop_stub_process(proc)
    print(f"\nDistributed scaling against the stub (no injected delays, {args.tokens} tokens per "
          f"answer, {args.users} users, {args.seconds:g}s per case, {os.cpu_count()} cores shared "
          f"by the master, the workers and the stub)")
    header = (f"{'workers':>7s} {'reqs':>6s} {'fail':>4s} {'req/s':>7s} {'chunks/s':>9s} "
              f"{'workers CPU%':>12s} {'master CPU%':>11s} {'master ms/1k rec':>16s} "
              f"{'master limit rec/s':>18s} {'all recorded':>12s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['workers']:7d} {r['requests']:6d} {r['failed']:4d} {r['req_per_s']:7.0f} "
              f"{r['chunks_per_s']:9,.0f} {r['worker_cpu_percent']:12.0f} "
              f"{r['master_cpu_percent']:11.1f} {r['master_ms_per_1000_records']:16.1f} "
              f"{r['master_limit_records_per_s']:18,.0f} {str(r['complete']):>12s}")
    one, two = rows
    print(f"\n2 workers / 1 worker: requests/s x{two['req_per_s'] / one['req_per_s']:.2f}, "
          f"chunks/s x{two['chunks_per_s'] / one['chunks_per_s']:.2f}")
    per_core = one["chunks_per_s"] / max(one["worker_cpu_percent"] / 100, 1e-9)
    print(f"per worker core: about {per_core:,.0f} chunks/s "
          f"({one['req_per_s'] / max(one['worker_cpu_percent'] / 100, 1e-9):,.0f} requests/s of "
          f"{args.tokens} tokens); the master would use a whole core at about "
          f"{min(one['master_limit_records_per_s'], two['master_limit_records_per_s']):,.0f} "
          "records/s")
    return 0 if all(r["complete"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
