"""Report benchmark: build the report from a big synthetic run and measure time and peak memory.

    python -m bench.bench_report [--records 1000000] [--hours 2] [--keep DIR]

Writes one synthetic run directory (tests/support/synth.py) with two endpoints, a five-stage
sweep over ``--hours`` hours, about ``--records`` request records and 1 s metric samples
(NVML gauges and counters, vLLM gauges, counters and the TTFT histogram) for both endpoints.
Then runs ``python -m analysis RUN --out OUT --quiet`` in a child process and reports its wall
time and peak resident memory (``os.wait4`` rusage ru_maxrss of that child).
Targets on a 2-core machine: under 30 s and under 4 GiB.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 30.0
TARGET_BYTES = 4 * 2 ** 30


def _synth():
    """tests/support/synth.py, loaded by path (tests/ is not a package)."""
    path = REPO / "tests" / "support" / "synth.py"
    spec = importlib.util.spec_from_file_location("analysis_bench_synth", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def build_run(run_dir: Path, records: int, hours: float, seed: int = 0) -> dict:
    synth = _synth()
    stages = (1, 4, 8, 16, 32)
    stage_s = hours * 3600.0 / len(stages)
    spec = synth.SynthSpec(stages=stages, ramp_s=10.0, warmup_s=30.0, drain_s=20.0,
                           steady_s=stage_s - 60.0, seed=seed, campaign="bench",
                           all_histograms=True)
    # Closed-loop request count at rps_scale 1, then scale to the wanted number of records.
    total = 0.0
    for p in spec.profiles.values():
        for users in stages:
            ttft = (p.ttft_ms + p.ttft_per_user_ms * (users - 1)) / 1000.0
            e2e = ttft + p.tpot_ms / 1000.0 * (p.output_tokens - 1)
            total += users / e2e * stage_s
    for p in spec.profiles.values():
        p.rps_scale = records / total
    return synth.synth_run(run_dir, spec, run_id="bench-run")


def run_report(run_dir: Path, out_dir: Path) -> tuple[float, float, int, int, str]:
    """(wall s, CPU s (user+sys), peak RSS bytes, exit status, stderr tail) of the report."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "analysis", str(run_dir), "--out",
                             str(out_dir), "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    proc.stdout and proc.stdout.close()
    proc.stderr and proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, int(usage.ru_maxrss) * 1024, proc.returncode, err[-2000:]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000, help="request records (default 1e6)")
    p.add_argument("--hours", type=float, default=2.0, help="run length in hours (default 2)")
    p.add_argument("--keep", metavar="DIR", help="write the run and report here and keep them")
    args = p.parse_args(argv)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    run_dir, out_dir = base / "run", base / "report"
    try:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        info = build_run(run_dir, args.records, args.hours)
        build_s = time.perf_counter() - t0
        sizes = {f.name: f.stat().st_size for f in run_dir.iterdir() if f.is_file()}
        load_before = os.getloadavg()[0]
        wall, cpu, rss, rc, err = run_report(run_dir, out_dir)
        load_after = os.getloadavg()[0]
        html_size = (out_dir / "report.html").stat().st_size if (out_dir / "report.html").exists() else 0
        rows = [
            ("records", f"{info['records']:,} ({sizes.get('records.csv', 0) / 2 ** 20:.0f} MiB)"),
            ("metric samples", f"{info['metric_rows']:,} rows, 2 endpoints, {args.hours:g} h "
                               f"at 1 s ({sizes.get('metrics.csv', 0) / 2 ** 20:.0f} MiB)"),
            ("synthetic run written in", f"{build_s:.1f} s"),
            ("report exit status", str(rc)),
            ("report wall time", f"{wall:.1f} s (target < {TARGET_S:.0f} s: "
                                 f"{'met' if wall < TARGET_S else 'MISSED'})"),
            ("report CPU time", f"{cpu:.1f} s user+sys (all threads)"),
            ("report peak RSS", f"{rss / 2 ** 30:.2f} GiB (target < 4 GiB: "
                                f"{'met' if rss < TARGET_BYTES else 'MISSED'})"),
            ("report.html", f"{html_size / 2 ** 10:.0f} KiB"),
            ("CPUs, load average", f"{os.cpu_count()}, {load_before:.1f} before / "
                                   f"{load_after:.1f} after (other work inflates wall time)"),
        ]
        print(f"report benchmark: {args.records:,} records, python -m analysis in a child process")
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"  {key.ljust(width)}  {value}")
        if rc != 0:
            print(err, file=sys.stderr)
        return 0 if rc == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
