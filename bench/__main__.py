"""make bench: every benchmark, one after another, each printing its own figures."""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ("load generator: speed and accuracy against the stub", "bench.bench_client", []),
    ("exporter: scrape latency and CPU with 8 fake GPUs", "bench.bench_exporter", []),
    ("report: 1,000,000 records and 2 h of metric samples", "bench.bench_report", []),
    ("distributed: 1 and 2 worker processes, the master's own cost", "bench.bench_scaling", []),
    ("wire truth: the client's timings against a packet capture (stub and real vLLM)",
     "bench.bench_wire", []),
]


def main() -> int:
    only = sys.argv[1:]
    failed = 0
    for title, module, args in BENCHES:
        if only and not any(o in module for o in only):
            continue
        print(f"\n=== {title} ({module}) ===", flush=True)
        code = subprocess.call([sys.executable, "-m", module, *args])
        if code:
            print(f"{module} exited with {code}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
