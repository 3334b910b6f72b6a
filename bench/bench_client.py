"""Load-generator speed and accuracy: one Locust process against the stub with injected timings.

For each client (fast, openai) and each concurrency (1, 64, 256 streams) it runs Locust
headless for a fixed time against a stub that sends the first token TTFT ms after reading the
request and then one token every ITL ms, and prints:
- SSE chunks per client CPU-second (chunks received / CPU the Locust process used during the test);
- reported TTFT p50/p99 against the injected truth (requests after a warm-up);
- reported inter-token gap: the median of per-request medians, and the p99 of per-request p99s;
- the floor: reads per CPU-second of a bare epoll + recv reader (bench.bare_reader) at the top
  concurrency, the most any Python client can do when each chunk arrives on its own.
Targets (issue 2): >= 100,000 chunks per CPU-second; at 256 streams TTFT p50 within 2 ms of
truth and p99 within 10% of it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import urllib.request
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.stub_server import run_stub_process, stop_stub_process

ROOT = Path(__file__).resolve().parent.parent

# With two or more cores, the client gets core 0 and the stub the others, so neither's
# scheduling delays show up in the other's timings (the measured figure is the client's).
_CORES = sorted(os.sched_getaffinity(0))
PIN_CLIENT = ["taskset", "-c", str(_CORES[0])] if len(_CORES) >= 2 and shutil.which("taskset") else []


def pin_stub(proc) -> None:
    """Move the stub (and its worker processes) off the client's core."""
    if not PIN_CLIENT:
        return
    import psutil

    parent = psutil.Process(proc.pid)
    for p in [parent, *parent.children(recursive=True)]:
        p.cpu_affinity(_CORES[1:])


def stub_lateness_marks(url: str, processes: int) -> dict[int, int]:
    """Per stub process: how many first-token lateness samples it holds so far."""
    base = url.rsplit("/v1", 1)[0]
    marks: dict[int, int] = {}
    for _ in range(40 * processes):          # each connection lands on one process
        with urllib.request.urlopen(f"{base}/stub/first_token_lateness/999999999", timeout=5) as r:
            data = json.load(r)
        marks[data["pid"]] = data["n"]
        if len(marks) >= processes:
            break
    return marks


def stub_lateness_since(url: str, marks: dict[int, int]) -> list[float]:
    """The stub's first-token lateness samples (ms) since the marks, all processes."""
    base = url.rsplit("/v1", 1)[0]
    samples: dict[int, list[float]] = {}
    for _ in range(40 * len(marks)):
        with urllib.request.urlopen(f"{base}/stub/first_token_lateness/0", timeout=5) as r:
            data = json.load(r)
        samples[data["pid"]] = data["samples_ms"][marks.get(data["pid"], 0):]
        if len(samples) >= len(marks):
            break
    return [x for xs in samples.values() for x in xs]


def run_locust(url: str, client: str, users: int, seconds: float, tokens: int,
               workdir: Path, ramp_s: float = 0.0) -> dict:
    """One headless Locust run; users start evenly over ramp_s, results after ramp_s + 2 s
    and before the last second."""
    workdir.mkdir(parents=True, exist_ok=True)
    spawn_rate = users / ramp_s if ramp_s > 0 else users
    run_dir = workdir / f"{client}-{users}"
    config = workdir / f"{client}-{users}.json"
    config.write_text(json.dumps({
        "request": {"max_tokens": tokens, "read_timeout_s": 60.0},
        "load": {"client": client},
        "endpoints": [{"label": "stub", "base_url": url, "model": "stub-model"}]}))
    cmd = PIN_CLIENT + [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "users.py"),
           "--headless", "--endpoints-file", str(config), "--run-dir", str(run_dir),
           "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{math.ceil(seconds + ramp_s)}s",
           "--stop-timeout", "30",
           "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0", "Chat_stub"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=seconds + ramp_s + 90)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = pd.read_csv(run_dir / "records.csv")
    cpu = sum(p.get("cpu_seconds", 0.0) for p in manifest["load_generator"]["processes"].values())
    warm = records["start_unix"].min() + ramp_s + min(2.0, seconds / 4)
    # Left out as well, like a sweep's drain: requests sent in the last second, whose first
    # tokens meet Locust's own stop(), which blocks the process for tens of milliseconds
    # (it calls inspect.stack()), long enough for several chunks of a stream to be read together.
    last = records["start_unix"].max() - 1.0
    ok = records[records["ok"] & (records["start_unix"] >= warm) & (records["start_unix"] <= last)]
    return {
        "client": client, "streams": users, "requests": len(ok),
        "failed": int((~records["ok"]).sum()),
        "chunks_per_cpu_s": records["chunks"].sum() / cpu if cpu else float("nan"),
        "cpu_max_percent": manifest["load_generator"]["max_cpu_percent"],
        "ttft_p50_ms": ok["ttft_s"].quantile(0.5) * 1e3,
        "ttft_p99_ms": ok["ttft_s"].quantile(0.99) * 1e3,
        "itl_p50_ms": ok["itl_p50_s"].median() * 1e3,
        "itl_p99_ms": ok["itl_p99_s"].quantile(0.99) * 1e3,
    }


def bare_reader_floor(url: str, streams: int, seconds: float, ttft_ms: float, itl_ms: float,
                      tokens: int) -> float:
    """Reads per CPU-second of a bare epoll + recv reader (bench.bare_reader) on the client's core."""
    cmd = PIN_CLIENT + [sys.executable, "-m", "bench.bare_reader", url, str(streams), f"{seconds:g}",
                        "--ttft-ms", f"{ttft_ms:g}", "--itl-ms", f"{itl_ms:g}",
                        "--tokens", str(tokens)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                         timeout=seconds + 60)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["reads_per_cpu_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seconds", type=float, default=12.0, help="Locust run time per case")
    p.add_argument("--streams", default="1,64,256")
    p.add_argument("--clients", default="fast,openai")
    p.add_argument("--stub-processes", type=int, default=2)
    p.add_argument("--capacity-streams", type=int, default=64,
                   help="streams for the unpaced case (no delays: the client's ceiling)")
    args = p.parse_args(argv)
    proc, url = run_stub_process(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, tokens=args.tokens,
                                 processes=args.stub_processes)
    capacity_proc, capacity_url = run_stub_process(ttft_ms=0, itl_ms=0, tokens=args.tokens,
                                                   processes=args.stub_processes)
    pin_stub(proc)
    pin_stub(capacity_proc)
    rows = []
    floor = float("nan")
    top_streams = max(int(u) for u in args.streams.split(","))
    try:
        if top_streams > 1:
            floor = bare_reader_floor(url, top_streams, args.seconds / 2, args.ttft_ms,
                                      args.itl_ms, args.tokens)
        with tempfile.TemporaryDirectory() as tmp:
            for client in args.clients.split(","):
                for users in (int(u) for u in args.streams.split(",")):
                    started = time.time()
                    marks = stub_lateness_marks(url, args.stub_processes)
                    # users start evenly over one request's duration, so their requests do not
                    # reach the stub in lockstep (a burst of 256 at once measures the stub's
                    # accept queue, not the client)
                    ramp = (args.ttft_ms + args.tokens * args.itl_ms) / 1000.0 if users > 1 else 0.0
                    row = run_locust(url, client, users, args.seconds, args.tokens, Path(tmp),
                                     ramp_s=ramp)
                    late = pd.Series(stub_lateness_since(url, marks))
                    # what the stub really did: injected TTFT + its own lateness, per request
                    row["true_p50_ms"] = args.ttft_ms + late.quantile(0.5)
                    row["true_p99_ms"] = args.ttft_ms + late.quantile(0.99)
                    rows.append(row)
                    print(f"  {client:6s} {users:4d} streams: {row['requests']} requests, "
                          f"{time.time() - started:.0f}s", file=sys.stderr, flush=True)
                row = run_locust(capacity_url, client, args.capacity_streams, args.seconds,
                                 args.tokens, Path(tmp) / "capacity")
                row["capacity"] = True
                rows.append(row)
    finally:
        stop_stub_process(proc)
        stop_stub_process(capacity_proc)

    truth_ttft, truth_itl = args.ttft_ms, args.itl_ms
    print(f"\nLoad generator vs injected truth (TTFT {truth_ttft:g} ms, gap {truth_itl:g} ms, "
          f"{args.tokens} tokens, {args.seconds:g}s per case, one Locust process"
          f"{', pinned to core ' + str(_CORES[0]) + ', the stub on the others' if PIN_CLIENT else ''})")
    print("true = the stub's actual first-token delay over the same case (injected TTFT + the "
          "stub's own lateness, which it measures)")
    header = (f"{'client':7s} {'streams':>9s} {'reqs':>6s} {'fail':>4s} {'chunks/CPU-s':>13s} "
              f"{'CPU max%':>8s} {'TTFT p50':>9s} {'true p50':>9s} {'TTFT p99':>9s} {'true p99':>9s} "
              f"{'gap p50':>8s} {'gap p99':>8s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("capacity"):
            print(f"{r['client']:7s} {str(r['streams']) + ' burst':>9s} {r['requests']:6d} "
                  f"{r['failed']:4d} {r['chunks_per_cpu_s']:13,.0f} {r['cpu_max_percent']:8.0f} "
                  f"{'(no injected delays: the client at full speed)':>40s}")
            continue
        print(f"{r['client']:7s} {r['streams']:9d} {r['requests']:6d} {r['failed']:4d} "
              f"{r['chunks_per_cpu_s']:13,.0f} {r['cpu_max_percent']:8.0f} "
              f"{r['ttft_p50_ms']:9.1f} {r['true_p50_ms']:9.1f} {r['ttft_p99_ms']:9.1f} "
              f"{r['true_p99_ms']:9.1f} "
              f"{r['itl_p50_ms']:8.1f} {r['itl_p99_ms']:8.1f}")
    print(f"{'bare':7s} {top_streams:9d} {'':>6s} {'':>4s} {floor:13,.0f} {'':>8s} "
          f"(epoll + recv only, no parsing: the floor for one read per chunk; reads/CPU-s)")
    fast = [r for r in rows if r["client"] == "fast" and not r.get("capacity")]
    capacity = [r for r in rows if r["client"] == "fast" and r.get("capacity")]
    if fast:
        best = max(r["chunks_per_cpu_s"] for r in capacity or fast)
        top = max(fast, key=lambda r: r["streams"])
        checks = [
            (f"chunks per client CPU-second >= 100,000 when chunks arrive together (unpaced: "
             f"{best:,.0f})", best >= 100_000),
            (f"chunks per client CPU-second >= 100,000 when each chunk arrives on its own (paced, "
             f"{top['streams']} streams: {top['chunks_per_cpu_s']:,.0f}, CPU "
             f"{top['cpu_max_percent']:.0f}%; {top['chunks_per_cpu_s'] / floor:.0%} of the bare "
             f"reader's {floor:,.0f}, which is the most one read per chunk allows here)",
             top["chunks_per_cpu_s"] >= 100_000),
            (f"TTFT p50 at {top['streams']} streams within 2 ms of the injected {truth_ttft:g} ms "
             f"({top['ttft_p50_ms']:.1f} ms)", abs(top["ttft_p50_ms"] - truth_ttft) <= 2.0),
            (f"TTFT p99 at {top['streams']} streams within 10% of the injected {truth_ttft:g} ms "
             f"({top['ttft_p99_ms']:.1f} ms)", top["ttft_p99_ms"] <= truth_ttft * 1.10),
            (f"TTFT p50 at {top['streams']} streams within 2 ms of what the stub really did "
             f"({top['ttft_p50_ms']:.1f} vs {top['true_p50_ms']:.1f} ms)",
             abs(top["ttft_p50_ms"] - top["true_p50_ms"]) <= 2.0),
            (f"TTFT p99 at {top['streams']} streams within 10% of what the stub really did "
             f"({top['ttft_p99_ms']:.1f} vs {top['true_p99_ms']:.1f} ms)",
             top["ttft_p99_ms"] <= top["true_p99_ms"] * 1.10),
        ]
        print("\nTargets (fast client):")
        for text, passed in checks:
            print(f"  [{'PASS' if passed else 'MISS'}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
